"""Safe writes: a crash, a kill or a full disk never leaves a broken file or a half-written output behind.

One file: write `.NAME.XXXX.tmp` in the same folder, fsync it, rename it over the target (atomic on POSIX and
Windows), fsync the folder so the rename itself lasts. An OSError from a write always names the file (a bare
ENOSPC from write() names none).
Many files (an export folder): `staged_output` writes them into a hidden folder inside the destination and moves
the finished pieces into place only when all were written; a failure deletes the staging folder and every folder
it had to create. Destinations are checked before any work starts (`check_output_folder`, `check_output_file`).
"""

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.errors import StorageError

STAGING_PREFIX = ".vos-staging-"


def atomic_write_bytes(path: str | Path, data: bytes, *, sync_folder: bool = True) -> None:
    """Replace `path` with `data` atomically; `sync_folder=False` leaves the folder's fsync to the caller
    (one `fsync_folder` after many files)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _named(e, path) from None
    try:
        # mkstemp makes the file owner-only; keep the target's mode, or the usual 0644 for a new file.
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _named(e, path) from None
        raise
    if sync_folder:
        fsync_folder(path.parent)


def atomic_write_json(path: str | Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=False).encode("utf-8"))


def fsync_folder(folder: Path) -> None:
    """Make the renames and deletions in `folder` durable (a no-op where folders cannot be fsynced)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError as e:
        raise _named(e, folder) from None
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _named(e: OSError, path: Path) -> OSError:
    if e.filename is None:
        e.filename = str(path)
    return e


def why(e: OSError) -> str:
    """An OSError's reason without the file name it carries ("No space left on device")."""
    return e.strerror or (str(e.args[0]) if e.args else type(e).__name__)


def write_failure(e: OSError, fallback: str | Path) -> StorageError:
    """The one-line error for a failed write: the file it was writing and why (e.g. no space left on device)."""
    return StorageError(e.filename or fallback, f"cannot write ({why(e)})")


# ---- destinations, checked before the work starts

def check_output_folder(path: str | Path) -> Path:
    """`path` as an output folder: refused if it is a file, lies inside a file, or its nearest existing folder
    is not writable."""
    path = Path(path)
    if _exists(path) and not path.is_dir():
        raise StorageError(path, "is a file, not a folder: choose a folder for the output")
    _check_writable_ancestor(path)
    return path


def check_output_file(path: str | Path) -> Path:
    """`path` as an output file (an existing folder is fine: the file goes inside it); refused like
    `check_output_folder` when its folder cannot be made."""
    path = Path(path)
    _check_writable_ancestor(path if _exists(path) and path.is_dir() else path.parent)
    return path


def _exists(path: Path) -> bool:
    if "\0" in str(path):
        raise StorageError(repr(str(path)), "the path contains a NUL byte")
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as e:
        raise StorageError(path, f"cannot use this path ({e.strerror or e})") from None
    return True


def _check_writable_ancestor(path: Path) -> None:
    """The nearest existing folder of `path` (itself included) must be a writable folder."""
    for folder in (path, *path.parents):
        if _exists(folder):
            if not folder.is_dir():
                raise StorageError(folder, f"is a file, so {path} cannot be created inside it")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise StorageError(folder, "is not writable")
            return


@contextmanager
def staged_output(dst: str | Path) -> Iterator[Path]:
    """Write a multi-file output into the staging folder this yields (inside `dst`), then call
    `publish(stage, dst, pieces)`. On any error the staging folder and every folder created for it are removed,
    so a failed export (a full disk) leaves `dst` as it was."""
    dst = check_output_folder(dst)
    created = [p for p in (dst, *dst.parents) if not _exists(p)]
    try:
        dst.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=dst))
    except OSError as e:
        _remove_empty(created)
        raise write_failure(e, dst) from None
    try:
        yield stage
    except BaseException as e:
        shutil.rmtree(stage, ignore_errors=True)
        _remove_empty(created)
        if isinstance(e, OSError):
            raise write_failure(e, dst) from None
        raise
    shutil.rmtree(stage, ignore_errors=True)


def publish(stage: Path, dst: Path, pieces: list[Path]) -> list[Path]:
    """Move each finished piece (a file or folder under `stage`) to the same place under `dst`, replacing what is
    there; returns the new paths. A folder is swapped by two renames, so it is never half old, half new."""
    out = []
    for piece in pieces:
        target = dst / piece.relative_to(stage)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if piece.is_dir() and target.is_dir():
                old = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=target.parent))
                os.replace(target, old / target.name)
                os.replace(piece, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(piece, target)
        except OSError as e:
            raise write_failure(e, target) from None
        out.append(target)
    fsync_folder(dst)
    return out


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders this write created (deepest first), where they are still empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return
