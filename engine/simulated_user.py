"""The simulated annotator of `vos-engine interactive-eval`, as pure functions on masks.

It starts with one positive click at the interior-most point of each object's first-frame ground truth;
each round it picks the frame with the lowest J&F and clicks at the interior-most point of the largest
error region there: positive inside a miss (false negative), negative inside a false alarm (false positive).

Masks are (H, W) arrays (bool, or uint8 id masks where said); points are (x, y) = (column, row) pixels.
"""

from dataclasses import dataclass

import cv2
import numpy as np

from engine.distance import distance_inside
from engine.metrics import boundary_f, jaccard


@dataclass(frozen=True)
class Click:
    """One simulated click: frame index, object id, pixel (x = column, y = row), and its sign."""

    frame: int
    object_id: int
    x: int
    y: int
    positive: bool


def interior_point(mask: np.ndarray) -> tuple[int, int] | None:
    """(x, y) of the pixel farthest from the mask's outside (the image border counts as outside).

    Exact Euclidean distance transform; ties go to the first pixel in row-major order. None if empty.
    """
    m = np.asarray(mask).astype(np.uint8)
    if not m.any():
        return None
    dist = distance_inside(m)
    row, col = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(col), int(row)


def largest_error_region(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, bool] | None:
    """Largest 8-connected region of false negatives or false positives of one object.

    Returns (region (H, W) bool, positive) where positive is True for a miss (the click must add it),
    False for a false alarm; None when pred == gt. A tie in area goes to the miss.
    """
    pred, gt = np.asarray(pred).astype(bool), np.asarray(gt).astype(bool)
    best = None  # (area, region, positive)
    for errors, positive in ((gt & ~pred, True), (pred & ~gt, False)):
        if not errors.any():
            continue
        n, labels, stats, _ = cv2.connectedComponentsWithStats(errors.view(np.uint8), connectivity=8)
        k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        area = int(stats[k, cv2.CC_STAT_AREA])
        if best is None or area > best[0]:
            best = (area, labels == k, positive)
    return None if best is None else (best[1], best[2])


def first_click(gt_ids: np.ndarray, object_id: int, frame: int = 0) -> Click | None:
    """The round-0 click: positive, at the interior-most point of the object in the (H, W) uint8 gt id mask."""
    p = interior_point(gt_ids == object_id)
    return None if p is None else Click(frame, int(object_id), p[0], p[1], True)


def frame_jf(pred_ids: np.ndarray, gt_ids: np.ndarray, object_ids) -> float:
    """Mean over objects of (J + F) / 2 on one frame of (H, W) uint8 id masks."""
    vals = [(jaccard(pred_ids == k, gt_ids == k) + boundary_f(pred_ids == k, gt_ids == k)) / 2 for k in object_ids]
    return float(np.mean(vals)) if vals else 1.0


def worst_frame(jf_per_frame) -> int | None:
    """Index of the lowest J&F (first one on ties); None when every frame is perfect (or there are none)."""
    v = np.asarray(jf_per_frame, dtype=np.float64)
    if v.size == 0 or np.all(v >= 1.0):
        return None
    return int(np.argmin(v))


def correction_click(pred_ids: np.ndarray, gt_ids: np.ndarray, object_ids, frame: int) -> Click | None:
    """The click on one frame: the largest error region over all objects, clicked at its interior-most point."""
    best = None  # (area, object_id, region, positive)
    for k in object_ids:
        found = largest_error_region(pred_ids == k, gt_ids == k)
        if found is None:
            continue
        region, positive = found
        area = int(np.count_nonzero(region))
        if best is None or area > best[0]:
            best = (area, int(k), region, positive)
    if best is None:
        return None
    x, y = interior_point(best[2])
    return Click(int(frame), best[1], x, y, best[3])


def next_click(pred_frames, gt_frames, object_ids, jf_per_frame=None) -> Click | None:
    """The next round's click: worst frame by J&F, then its largest error region.

    pred_frames/gt_frames: sequences of (H, W) uint8 id masks, one per frame (same length).
    jf_per_frame: precomputed per-frame J&F (as `frame_jf`), computed here when None.
    """
    if jf_per_frame is None:
        jf_per_frame = [frame_jf(p, g, object_ids) for p, g in zip(pred_frames, gt_frames)]
    t = worst_frame(jf_per_frame)
    if t is None:
        return None
    return correction_click(pred_frames[t], gt_frames[t], object_ids, t)
