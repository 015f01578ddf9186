"""DAVIS region similarity J and boundary accuracy F, with the official tool's exact semantics.

Reproduces davisvideochallenge/davis2017-evaluation (davis2017/metrics.py and utils.py): J is the IoU
(1 when both masks are empty); F compares one-pixel boundary maps (the Martin et al. `seg2bmap`,
offset half a pixel towards the origin) matched within ceil(0.008 x image diagonal) pixels by a
dilation with skimage's `disk` kernel (rebuilt here in numpy, equal element for element), then
precision/recall/F. Sequence statistics are the official mean, recall (fraction > 0.5) and decay
(mean of the first quarter minus mean of the last quarter). No thinning step: the official code has none.

All masks here are (H, W) arrays, anything truthy is foreground; shapes must match.
"""

from dataclasses import dataclass

import cv2
import numpy as np

BOUND_TH = 0.008  # boundary tolerance as a fraction of the image diagonal (official default)


def jaccard(pred: np.ndarray, gt: np.ndarray) -> float:
    """Region similarity J = |pred & gt| / |pred | gt|; 1.0 when both are empty (official db_eval_iou)."""
    pred, gt = _as_bool_pair(pred, gt)
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(pred & gt) / union)


def disk_kernel(radius: int) -> np.ndarray:
    """(2r+1, 2r+1) uint8 disk, identical to skimage.morphology.disk(r): 1 where x^2 + y^2 <= r^2."""
    r = int(radius)
    coords = np.arange(-r, r + 1)
    x, y = np.meshgrid(coords, coords)
    return (x * x + y * y <= r * r).astype(np.uint8)


def boundary_tolerance(shape: tuple[int, int], bound_th: float = BOUND_TH) -> int:
    """Matching distance in pixels for an image of shape (H, W): ceil(bound_th * diagonal), or bound_th if >= 1."""
    if bound_th >= 1:
        return int(bound_th)
    return int(np.ceil(bound_th * np.linalg.norm(shape[:2])))


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool boundary of a mask: pixels differing from their east, south or south-east neighbour.

    The official `_seg2bmap` at the mask's own size; the last row/column only look along themselves.
    """
    seg = np.asarray(mask).astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def boundary_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """Boundary F-measure (official f_measure): 1 when both boundaries are empty, 0 when exactly one is."""
    pred, gt = _as_bool_pair(pred, gt)
    radius = boundary_tolerance(pred.shape, bound_th)
    # Work inside the union's bounding box grown by one pixel (clipped to the image): outside it both boundary
    # maps are empty, and inside it they equal the whole-image ones, so every count below is unchanged.
    x, y, w, h = cv2.boundingRect((pred | gt).view(np.uint8))
    y0, x0 = max(y - 1, 0), max(x - 1, 0)
    y1, x1 = min(y + h + 1, pred.shape[0]), min(x + w + 1, pred.shape[1])
    fg_boundary = boundary_map(pred[y0:y1, x0:x1])
    gt_boundary = boundary_map(gt[y0:y1, x0:x1])
    n_fg = int(np.count_nonzero(fg_boundary))
    n_gt = int(np.count_nonzero(gt_boundary))
    if n_fg == 0 and n_gt == 0:
        return 1.0
    if n_fg == 0 or n_gt == 0:
        return 0.0  # precision or recall is 0 and the other 1 -> F = 0
    kernel = disk_kernel(radius)
    fg_dil = cv2.dilate(fg_boundary.view(np.uint8), kernel).view(bool)
    gt_dil = cv2.dilate(gt_boundary.view(np.uint8), kernel).view(bool)
    precision = np.count_nonzero(fg_boundary & gt_dil) / float(n_fg)
    recall = np.count_nonzero(gt_boundary & fg_dil) / float(n_gt)
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def frame_scores(pred_ids: np.ndarray, gt_ids: np.ndarray, object_ids) -> dict[int, tuple[float, float]]:
    """Per-object (J, F) of one frame from (H, W) id masks: object k is `ids == k` in both."""
    if pred_ids.shape != gt_ids.shape:
        raise ValueError(f"prediction shape {pred_ids.shape} != ground truth shape {gt_ids.shape}")
    out = {}
    for k in object_ids:
        p, g = pred_ids == k, gt_ids == k
        out[int(k)] = (jaccard(p, g), boundary_f(p, g))
    return out


@dataclass(frozen=True)
class SequenceStats:
    """Official per-object sequence statistics of a per-frame measure (J or F)."""

    mean: float
    recall: float  # fraction of frames scoring > 0.5
    decay: float  # mean of the first quarter of frames minus mean of the last quarter


def sequence_statistics(per_frame) -> SequenceStats:
    """Mean, recall and decay of a 1-D per-frame measure, as the official db_statistics (NaNs ignored).

    Quarters are the official ones: index bounds round(linspace(1, n, 5) + 1e-10) - 1, both ends inclusive.
    (The official code casts those bounds to uint8, which only differs beyond 256 frames, where it wraps;
    here they stay correct.) An empty input gives NaNs.
    """
    v = np.asarray(per_frame, dtype=np.float64).ravel()
    if v.size == 0:
        return SequenceStats(float("nan"), float("nan"), float("nan"))
    valid = ~np.isnan(v)
    mean = float(np.mean(v[valid])) if valid.any() else float("nan")
    recall = float(np.mean(v > 0.5))  # nanmean of a bool array: every frame counts
    ids = (np.round(np.linspace(1, len(v), 5) + 1e-10) - 1).astype(np.int64)
    first, last = v[ids[0] : ids[1] + 1], v[ids[3] : ids[4] + 1]
    decay = _nanmean(first) - _nanmean(last)
    return SequenceStats(mean, recall, float(decay))


def _nanmean(a: np.ndarray) -> float:
    a = a[~np.isnan(a)]
    return float(np.mean(a)) if a.size else float("nan")


def _as_bool_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground truth shape {gt.shape}")
    if pred.ndim != 2:
        raise ValueError(f"masks must be (H, W), got {pred.shape}")
    return np.ascontiguousarray(pred.astype(bool, copy=False)), np.ascontiguousarray(gt.astype(bool, copy=False))
