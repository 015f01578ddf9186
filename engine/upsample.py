"""Moving label maps between the stride-8 embedding grid and image resolution.

The embedding grid cell (i, j) covers image rows 8i..8i+7 and columns 8j..8j+7 (h = ceil(H/8),
w = ceil(W/8)), so conversions resize to exactly (8h, 8w) and crop, never a fractional scale.

Upsampling is edge-aware: coarse per-label probabilities are bilinearly upsampled to half the
working resolution, smoothed with a guided filter whose guide is the frame itself (so a label
boundary snaps to the image edge nearest to it), then upsampled to full size and arg-maxed.
The guided filter runs on the box around the unsure pixels only (`unsure_box`): at half resolution on
the whole frame it cost ~4 ms a frame, a third of the main thread's propagation time. The bilateral
solver used by the PML paper is not built into OpenCV wheels (needs Eigen) and a full-size guided
filter costs ~10 ms.
"""

from __future__ import annotations

import cv2
import numpy as np

STRIDE = 8


def grid_size(height: int, width: int, stride: int = STRIDE) -> tuple[int, int]:
    """(H, W) image -> (h, w) embedding grid, ceil division."""
    return (height + stride - 1) // stride, (width + stride - 1) // stride


def label_fractions(ids: np.ndarray, labels: list[int], grid: tuple[int, int]) -> np.ndarray:
    """ids (H, W) uint8 -> (L, h, w) float32: fraction of each grid cell covered by each label."""
    h, w = grid
    H, W = ids.shape
    ph, pw = h * STRIDE - H, w * STRIDE - W
    if ph or pw:
        ids = cv2.copyMakeBorder(ids, 0, ph, 0, pw, cv2.BORDER_REPLICATE)
    out = np.empty((len(labels), h, w), np.float32)
    for i, lab in enumerate(labels):
        out[i] = cv2.resize((ids == lab).astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    return out


def _resize_stack(stack: np.ndarray, size_hw: tuple[int, int], scale: int) -> np.ndarray:
    """(L, h, w) -> (L, H, W) bilinear at exactly ``scale``x then cropped to size_hw."""
    L, h, w = stack.shape
    H, W = size_hw
    out = np.empty((L, H, W), np.float32)
    for i in range(L):
        big = cv2.resize(stack[i], (w * scale, h * scale), interpolation=cv2.INTER_LINEAR)
        out[i] = big[:H, :W]
    return out


def bilinear(probs: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """(L, h, w) grid probabilities -> (L, H, W), plain bilinear, cell-aligned."""
    return _resize_stack(probs, size_hw, STRIDE)


def grid_average(stack: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(L, H, W) -> (L, h, w) float32: the mean over each grid cell (edge pixels repeated past the image)."""
    h, w = grid
    H, W = stack.shape[1:]
    padded = np.pad(stack, ((0, 0), (0, h * STRIDE - H), (0, w * STRIDE - W)), mode="edge")
    return np.stack([cv2.resize(s, (w, h), interpolation=cv2.INTER_AREA) for s in padded]).astype(np.float32)


SURE = 1e-3  # a probability this close to 0 or 1 is sure: the guided filter leaves a region of such pixels as it is


def unsure_box(planes: np.ndarray, margin: int) -> tuple[int, int, int, int] | None:
    """(L, H, W) probabilities -> (y0, y1, x0, x1), the box around every unsure pixel (SURE) of any plane plus
    `margin` on each side (clipped to the frame), or None when every pixel is sure.

    A guided filter of radius r reads 2r pixels around a pixel, so with margin 2r it gives the box's unsure pixels
    what it gives them on the whole frame, and a pixel 2r or more from every unsure one stays within SURE of its
    input: filtering the box only is the whole frame's guided filter, at a fraction of the cost."""
    unsure = ((planes > SURE) & (planes < 1 - SURE)).any(axis=0)
    rows, cols = np.flatnonzero(unsure.any(axis=1)), np.flatnonzero(unsure.any(axis=0))
    if not len(rows):
        return None
    H, W = unsure.shape
    return (max(0, rows[0] - margin), min(H, rows[-1] + 1 + margin),
            max(0, cols[0] - margin), min(W, cols[-1] + 1 + margin))


class EdgeAwareUpsampler:
    """Coarse (L, h, w) probabilities + RGB frame (H, W, 3) -> (L, H, W) probabilities.

    ``radius`` and ``eps`` are the guided filter's parameters at half resolution; ``radius=0``
    turns the refinement off (plain bilinear). ``boundary``: (guided, plain, guide) half-size arrays ->
    refined guided probability, run on each object after the guided filter (a trained boundary head bound
    to its band, engine.propagation.boundary_refiner), or None. The defaults are the engine's one
    guided-filter setting (measured on DAVIS train sequences, see PropagationConfig): propagation, clicks
    and refiners all use it. Propagation and ``Session.probabilities`` add the boundary head
    (PropagationConfig.boundary_head and boundary_band), so a frame's probabilities agree with its mask;
    clicks do not (through the k-fold heads clicks lost 0.011 mIoU@1: README, "Benchmarks the field uses").
    """

    def __init__(self, radius: int = 8, eps: float = 1e-3, boundary=None):
        self.radius = radius
        self.eps = eps
        self.boundary = boundary

    def half_size(self, probs: np.ndarray, image: np.ndarray, size_hw: tuple[int, int]):
        """(plain bilinear (L, H/2, W/2), guided-filtered planes 1..L-1 (L-1, H/2, W/2), guide (H/2, W/2, 3)):
        what the boundary head reads, and is trained on (engine/boundary_train.py)."""
        H, W = size_hw
        hh, hw = (H + 1) // 2, (W + 1) // 2
        half = _resize_stack(probs, (hh, hw), STRIDE // 2)
        guide = cv2.resize(image, (hw, hh), interpolation=cv2.INTER_AREA)
        smooth = half[1:].copy() if len(probs) > 1 else half[:1].copy()
        box = unsure_box(smooth, 2 * self.radius)
        if box is not None:
            crop = np.s_[box[0]:box[1], box[2]:box[3]]
            gf = cv2.ximgproc.createGuidedFilter(guide[crop], self.radius, self.eps)
            for plane in smooth:
                plane[crop] = gf.filter(np.ascontiguousarray(plane[crop]))
        return half, smooth, guide

    def __call__(self, probs: np.ndarray, image: np.ndarray | None,
                 size_hw: tuple[int, int]) -> np.ndarray:
        H, W = size_hw
        if image is None or self.radius <= 0:
            return _resize_stack(probs, (H, W), STRIDE)
        half, smooth, guide = self.half_size(probs, image, size_hw)
        out = np.empty((len(probs), H, W), np.float32)
        # the guided filter is linear and keeps constants: filter L-1 planes, the first is 1 - rest
        first = 1 if len(probs) > 1 else 0
        for i, sm in enumerate(smooth, first):
            if self.boundary is not None and first:
                sm = self.boundary(np.clip(sm, 0, 1), half[i], guide)
            out[i] = cv2.resize(sm, (W, H), interpolation=cv2.INTER_LINEAR)
        if first:
            np.subtract(1.0, out[1:].sum(axis=0), out=out[0])
        return out


def argmax_ids(probs: np.ndarray, labels: list[int]) -> np.ndarray:
    """(L, H, W) probabilities -> (H, W) uint8 ids (labels[argmax], first label wins ties).

    A running maximum over the L planes: several times faster than np.argmax over axis 0."""
    best = probs[0].copy()
    ids = np.full(best.shape, labels[0], np.uint8)
    for i in range(1, len(labels)):
        better = probs[i] > best
        ids[better] = labels[i]
        np.maximum(best, probs[i], out=best)
    return ids


def resize_ids(ids: np.ndarray, size_wh: tuple[int, int], smooth: bool = True) -> np.ndarray:
    """ids (H, W) uint8 -> (H2, W2) uint8 at size_wh=(W2, H2).

    ``smooth``: per-label bilinear resize of the one-hot map then argmax, which keeps labels exact
    but avoids the staircase of nearest-neighbour upscaling; otherwise nearest.
    """
    W2, H2 = size_wh
    if ids.shape == (H2, W2):
        return ids.copy()
    labels = [int(v) for v in np.unique(ids)]
    if not smooth or len(labels) == 1:
        return cv2.resize(ids, (W2, H2), interpolation=cv2.INTER_NEAREST)
    best = np.full((H2, W2), -1.0, np.float32)
    out = np.zeros((H2, W2), np.uint8)
    for lab in labels:
        p = cv2.resize((ids == lab).astype(np.float32), (W2, H2), interpolation=cv2.INTER_LINEAR)
        better = p > best
        out[better] = lab
        best[better] = p[better]
    return out
