"""The open project as a Qt model: wraps the engine Session, owns the undo stack and the lock.

Views listen to its signals (napari style: the model emits, views redraw). Every mutation of the
Session from the GUI thread goes through `apply`, which holds `lock` (shared with the workers),
snapshots the touched frames before and after, and pushes one undo command.
Per-frame statistics for the timeline (which objects are present, the engine's confidence)
are kept in small arrays and filled incrementally so opening a long video stays instant.
"""

import threading
import time
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QUndoStack

from annotator.undo import SnapshotCommand


class Document(QObject):
    frameChanged = Signal(int)
    masksChanged = Signal(list)          # frame indices whose masks changed
    objectsChanged = Signal()
    selectionChanged = Signal(object)    # object id or None
    statsChanged = Signal()
    timingReported = Signal(str)

    def __init__(self, session, parent=None):
        super().__init__(parent)
        self.session = session
        self.lock = threading.RLock()
        self.undo_stack = QUndoStack(self)
        self.n = len(session.video)
        self.frame = 0
        self.selected: int | None = next(iter(self.objects()), None)
        self.presence = np.zeros((self.n, 256), bool)      # presence[t, id]: object id has pixels in frame t
        self.confidence = np.full(self.n, np.nan, np.float32)
        self._pending: list[int] = list(range(self.n))
        self._scan = QTimer(self, interval=0)
        self._scan.timeout.connect(self._scan_some)
        self._scan.start()

    # -- reads -----------------------------------------------------------------------------------
    @property
    def folder(self) -> Path:
        return Path(self.session.project.folder)

    @property
    def video(self):
        return self.session.video

    def objects(self) -> dict:
        return dict(self.session.objects)

    def keyframes(self) -> dict[int, set[int]]:
        return {k: set(v) for k, v in self.session.project.keyframes.items()}

    def mask(self, t: int) -> np.ndarray:
        """(H, W) uint8 ids at working size."""
        return self.session.mask(t)

    def frame_rgb(self, t: int) -> np.ndarray:
        return self.session.video.frame(t)

    def has_propagation(self) -> bool:
        """True when some frame that is no keyframe holds a mask (something was propagated)."""
        keys = set().union(*self.keyframes().values()) if self.keyframes() else set()
        return any(t not in keys for t in self.session.project.masks.frames())

    def is_dirty(self) -> bool:
        return not self.undo_stack.isClean() or bool(self.session.project.dirty)

    # -- navigation ------------------------------------------------------------------------------
    def set_frame(self, t: int) -> None:
        t = int(min(max(t, 0), self.n - 1))
        if t != self.frame:
            self.frame = t
            self.frameChanged.emit(t)

    def select(self, oid: int | None) -> None:
        if oid is not None and oid not in self.session.objects:
            oid = None
        if oid != self.selected:
            self.selected = oid
            self.selectionChanged.emit(oid)

    # -- edits -----------------------------------------------------------------------------------
    def apply(self, label: str, frames, fn, select_after=None):
        """Run `fn()` on the session under the lock as one undoable edit touching `frames`."""
        frames = sorted(set(frames))
        select_before = self.selected
        with self.lock:
            before = self.session.snapshot(frames)
            start = time.perf_counter()
            result = fn()
            ms = 1000 * (time.perf_counter() - start)
            after = self.session.snapshot(frames)
        self.undo_stack.push(SnapshotCommand(self, label, before, after, frames,
                                             select_after if select_after is not None else select_before,
                                             select_before))
        self.timingReported.emit(f"{label}: {ms:.0f} ms")
        self._changed(frames, objects=True)
        return result

    def push_done(self, label: str, before, frames) -> None:
        """Record an edit a worker already made (a propagation): `before` was taken before it ran."""
        frames = sorted(set(frames))
        with self.lock:
            after = self.session.snapshot(frames)
        self.undo_stack.push(SnapshotCommand(self, label, before, after, frames, self.selected, self.selected))
        self._changed(frames, objects=False)

    def restore(self, snapshot, frames, select=None) -> None:
        with self.lock:
            self.session.restore(snapshot)
        if select is not None and select in self.session.objects:
            self.selected = select
        elif self.selected not in self.session.objects:
            self.selected = next(iter(self.session.objects), None)
        self._changed(frames, objects=True)
        self.selectionChanged.emit(self.selected)

    def _changed(self, frames, objects: bool) -> None:
        self.update_stats(frames)
        if objects:
            self.objectsChanged.emit()
        self.masksChanged.emit(list(frames))

    # -- timeline statistics ---------------------------------------------------------------------
    def update_stats(self, frames, emit: bool = True) -> None:
        masks = self.session.project.masks
        for t in frames:
            if masks.has(t):
                ids = self.session.mask(t)
                self.presence[t] = np.bincount(ids.ravel(), minlength=256)[:256] > 0
            else:
                self.presence[t] = False
            try:
                conf = self.session.confidence(t)
            except Exception:
                conf = {}
            values = [v for k, v in conf.items() if k in self.session.objects and v is not None]
            self.confidence[t] = min(values) if values else np.nan
        if emit:
            self.statsChanged.emit()

    def _scan_some(self) -> None:
        batch, self._pending = self._pending[:16], self._pending[16:]
        self.update_stats(batch, emit=not self._pending)
        if not self._pending:
            self._scan.stop()

    def coverage(self) -> dict[int, np.ndarray]:
        return {oid: self.presence[:, oid] for oid in self.session.objects if oid < 256}
