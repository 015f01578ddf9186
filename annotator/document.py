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


ASYNC_RESTORE_FRAMES = 16   # edits and undo/redo touching more frames than this run off the GUI thread
UNDO_LIMIT = 200            # steps kept; snapshots hold compressed masks (a long propagation: tens of MB)


class Document(QObject):
    frameChanged = Signal(int)
    masksChanged = Signal(list)          # frame indices whose masks changed
    objectsChanged = Signal()
    selectionChanged = Signal(object)    # object id or None
    statsChanged = Signal()
    timingReported = Signal(str)
    runner = None   # set by the window: runner(fn, done, big) runs fn() (on a worker if big), then done() here
    attached = False   # set by the window while its views listen to this document

    def __init__(self, session, parent=None, touched=()):
        super().__init__(parent)
        self.session = session
        self.touched: set[int] = set(touched)   # frames changed since the last save (for autosave)
        self.lock = threading.RLock()
        self.undo_stack = QUndoStack(self)
        self.undo_stack.setUndoLimit(UNDO_LIMIT)
        self.n = len(session.video)
        self.frame = 0
        self.selected: int | None = next(iter(self.objects()), None)
        self.presence = np.zeros((self.n, 256), bool)      # presence[t, id]: object id has pixels in frame t
        self.confidence = np.full((self.n, 256), np.nan, np.float32)   # confidence[t, id]; NaN = unknown
        self.embedded = np.zeros(self.n, bool)     # filled by the window from the embedding job
        self._pending: list[int] = list(range(self.n))
        self._scan = QTimer(self, interval=0)
        self._scan.timeout.connect(self._scan_some)
        self._scan.start()

    # -- reads -----------------------------------------------------------------------------------
    @property
    def folder(self) -> Path:
        return self.session.folder

    @property
    def video(self):
        return self.session.video

    def objects(self) -> dict:
        return dict(self.session.objects)

    def keyframes(self) -> dict[int, set[int]]:
        return self.session.keyframes()

    def keyframe_info(self) -> dict[int, dict[int, str]]:
        """{object id: {keyframe: why it is one}} (the engine's words: annotated, corrected, marked, absent)."""
        return self.session.keyframe_info()

    def mask(self, t: int) -> np.ndarray:
        """(H, W) uint8 ids at working size."""
        return self.session.mask(t)

    def prompts_on(self, t: int) -> list:
        """The engine's live clicks and scribbles on frame t (engine Prompt, with its id), oldest first."""
        return self.session.prompts(t)

    def frame_rgb(self, t: int) -> np.ndarray:
        return self.session.video.frame(t)

    def least_sure(self, oid: int | None = None, n: int = 50) -> list[int]:
        """Frames most likely wrong, worst first: the engine's ranking over all objects, or one object's."""
        return self.session.frames_most_likely_wrong(n, None if oid is None else [oid])

    def frame_confidence(self, t: int, oid: int | None = None) -> float:
        """One object's confidence on frame t, or the lowest of all objects'; NaN = unknown."""
        row = self.confidence[t, [o for o in self.session.objects if o < 256] if oid is None else [oid]]
        return float(np.nanmin(row)) if np.isfinite(row).any() else float("nan")

    def has_propagation(self) -> bool:
        """True when some frame that is no keyframe holds a mask (something was propagated)."""
        keys = set().union(*self.keyframes().values())
        return any(t not in keys for t in self.session.masked_frames())

    def is_dirty(self) -> bool:
        return not self.undo_stack.isClean() or self.session.dirty

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
    def apply(self, label: str, frames, fn):
        """Run `fn()` on the session under the lock as one undoable edit touching `frames`."""
        return self.record(label, self.run_edit(sorted(set(frames)), fn))

    def run_edit(self, frames, fn) -> dict:
        """Snapshot, run, snapshot (under the lock; callable from a worker thread)."""
        timing = self.session.last_timing
        with self.lock:
            before = self.session.snapshot(frames)
            seen = dict(timing)
            start = time.perf_counter()
            result = fn()
            ms = 1000 * (time.perf_counter() - start)
            after = self.session.snapshot(frames)
            stats = self.compute_stats(frames)
        engine_ms = [(k[:-3], v) for k, v in timing.items() if k.endswith("_ms") and seen.get(k) != v]
        return dict(frames=frames, before=before, after=after, result=result, ms=ms, engine_ms=engine_ms,
                    stats=stats)

    def record(self, label: str, edit: dict):
        """Push the undo command for an edit made by `run_edit` and tell the views."""
        select_before = self.selected
        new_id = getattr(edit["result"], "id", None)   # add_object returns the new ObjectInfo
        select_after = new_id if new_id in self.session.objects else select_before
        self.undo_stack.push(SnapshotCommand(self, label, edit["before"], edit["after"], edit["frames"],
                                             select_after, select_before))
        if edit["engine_ms"]:
            self.timingReported.emit(", ".join(f"{k} {v:.0f} ms" for k, v in edit["engine_ms"]))
        else:
            self.timingReported.emit(f"{label.lower()} {edit['ms']:.0f} ms")
        self._changed(edit["frames"], objects=True, stats=edit["stats"])
        return edit["result"]

    def push_done(self, label: str, before, after, frames) -> None:
        """Record an edit a worker already made (a propagation), with its before/after snapshots."""
        frames = sorted(set(frames))
        self.undo_stack.push(SnapshotCommand(self, label, before, after, frames, self.selected, self.selected))
        self._changed(frames, objects=False, stats=False)   # the stream already updated them

    def restore(self, snapshot, frames, select=None) -> None:
        """Put a snapshot back (undo/redo); big ones (a long propagation) go to the window's worker."""
        out = {}

        def work():   # on a worker for big snapshots: restoring and re-counting take a while
            with self.lock:
                self.session.restore(snapshot)
                out["stats"] = self.compute_stats(frames)

        def done():
            self._restored(frames, select, out.get("stats"))

        if self.runner is None:
            work()
            done()
        else:   # the runner keeps undo steps in order when the history panel jumps several at once
            self.runner(work, done, len(frames) > ASYNC_RESTORE_FRAMES)

    def _restored(self, frames, select, stats) -> None:
        if select is not None and select in self.session.objects:
            self.selected = select
        elif self.selected not in self.session.objects:
            self.selected = next(iter(self.session.objects), None)
        self._changed(frames, objects=True, stats=stats)
        self.selectionChanged.emit(self.selected)

    def mark_saved(self) -> None:
        self.undo_stack.setClean()
        self.touched.clear()

    def close(self) -> None:
        self._scan.stop()
        self.session.close()

    def _changed(self, frames, objects: bool, stats=None) -> None:
        """Tell the views; `stats` precomputed by compute_stats, None = compute here, False = skip."""
        self.touched.update(frames)
        if stats is None:
            self.update_stats(frames)
        elif stats is not False:
            self.apply_stats(stats)
        if objects:
            self.objectsChanged.emit()
        self.masksChanged.emit(list(frames))

    # -- timeline statistics ---------------------------------------------------------------------
    def update_stats(self, frames, emit: bool = True, ids_of=None) -> None:
        """Refresh presence/confidence of `frames`; `ids_of` {t: ids} spares decoding known masks."""
        self.apply_stats(self.compute_stats(frames, ids_of), emit)

    def compute_stats(self, frames, ids_of=None) -> tuple:
        """(frames, (k, 256) bool presence, (k, 256) float32 confidence); read-only, any thread."""
        frames, known = list(frames), ids_of or {}
        masked = set(self.session.masked_frames()) if any(t not in known for t in frames) else ()
        presence = np.zeros((len(frames), 256), bool)
        conf = np.full((len(frames), 256), np.nan, np.float32)
        for i, t in enumerate(frames):
            ids = known.get(t)
            if ids is None and t in masked:
                ids = self.session.mask(t)
            if ids is not None:
                presence[i] = np.bincount(ids.ravel(), minlength=256)[:256] > 0
            try:
                values = self.session.confidence(t)
            except Exception:
                values = {}
            for k, v in values.items():
                if k in self.session.objects and v is not None and 0 <= k < 256:
                    conf[i, k] = v
        return frames, presence, conf

    def apply_stats(self, stats, emit: bool = True) -> None:
        frames, presence, conf = stats
        if frames:
            self.presence[frames] = presence
            self.confidence[frames] = conf
        if emit:
            self.statsChanged.emit()

    def stats_ready(self) -> bool:
        return not self._pending

    def _scan_some(self) -> None:
        batch, self._pending = self._pending[:16], self._pending[16:]
        self.update_stats(batch, emit=not self._pending)
        if not self._pending:
            self._scan.stop()

    def coverage(self) -> dict[int, np.ndarray]:
        return {oid: self.presence[:, oid] for oid in self.session.objects if oid < 256}
