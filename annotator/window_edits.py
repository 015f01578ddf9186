"""Edits controller: canvas gestures and object operations become undoable Session calls via the Document.

It owns the one background edit (a big edit, a click on a frame not embedded yet, a big undo/redo) that
may run off the GUI thread; while it runs, the session is busy and further edits wait.
"""

from PySide6.QtCore import QObject
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QColorDialog, QInputDialog, QMenu, QMessageBox

from annotator import document
from annotator.canvas import TOOLS
from annotator.workers import CallJob, describe

STATUS_MS = 6000


class EditsController(QObject):
    def __init__(self, window):
        super().__init__(window)
        self.w = window
        self.worker: CallJob | None = None   # the background edit or undo/redo, if one runs
        self._restores: list = []            # undo/redo steps waiting for it: (doc, fn, done)
        self.prompt_menu: QMenu | None = None

    def working(self) -> bool:
        return self.worker is not None

    def wait(self) -> None:
        """Wait for the background edit; undo steps still queued behind it run here, in order."""
        if self.worker is not None:
            self.worker.wait()
        while self._restores:
            doc, fn, done = self._restores.pop(0)
            fn()
            if self.w.doc is doc:
                done()

    # -- guards ----------------------------------------------------------------------------------
    def _target(self):
        """(frame, object id) the tools act on, or None with a status message saying why not."""
        doc = self.w.doc
        if doc is None:
            return None
        if self.w.session_busy():
            self.w.say("Wait for the running job to finish (or cancel it with Esc).", STATUS_MS)
            return None
        if not doc.objects():
            self.add_object()          # a new project: the first click starts object 1
        info = doc.objects().get(doc.selected)
        if info is None:
            self.w.say("Select an object first (1-9, or click its row).", STATUS_MS)
            return None
        if info.locked:
            self.w.say(f"{info.name} is locked; unlock it to edit (Shift+L).", STATUS_MS)
            return None
        return doc.frame, info.id

    def _run(self, label, frames, fn, embed_frame=None):
        """Apply an edit now; one touching many frames (removing an object) or a click/scribble on
        a frame without embedding yet (the engine embeds it first) runs in a worker instead."""
        doc = self.w.doc
        big = len(frames) > document.ASYNC_RESTORE_FRAMES
        if big or (embed_frame is not None and not doc.session.is_embedded(embed_frame)):
            return self._run_async(label, frames, fn, embed_frame)
        try:
            return doc.apply(label, frames, fn)
        except Exception as exc:  # engine refused (locked object, bad input): say so, keep going
            self.w.say(f"{label} failed: {describe(exc)}", STATUS_MS)
            return None

    def _start(self, job: CallJob, ended, message: str) -> None:
        def finished(status, error):
            self.worker = None
            job.wait()
            ended(status, error)
            self.w.sync_enabled()

        job.ended.connect(finished)
        self.worker = job
        self.w.say(message, STATUS_MS)
        self.w.sync_enabled()
        job.start()

    def run_in_background(self, fn, done, big: bool) -> None:
        """Document.runner: a big undo/redo restores on a worker; a small one waits for the ones
        before it (the history panel may undo several steps at once), so they land in order."""
        if not big and self.worker is None and not self._restores:
            fn()
            done()
            return
        self._restores.append((self.w.doc, fn, done))
        if self.worker is None:
            self._next_restore()

    def _next_restore(self) -> None:
        doc, fn, done = self._restores.pop(0)

        def ended(status, error):
            if status == "failed":
                self.w.show_error("Undo/redo failed", error)
            if self.w.doc is doc:
                done()
            if self._restores:
                self._next_restore()

        self._start(CallJob("restore", doc.lock, lambda _progress: fn(), parent=self, hold_lock=False),
                    ended, "Restoring frames…")

    def _run_async(self, label, frames, fn, t) -> None:
        doc = self.w.doc
        job = CallJob("edit", None, lambda _progress: doc.run_edit(sorted(set(frames)), fn), parent=self)

        def ended(status, error):
            if status == "finished" and self.w.doc is doc:
                doc.record(label, job.result)
            elif status == "failed":
                self.w.say(f"{label} failed: {error}", STATUS_MS)

        self._start(job, ended, f"{label}…" if t is None else
                    f"Computing frame {t}'s embedding for the {label.lower()}…")

    # -- canvas gestures -------------------------------------------------------------------------
    def _step(self, tool: str, t: int, oid: int) -> str:
        """An undo step's name: "Click + on bunny, frame 60" (frames counted from 1, as shown)."""
        return f"{TOOLS[tool].short} on {self.w.doc.objects()[oid].name}, frame {t + 1}"

    def on_canvas_click(self, x: int, y: int, positive: bool) -> None:
        target = self._target()
        if target:
            t, oid = target
            s = self.w.doc.session
            self._run(self._step("click+" if positive else "click-", t, oid), [t],
                      lambda: s.click(t, oid, x, y, positive=positive), embed_frame=t)

    def on_canvas_stroke(self, kind: str, points: list, positive: bool) -> None:
        target = self._target()
        if not target or not points:
            return
        t, oid = target
        s, radius = self.w.doc.session, self.w.brush_spin.value()
        if kind == "scribble":
            label = self._step("scribble+" if positive else "scribble-", t, oid)
            self._run(label, [t], lambda: s.scribble(t, oid, points, positive=positive), embed_frame=t)
        else:
            label = self._step("brush" if positive else "eraser", t, oid)
            self._run(label, [t], lambda: s.brush(t, oid, points, radius, erase=not positive))

    def on_canvas_polygon(self, points: list) -> None:
        target = self._target()
        if target:
            t, oid = target
            s = self.w.doc.session
            self._run(self._step("polygon", t, oid), [t], lambda: s.polygon(t, oid, points))

    # -- prompts ---------------------------------------------------------------------------------
    def delete_prompt(self, prompt) -> None:
        """Delete one click or scribble (a marker); the engine re-segments its frame from the others."""
        doc = self.w.doc
        if doc is None or self.w.session_busy():
            return
        info = doc.objects().get(prompt.object_id)
        if info is None or info.locked:
            return self.w.say("Unlock the object to delete its prompts.", STATUS_MS) if info else None
        tool = f"{prompt.kind}{'+' if prompt.positive else '-'}"
        label = f"Delete {self._step(tool, prompt.frame, prompt.object_id)}"
        self._run(label, [prompt.frame], lambda: doc.session.delete_prompt(prompt.id), embed_frame=prompt.frame)

    def clear_prompts(self) -> None:
        """Delete every click and scribble on the current frame (one undo step)."""
        doc = self.w.doc
        if doc is None or self.w.session_busy():
            return
        t = doc.frame
        if not doc.prompts_on(t):
            return self.w.say(f"Frame {t + 1} has no clicks or scribbles.", STATUS_MS)
        self._run(f"Clear prompts, frame {t + 1}", [t], lambda: doc.session.clear_prompts(t), embed_frame=t)

    def show_prompt_menu(self, prompt, pos) -> None:
        """The right-click menu of a marker (kept as `prompt_menu` while it shows)."""
        kind = "click" if prompt.kind == "click" else "scribble"
        self.prompt_menu = menu = QMenu(self.w)
        menu.addAction(f"Delete this {kind}", lambda: self.delete_prompt(prompt))
        menu.addAction("Clear prompts on this frame", self.clear_prompts)
        menu.popup(pos)

    # -- keyframes -------------------------------------------------------------------------------
    def toggle_keyframe(self) -> None:
        """Mark the current frame a keyframe of the selected object (its mask is right), or unmark it."""
        target = self._target()
        if target:
            t, oid = target
            doc = self.w.doc
            on = t not in doc.keyframes().get(oid, ())
            name = doc.objects()[oid].name
            self._run(f"{'Mark' if on else 'Unmark'} keyframe of {name}, frame {t + 1}", [t],
                      lambda: doc.session.set_keyframe(t, oid, on))

    def toggle_absent(self) -> None:
        """Say the selected object is not on this frame (an empty keyframe), or take that back."""
        target = self._target()
        if target:
            t, oid = target
            doc = self.w.doc
            absent = doc.keyframe_info().get(oid, {}).get(t) != "absent"
            name = doc.objects()[oid].name
            self._run(f"{name} {'absent' if absent else 'not absent'}, frame {t + 1}", [t],
                      lambda: doc.session.set_absent(t, oid, absent))

    def clear_mask(self, to: str = "frame") -> None:
        """Erase the selected object on this frame ("frame"), from here to the end ("end"), or up to a
        frame the user types ("ask")."""
        target = self._target()
        if not target:
            return
        t, oid = target
        doc = self.w.doc
        last = {"frame": t, "end": doc.n - 1}.get(to)
        if last is None:
            number, ok = QInputDialog.getInt(self.w, "Clear object", "Clear the object from this frame up to "
                                             "frame:", t + 1, t + 1, doc.n)
            if not ok:
                return
            last = number - 1
        name = doc.objects()[oid].name
        label = f"Clear {name}, frame {t + 1}" + (f"-{last + 1}" if last > t else "")
        self._run(label, range(t, last + 1), lambda: doc.session.clear_mask(oid, t, last))

    # -- objects ---------------------------------------------------------------------------------
    def select_object(self, oid) -> None:
        if self.w.doc is not None:
            self.w.doc.select(oid)

    def select_object_number(self, number: int) -> None:
        ids = list(self.w.doc.objects())
        if 1 <= number <= len(ids):
            self.w.doc.select(ids[number - 1])

    def add_object(self) -> None:
        doc = self.w.doc
        if doc is None:
            return
        info = self._run("Add object", [], doc.session.add_object)
        if info is not None:
            doc.select(info.id)

    def remove_selected_object(self) -> None:
        doc = self.w.doc
        if doc is not None and doc.selected is not None:
            self.remove_object(doc.selected)

    def remove_object(self, oid: int) -> None:
        """Remove an object; one that has masks is removed only after the user says yes."""
        doc = self.w.doc
        frames = doc.session.masked_frames()
        if doc.stats_ready():   # only the frames the object is on need saving for undo
            frames = [t for t in frames if doc.presence[t, oid]]
        else:
            frames = [t for t in frames if (doc.mask(t) == oid).any()]
        name = doc.objects()[oid].name
        if frames and self.w.interactive:
            n = len(frames)
            answer = QMessageBox.question(
                self.w, "Remove object",
                f"Remove {name}? It has masks on {n} frame{'s' * (n != 1)}.\n(Undo, Ctrl+Z, brings it back.)",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
                QMessageBox.StandardButton.Cancel)
            if answer != QMessageBox.StandardButton.Yes:
                return
        self._run(f"Remove {name}", frames, lambda: doc.session.remove_object(oid))

    def change_object(self, oid: int, field: str, value) -> None:
        doc = self.w.doc
        if doc is None or oid not in doc.objects():
            return
        s = doc.session
        self._run(_change_label(doc.objects()[oid], field, value), [],
                  lambda: s.update_object(oid, **{field: value}))

    def recolor_object(self, oid: int) -> None:
        info = self.w.doc.objects().get(oid)
        if info is None:
            return
        color = QColorDialog.getColor(QColor(*info.color), self.w, f"Colour of {info.name}")
        if color.isValid():
            self.change_object(oid, "color", (color.red(), color.green(), color.blue()))

    def toggle_object_flag(self, field: str) -> None:
        doc = self.w.doc
        info = doc.objects().get(doc.selected) if doc else None
        if info is not None:
            self.change_object(info.id, field, not getattr(info, field))

    # -- undo ------------------------------------------------------------------------------------
    def undo(self) -> None:
        self._step_history(-1)

    def redo(self) -> None:
        self._step_history(1)

    def _step_history(self, direction: int) -> None:
        """Undo or redo one step and say which."""
        doc = self.w.doc
        if doc is None or self.w.session_busy():
            return
        stack = doc.undo_stack
        if not (stack.canUndo() if direction < 0 else stack.canRedo()):
            self.w.say("Nothing to undo." if direction < 0 else "Nothing to redo.", STATUS_MS)
            return
        if direction < 0:
            text, done = stack.undoText(), "Undone"
            stack.undo()
        else:
            text, done = stack.redoText(), "Redone"
            stack.redo()
        self.w.say(f"{done}: {text}", STATUS_MS)


def _change_label(info, field: str, value) -> str:
    """An undo step's name for changing one field of an object: "Rename bunny to rabbit"."""
    if field == "name":
        return f"Rename {info.name} to {value}"
    if field == "category":
        return f"Set category of {info.name} to {value}"
    if field == "color":
        return f"Recolour {info.name}"
    if field == "hidden":
        return f"{'Hide' if value else 'Show'} {info.name}"
    return f"{'Lock' if value else 'Unlock'} {info.name}"
