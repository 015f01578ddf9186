"""Whole headless runs built on the Session: `vos-engine propagate` and `vos-engine demo`."""

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from engine.errors import FormatError
from engine.palette import read_id_png
from engine.session import Session


def propagate_file(
    video: Path,
    mask: Path,
    frame: int = 0,
    out: Path = Path("out"),
    fmt: str = "davis",
    refiner: str | None = None,
    project_dir: Path | None = None,
) -> Path:
    """Propagate the objects of one annotated frame through a whole video and export them.

    `mask` is an indexed (ids) or 0/255 PNG of frame `frame`, at the video's native or working size.
    The project is kept in `project_dir` when given, else in a temporary folder.
    """
    with tempfile.TemporaryDirectory(prefix="vos-propagate-") as tmp:
        session = Session.create(Path(project_dir or Path(tmp) / "project"), video, refiner=refiner)
        try:
            _annotate_frame(session, frame, read_id_png(mask), mask)
            for _ in session.propagate(frame, direction="both"):
                pass
            session.save()
            return session.export(out, fmt)
        finally:
            session.close()


def _annotate_frame(session: Session, frame: int, ids: np.ndarray, path: Path) -> None:
    """Add one object per id found in `ids` and give it its mask on `frame`."""
    if not 0 <= frame < len(session.video):
        raise FormatError(path, f"frame {frame} is outside the video (0..{len(session.video) - 1})")
    try:
        session.add_objects_from_ids(frame, ids)
    except ValueError as e:
        raise FormatError(path, str(e)) from None


def run_demo(out: Path) -> Iterator[str]:
    """Copy the sample project, propagate its first-frame object, export every format; yields progress lines."""
    out = Path(out)
    project_dir = out / "project"
    session = Session.open_sample_copy(project_dir)
    try:
        yield from _demo_steps(session, out)
    finally:
        session.close()


def _demo_steps(session: Session, out: Path) -> Iterator[str]:
    yield f"sample project copied to {session.folder}: {len(session.video)} frames, {len(session.objects)} object(s)"
    start = time.perf_counter()
    for _ in session.embed():
        pass
    yield f"embeddings computed in {time.perf_counter() - start:.1f} s"
    start = time.perf_counter()
    for _ in session.propagate(0, direction="forward"):
        pass
    yield f"propagated in {time.perf_counter() - start:.1f} s"
    session.save()
    for fmt, _label in Session.export_formats():
        paths = session.export(out / "export" / fmt, fmt)
        yield f"exported {fmt}: {', '.join(str(p) for p in paths)}"
