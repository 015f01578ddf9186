"""Turn what the user names (project folder, video file, frame folder, nothing) into a Session.

A video or frame folder gets a new project `<stem>.vosproj` beside it; when that folder cannot be
written, the project goes to a fresh temporary folder instead (the window title shows where).
If `<stem>.vosproj` already holds a project, it is opened rather than overwritten, so running
`vos-annotator clip.mp4` twice continues the same work.
With no argument, the bundled sample project is copied once to <home>/sample/<name> and that
copy is reopened on later starts (delete it to start over).
"""

import os
import tempfile
from pathlib import Path

from annotator import settings
from engine.errors import ProjectError

PROJECT_FILE = "project.json"


def session_class():
    from engine import Session  # imported late: the engine loads torch
    return Session


def is_project(path: Path) -> bool:
    return path.is_dir() and (path / PROJECT_FILE).is_file()


def project_folder_for(media: Path) -> Path:
    """Where a new project for a video file or frame folder goes (see module docstring)."""
    media = Path(media).absolute()
    stem = media.stem if media.is_file() else media.name
    folder = media.parent / f"{stem}.vosproj"
    if is_project(folder):
        return folder
    if os.access(media.parent, os.W_OK) and not (folder.exists() and any(folder.iterdir())):
        return folder
    return Path(tempfile.mkdtemp(prefix=f"{stem}-", suffix=".vosproj"))


def open_any(path: str | Path | None):
    """Session for a project folder, a video file / frame folder (new or continued project), or the sample."""
    Session = session_class()
    if path is None:
        return open_sample()
    path = Path(path).expanduser().absolute()
    if is_project(path):
        return Session.open(path)
    if not path.exists():
        raise ProjectError(path, "no such file or folder")
    folder = project_folder_for(path)
    if is_project(folder):
        return Session.open(folder)
    return Session.create(folder, path)


def sample_folder() -> Path:
    return settings.home() / "sample"


def open_sample():
    """The writable copy of the sample project (made on first use by Session.open_sample_copy)."""
    Session = session_class()
    dest = sample_folder() / Session.SAMPLE_NAME
    if is_project(dest):
        try:
            return Session.open(dest)
        except Exception:  # a broken old copy: leave it for inspection, make a fresh one
            dest = Path(tempfile.mkdtemp(prefix="sample-", dir=sample_folder())) / Session.SAMPLE_NAME
    return Session.open_sample_copy(dest)
