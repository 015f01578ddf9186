"""Whole headless runs built on the Session: `vos-engine propagate` and `vos-engine demo`."""

import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from engine.atomic import check_output_folder
from engine.errors import FormatError
from engine.palette import read_id_png
from engine.progress import stage
from engine.session import Session

StageProgress = Callable[[str, int, int], None]  # progress(stage, done, total)


def propagate_file(
    video: Path,
    mask: Path,
    frame: int = 0,
    out: Path = Path("out"),
    fmt: str = "davis",
    refiner: str | None = None,
    project_dir: Path | None = None,
    progress: StageProgress | None = None,
) -> Path:
    """Propagate the objects of one annotated frame through a whole video and export them.

    `mask` is an indexed (ids) or 0/255 PNG of frame `frame`, at the video's native or working size.
    The project is kept in `project_dir` when given, else in a temporary folder. `out` is checked before the
    propagation starts, so a bad destination costs no work.
    progress(stage, done, total) per frame of the stages "embedding", "propagating" and "exporting".
    """
    check_output_folder(out)
    with tempfile.TemporaryDirectory(prefix="vos-propagate-") as tmp:
        session = Session.create(Path(project_dir or Path(tmp) / "project"), video, refiner=refiner)
        try:
            annotate_frame(session, frame, read_id_png(mask), mask)
            _embed(session, progress)
            _propagate(session, frame, "both", progress)
            session.save()
            return session.export(out, fmt, progress=stage(progress, "exporting"))
        finally:
            session.close()


def _embed(session: Session, progress: StageProgress | None) -> None:
    for _ in session.embed(progress=stage(progress, "embedding")):
        pass


def _propagate(session: Session, frame: int, direction: str, progress: StageProgress | None) -> None:
    """Propagate, reporting frames against the span's length (an upper bound: a keyframe start is not redone)."""
    span = session.propagation_span(frame, direction)
    total = 0 if span is None else span[1] - span[0] + 1
    done = 0
    for done, _ in enumerate(session.propagate(frame, direction=direction), 1):
        if progress is not None:
            progress("propagating", done, total)
    if progress is not None and done < total:
        progress("propagating", done, done)


def annotate_frame(session: Session, frame: int, ids: np.ndarray, path: Path) -> dict[int, int]:
    """Add one object per id found in `ids` and give it its mask on `frame`: {id in ids: object id}."""
    if not 0 <= frame < len(session.video):
        raise FormatError(path, f"frame {frame} is outside the video (0..{len(session.video) - 1})")
    try:
        return session.add_objects_from_ids(frame, ids)
    except ValueError as e:
        raise FormatError(path, str(e)) from None


def run_demo(out: Path, progress: StageProgress | None = None) -> Iterator[str]:
    """Copy the sample project, propagate its first-frame object, export every format; yields result lines.

    progress(stage, done, total) per frame of embedding, propagation and each export."""
    out = Path(out)
    project_dir = out / "project"
    session = Session.open_sample_copy(project_dir)
    try:
        yield from _demo_steps(session, out, progress)
    finally:
        session.close()


def _demo_steps(session: Session, out: Path, progress: StageProgress | None) -> Iterator[str]:
    yield f"sample project copied to {session.folder}: {len(session.video)} frames, {len(session.objects)} object(s)"
    start = time.perf_counter()
    _embed(session, progress)
    yield f"embeddings computed in {time.perf_counter() - start:.1f} s"
    start = time.perf_counter()
    _propagate(session, 0, "forward", progress)
    yield f"propagated in {time.perf_counter() - start:.1f} s"
    session.save()
    for fmt, _label in Session.export_formats():
        paths = session.export(out / "export" / fmt, fmt, progress=stage(progress, f"exporting {fmt}"))
        yield f"exported {fmt}: {', '.join(str(p) for p in paths)}"
