"""Jobs controller: the background embedding pass and propagation (one undo step).

Only one job runs at a time; a propagation asked for while embeddings are still computing
waits for them. Propagated frames stream into the view (throttled to ~15 Hz). Each kind of job
is a small dataclass holding that run's state beside its worker thread.
"""

import time
from dataclasses import dataclass

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QInputDialog

from annotator.workers import GeneratorJob, describe

FOLLOW_INTERVAL = 1 / 15


def _step_name(run, seen, status: str) -> str:
    """The undo step's name: 'Propagate 82-131' (the frames written, counted from 1 as on screen),
    then ', ball only' and ' (cancelled)' where they apply."""
    name = f"Propagate {min(seen) + 1}-{max(seen) + 1}"
    if run.only:
        name += f", {run.only} only"
    return name + (" (cancelled)" if status == "cancelled" else "")


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return ""
    s = int(round(s))
    return f"{s // 60}:{s % 60:02d} left" if s >= 60 else f"{s} s left"


@dataclass
class Embedding:
    """The background pass caching every frame's embedding (no lock: edits stay instant beside it)."""
    thread: GeneratorJob | None = None
    label = "Embedding"


@dataclass
class Propagation:
    """A propagation from one frame: owns the session while it runs; recorded as one undo step."""
    frames: list[int]
    description: str                  # "both", "forward, ball only"
    only: str | None                  # the one object's name, when only the selected one propagates
    shown: int                        # the frame the view shows (it moves with the front when following)
    follow: bool                      # the view follows the propagation front (a preference, off by default)
    thread: GeneratorJob | None = None
    before: object = None             # Snapshots of `frames` before, and of the frames done after
    after: object = None
    last_follow: float = 0.0
    label = "Propagation"


@dataclass(frozen=True)
class PendingPropagation:
    """Asked for while embeddings were still computing: starts when they are ready."""
    direction: str
    frame: int
    only_selected: bool
    until: int | None = None


