"""Progress of long command-line work: a tqdm bar on a terminal, a plain line every few seconds in a log, nothing when quiet.

The engine's long functions take a ``progress(done, total)`` callback and never print; the CLI (and batch work)
turns those calls into what a person sees with `Progress`. `configure(quiet=True)` silences every bar, which is
what `vos-engine --quiet` does. Everything goes to stderr so that stdout stays the command's result.

    with Progress("embedding", total=len(video), unit="frame") as bar:
        for t in session.embed():
            bar.update()
    session.export(out, "davis", progress=Progress("export", unit="frame").callback)

Work in several stages (embed, propagate, export) takes ``progress(stage, done, total)`` instead; `Stages`
gives each stage its own bar:

    with Stages(unit="frame") as stages:
        propagate_file(video, mask, out=out, progress=stages.callback)
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable

LOG_EVERY_S = 10.0  # a plain line at most this often when stderr is not a terminal
_quiet = False


def configure(quiet: bool = False) -> None:
    """Silence (quiet=True) or restore every progress display of this process."""
    global _quiet
    _quiet = bool(quiet)


def quiet() -> bool:
    return _quiet


class Progress:
    """One task's progress: `update(n)` or `callback(done, total)`; `close()` (or a with-block) ends it.

    On a terminal it is a tqdm bar with rate and ETA; otherwise a line ``desc: done/total unit (pct), rate, ETA``
    at most every LOG_EVERY_S seconds and once at the end; nothing at all when configured quiet.
    """

    def __init__(self, desc: str, total: int | None = None, unit: str = "frame", stream=None):
        self.desc, self.total, self.unit = desc, total, unit
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._start = self._last = time.monotonic()
        self._bar = None
        self._closed = False
        self._postfix = ""
        self._logged = None  # the count the last plain line showed
        if not _quiet and _isatty(self._stream):
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=desc, unit=unit, file=self._stream, dynamic_ncols=True, leave=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif not _quiet and time.monotonic() - self._last >= LOG_EVERY_S:
            self._line()

    def callback(self, done: int, total: int | None = None) -> None:
        """For the engine's ``progress(done, total)`` hooks: sets the count (and the total) absolutely."""
        if total is not None and total != self.total:
            self.total = total
            if self._bar is not None:
                self._bar.total = total
                self._bar.refresh()
        self.update(done - self.done)

    def set_postfix(self, text: str) -> None:
        """A short status shown after the count (e.g. "3 failed")."""
        self._postfix = text
        if self._bar is not None:
            self._bar.set_postfix_str(text)

    def close(self, failed: bool = False) -> None:
        """End the display; a failed task leaves no closing line or bar, so its error is the one line shown."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.leave = not failed
            self._bar.close()
        elif not _quiet and not failed and self.done and self._logged != self.done:
            self._line()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(failed=exc_type is not None)

    def _line(self) -> None:
        self._last = time.monotonic()
        self._logged = self.done
        elapsed = max(self._last - self._start, 1e-9)
        rate = self.done / elapsed
        parts = [f"{self.desc}: {self.done}"]
        if self.total:
            parts[0] += f"/{self.total} {self.unit}s ({100 * self.done / self.total:.0f}%)"
        else:
            parts[0] += f" {self.unit}s"
        slow = 0 < rate < 1
        parts.append(f"{1 / rate:.1f} s/{self.unit}" if slow else f"{rate:.1f} {self.unit}s/s")
        if self.total and rate > 0 and self.done < self.total:
            parts.append(f"ETA {_duration((self.total - self.done) / rate)}")
        elif self.total and self.done >= self.total:
            parts.append(f"done in {_duration(elapsed)}")
        if self._postfix:
            parts.append(self._postfix)
        print(", ".join(parts), file=self._stream, flush=True)


def stage(progress: Callable[[str, int, int], None] | None, name: str) -> Callable[[int, int], None] | None:
    """The ``progress(done, total)`` hook of one stage of a ``progress(stage, done, total)`` hook (None stays None)."""
    return None if progress is None else functools.partial(progress, name)


class Stages:
    """One `Progress` per stage for the engine's ``progress(stage, done, total)`` hooks; a new stage ends the last.

    `units` names the unit of a stage where it is not `unit` (e.g. {"training": "iteration"}).
    """

    def __init__(self, unit: str = "frame", units: dict[str, str] | None = None, stream=None):
        self.unit, self.units, self._stream = unit, units or {}, stream
        self._stage: str | None = None
        self._bar: Progress | None = None

    def callback(self, stage: str, done: int, total: int | None = None) -> None:
        if stage != self._stage:
            self.close()
            self._stage = stage
            self._bar = Progress(stage, total, self.units.get(stage, self.unit), stream=self._stream)
        self._bar.callback(done, total)

    def close(self, failed: bool = False) -> None:
        if self._bar is not None:
            self._bar.close(failed)
        self._stage = self._bar = None

    def __enter__(self) -> "Stages":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(failed=exc_type is not None)


def _isatty(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
