"""Video sources: video files (through OpenCV) and folders of frames, read on demand.

Frames are RGB uint8 arrays of shape (H, W, 3). Sizes are (width, height).
The working size has short side `short_side` (aspect kept, both sides rounded to even numbers);
a video whose short side is already <= short_side is never upscaled: working size = native size.
Decoded working frames sit in a bounded LRU cache, so memory stays flat for long videos.
Reads are serialised by a lock: the GUI thread and a background worker may share one source.
"""

import logging
import os
import re
import stat
import threading
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from engine.errors import VideoError

# For file dialogs; open_video lets OpenCV try any file.
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
DEFAULT_FOLDER_FPS = 30.0

log = logging.getLogger(__name__)


def open_video(path: str | Path, short_side: int | None = 480, cache_frames: int = 64) -> "VideoSource":
    """Open a video file or a folder of jpg/png frames. `short_side=None` works at native size."""
    path = Path(path)
    info = _stat(path)
    if stat.S_ISDIR(info.st_mode):
        return FrameFolder(path, short_side, cache_frames)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise VideoError(path, "is a single image; open the folder that holds the frames instead")
    if info.st_size == 0:
        raise VideoError(path, "file is empty")
    return VideoFile(path, short_side, cache_frames)


def _stat(path: Path) -> os.stat_result:
    """stat() of a video path, or a VideoError for a path no system call can use (NUL byte, too long)."""
    text = str(path)
    shown = text if len(text) <= 200 else f"{text[:120]}...{text[-60:]} ({len(text)} characters)"
    if "\0" in text:
        raise VideoError(shown.replace("\0", "\\0"), "the path contains a NUL byte")
    try:
        return path.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise VideoError(shown, "no such file or folder") from None
    except OSError as e:
        raise VideoError(shown, f"cannot open ({e.strerror or e})") from None


def working_size_for(native_size: tuple[int, int], short_side: int | None) -> tuple[int, int]:
    """(width, height) scaled so the short side is `short_side`, rounded to even; never upscaled."""
    w, h = native_size
    if short_side is None or min(w, h) <= short_side:
        return w, h
    scale = short_side / min(w, h)
    return max(2, 2 * round(w * scale / 2)), max(2, 2 * round(h * scale / 2))


class VideoSource:
    """Random access to frames by index; subclasses implement `_read(i)` (native RGB frame)."""

    def __init__(self, path: Path, num_frames: int, fps: float, native_size: tuple[int, int],
                 short_side: int | None, cache_frames: int):
        self.path = path
        self.name = path.stem if path.is_file() else path.name
        self.fps = fps
        self.native_size = native_size
        self.short_side = short_side
        self.working_size = working_size_for(native_size, short_side)
        self.cache_frames = cache_frames
        self._n = num_frames
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.path)!r}, frames={self._n}, fps={self.fps:g}, "
                f"native={self.native_size}, working={self.working_size})")

    def frame(self, i: int) -> np.ndarray:
        """Frame i at working size: (H, W, 3) RGB uint8, read-only (it is shared with the cache)."""
        i = self._check_index(i)
        with self._lock:
            cached = self._cache.get(i)
            if cached is not None:
                self._cache.move_to_end(i)
                return cached
            img = self._read(i)
            if (img.shape[1], img.shape[0]) != self.working_size:
                img = cv2.resize(img, self.working_size, interpolation=cv2.INTER_AREA)
            img.flags.writeable = False
            self._cache[i] = img
            while len(self._cache) > self.cache_frames:
                self._cache.popitem(last=False)
            return img

    def native_frame(self, i: int) -> np.ndarray:
        """Frame i at native size: (H, W, 3) RGB uint8, a fresh array (not cached)."""
        i = self._check_index(i)
        with self._lock:
            return self._read(i)

    def close(self) -> None:
        with self._lock:
            self._cache.clear()

    def _check_index(self, i) -> int:
        i = int(i)
        if not 0 <= i < self._n:
            raise IndexError(f"frame {i} out of range 0..{self._n - 1} in {self.path}")
        return i

    def _read(self, i: int) -> np.ndarray:
        raise NotImplementedError


