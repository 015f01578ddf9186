"""Edits: canvas gestures and object operations become undoable Session calls via the Document."""

from PySide6.QtGui import QColor
from PySide6.QtWidgets import QColorDialog

from annotator import document
from annotator.workers import CallJob, describe

STATUS_MS = 6000


class EditsMixin:
    # -- guards ------------------------------------------------------------------------------------
    def _edit_target(self):
        """(frame, object id) the tools act on, or None with a status message saying why not."""
        doc = self.doc
        if doc is None:
            return None
        if self._owns_session() or getattr(self, "edit_job", None) is not None:
            self.statusBar().showMessage("Wait for the running job to finish (or cancel it with Esc).", STATUS_MS)
            return None
        if not doc.objects():
            self.add_object()          # a new project: the first click starts object 1
        info = doc.objects().get(doc.selected)
        if info is None:
            self.statusBar().showMessage("Select an object first (1-9, or click its row).", STATUS_MS)
            return None
        if info.locked:
            self.statusBar().showMessage(f"{info.name} is locked; unlock it to edit (Shift+L).", STATUS_MS)
            return None
        return doc.frame, info.id

    def _run_edit(self, label, frames, fn, embed_frame=None):
        """Apply an edit now; one touching many frames (removing an object) or a click/scribble on
        a frame without embedding yet (the engine embeds it first) runs in a worker instead."""
        big = len(frames) > document.ASYNC_RESTORE_FRAMES
        if big or (embed_frame is not None and not self.doc.session.is_embedded(embed_frame)):
            return self._run_edit_async(label, frames, fn, embed_frame)
        try:
            return self.doc.apply(label, frames, fn)
        except Exception as exc:  # engine refused (locked object, bad input): say so, keep going
            self.statusBar().showMessage(f"{label} failed: {describe(exc)}", STATUS_MS)
            return None

    def run_in_background(self, fn, done) -> None:
        """Document.runner: a big undo/redo restores on a worker; edits wait until it is back."""
        doc = self.doc
        job = CallJob("restore", doc.lock, lambda _progress: fn(), parent=self, hold_lock=False)

        def ended(status, error):
            self.edit_job = None
            job.wait()
            if status == "failed":
                self.show_error("Undo/redo failed", error)
            if self.doc is doc:
                done()
            self._sync_enabled()

        job.ended.connect(ended)
        self.edit_job = job
        self.statusBar().showMessage("Restoring frames…", STATUS_MS)
        self._sync_enabled()
        job.start()

    def _run_edit_async(self, label, frames, fn, t) -> None:
        doc = self.doc
        job = CallJob("edit", None, lambda _progress: doc.run_edit(sorted(set(frames)), fn), parent=self)

        def done(status, error):
            self.edit_job = None
            job.wait()
            if status == "finished" and self.doc is doc:
                doc.record(label, job.result)
            elif status == "failed":
                self.statusBar().showMessage(f"{label} failed: {error}", STATUS_MS)
            self._sync_enabled()

        job.ended.connect(done)
        self.edit_job = job
        self.statusBar().showMessage(f"{label}…" if t is None else
                                     f"Computing frame {t}'s embedding for the {label.lower()}…", STATUS_MS)
        self._sync_enabled()
        job.start()

    # -- canvas gestures -------------------------------------------------------------------------
    def on_canvas_click(self, x: int, y: int, positive: bool) -> None:
        target = self._edit_target()
        if target:
            t, oid = target
            s = self.doc.session
            self._run_edit("Positive click" if positive else "Negative click", [t],
                           lambda: s.click(t, oid, x, y, positive=positive), embed_frame=t)

    def on_canvas_stroke(self, kind: str, points: list, positive: bool) -> None:
        target = self._edit_target()
        if not target or not points:
            return
        t, oid = target
        s, radius = self.doc.session, self.brush_spin.value()
        if kind == "scribble":
            label = "Positive scribble" if positive else "Negative scribble"
            self._run_edit(label, [t], lambda: s.scribble(t, oid, points, positive=positive), embed_frame=t)
        else:
            label = "Brush" if positive else "Eraser"
            self._run_edit(label, [t], lambda: s.brush(t, oid, points, radius, erase=not positive))

    def on_canvas_polygon(self, points: list) -> None:
        target = self._edit_target()
        if target:
            t, oid = target
            s = self.doc.session
            self._run_edit("Polygon fill", [t], lambda: s.polygon(t, oid, points))

    # -- objects -----------------------------------------------------------------------------------
    def select_object(self, oid) -> None:
        if self.doc is not None:
            self.doc.select(oid)

    def select_object_number(self, number: int) -> None:
        ids = list(self.doc.objects())
        if 1 <= number <= len(ids):
            self.doc.select(ids[number - 1])

    def add_object(self) -> None:
        if self.doc is None:
            return
        info = self._run_edit("Add object", [], self.doc.session.add_object)
        if info is not None:
            self.doc.select(info.id)

    def remove_selected_object(self) -> None:
        if self.doc is not None and self.doc.selected is not None:
            self.remove_object(self.doc.selected)

    def remove_object(self, oid: int) -> None:
        doc = self.doc
        frames = doc.session.masked_frames()
        if doc.stats_ready():   # only the frames the object is on need saving for undo
            frames = [t for t in frames if doc.presence[t, oid]]
        name = doc.objects()[oid].name
        self._run_edit(f"Remove {name}", frames, lambda: doc.session.remove_object(oid))

    def change_object(self, oid: int, field: str, value) -> None:
        if self.doc is None or oid not in self.doc.objects():
            return
        s = self.doc.session
        labels = {"name": "Rename", "category": "Set category", "color": "Recolour",
                  "hidden": "Show/hide", "locked": "Lock/unlock"}
        self._run_edit(f"{labels[field]} object", [], lambda: s.update_object(oid, **{field: value}))

    def recolor_object(self, oid: int) -> None:
        info = self.doc.objects().get(oid)
        if info is None:
            return
        color = QColorDialog.getColor(QColor(*info.color), self, f"Colour of {info.name}")
        if color.isValid():
            self.change_object(oid, "color", (color.red(), color.green(), color.blue()))

    def toggle_object_flag(self, field: str) -> None:
        info = self.doc.objects().get(self.doc.selected) if self.doc else None
        if info is not None:
            self.change_object(info.id, field, not getattr(info, field))

    def undo(self) -> None:
        if self.doc is not None and not self._owns_session():
            self.doc.undo_stack.undo()

    def redo(self) -> None:
        if self.doc is not None and not self._owns_session():
            self.doc.undo_stack.redo()

    def _owns_session(self) -> bool:
        return (self.job is not None and self.job.name in ("propagate", "export")) \
            or getattr(self, "edit_job", None) is not None
