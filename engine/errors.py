"""Errors the engine raises for bad input: each names the file and the problem."""

from pathlib import Path


class EngineError(Exception):
    """Base class: a message a person can act on, never a deep library traceback."""

    def __init__(self, path: str | Path | None, problem: str):
        self.path = Path(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)


class VideoError(EngineError):
    """A video file or frame folder cannot be opened or read."""


class ProjectError(EngineError):
    """A project folder is missing, corrupt, or of an unknown schema."""


class FormatError(EngineError):
    """An annotation file (DAVIS, COCO, YouTube-VIS, ...) is malformed."""


class StorageError(EngineError):
    """A file or folder cannot be written: disk full, no permission, or a file where a folder must be."""
