"""The one Qt-free data type every format loads into and saves from.

A `TrackedMasks` is one video's annotation: object metadata plus a way to get the id mask of
any frame. Masks are produced on demand (a callable or a lazily decoded sequence), so exporting a
3000-frame video never holds all its masks in RAM: every saver iterates frame by frame.
"""

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from engine.atomic import atomic_write_bytes
from engine.errors import FormatError

# Masks are decoded whole into memory: a few bytes of RLE can declare any size, so sizes are bounded (8K video fits).
MAX_SIDE = 16384
MAX_PIXELS = 8192 * 8192

MaskSource = Callable[[int], np.ndarray] | Sequence[np.ndarray]
ImageSource = Callable[[int], np.ndarray]
Progress = Callable[[int, int], None] | None  # progress(done_frames, total_frames), called per frame


@dataclass
class ObjectMeta:
    """What survives of an object in a file: its stable id (1..255), name, category, colour."""

    id: int
    name: str = ""
    category: str = "object"
    color: tuple[int, int, int] | None = None  # (r, g, b); None = the VOC palette colour of `id`

    def __post_init__(self):
        self.id = int(self.id)
        if not 1 <= self.id <= 255:
            raise ValueError(f"object id {self.id} is outside 1..255 (id masks are uint8)")
        self.name = str(self.name) if self.name else default_object_name(self.id)
        self.category = str(self.category) if self.category else "object"
        self.color = _color(self.color)

    @classmethod
    def from_any(cls, obj_id: int, obj) -> "ObjectMeta":
        """Accept an ObjectMeta, the project's ObjectInfo, a dict, or a bare name string."""
        if isinstance(obj, ObjectMeta):
            return obj if obj.id == obj_id else cls(obj_id, obj.name, obj.category, obj.color)
        if isinstance(obj, str):
            return cls(obj_id, obj)
        if isinstance(obj, dict):
            return cls(obj_id, obj.get("name", ""), obj.get("category", "object"), _color(obj.get("color")))
        return cls(obj_id, getattr(obj, "name", ""), getattr(obj, "category", "object"),
                   _color(getattr(obj, "color", None)))


def default_object_name(obj_id: int) -> str:
    return f"object_{obj_id}"


def _color(c) -> tuple[int, int, int] | None:
    if c is None:
        return None
    try:
        r, g, b = (int(v) for v in c)
    except (TypeError, ValueError):
        return None
    return (r, g, b)


