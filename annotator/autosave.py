"""Autosave and crash recovery, stored as data (never code), built only on Session.snapshot/restore.

An autosave is one zip file <home>/autosave/<key>.autosave: `autosave.json` ({format, project folder, time,
pid, number of snapshots}) and `snapshot-NNNN.zip`, engine Snapshots as data (Snapshot.to_bytes: JSON and
PNG masks) of the frames changed since the last save, plus objects, keyframes and log. It is written
atomically on a worker thread, in chunks of frames so an edit never waits long for the session, and it
never touches the project folder. A clean save or close deletes the file, so a file whose pid is no longer
running means the app died with unsaved work: recovering opens the project and restores the snapshots on
top of the saved state, which leaves the recovered work as unsaved changes for the user to review and save.

Reading validates every field. A file that is not in this format (one an older version wrote, a damaged
or a foreign file) is never loaded: it is reported to the user once and left where it is.
"""

import hashlib
import io
import json
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from annotator import settings
from engine import atomic_write_bytes
from engine.errors import ProjectError

SUFFIX = ".autosave"
FORMAT = "vos-autosave-1"
HEADER = "autosave.json"
REPORTED_KEY = "autosave/reported"   # unreadable files already reported (name, size, mtime)


@dataclass
class Slot:
    file: Path
    project: Path
    saved_at: float
    pid: int
    snapshots: int


def slot_for(project: Path) -> Path:
    key = hashlib.sha1(str(Path(project).absolute()).encode()).hexdigest()[:16]
    return settings.autosave_root() / f"{key}{SUFFIX}"


def _member(i: int) -> str:
    return f"snapshot-{i:04d}.zip"


def write(session, project: Path, frames, chunk: int = 32) -> Path:
    """Autosave `frames` (those changed since the last save) and the project's metadata."""
    frames = sorted(frames)
    snaps = [session.snapshot(frames[i:i + chunk]) for i in range(0, len(frames), chunk)]
    snaps = snaps or [session.snapshot([])]   # metadata only (objects renamed, added, ...)
    header = {"format": FORMAT, "project": str(Path(project).absolute()), "saved_at": time.time(),
              "pid": os.getpid(), "snapshots": len(snaps)}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:   # the PNGs inside are compressed already
        z.writestr(HEADER, json.dumps(header))
        for i, snap in enumerate(snaps):
            z.writestr(_member(i), snap.to_bytes())
    path = slot_for(project)
    atomic_write_bytes(path, buf.getvalue())
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


def read_slot(path: Path) -> Slot:
    """The validated header of an autosave file; ProjectError naming the file for anything else."""
    try:
        with zipfile.ZipFile(path) as z:
            header = json.loads(z.read(HEADER))
    except zipfile.BadZipFile:
        raise ProjectError(path, "not an autosave of this version (written by an older version, "
                                 "or a damaged or foreign file)") from None
    except (OSError, KeyError, ValueError, RecursionError) as e:
        raise ProjectError(path, f"not a readable autosave ({type(e).__name__}: {e})") from None
    ok = (isinstance(header, dict) and header.get("format") == FORMAT
          and isinstance(header.get("project"), str)
          and isinstance(header.get("saved_at"), (int, float)) and not isinstance(header["saved_at"], bool)
          and type(header.get("pid")) is int and header["pid"] > 0
          and type(header.get("snapshots")) is int and header["snapshots"] >= 1)
    if not ok:
        raise ProjectError(path, f"not an autosave of this version (expected {HEADER} of format {FORMAT})")
    return Slot(Path(path), Path(header["project"]), float(header["saved_at"]), header["pid"],
                header["snapshots"])


def scan() -> tuple[list[Slot], list[ProjectError]]:
    """(autosaves left by a process that is gone: unsaved work to offer back, files that cannot be read)."""
    orphans, problems = [], []
    for path in sorted(settings.autosave_root().glob(f"*{SUFFIX}")):
        try:
            slot = read_slot(path)
        except ProjectError as e:
            problems.append(e)
            continue
        if not _alive(slot.pid):
            orphans.append(slot)
    return orphans, problems


def not_yet_reported(problems: list[ProjectError]) -> list[ProjectError]:
    """The problems not reported before (a file changed since counts as new); remembers them all."""
    def key(e):
        try:
            st = e.path.stat()
        except OSError:
            return None
        return f"{e.path.name}:{st.st_size}:{st.st_mtime_ns}"

    seen = settings.get(REPORTED_KEY, [])
    seen = {seen} if isinstance(seen, str) else set(seen or [])
    keys = [key(e) for e in problems]
    settings.put(REPORTED_KEY, [k for k in keys if k is not None])
    return [e for e, k in zip(problems, keys) if k not in seen]


def snapshots(slot: Slot) -> list:
    """The slot's Snapshots, each validated (ProjectError naming the file and the part that is wrong)."""
    from engine import Snapshot  # the engine loads torch: only when recovering
    checked = read_slot(slot.file)
    try:
        with zipfile.ZipFile(slot.file) as z:
            return [Snapshot.from_bytes(z.read(_member(i)), f"{slot.file} ({_member(i)})")
                    for i in range(checked.snapshots)]
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        raise ProjectError(slot.file, f"not a readable autosave ({type(e).__name__}: {e})") from None


def recover(slot: Slot, open_session):
    """Open the project with `open_session(folder)` and restore the autosaved state into it; the whole
    file is read and checked before the project is opened."""
    snaps = snapshots(slot)
    session = open_session(slot.project)
    for snap in snaps:       # the last one's objects/keyframes/log are the newest
        session.restore(snap)
    return session
