"""Preferences, recent projects and the autosave folder, all under one overridable home.

Tests (and portable installs) set VOS_ANNOTATOR_HOME so nothing leaks into the user's profile.
"""

import os
from pathlib import Path

from PySide6.QtCore import QSettings, QStandardPaths

HOME_ENV = "VOS_ANNOTATOR_HOME"
MAX_RECENT = 10


def home() -> Path:
    """Folder holding settings.ini and autosave/ (created on first use)."""
    env = os.environ.get(HOME_ENV)
    if env:
        path = Path(env)
    else:
        base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.GenericDataLocation)
        path = Path(base or Path.home() / ".local" / "share") / "vos-annotator"
    path.mkdir(parents=True, exist_ok=True)
    return path


def settings() -> QSettings:
    """An ini-file QSettings so the location is explicit and test-overridable."""
    return QSettings(str(home() / "settings.ini"), QSettings.Format.IniFormat)


def autosave_root() -> Path:
    path = home() / "autosave"
    path.mkdir(parents=True, exist_ok=True)
    return path


def get(key: str, default=None, kind=None):
    s = settings()
    if kind is None:
        return s.value(key, default)
    return s.value(key, default, type=kind)


def put(key: str, value) -> None:
    s = settings()
    s.setValue(key, value)
    s.sync()


def recent_projects() -> list[str]:
    """Most recent first; entries whose folder vanished are dropped."""
    value = settings().value("recent", [])
    if isinstance(value, str):
        value = [value]
    return [p for p in (value or []) if Path(p).is_dir()]


def add_recent(path: str | Path) -> None:
    path = str(Path(path).resolve())
    items = [p for p in recent_projects() if p != path]
    put("recent", [path] + items[: MAX_RECENT - 1])