class JobsController(QObject):
    def __init__(self, window):
        super().__init__(window)
        self.w = window
        self.running: Embedding | Propagation | None = None
        self.pending: PendingPropagation | None = None

    def idle(self) -> bool:
        return self.running is None and self.pending is None

    def propagating(self) -> bool:
        return isinstance(self.running, Propagation)

    # -- embedding -------------------------------------------------------------------------------
    def start_embedding(self) -> None:
        doc = self.w.doc
        if doc is None or self.running is not None:
            return
        s = doc.session
        run = Embedding()
        # on the worker (loading the network takes a moment); yields every frame once, cached ones first;
        # the Session allows embed() beside edits and propagation, so no GUI lock: clicks stay instant
        run.thread = GeneratorJob("embed", None, lambda _thread: s.embed(), doc.n, parent=self)
        self._start(run, "Embedding frames")

    # -- propagation -----------------------------------------------------------------------------
    def propagate_to(self, frame: int | None = None) -> None:
        """Propagate from the current frame to `frame` (0-based; None: ask), across keyframes."""
        doc = self.w.doc
        if doc is None:
            return
        if frame is None:
            number, ok = QInputDialog.getInt(self.w, "Propagate to frame", "Propagate up to frame:",
                                             doc.frame + 1, 1, doc.n)
            if not ok:
                return
            frame = number - 1
        self.propagate("forward" if frame >= doc.frame else "backward", until=frame)

    def propagate(self, direction: str = "both", only_selected: bool = False, until: int | None = None) -> None:
        """Propagate from the current frame (all unlocked objects, or only the selected one), to the
        neighbouring keyframes or to frame `until`."""
        doc = self.w.doc
        if doc is None:
            return
        objects = None
        if only_selected:
            if doc.selected is None:
                self.w.say("Select an object first.", 5000)
                return
            objects = [doc.selected]
        if self.running is not None:
            if isinstance(self.running, Embedding):
                self.pending = PendingPropagation(direction, doc.frame, only_selected, until)
                self.w.say("Propagation starts as soon as the embeddings are ready.", 5000)
            return
        t0, s = doc.frame, doc.session
        try:
            span = s.propagation_span(t0, direction, objects=objects, until=until)
        except Exception as exc:
            span, why = None, describe(exc)
        else:
            why = "no unlocked object has a keyframe to propagate from here: annotate this frame first"
        if span is None:
            self.w.say(f"Nothing to propagate from frame {t0}: {why}.", 6000)
            return
        frames = list(range(span[0], span[1] + 1))
        description = direction if until is None else f"{direction} to frame {until + 1}"
        if only_selected:
            description += f", {doc.objects()[doc.selected].name} only"
        run = Propagation(frames, description, doc.objects()[doc.selected].name if only_selected else None,
                          shown=t0, follow=self.w.propagation.follow_front())

        def make_gen(_thread):   # on the worker: snapshots of long spans take a moment
            run.before = s.snapshot(frames)          # one undo step for the whole run
            return s.propagate(t0, direction=direction, objects=objects, until=until)

        def finish(thread):
            run.after = s.snapshot(thread.seen)

        run.thread = GeneratorJob("propagate", doc.lock, make_gen, max(1, len(frames) - 1), parent=self,
                                  finish=finish)
        self._start(run, f"Propagating {description}")

    def _on_propagated(self, run: Propagation, item) -> None:
        t, ids = item
        doc = self.w.doc
        doc.update_stats([t], emit=False, ids_of={t: ids})
        following = run.follow and doc.frame == run.shown   # the user has not navigated away meanwhile
        if not following and t == doc.frame:
            self.w.refresh_canvas()
        now = time.monotonic()
        if now - run.last_follow >= FOLLOW_INTERVAL:  # stream into the view without flooding it
            run.last_follow = now
            if following:
                doc.set_frame(t)
                run.shown = t
            self.w.refresh_timeline()

    def _start_pending(self) -> None:
        pending, self.pending = self.pending, None
        if pending is not None and self.w.doc is not None:
            self.w.doc.set_frame(pending.frame)
            self.propagate(pending.direction, pending.only_selected, pending.until)

    # -- shared plumbing -------------------------------------------------------------------------
    def _start(self, run, label: str) -> None:
        self.running = run    # a late signal of a run stopped meanwhile is ignored: it names its run
        run.thread.progress.connect(lambda done, total, item: self._on_progress(run, done, total, item))
        run.thread.ended.connect(lambda status, error: self._on_ended(run, status, error))
        self.w.show_job(label, run.thread.total)
        self.w.sync_enabled()
        run.thread.start()

    def _on_progress(self, run, done: int, total: int, item) -> None:
        if run is not self.running:
            return
        if isinstance(run, Propagation) and item is not None:
            self._on_propagated(run, item)
        elif isinstance(run, Embedding):
            self.w.job_label.setText(f"Embedding frames ({done}/{total})")
            doc = self.w.doc
            if item is not None and 0 <= int(item) < doc.n:
                doc.embedded[int(item)] = True
                if done % 8 == 0 or done >= total:
                    self.w.timeline.strip.set_embedded(doc.embedded)
        self.w.job_progress(done, total, fmt_seconds(run.thread.eta_seconds()))

    def _on_ended(self, run, status: str, error: str) -> None:
        if run is not self.running:
            return
        self.running = None
        thread = run.thread
        thread.wait()
        self.w.show_job(None)
        elapsed = time.monotonic() - thread.started_at
        doc = self.w.doc
        if isinstance(run, Propagation):
            n = len(thread.seen)
            if n and run.after is None:   # finish() failed: take it here
                with doc.lock:
                    run.after = doc.session.snapshot(thread.seen)
            if n:
                doc.push_done(_step_name(run, thread.seen, status), run.before, run.after, run.frames)
                self.w.view.forget_visited(thread.seen)   # new results: the least-sure walk shows them again
            fps = n / elapsed if elapsed > 0 else 0
            doc.timingReported.emit(f"propagated {n} frames, {fps:.0f} frames/s")
            self.w.say(f"Propagation {status}: {n} frames.", 6000)
        else:
            doc.timingReported.emit(f"embedded {thread.done} frames in {elapsed:.1f} s")
            self.w.timeline.strip.set_embedded(None)
        self.w.sync_enabled()
        if status == "failed":
            self.w.show_error(f"{run.label} failed", error)
            self.pending = None
        elif isinstance(run, Embedding) and status == "finished":
            self._start_pending()

    def cancel(self) -> None:
        if self.running is not None:
            self.running.thread.cancel()
            self.w.job_label.setText("Cancelling…")
        self.pending = None

    def stop(self) -> None:
        """Cancel and wait for the running job (before closing or switching projects)."""
        self.pending = None
        run = self.running
        if run is not None:
            run.thread.cancel()
            run.thread.wait()
            self._on_ended(run, run.thread.status if run.thread.status != "running" else "cancelled", "")
