"""Engine jobs from the window: background embedding, propagation (one undo step), export.

Only one job runs at a time; a propagation asked for while embeddings are still computing
waits for them. Propagated frames stream into the view (throttled to ~15 Hz).
"""

import time

from annotator.export_dialog import ExportDialog
from annotator.workers import GeneratorJob, describe

FOLLOW_INTERVAL = 1 / 15


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return ""
    s = int(round(s))
    return f"{s // 60}:{s % 60:02d} left" if s >= 60 else f"{s} s left"


class JobsMixin:
    _pending_propagation = None

    # -- embedding -------------------------------------------------------------------------------
    def start_embedding(self) -> None:
        doc = self.doc
        if doc is None or self.job is not None:
            return
        s = doc.session

        def make_gen(_job):  # on the worker: loading the network takes a moment
            return s.embed()   # yields every frame once, cached ones first; stopping it cancels

        # The Session allows embed() beside edits and propagation, so no GUI lock: clicks stay instant.
        job = GeneratorJob("embed", None, make_gen, doc.n, parent=self)
        self._start_job(job, "Embedding frames")

    # -- propagation -----------------------------------------------------------------------------
    def propagate(self, direction: str = "both", only_selected: bool = False) -> None:
        """Propagate from the current frame (all unlocked objects, or only the selected one)."""
        doc = self.doc
        if doc is None:
            return
        objects = None
        if only_selected:
            if doc.selected is None:
                self.statusBar().showMessage("Select an object first.", 5000)
                return
            objects = [doc.selected]
        if self.job is not None:
            if self.job.name == "embed":
                self._pending_propagation = (direction, doc.frame, only_selected)
                self.statusBar().showMessage("Propagation starts as soon as the embeddings are ready.", 5000)
            return
        t0, s = doc.frame, doc.session
        try:
            span = s.propagation_span(t0, direction, objects=objects)
        except Exception as exc:
            span, why = None, describe(exc)
        else:
            why = "no unlocked object has a keyframe to propagate from here: annotate this frame first"
        if span is None:
            self.statusBar().showMessage(f"Nothing to propagate from frame {t0}: {why}.", 6000)
            return
        frames = range(span[0], span[1] + 1)

        def make_gen(job):       # on the worker: snapshots of long spans take a moment
            job.before = s.snapshot(frames)          # one undo step for the whole run
            return s.propagate(t0, direction=direction, objects=objects)

        def finish(job):
            job.after = s.snapshot(job.seen)

        job = GeneratorJob("propagate", doc.lock, make_gen, max(1, len(frames) - 1), parent=self, finish=finish)
        job.frames, job.direction, job.last_follow, job.shown = list(frames), direction, 0.0, t0
        if only_selected:
            job.direction = f"{direction}, {doc.objects()[doc.selected].name} only"
        self._start_job(job, f"Propagating {job.direction}")

    def _on_propagated(self, item) -> None:
        t, ids = item
        job = self.job
        self.doc.update_stats([t], emit=False, ids_of={t: ids})
        following = self.doc.frame == job.shown   # the user has not navigated away meanwhile
        if not following and t == self.doc.frame:
            self.refresh_canvas()
        now = time.monotonic()
        if now - job.last_follow >= FOLLOW_INTERVAL:  # stream into the view without flooding it
            job.last_follow = now
            if following:
                self.doc.set_frame(t)
                job.shown = t
            self._refresh_timeline()

    def _start_pending(self) -> None:
        pending, self._pending_propagation = self._pending_propagation, None
        if pending is not None and self.doc is not None:
            direction, t0, only_selected = pending
            self.doc.set_frame(t0)
            self.propagate(direction, only_selected)

    # -- shared job plumbing ---------------------------------------------------------------------
    def _start_job(self, job, label: str) -> None:
        self.job = job
        job.progress.connect(self._on_job_progress)
        job.ended.connect(self._on_job_ended)
        self.job_label.setText(label)
        self.job_bar.setRange(0, max(1, job.total))
        self.job_bar.setValue(0)
        for w in (self.job_label, self.job_bar, self.job_cancel):
            w.setVisible(True)
        self._sync_enabled()
        job.start()

    def _on_job_progress(self, done: int, total: int, item) -> None:
        job = self.job
        if job is None:
            return
        if job.name == "propagate" and item is not None:
            self._on_propagated(item)
        elif job.name == "embed":
            self.job_label.setText(f"Embedding frames ({done}/{total})")
            if item is not None and 0 <= int(item) < self.doc.n:
                self.doc.embedded[int(item)] = True
                if done % 8 == 0 or done >= total:
                    self.timeline.strip.set_embedded(self.doc.embedded)
        self.job_bar.setMaximum(max(1, total))
        self.job_bar.setValue(min(done, max(1, total)))
        self.job_bar.setFormat(f"%p%  {fmt_seconds(job.eta_seconds())}")

    def _on_job_ended(self, status: str, error: str) -> None:
        job, self.job = self.job, None
        if job is None:
            return
        job.wait()
        for w in (self.job_label, self.job_bar, self.job_cancel):
            w.setVisible(False)
        elapsed = time.monotonic() - job.started_at
        if job.name == "propagate":
            n = len(job.seen)
            if n and getattr(job, "after", None) is None:   # finish() failed: take it here
                with self.doc.lock:
                    job.after = self.doc.session.snapshot(job.seen)
            if n:
                label = f"Propagate {job.direction}" + (" (cancelled)" if status == "cancelled" else "")
                self.doc.push_done(label, job.before, job.after, job.frames)
            fps = n / elapsed if elapsed > 0 else 0
            self.doc.timingReported.emit(f"propagated {n} frames, {fps:.0f} frames/s")
            self.statusBar().showMessage(f"Propagation {status}: {n} frames.", 6000)
        elif job.name == "embed":
            self.doc.timingReported.emit(f"embedded {job.done} frames in {elapsed:.1f} s")
            self.timeline.strip.set_embedded(None)
        self._sync_enabled()
        if status == "failed":
            self.show_error(f"{job.name.capitalize()} failed", error)
            self._pending_propagation = None
        elif job.name == "embed" and status == "finished":
            self._start_pending()

    def cancel_job(self) -> None:
        if self.job is not None:
            self.job.cancel()
            self.job_label.setText("Cancelling…")
        self._pending_propagation = None

    def stop_jobs(self) -> None:
        """Cancel and wait for the running job (before closing or switching projects)."""
        self._pending_propagation = None
        for other in (self.edit_job, self.autosave_job):
            if other is not None:
                other.wait()
        if self.job is not None:
            self.job.cancel()
            self.job.wait()
            self._on_job_ended(self.job.status if self.job.status != "running" else "cancelled", "")

    def busy_propagating(self) -> bool:
        return self.job is not None and self.job.name == "propagate"

    # -- export ----------------------------------------------------------------------------------
    def export(self) -> None:
        doc = self.doc
        if doc is None or self.busy_propagating():
            return
        s = doc.session
        dialog = ExportDialog(lambda out, fmt, progress: s.export(out, fmt, progress=progress), doc.lock,
                              doc.folder / "export", doc.video.native_size, self)
        dialog.finished_export.connect(lambda status, msg: self.statusBar().showMessage(msg, 8000))
        self.export_dialog = dialog
        dialog.open()
