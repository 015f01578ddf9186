"""The headless runs behind `vos-engine propagate` and `vos-engine demo`, with the real embedder."""

import numpy as np
import pytest

from engine.cli import main
from engine.errors import FormatError
from engine.palette import read_id_png, write_id_png
from engine.pipeline import propagate_file
from tests.test_propagation import jaccard, square_video
from tests.test_session import write_frames


@pytest.fixture
def clip(tmp_path):
    """A 4-frame 960x540 clip (working size 854x480) of a red square moving right, its first mask as PNG."""
    frames, gt = square_video(n=4, size=(960, 540), squares=(((220, 40, 40), (100, 200), (40, 0)),), side=160)
    write_id_png(tmp_path / "first.png", gt[0])
    return write_frames(tmp_path / "video", frames), tmp_path / "first.png", gt


def test_propagate_file_exports_every_frame_at_native_size(clip, tmp_path):
    video, mask, gt = clip
    assert main(["propagate", str(video), "--mask", str(mask), "--out", str(tmp_path / "out")]) == 0
    pngs = sorted((tmp_path / "out" / "Annotations").rglob("*.png"))
    assert len(pngs) == 4
    for t, png in enumerate(pngs):
        ids = read_id_png(png)
        assert ids.shape == (540, 960)
        assert jaccard(ids == 1, gt[t] == 1) > 0.8


def test_propagate_file_rejects_empty_and_mis_sized_masks(clip, tmp_path):
    video, _, _ = clip
    write_id_png(tmp_path / "empty.png", np.zeros((540, 960), np.uint8))
    with pytest.raises(FormatError, match="empty"):
        propagate_file(video, tmp_path / "empty.png", out=tmp_path / "o1")
    write_id_png(tmp_path / "small.png", np.ones((50, 60), np.uint8))
    with pytest.raises(FormatError, match="60x50"):
        propagate_file(video, tmp_path / "small.png", out=tmp_path / "o2")
    assert main(["propagate", str(video), "--mask", str(tmp_path / "small.png"), "--out", str(tmp_path / "o3")]) == 2
