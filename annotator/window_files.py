"""Files controller: new/open/save/save as/recent projects, export, autosave and crash recovery.

It owns the autosave timer and its worker, and the export dialog.
"""

import time
from pathlib import Path

from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QFileDialog, QMessageBox

from annotator import autosave, opening, settings
from annotator.document import Document
from annotator.export_dialog import ExportDialog
from annotator.workers import CallJob, describe

VIDEO_FILTER = "Videos (*.mp4 *.avi *.mov *.mkv *.m4v *.webm);;All files (*)"


class FilesController(QObject):
    def __init__(self, window):
        super().__init__(window)
        self.w = window
        self.autosave_job: CallJob | None = None
        self.export_dialog: ExportDialog | None = None
        self._autosave_timer = QTimer(self)
        self._autosave_timer.timeout.connect(self.autosave_now)
        seconds = int(settings.get("autosave/seconds", 60))
        if seconds > 0:
            self._autosave_timer.start(seconds * 1000)

    # -- opening ---------------------------------------------------------------------------------
    def load_session(self, session, touched=()) -> None:
        """Show a freshly opened Session (the caller made sure the old one may be dropped)."""
        self.w.stop_jobs()
        old = self.w.doc
        self.w.set_document(Document(session, touched=touched))
        if old is not None:
            old.close()
            old.deleteLater()
        settings.add_recent(self.w.doc.folder)
        self.w.jobs.start_embedding()

    def open_path(self, path) -> bool:
        """Open a project folder, video file or frame folder; errors are shown, never raised."""
        if not self.maybe_save():
            return False
        try:
            session = opening.open_any(path)
        except Exception as exc:
            self.w.show_error("Cannot open", describe(exc))
            return False
        if self.w.doc is not None:
            self.discard_autosave(self.w.doc.folder)
        self.load_session(session)
        return True

    def new_project(self) -> None:
        box = QMessageBox(QMessageBox.Icon.Question, "New project", "Create the project from:", parent=self.w)
        video = box.addButton("Video file…", QMessageBox.ButtonRole.AcceptRole)
        folder = box.addButton("Folder of frames…", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        if box.clickedButton() is video:
            media, _ = QFileDialog.getOpenFileName(self.w, "Choose a video", "", VIDEO_FILTER)
        elif box.clickedButton() is folder:
            media = QFileDialog.getExistingDirectory(self.w, "Choose the folder of frames")
        else:
            return
        if not media:
            return
        suggestion = opening.project_folder_for(Path(media))
        target, _ = QFileDialog.getSaveFileName(self.w, "New project folder", str(suggestion), "Project folder (*)",
                                                options=QFileDialog.Option.DontConfirmOverwrite)
        if not target or not self.maybe_save():
            return
        try:
            session = opening.session_class().create(Path(target), Path(media))
        except Exception as exc:
            self.w.show_error("Cannot create the project", describe(exc))
            return
        self.load_session(session)

    def open_project(self) -> None:
        path = QFileDialog.getExistingDirectory(self.w, "Open project folder (or a folder of frames)")
        if path:
            self.open_path(path)

    def fill_recent_menu(self) -> None:
        menu = self.w.recent_menu
        menu.clear()
        for path in settings.recent_projects():
            menu.addAction(path, lambda p=path: self.open_path(p))
        if menu.isEmpty():
            menu.addAction("(none)").setEnabled(False)

    # -- saving ----------------------------------------------------------------------------------
    def save(self) -> bool:
        """Save in place; on failure show the engine's message (the previous save stays intact)."""
        doc = self.w.doc
        if doc is None:
            return False
        try:
            start = time.perf_counter()
            with doc.lock:
                doc.session.save()
        except Exception as exc:
            self.w.show_error("Save failed", f"{describe(exc)}\n\nThe previously saved project is unchanged.")
            return False
        doc.mark_saved()
        self.discard_autosave(doc.folder)
        self.w.update_title()
        self.w.say(f"Saved {doc.folder} ({1000 * (time.perf_counter() - start):.0f} ms)", 4000)
        return True

    def save_as(self) -> bool:
        doc = self.w.doc
        if doc is None:
            return False
        target, _ = QFileDialog.getSaveFileName(self.w, "Save project as (new folder)",
                                                str(doc.folder.with_name(doc.folder.name + "-copy")),
                                                "Project folder (*)", options=QFileDialog.Option.DontConfirmOverwrite)
        return bool(target) and self.save_to(Path(target))

    def save_to(self, folder: Path) -> bool:
        """Write the whole project to a new folder, which becomes the open project's folder
        (the confidence hints and the embedding cache go with it)."""
        doc = self.w.doc
        old = doc.folder
        try:
            with doc.lock:
                doc.session.save_as(folder)
        except Exception as exc:
            self.w.show_error("Save As failed", describe(exc))
            return False
        self.discard_autosave(old)
        doc.mark_saved()
        settings.add_recent(doc.folder)
        self.w.update_title()
        return True

    def maybe_save(self) -> bool:
        """Ask about unsaved changes; True when it is fine to drop the current project."""
        doc = self.w.doc
        if doc is None or not doc.is_dirty() or not self.w.interactive:
            return True
        answer = QMessageBox.question(
            self.w, "Unsaved changes", f"Save the changes to {doc.folder.name} first?",
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
            | QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Save)
        if answer == QMessageBox.StandardButton.Save:
            return self.save()
        if answer == QMessageBox.StandardButton.Discard:
            self.discard_autosave(doc.folder)
            return True
        return False

    # -- export ----------------------------------------------------------------------------------
    def export(self) -> None:
        doc = self.w.doc
        if doc is None or self.w.jobs.propagating():
            return
        s = doc.session
        dialog = ExportDialog(lambda out, fmt, progress: s.export(out, fmt, progress=progress), doc.lock,
                              doc.folder / "export", doc.video.native_size, self.w)
        dialog.finished_export.connect(lambda status, msg: self.w.say(msg, 8000))
        self.export_dialog = dialog
        dialog.open()

    def exporting(self) -> bool:
        return self.export_dialog is not None and self.export_dialog.job is not None

    # -- autosave and recovery -------------------------------------------------------------------
    def autosave_now(self) -> bool:
        """Start writing the unsaved state to the autosave slot on a worker; False when skipped
        (nothing to save, a job owns the session, an export or an autosave is still running)."""
        doc = self.w.doc
        if doc is None or not doc.is_dirty() or self.w.session_busy() or self.autosave_job is not None \
                or self.exporting():
            return False
        frames, session, folder = set(doc.touched), doc.session, doc.folder
        job = CallJob("autosave", None, lambda _p: autosave.write(session, folder, frames), parent=self,
                      hold_lock=False)

        def ended(status, error):
            self.autosave_job = None
            job.wait()
            if status == "failed":
                self.w.say(f"Autosave failed: {error}", 8000)
            else:
                self.w.say("Autosaved.", 2000)

        job.ended.connect(ended)
        self.autosave_job = job
        job.start()
        return True

    def wait_autosave(self) -> None:
        if self.autosave_job is not None:
            self.autosave_job.wait()

    def discard_autosave(self, project) -> None:
        """Drop the project's autosave (after a save, a clean close, or 'discard'), never mid-write."""
        self.wait_autosave()
        autosave.discard(project)

    def offer_recovery(self) -> bool:
        """After a crash: offer each orphaned autosave; True when one was recovered and opened.
        Files in the autosave folder that cannot be read are reported once and left in place."""
        orphans, problems = autosave.scan()
        new_problems = autosave.not_yet_reported(problems)
        if new_problems:
            self.w.show_warning(
                "Autosave files not loaded",
                "These files in the autosave folder are not autosaves this version can read, so they were "
                "not opened. They are left in place; delete them when you no longer need them.\n\n"
                + "\n".join(str(e) for e in new_problems))
        recovered = False
        for slot in orphans:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(slot.saved_at))
            answer = QMessageBox.question(
                self.w, "Recover unsaved work?",
                f"VOS Annotator did not close normally.\nUnsaved changes to\n{slot.project}\n"
                f"were autosaved at {when}. Recover them?",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Discard, QMessageBox.StandardButton.Yes)
            if answer == QMessageBox.StandardButton.Yes and not recovered:
                try:
                    session = autosave.recover(slot, opening.open_any)
                except Exception as exc:
                    self.w.show_error("Recovery failed", f"{describe(exc)}\n\nThe autosave file is left in place.")
                    continue
                self.load_session(session, touched=session.masked_frames())
                self.w.say("Recovered the autosaved work: review it and save.", 10000)
                recovered = True
            self.discard_autosave(slot.project)
        return recovered

    def close_project(self) -> None:
        """On a clean close: stop exporting and autosaving, drop the autosave of the open project."""
        if self.export_dialog is not None:
            self.export_dialog.reject()
        if self.w.doc is not None:
            self.discard_autosave(self.w.doc.folder)
        self._autosave_timer.stop()
