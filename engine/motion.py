"""Motion prior: the previous frame's label fractions carried along dense optical flow (OpenCV DIS).

Why: propagation penalises cells far from the previous frame's mask, which assumes the object stays
where it was; a fast object (or camera pan) moves out of that region. Warping the previous mask along
the flow from this frame back to the previous one moves the prior with the object, as MoNet/CRN do.
DIS runs on half-resolution grey frames (a few ms); the flow is averaged over each stride-8 cell and
the (L, h, w) grid fractions are warped bilinearly, so the warp itself costs microseconds.
"""

from __future__ import annotations

import cv2
import numpy as np

from .upsample import STRIDE

FLOW_SCALE = 0.5  # DIS works on frames downscaled by this factor


def _grey(image: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    small = cv2.resize(image, size_wh, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)


class FlowWarper:
    """warp(prev_image, image, prev_fr) -> prev_fr moved to where its pixels are in ``image``.

    Images: (H, W, 3) RGB uint8 at working size; prev_fr: (L, h, w) float32 grid fractions with
    h = ceil(H / 8), w = ceil(W / 8). Cells whose source falls outside the previous frame become
    background (plane 0 gets the missing mass), so the planes still sum to one.
    """

    def __init__(self, preset: int = cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST):
        self.dis = cv2.DISOpticalFlow_create(preset)

    def grid_flow(self, prev_image: np.ndarray, image: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
        """(h, w, 2) float32: for each cell of ``image``, its displacement (in cells) to the previous frame."""
        H, W = image.shape[:2]
        size = (max(8, round(W * FLOW_SCALE)), max(8, round(H * FLOW_SCALE)))
        flow = self.dis.calc(_grey(image, size), _grey(prev_image, size), None)
        h, w = grid
        # cell (i, j) covers pixels 8i..8i+7: average the flow over exactly that block (padded grid)
        big = cv2.resize(flow, (W, H), interpolation=cv2.INTER_LINEAR)
        big = cv2.copyMakeBorder(big, 0, h * STRIDE - H, 0, w * STRIDE - W, cv2.BORDER_REPLICATE)
        cells = cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA)
        return cells / (STRIDE * FLOW_SCALE)

    def warp(self, prev_image: np.ndarray, image: np.ndarray, prev_fr: np.ndarray) -> np.ndarray:
        L, h, w = prev_fr.shape
        flow = self.grid_flow(prev_image, image, (h, w))
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
        map_x, map_y = xs + flow[..., 0], ys + flow[..., 1]
        out = np.empty_like(prev_fr, dtype=np.float32)
        for i in range(L):
            out[i] = cv2.remap(np.ascontiguousarray(prev_fr[i], np.float32), map_x, map_y,
                               cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        out[0] += np.maximum(1.0 - out.sum(axis=0), 0)
        return out
