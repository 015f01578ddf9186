"""Autosave and crash recovery, built only on Session.snapshot/restore.

An autosave is one file <home>/autosave/<key>.autosave: a pickle of {project folder, time, pid,
Snapshots of the frames changed since the last save (plus objects, keyframes, log)}. It is written
on a worker thread in chunks of frames, so an edit never waits long for the session, and it never
touches the project folder. A clean save or close
deletes the file, so a file whose pid is no longer running means the app died with unsaved
work: recovering opens the project and restores the snapshot on top of the saved state, which
leaves the recovered work as unsaved changes for the user to review and save.
The files are only ever read from the user's own autosave folder.
"""

import hashlib
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

from annotator import settings
from engine.atomic import atomic_write_bytes

SUFFIX = ".autosave"


@dataclass
class Slot:
    file: Path
    project: Path
    saved_at: float
    pid: int
    frames: int


def slot_for(project: Path) -> Path:
    key = hashlib.sha1(str(Path(project).absolute()).encode()).hexdigest()[:16]
    return settings.autosave_root() / f"{key}{SUFFIX}"


def write(session, project: Path, frames, chunk: int = 32) -> Path:
    """Autosave `frames` (those changed since the last save) and the project's metadata."""
    frames = sorted(frames)
    snaps = [session.snapshot(frames[i:i + chunk]) for i in range(0, len(frames), chunk)]
    snaps = snaps or [session.snapshot([])]   # metadata only (objects renamed, added, ...)
    payload = {"project": str(Path(project).absolute()), "saved_at": time.time(), "pid": os.getpid(),
               "snapshots": snaps}
    path = slot_for(project)
    atomic_write_bytes(path, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
    return path


def discard(project: Path) -> None:
    slot_for(project).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _read(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f)


def orphans() -> list[Slot]:
    """Autosaves left by a process that is gone: unsaved work to offer back."""
    out = []
    for path in sorted(settings.autosave_root().glob(f"*{SUFFIX}")):
        try:
            d = _read(path)
            slot = Slot(path, Path(d["project"]), float(d["saved_at"]), int(d["pid"]),
                        sum(len(s.masks) for s in d["snapshots"]))
        except Exception:  # unreadable leftovers are not worth an error dialog
            continue
        if not _alive(slot.pid):
            out.append(slot)
    return out


def recover(slot: Slot, open_session):
    """Open the project with `open_session(folder)` and restore the autosaved state into it."""
    snapshots = _read(slot.file)["snapshots"]
    session = open_session(slot.project)
    for snap in snapshots:       # the last one's objects/keyframes/log are the newest
        session.restore(snap)
    return session
