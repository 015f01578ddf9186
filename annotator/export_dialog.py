"""Export dialog: pick formats and a folder; the export runs in a worker with progress and cancel.

Each format goes to its own sub-folder of the chosen folder, at the video's native resolution.
"""

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QCheckBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout,
                               QGroupBox, QHBoxLayout, QLabel, QLineEdit, QProgressBar, QPushButton,
                               QVBoxLayout)

from annotator.workers import CallJob


class ExportDialog(QDialog):
    finished_export = Signal(str, str)    # status, message

    def __init__(self, export_fn, lock, default_dir: Path, native_size, parent=None):
        """`export_fn(out_dir, fmt, progress)` does one format; `lock` guards the session."""
        super().__init__(parent)
        self.setWindowTitle("Export annotations")
        self.export_fn, self.lock = export_fn, lock
        self.job: CallJob | None = None
        self.folder = QLineEdit(str(default_dir))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.folder)
        row.addWidget(browse)
        self.checks: dict[str, QCheckBox] = {}
        box = QGroupBox("Formats")
        box_layout = QVBoxLayout(box)
        from engine import Session  # late: the engine loads torch and faiss
        for fmt, text in Session.export_formats():
            self.checks[fmt] = QCheckBox(text)
            self.checks[fmt].setChecked(fmt == "davis")
            box_layout.addWidget(self.checks[fmt])
        w, h = native_size
        form = QFormLayout()
        form.addRow("Folder:", row)
        form.addRow("Resolution:", QLabel(f"native, {w} × {h}"))
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.progress.setValue(0)
        self.status = QLabel("Ready.")
        self.buttons = QDialogButtonBox()
        self.export_button = self.buttons.addButton("Export", QDialogButtonBox.ButtonRole.AcceptRole)
        self.cancel_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.export_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self._cancel_or_close)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(box)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.buttons)
        self.resize(520, 360)

    def formats(self) -> list[str]:
        return [fmt for fmt, cb in self.checks.items() if cb.isChecked()]

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Export to folder", self.folder.text())
        if path:
            self.folder.setText(path)

    def start(self) -> None:
        formats, out = self.formats(), Path(self.folder.text()).expanduser()
        if not formats:
            self.status.setText("Choose at least one format.")
            return
        n = len(formats)

        def run(progress):
            for i, fmt in enumerate(formats):
                def sub(done, total=None, *_rest, i=i):
                    frac = (done / total) if total else 0.0
                    progress(int(1000 * (i + frac) / n), 1000)
                sub(0, 1)
                self.export_fn(out / fmt, fmt, sub)
            progress(1000, 1000)
            return out

        self.job = CallJob("export", self.lock, run, parent=self)
        self.job.progress.connect(lambda d, t, _i: self.progress.setValue(int(100 * d / max(1, t))))
        self.job.ended.connect(self._ended)
        self.export_button.setEnabled(False)
        self.status.setText(f"Exporting {', '.join(formats)} to {out} …")
        self.job.start()

    def _ended(self, status: str, error: str) -> None:
        self.export_button.setEnabled(True)
        self.cancel_button.setText("Close")
        if status == "finished":
            self.progress.setValue(100)
            msg = f"Exported to {self.folder.text()}"
        elif status == "cancelled":
            msg = "Export cancelled; files already written are left in place."
        else:
            msg = f"Export failed: {error}"
        self.status.setText(msg)
        self.job.wait()
        self.job = None
        self.finished_export.emit(status, msg)

    def _cancel_or_close(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.status.setText("Cancelling…")
        else:
            self.reject()

    def reject(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.job.wait()
        super().reject()
