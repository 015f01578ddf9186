"""Overlay video for review: each frame with translucent object colours and outlines, native size, MP4."""

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from engine.errors import FormatError
from engine.formats.annotations import ImageSource, Progress, TrackedMasks
from engine.palette import PALETTE


def object_colors(masks: TrackedMasks) -> np.ndarray:
    """(256, 3) uint8 RGB lookup: the object's own colour where set, else the VOC palette colour."""
    lut = np.array(PALETTE, dtype=np.uint8, copy=True)
    for oid, o in masks.objects.items():
        if o.color is not None:
            lut[oid] = o.color
    return lut


def draw_overlay(rgb: np.ndarray, ids: np.ndarray, colors: np.ndarray, alpha: float = 0.5,
                 contour_px: int = 2) -> np.ndarray:
    """(H, W, 3) RGB uint8 + (H, W) uint8 ids -> (H, W, 3) RGB uint8 with blended masks and outlines."""
    out = rgb.copy()
    fg = ids > 0
    if fg.any():
        blend = (1.0 - alpha) * rgb[fg].astype(np.float32) + alpha * colors[ids[fg]].astype(np.float32)
        out[fg] = np.clip(blend + 0.5, 0, 255).astype(np.uint8)
        present = np.unique(ids[fg])
        for oid in present.tolist():
            contours, _ = cv2.findContours((ids == oid).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, tuple(int(c) for c in colors[oid]), contour_px, cv2.LINE_AA)
    return out


def save_overlay_video(masks: TrackedMasks, path: str | Path, *, images: ImageSource | None = None,
                       fps: float | None = None, alpha: float = 0.5, progress: Progress = None) -> Path:
    """Write an MP4 ('mp4v') of the frames with their masks drawn on, at native size, atomically.

    MPEG-4 cannot hold odd widths/heights: an odd-sized video gets one black column/row on the
    right/bottom (the picture itself stays at native scale, never resampled or cropped).

    `images`: t -> (H, W, 3) RGB uint8 at native size; defaults to `masks.images`. fps defaults to
    `masks.fps`, else 30. The video is encoded to a temporary file beside `path`, fsynced, then
    renamed over it, so a crash never leaves a truncated MP4 under the final name.
    """
    path = Path(path)
    source = images if images is not None else masks.images
    if source is None:
        raise FormatError(path, "an overlay video needs the video frames (no frame source given)")
    rate = float(fps or masks.fps or 30.0)
    colors = object_colors(masks)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".mp4")
    os.close(fd)
    writer = None
    try:
        # MPEG-4 needs even dimensions (OpenCV silently crops odd ones): pad one black column/row instead
        pad_w, pad_h = masks.width % 2, masks.height % 2
        size = (masks.width + pad_w, masks.height + pad_h)
        writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), rate, size)
        if not writer.isOpened():
            raise FormatError(path, "OpenCV could not open an 'mp4v' video writer")
        for t, ids in masks.iter_masks(path):
            rgb = np.asarray(source(t))
            if rgb.shape != (masks.height, masks.width, 3):
                raise FormatError(path, f"frame {t}: image shape {rgb.shape} does not match the mask size "
                                        f"{masks.width}x{masks.height}")
            bgr = cv2.cvtColor(draw_overlay(rgb, ids, colors, alpha), cv2.COLOR_RGB2BGR)
            if pad_w or pad_h:
                bgr = cv2.copyMakeBorder(bgr, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=(0, 0, 0))
            writer.write(bgr)
            if progress is not None:
                progress(t + 1, masks.num_frames)
        writer.release()
        writer = None
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if writer is not None:
            writer.release()
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
