"""File handling: new/open/save/save as/recent projects, autosave, crash recovery, close."""

import sys
import time
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QFileDialog, QMessageBox

from annotator import autosave, opening, settings
from annotator.document import Document
from annotator.workers import CallJob, describe

VIDEO_FILTER = "Videos (*.mp4 *.avi *.mov *.mkv *.m4v *.webm);;All files (*)"


class FilesMixin:
    interactive = True   # False (screenshot mode): errors go to stderr instead of message boxes

    def show_error(self, title: str, text: str) -> None:
        self.last_error = text
        if self.interactive:
            QMessageBox.critical(self, title, text)
        else:
            print(f"{title}: {text}", file=sys.stderr)

    autosave_job = None

    def _init_files(self) -> None:
        self.setAcceptDrops(True)
        self._autosave_timer = QTimer(self)
        self._autosave_timer.timeout.connect(self.autosave_now)
        seconds = int(settings.get("autosave/seconds", 60))
        if seconds > 0:
            self._autosave_timer.start(seconds * 1000)

    # -- opening ---------------------------------------------------------------------------------
    def load_session(self, session, touched=()) -> None:
        """Show a freshly opened Session (the caller made sure the old one may be dropped)."""
        self.stop_jobs()
        old = self.doc
        self.set_document(Document(session, touched=touched))
        if old is not None:
            old.close()
            old.deleteLater()
        settings.add_recent(self.doc.folder)
        self.start_embedding()

    def open_path(self, path) -> bool:
        """Open a project folder, video file or frame folder; errors are shown, never raised."""
        if not self.maybe_save():
            return False
        try:
            session = opening.open_any(path)
        except Exception as exc:
            self.show_error("Cannot open", describe(exc))
            return False
        if self.doc is not None:
            self._discard_autosave(self.doc.folder)
        self.load_session(session)
        return True

    def new_project(self) -> None:
        box = QMessageBox(QMessageBox.Icon.Question, "New project", "Create the project from:", parent=self)
        video = box.addButton("Video file…", QMessageBox.ButtonRole.AcceptRole)
        folder = box.addButton("Folder of frames…", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        if box.clickedButton() is video:
            media, _ = QFileDialog.getOpenFileName(self, "Choose a video", "", VIDEO_FILTER)
        elif box.clickedButton() is folder:
            media = QFileDialog.getExistingDirectory(self, "Choose the folder of frames")
        else:
            return
        if not media:
            return
        suggestion = opening.project_folder_for(Path(media))
        target, _ = QFileDialog.getSaveFileName(self, "New project folder", str(suggestion), "Project folder (*)",
                                                options=QFileDialog.Option.DontConfirmOverwrite)
        if not target:
            return
        if not self.maybe_save():
            return
        try:
            session = opening.session_class().create(Path(target), Path(media))
        except Exception as exc:
            self.show_error("Cannot create the project", describe(exc))
            return
        self.load_session(session)

    def open_project(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open project folder (or a folder of frames)")
        if path:
            self.open_path(path)

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        for path in settings.recent_projects():
            self.recent_menu.addAction(path, lambda p=path: self.open_path(p))
        if self.recent_menu.isEmpty():
            self.recent_menu.addAction("(none)").setEnabled(False)

    # -- saving ----------------------------------------------------------------------------------
    def save(self) -> bool:
        """Save in place; on failure show the engine's message (the previous save stays intact)."""
        if self.doc is None:
            return False
        try:
            start = time.perf_counter()
            with self.doc.lock:
                self.doc.session.save()
        except Exception as exc:
            self.show_error("Save failed", f"{describe(exc)}\n\nThe previously saved project is unchanged.")
            return False
        self.doc.mark_saved()
        self._discard_autosave(self.doc.folder)
        self._update_title()
        self.statusBar().showMessage(f"Saved {self.doc.folder} ({1000 * (time.perf_counter() - start):.0f} ms)",
                                     4000)
        return True

    def save_as(self) -> bool:
        if self.doc is None:
            return False
        target, _ = QFileDialog.getSaveFileName(self, "Save project as (new folder)",
                                                str(self.doc.folder.with_name(self.doc.folder.name + "-copy")),
                                                "Project folder (*)", options=QFileDialog.Option.DontConfirmOverwrite)
        return bool(target) and self.save_to(Path(target))

    def save_to(self, folder: Path) -> bool:
        """Write the whole project to a new folder, which becomes the open project's folder."""
        old = self.doc.folder
        try:
            with self.doc.lock:
                self.doc.session.save_as(folder)
        except Exception as exc:
            self.show_error("Save As failed", describe(exc))
            return False
        self._discard_autosave(old)
        self.doc.mark_saved()
        settings.add_recent(self.doc.folder)
        self._update_title()
        return True

    def maybe_save(self) -> bool:
        """Ask about unsaved changes; True when it is fine to drop the current project."""
        if self.doc is None or not self.doc.is_dirty() or not self.interactive:
            return True
        answer = QMessageBox.question(
            self, "Unsaved changes", f"Save the changes to {self.doc.folder.name} first?",
            QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
            | QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Save)
        if answer == QMessageBox.StandardButton.Save:
            return self.save()
        if answer == QMessageBox.StandardButton.Discard:
            self._discard_autosave(self.doc.folder)
            return True
        return False

    # -- autosave and recovery -------------------------------------------------------------------
    def autosave_now(self) -> bool:
        """Start writing the unsaved state to the autosave slot on a worker; False when skipped
        (nothing to save, or a job owns the session, or an autosave is still running)."""
        doc = self.doc
        if doc is None or not doc.is_dirty() or self._owns_session() or self.autosave_job is not None:
            return False
        if getattr(self, "export_dialog", None) is not None and self.export_dialog.job is not None:
            return False
        frames, session, folder = set(doc.touched), doc.session, doc.folder
        job = CallJob("autosave", None, lambda _p: autosave.write(session, folder, frames), parent=self,
                      hold_lock=False)

        def ended(status, error):
            self.autosave_job = None
            job.wait()
            if status == "failed":
                self.statusBar().showMessage(f"Autosave failed: {error}", 8000)
            else:
                self.statusBar().showMessage("Autosaved.", 2000)

        job.ended.connect(ended)
        self.autosave_job = job
        job.start()
        return True

    def _discard_autosave(self, project) -> None:
        """Drop the project's autosave (after a save, a clean close, or 'discard'), never mid-write."""
        if self.autosave_job is not None:
            self.autosave_job.wait()
        autosave.discard(project)

    def offer_recovery(self) -> bool:
        """After a crash: offer each orphaned autosave; True when one was recovered and opened."""
        recovered = False
        for slot in autosave.orphans():
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(slot.saved_at))
            answer = QMessageBox.question(
                self, "Recover unsaved work?",
                f"VOS Annotator did not close normally.\nUnsaved changes to\n{slot.project}\n"
                f"were autosaved at {when}. Recover them?",
                QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Discard, QMessageBox.StandardButton.Yes)
            if answer == QMessageBox.StandardButton.Yes and not recovered:
                try:
                    session = autosave.recover(slot, opening.open_any)
                except Exception as exc:
                    self.show_error("Recovery failed", describe(exc))
                    continue
                self.load_session(session, touched=session.masked_frames())
                self.statusBar().showMessage("Recovered the autosaved work: review it and save.", 10000)
                recovered = True
            self._discard_autosave(slot.project)
        return recovered

    def closeEvent(self, event) -> None:
        if not self.maybe_save():
            event.ignore()
            return
        self.stop_jobs()
        if hasattr(self, "export_dialog") and self.export_dialog is not None:
            self.export_dialog.reject()
        if self.doc is not None:
            self._discard_autosave(self.doc.folder)
            self.detach_document()
            self.doc.close()
        self._autosave_timer.stop()
        if self.interactive:
            settings.put("window/geometry", self.saveGeometry())
            settings.put("window/state", self.saveState())
        event.accept()

    def restore_layout(self) -> None:
        """Window size, position and dock layout from the last session."""
        geometry, state = settings.get("window/geometry"), settings.get("window/state")
        if geometry is not None:
            self.restoreGeometry(geometry)
        if state is not None:
            self.restoreState(state)

    # -- drag and drop: a project folder, video file or frame folder opens ------------------------
    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls() and len(event.mimeData().urls()) == 1:
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        path = event.mimeData().urls()[0].toLocalFile()
        if path:
            event.acceptProposedAction()
            QTimer.singleShot(0, lambda: self.open_path(path))
