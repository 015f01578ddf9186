"""Background jobs: engine generators and long calls run on a QThread, reporting through signals.

Every engine step runs under the document's lock, so the GUI thread never mutates the Session
while a worker is inside it. Cancel sets a flag checked between steps; the generator is then
closed (under the lock) so the engine can leave its state consistent.
"""

import contextlib
import threading
import time
import traceback

from PySide6.QtCore import QThread, Signal

from engine.errors import EngineError


class Cancelled(Exception):
    """Raised from a progress callback to stop a long engine call."""


def describe(exc: BaseException) -> str:
    """A message for a person: the engine's own text for engine errors, else type and message."""
    if isinstance(exc, EngineError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class Job(QThread):
    """Base: progress/ended signals, cancel flag, ETA bookkeeping."""
    progress = Signal(int, int, object)   # done, total, item (frame index, (t, ids), ...)
    ended = Signal(str, str)              # status "finished" | "cancelled" | "failed", error message

    def __init__(self, name: str, lock: "threading.RLock | None", total: int = 0, parent=None):
        super().__init__(parent)
        self.setObjectName(name)      # the thread's name in debuggers and profilers
        self.lock = lock if lock is not None else contextlib.nullcontext()
        self.total = total
        self.done = 0
        self.started_at = time.monotonic()
        self._cancel = False
        self.status = "running"

    def cancel(self) -> None:
        self._cancel = True

    @property
    def cancelled(self) -> bool:
        return self._cancel

    def eta_seconds(self) -> float | None:
        if self.done <= 0 or self.total <= 0:
            return None
        elapsed = time.monotonic() - self.started_at
        return elapsed / self.done * max(0, self.total - self.done)

    def _finish(self, status: str, error: str = "") -> None:
        self.status = status
        self.ended.emit(status, error)


class GeneratorJob(Job):
    """Iterates `make_gen(job)` (an engine generator) and emits one progress signal per item.

    `make_gen` runs on the worker thread (it may load models or count work and set job.total).
    """

    def __init__(self, name, lock, make_gen, total, parent=None, finish=None):
        super().__init__(name, lock, total, parent)
        self.make_gen = make_gen
        self.finish = finish          # finish(job): runs on the worker, under the lock, after the last step
        self.seen: list[int] = []     # frame index of every item, recorded on the worker

    def run(self) -> None:
        self.started_at = time.monotonic()
        gen = None
        status, error = "finished", ""
        try:
            with self.lock:
                gen = self.make_gen(self)
            while not self._cancel:
                with self.lock:
                    try:
                        item = next(gen)
                    except StopIteration:
                        break
                self.done += 1
                self.seen.append(int(item[0] if isinstance(item, tuple) else item))
                self.progress.emit(self.done, self.total, item)
            if self._cancel:
                status = "cancelled"
        except Exception as exc:  # reported to the user, the thread must not die silently
            traceback.print_exc()
            status, error = "failed", describe(exc)
        finally:
            if gen is not None:
                with self.lock:
                    try:
                        gen.close()
                        if self.finish is not None:
                            self.finish(self)
                    except Exception as exc:
                        traceback.print_exc()
                        status, error = "failed", describe(exc)
        self._finish(status, error)


class CallJob(Job):
    """Runs `fn(progress)` once; `progress(done, total)` emits and raises Cancelled on cancel."""

    def __init__(self, name, lock, fn, parent=None, hold_lock=True):
        super().__init__(name, lock, 0, parent)
        self.fn = fn
        self.hold_lock = hold_lock
        self.result = None

    def _progress(self, done, total=None, *_):
        if self._cancel:
            raise Cancelled()
        self.done = int(done)
        if total:
            self.total = int(total)
        self.progress.emit(self.done, self.total, None)

    def run(self) -> None:
        self.started_at = time.monotonic()
        status, error = "finished", ""
        try:
            if self.hold_lock:
                with self.lock:
                    self.result = self.fn(self._progress)
            else:
                self.result = self.fn(self._progress)
        except Cancelled:
            status = "cancelled"
        except Exception as exc:
            traceback.print_exc()
            status, error = "failed", describe(exc)
        self._finish(status, error)