@dataclass
class TrackedMasks:
    """One video's object masks, at the video's native size.

    name:        sequence / video name (the DAVIS folder name, the COCO/YTVIS video name).
    size:        (width, height) of every mask, native resolution.
    objects:     {id: ObjectMeta}; values may also be the project's ObjectInfo (normalised on init).
    frames:      the masks: a callable t -> (H, W) uint8 id mask (0 = background, ids 1..255), or a
                 sequence of such arrays. Read through `mask(t)`, which checks shape and dtype.
    num_frames:  number of frames; may be omitted when `frames` is a sequence.
    frame_names: image file name of each frame ("00000.jpg"); default f"{t:05d}.jpg".
    images:      optional RGB frame source t -> (H, W, 3) uint8 at native size (DAVIS JPEGImages,
                 overlay video). Loaders fill it when the images are on disk.
    fps:         frame rate for the overlay video (None = 30).
    source:      file or folder this was loaded from (error messages name it).
    """

    name: str
    size: tuple[int, int]
    objects: dict[int, ObjectMeta]
    frames: MaskSource
    num_frames: int | None = None
    frame_names: list[str] | None = None
    images: ImageSource | None = None
    fps: float | None = None
    source: Path | None = field(default=None, repr=False)

    def __post_init__(self):
        self.size = (int(self.size[0]), int(self.size[1]))
        self.objects = {int(k): ObjectMeta.from_any(int(k), v) for k, v in sorted(self.objects.items())}
        if self.num_frames is None:
            if callable(self.frames):
                raise ValueError("num_frames is required when frames is a callable")
            self.num_frames = len(self.frames)
        self.num_frames = int(self.num_frames)
        if self.frame_names is None:
            self.frame_names = [f"{t:05d}.jpg" for t in range(self.num_frames)]
        else:
            self.frame_names = [str(n) for n in self.frame_names]
            if len(self.frame_names) != self.num_frames:
                raise ValueError(f"{len(self.frame_names)} frame names for {self.num_frames} frames")
        stems = [self.frame_stem(t) for t in range(self.num_frames)]
        if len(set(stems)) != len(stems):  # savers name files after frames: two would become one file
            seen: dict[str, int] = {}
            t, first = next((t, seen[s]) for t, s in enumerate(stems) if seen.setdefault(s, t) != t)
            raise FormatError(self.source if self.source is not None else self.name,
                              f"video '{self.name}': frames {first} and {t} are both named '{stems[t]}'; "
                              "their masks would be written to one file")

    @property
    def width(self) -> int:
        return self.size[0]

    @property
    def height(self) -> int:
        return self.size[1]

    def __len__(self) -> int:
        return self.num_frames

    def frame_stem(self, t: int) -> str:
        """File name of frame t without extension ("00000"): DAVIS PNGs and JPEGs are named after it."""
        return Path(self.frame_names[t]).stem

    def mask(self, t: int, path: str | Path | None = None) -> np.ndarray:
        """(H, W) uint8 id mask of frame t; FormatError naming `path` (or the source) if it is malformed."""
        if not 0 <= t < self.num_frames:
            raise IndexError(f"frame {t} outside 0..{self.num_frames - 1}")
        m = self.frames(t) if callable(self.frames) else self.frames[t]
        m = np.asarray(m)
        where = path if path is not None else (self.source if self.source is not None else self.name)
        if m.ndim != 2 or m.shape != (self.height, self.width):
            raise FormatError(where, f"frame {t} ({self.frame_names[t]}): mask shape {m.shape} does not "
                                     f"match the video size {self.width}x{self.height} (expected "
                                     f"({self.height}, {self.width}))")
        if m.dtype != np.uint8:
            if m.dtype == bool:
                m = m.astype(np.uint8)
            elif np.issubdtype(m.dtype, np.integer) and (m.size == 0 or (m.min() >= 0 and m.max() <= 255)):
                m = m.astype(np.uint8)
            else:
                raise FormatError(where, f"frame {t}: mask dtype {m.dtype} is not uint8 object ids")
        return m

    def iter_masks(self, path: str | Path | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """(t, mask) for every frame, one at a time."""
        for t in range(self.num_frames):
            yield t, self.mask(t, path)

    def image(self, t: int, path: str | Path | None = None) -> np.ndarray:
        """(H, W, 3) uint8 RGB frame t at native size, checked against `size`."""
        if self.images is None:
            raise FormatError(path if path is not None else self.name, "no frame images to write or draw on")
        img = np.asarray(self.images(t))
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        if img.shape != (self.height, self.width, 3):
            raise FormatError(path if path is not None else self.name,
                              f"frame {t}: image shape {img.shape} does not match the mask size "
                              f"{self.width}x{self.height}")
        return np.ascontiguousarray(img, dtype=np.uint8)


def check_frame_size(width, height, path: str | Path, where: str) -> None:
    """A declared frame size must be positive and at most MAX_SIDE per side and MAX_PIXELS in all."""
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE and width * height <= MAX_PIXELS):
        raise FormatError(path, f"{where}: frame size {width}x{height} is not a video frame size "
                                f"(1..{MAX_SIDE} per side, at most {MAX_PIXELS} pixels)")


def with_unknown_ids(objects: dict[int, ObjectMeta], mask: np.ndarray) -> dict[int, ObjectMeta]:
    """Savers never drop pixels: ids seen in a mask but missing from `objects` get default metadata."""
    ids = np.unique(mask)
    for i in ids[ids > 0].tolist():
        if i not in objects:
            objects[i] = ObjectMeta(i)
    return objects


def as_list(videos: "TrackedMasks | Sequence[TrackedMasks]") -> list[TrackedMasks]:
    return [videos] if isinstance(videos, TrackedMasks) else list(videos)


def write_jpeg(path: Path, rgb, t: int, shape_hw: tuple[int, int]) -> None:
    """Frame t's image (RGB, native size, checked against its mask's (H, W)) as a JPEG file, atomically."""
    rgb = np.asarray(rgb)
    if rgb.shape[:2] != tuple(shape_hw):
        raise FormatError(path, f"frame {t}: image is {rgb.shape[1]}x{rgb.shape[0]} but the mask is "
                                f"{shape_hw[1]}x{shape_hw[0]}")
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise FormatError(path, f"frame {t}: JPEG encoding failed")
    atomic_write_bytes(path, buf.tobytes())
