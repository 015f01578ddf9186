"""Shared fixtures: the real DAVIS data when present, an isolated Qt settings store."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

DAVIS_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "davis2016-train"


@pytest.fixture(scope="session")
def davis_root() -> Path:
    """The shared DAVIS 2016 train folder; tests that need real frames skip only when it is absent."""
    root = Path(os.environ.get("VOS_DAVIS_ROOT", DAVIS_ROOT))
    if not (root / "JPEGImages" / "480p").is_dir():
        pytest.skip(f"shared DAVIS data not found at {root} (set VOS_DAVIS_ROOT)")
    return root
