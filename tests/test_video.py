import random

import cv2
import numpy as np
import pytest

from engine.errors import VideoError
from engine.video import natural_key, open_video, working_size_for

N = 24


def _frame(i, w=160, h=120):
    """BGR frame whose grey level and printed number identify i."""
    f = np.full((h, w, 3), (i * 9) % 256, np.uint8)
    cv2.putText(f, str(i), (10, h - 20), cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 255, 255), 3)
    return f


def _write_video(path, fourcc, n=N, size=(160, 120), fps=12.0):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert w.isOpened(), f"cv2 cannot write {fourcc}"
    for i in range(n):
        w.write(_frame(i, *size))
    w.release()
    return path


@pytest.fixture(scope="module")
def avi(tmp_path_factory):
    return _write_video(tmp_path_factory.mktemp("v") / "clip.avi", "MJPG")


@pytest.fixture(scope="module")
def mp4(tmp_path_factory):
    return _write_video(tmp_path_factory.mktemp("v") / "clip.mp4", "mp4v")


@pytest.mark.parametrize("kind", ["avi", "mp4"])
def test_video_file_count_fps_size_and_random_access(kind, request):
    path = request.getfixturevalue(kind)
    v = open_video(path, short_side=None)
    assert len(v) == N and v.fps == pytest.approx(12.0)
    assert v.native_size == v.working_size == (160, 120)
    assert v.name == "clip" and v.path == path
    sequential = [v.native_frame(i) for i in range(N)]
    order = list(range(N))
    random.Random(0).shuffle(order)
    for i in order:
        assert np.array_equal(v.native_frame(i), sequential[i]), f"frame {i} differs when read out of order"
    assert v.frame(0).shape == (120, 160, 3) and v.frame(0).dtype == np.uint8
    with pytest.raises(IndexError):
        v.frame(N)


def test_frames_are_rgb(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    img = np.zeros((20, 30, 3), np.uint8)
    img[..., 2] = 255  # red in BGR
    cv2.imwrite(str(folder / "0.png"), img)
    assert open_video(folder).frame(0)[0, 0].tolist() == [255, 0, 0]


def test_working_size_keeps_aspect_even_and_never_upscales():
    assert working_size_for((1280, 720), 480) == (854, 480)
    assert working_size_for((720, 1280), 480) == (480, 854)
    assert working_size_for((1001, 701), 480) == (686, 480)
    assert working_size_for((640, 360), 480) == (640, 360)
    assert working_size_for((1280, 720), None) == (1280, 720)


def test_working_frames_are_resized(avi):
    v = open_video(avi, short_side=60)
    assert v.working_size == (80, 60) and v.native_size == (160, 120)
    assert v.frame(3).shape == (60, 80, 3)
    assert v.native_frame(3).shape == (120, 160, 3)


def test_lru_cache_is_bounded(avi):
    v = open_video(avi, cache_frames=5)
    for i in range(N):
        v.frame(i)
    assert len(v._cache) == 5 and list(v._cache) == list(range(N - 5, N))
    assert v.frame(N - 1) is v.frame(N - 1)  # served from the cache


def test_truncated_video_gives_a_correct_shorter_count(avi, tmp_path):
    data = avi.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    v = open_video(cut, short_side=None)
    full = open_video(avi, short_side=None)
    assert N // 3 < len(v) < N
    for i in range(len(v)):  # every frame counted is whole, none is garbage
        assert np.array_equal(v.native_frame(i), full.native_frame(i)), f"frame {i}"


def test_truncated_mp4_is_a_clear_error(mp4, tmp_path):
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(mp4.read_bytes()[:3000])
    with pytest.raises(VideoError, match="cut.mp4.*(cannot open|cannot decode)"):
        open_video(cut)


def test_frame_folder_natural_sort(tmp_path):
    folder = tmp_path / "seq"
    folder.mkdir()
    for i in (10, 2, 1, 33):
        cv2.imwrite(str(folder / f"frame{i}.png"), _frame(i))
    (folder / "notes.txt").write_text("ignored")
    v = open_video(folder)
    assert [p.name for p in v.files] == ["frame1.png", "frame2.png", "frame10.png", "frame33.png"]
    assert len(v) == 4 and v.name == "seq" and v.fps == 30.0
    assert v.native_frame(2)[0, 0, 0] == (10 * 9) % 256
    assert sorted(["a10", "a2", "A1"], key=natural_key) == ["A1", "a2", "a10"]


def test_jpeg_folder_working_size(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i:05d}.jpg"), _frame(i, 200, 100))
    v = open_video(tmp_path, short_side=50)
    assert v.native_size == (200, 100) and v.working_size == (100, 50)
    assert v.frame(2).shape == (50, 100, 3)


@pytest.mark.parametrize("setup, pattern", [
    ("missing", "nothing.mp4: no such file"),
    ("empty_folder", "empty: folder holds no"),
    ("mixed_sizes", "00002.png: frame size 80x60 differs"),
    ("unreadable_image", "00001.png: unreadable image"),
    ("not_a_video", "notes.mp4: cannot open"),
    ("empty_file", "zero.mp4: file is empty"),
    ("single_image", "one.png: is a single image"),
])
def test_errors_name_the_file(tmp_path, setup, pattern):
    if setup == "missing":
        path = tmp_path / "nothing.mp4"
    elif setup == "empty_folder":
        path = tmp_path / "empty"
        path.mkdir()
    elif setup in ("mixed_sizes", "unreadable_image"):
        path = tmp_path / "frames"
        path.mkdir()
        for i in range(3):
            cv2.imwrite(str(path / f"{i:05d}.png"), _frame(i, *((80, 60) if i == 2 else (160, 120))))
        if setup == "unreadable_image":
            (path / "00001.png").write_bytes(b"garbage")
    elif setup == "not_a_video":
        path = tmp_path / "notes.mp4"
        path.write_text("this is text, not a video\n" * 100)
    elif setup == "empty_file":
        path = tmp_path / "zero.mp4"
        path.write_bytes(b"")
    else:
        path = tmp_path / "one.png"
        cv2.imwrite(str(path), _frame(0))
    with pytest.raises(VideoError, match=pattern):
        open_video(path)


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_image_corrupt_after_header_fails_on_read_naming_file(tmp_path, suffix):
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"{i}.{suffix}"), np.random.default_rng(i).integers(0, 255, (60, 80, 3), np.uint8))
    data = (tmp_path / f"1.{suffix}").read_bytes()
    (tmp_path / f"1.{suffix}").write_bytes(data[: len(data) // 2])  # header intact, data cut
    v = open_video(tmp_path)
    assert v.frame(0).shape == (60, 80, 3)
    with pytest.raises(VideoError, match=f"1.{suffix}"):
        v.frame(1)
