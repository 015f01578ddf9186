"""Headless video-object annotation engine (pixel-wise metric learning + faiss retrieval).

Public API (imported lazily, so `import engine.palette` stays light):

    from engine import Session, Snapshot, Prompt, PropagationConfig
    from engine import EngineError, VideoError, ProjectError, FormatError, StorageError
    from engine import atomic_write_bytes   # write a whole file or nothing (the app's autosave uses it)

See engine/session.py for the Session methods (and which may run from a worker thread).
"""

import os

# OpenMP threads that spin while waiting steal the other core from faiss, Qt and the video decoder:
# the embedding pass ran 25x slower (2.8 s vs 0.11 s a frame) with the default policy on a shared 2-core machine. It must be set
# before torch or faiss is first imported, which is why it lives here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# FFmpeg and OpenCV print their own lines ("moov atom not found") to stderr before the engine's one-line error
# about the same file. Quiet unless the user sets these; OpenCV reads them when it first opens a video.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

_EXPORTS = {
    "Session": "engine.session",
    "Snapshot": "engine.annotation",
    "Prompt": "engine.annotation",
    "propagate_file": "engine.pipeline",
    "PropagationConfig": "engine.propagation",
    "run_bench": "engine.bench",
    "EngineError": "engine.errors",
    "VideoError": "engine.errors",
    "ProjectError": "engine.errors",
    "FormatError": "engine.errors",
    "StorageError": "engine.errors",
    "atomic_write_bytes": "engine.atomic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