class VideoFile(VideoSource):
    """A video file decoded by OpenCV; sequential reads stay sequential, other indices seek."""

    def __init__(self, path: Path, short_side: int | None, cache_frames: int):
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise VideoError(path, "cannot open: not a video, or a codec OpenCV cannot decode, or a truncated file")
        self._cap = cap
        self._next = 0  # index the next cap.read() returns
        first = self._grab_bgr(0)
        if first is None:
            cap.release()
            raise VideoError(path, "cannot decode any frame (unsupported codec or corrupt file)")
        native = (first.shape[1], first.shape[0])
        fps = cap.get(cv2.CAP_PROP_FPS)
        fps = float(fps) if fps and np.isfinite(fps) and 0 < fps < 1000 else DEFAULT_FOLDER_FPS
        n = self._probe_count(path, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        super().__init__(path, n, fps, native, short_side, cache_frames)

    def _grab_bgr(self, i: int) -> np.ndarray | None:
        if i != self._next:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, i)
        ok, img = self._cap.read()
        self._next = i + 1 if ok else -1  # after a failed read the position is unknown: seek next time
        return img if ok else None

    def _probe_count(self, path: Path, reported: int) -> int:
        """The true frame count: the header's count is checked by reading its last frame.

        If that fails (truncated file) the last readable frame is found by bisection and dropped too, since
        the frame at the cut may decode only partly; frames past the reported count are counted by reading on.
        """
        if reported > 1 and self._grab_bgr(reported - 1) is not None:
            n = reported
        elif reported > 1:
            lo, hi = 0, reported - 1  # frame lo is readable, frame hi is not
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if self._grab_bgr(mid) is not None:
                    lo = mid
                else:
                    hi = mid
            log.warning("%s: header says %d frames, only %d decode; the frame at the cut is dropped as it "
                        "may be partial", path, reported, lo + 1)
            return max(1, lo)
        else:
            n = 1  # no usable count in the header: count by reading on from frame 1
        while self._grab_bgr(n) is not None:
            n += 1
        return n

    def _read(self, i: int) -> np.ndarray:
        img = self._grab_bgr(i)
        if img is None:
            raise VideoError(self.path, f"cannot decode frame {i} of {self._n} (corrupt or truncated file)")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def close(self) -> None:
        with self._lock:
            self._cap.release()
            super().close()


def natural_key(name: str) -> list:
    """Sort key where digit runs compare as numbers: frame2 < frame10."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


class FrameFolder(VideoSource):
    """A folder of jpg/jpeg/png frames in natural order; all must have the same size."""

    def __init__(self, path: Path, short_side: int | None, cache_frames: int, fps: float = DEFAULT_FOLDER_FPS):
        files = sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                       key=lambda p: natural_key(p.name))
        if not files:
            raise VideoError(path, "folder holds no .jpg/.jpeg/.png frames")
        sizes = [self._header_size(p) for p in files]  # headers only: cheap even for thousands of frames
        for p, size in zip(files, sizes):
            if size != sizes[0]:
                raise VideoError(p, f"frame size {size[0]}x{size[1]} differs from {files[0].name} "
                                    f"({sizes[0][0]}x{sizes[0][1]}); all frames must have one size")
        self.files = files
        super().__init__(path, len(files), fps, sizes[0], short_side, cache_frames)

    @staticmethod
    def _header_size(p: Path) -> tuple[int, int]:
        try:
            with Image.open(p) as im:
                return im.size
        except (OSError, SyntaxError, ValueError) as e:
            raise VideoError(p, f"unreadable image ({e})") from None

    def _read(self, i: int) -> np.ndarray:
        p = self.files[i]
        try:
            data = p.read_bytes()
        except OSError as e:
            raise VideoError(p, f"cannot read image ({e.strerror or e})") from None
        if p.suffix.lower() in (".jpg", ".jpeg") and not data.rstrip(b"\0").endswith(b"\xff\xd9"):
            raise VideoError(p, "truncated JPEG (no end marker)")  # OpenCV would fill the rest with grey
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if img is None:
            raise VideoError(p, "cannot decode image")
        if (img.shape[1], img.shape[0]) != self.native_size:
            raise VideoError(p, f"frame size {img.shape[1]}x{img.shape[0]} differs from {self.native_size}")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
