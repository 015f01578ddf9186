"""A learned boundary head: re-decides the pixels near an object's edge from the frame itself.

The stride-8 retrieval labels whole cells; the guided filter (engine/upsample.py) moves a label edge to the
nearest image edge but cannot tell which edge is the object's. This small CNN reads, at a quarter of the
working size, the guided-filter probability of one object, the plain bilinear one and the RGB frame, and
predicts a residual logit. The residual is upsampled to the guided filter's half size and gated there by
the guided probability's own uncertainty, 4 p (1 - p), and to a band around the guided map's 0.5 contour:
TRAIN_BAND pixels in training, the narrower PropagationConfig.boundary_band in use (same mean, smaller worst
losses: README). Pixels the engine is sure of, and unsure regions away from any edge, stay as they are (a
version without the band learnt to dissolve whole unsure regions), and a pixel the head takes out of the
object's inside, in a hole closed off from the frame's edge, keeps its guided value, as does a pixel it adds
to a piece of the object it more than doubled, and the pixels it takes away when they are more than
PropagationConfig.boundary_most_removed of the object. So an untrained head (zero output layer) is exactly the
guided filter, and the head only runs on the box around the band. A quarter of the size is fine enough:
DAVIS's boundary F allows about 8 pixels at 480p.

Boundary refinement is local (a 68-pixel receptive field at full size), so it transfers from few training
sequences far better than semantics do.

Weights: resources/boundary/head.pt (config + state dict of plain tensors, loaded with weights_only=True),
made by `vos-engine train --boundary` (engine/boundary_train.py; the record is resources/boundary/head.json).
"""

from functools import lru_cache
from importlib.resources import files
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.embedding.network import INPUT_MEAN, INPUT_STD
from engine.errors import FormatError
from engine.threads import torch_threads

WEIGHTS = Path(files("engine.resources") / "boundary") / "head.pt"
MEAN = np.array(INPUT_MEAN, np.float32)  # the embedding network's normalisation
STD = np.array(INPUT_STD, np.float32)
GATE_MIN = 0.02      # pixels with 4 p (1 - p) below this (p < 0.005 or > 0.995) are left as they are
TRAIN_BAND = 12      # half-size pixels either side of the guided 0.5 contour the head learns on (3 cells)
EPS = 1e-4


class BoundaryHead(nn.Module):
    """(N, 6, h, w) quarter-size inputs (see `inputs`) -> (N, 1, h, w) residual logits of the object."""

    def __init__(self, width: int = 8, dilations: tuple[int, ...] = (1, 2, 4, 8)):
        super().__init__()
        self.config = {"width": width, "dilations": list(dilations)}
        self.stem = nn.Conv2d(6, width, 3, padding=1)
        self.body = nn.ModuleList(nn.Conv2d(width, width, 3, padding=d, dilation=d) for d in dilations)
        self.out = nn.Conv2d(width, 1, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @property
    def halo(self) -> int:
        """Pixels of context each output pixel reads on every side (the receptive field's radius)."""
        return 2 + sum(self.config["dilations"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        for conv in self.body:
            h = torch.relu(h + conv(h))
        return self.out(h)


def inputs(guided: np.ndarray, plain: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """(H, W) guided-filter and bilinear probabilities + (H, W, 3) uint8 RGB -> (6, H, W) float32:
    guided, plain, their difference, normalised RGB (the same layout in training and in use)."""
    g = np.clip(guided, 0, 1)
    p = np.clip(plain, 0, 1)
    image = ((rgb.astype(np.float32) - MEAN) / STD).transpose(2, 0, 1)
    return np.concatenate([g[None], p[None], (g - p)[None], image]).astype(np.float32)


def near_contour(guided: np.ndarray, band: int) -> np.ndarray:
    """(H, W) bool: pixels within `band` of the other side of the guided map's 0.5 contour."""
    inside = (guided >= 0.5).astype(np.uint8)
    if inside.all() or not inside.any():
        return np.zeros(guided.shape, bool)
    d_in = cv2.distanceTransform(inside, cv2.DIST_L2, 3)
    d_out = cv2.distanceTransform(1 - inside, cv2.DIST_L2, 3)
    return np.maximum(d_in, d_out) <= band


def changeable(guided: np.ndarray, band: int) -> np.ndarray:
    """(H, W) bool: the pixels the head may change, unsure and within `band` of the contour."""
    return (4 * guided * (1 - guided) >= GATE_MIN) & near_contour(guided, band)


def gated(guided: torch.Tensor, residual: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Half-size guided probability (N, 1, H, W) + quarter-size residual (N, 1, ceil(H/2), ceil(W/2)) ->
    refined half-size logits: the residual upsampled 2x (cell-aligned, the extra row/column cut off), gated
    by 4 p (1 - p) and zero outside `allowed` ((N, 1, H, W) float 0/1, see `changeable`)."""
    g = guided.clamp(EPS, 1 - EPS)
    r = F.interpolate(residual, scale_factor=2, mode="bilinear", align_corners=False)
    r = r[:, :, :g.shape[2], :g.shape[3]]
    return torch.log(g / (1 - g)) + 4 * g * (1 - g) * allowed * r


def quarter(a: np.ndarray) -> np.ndarray:
    """Half-size (H, W[, C]) -> (ceil(H/2), ceil(W/2)[, C]): the mean of each 2 x 2 block (an odd last
    row or column is repeated), so quarter pixels line up with half pixels in every crop."""
    H, W = a.shape[:2]
    if H % 2 or W % 2:
        a = cv2.copyMakeBorder(a, 0, H % 2, 0, W % 2, cv2.BORDER_REPLICATE)
    return cv2.resize(a, (a.shape[1] // 2, a.shape[0] // 2), interpolation=cv2.INTER_AREA)


def refine(head: BoundaryHead, guided: np.ndarray, plain: np.ndarray, rgb: np.ndarray, band: int,
           most_removed: float) -> np.ndarray:
    """One object's half-size (H, W) guided and bilinear probabilities + half-size RGB -> refined (H, W)
    probability, changed only within `band` of the contour and taking at most `most_removed` of the object
    away (see `not_dissolved`). The head runs on the box around the changeable pixels plus its receptive
    field."""
    allowed = changeable(guided, band)
    if not allowed.any():
        return guided
    ys, xs = np.nonzero(allowed)
    m = 2 * (head.halo + 1)                         # half-size context: the receptive field + the 2x upsampling
    H, W = guided.shape
    y0, y1 = max(0, ys.min() - m) // 2 * 2, min(H, ys.max() + 1 + m)
    x0, x1 = max(0, xs.min() - m) // 2 * 2, min(W, xs.max() + 1 + m)
    g, p, im = guided[y0:y1, x0:x1], plain[y0:y1, x0:x1], rgb[y0:y1, x0:x1]
    x = inputs(quarter(g), quarter(p), quarter(im))
    a = allowed[y0:y1, x0:x1]
    with torch_threads(1), torch.inference_mode():
        logit = gated(torch.from_numpy(g)[None, None], head(torch.from_numpy(x)[None]),
                      torch.from_numpy(a.astype(np.float32))[None, None])[0, 0].numpy()
    out = guided.copy()
    out[y0:y1, x0:x1] = np.where(a, 1 / (1 + np.exp(-logit)), g)
    return not_dissolved(guided, no_grown_islands(guided, no_new_holes(guided, out)), most_removed)


def no_new_holes(guided: np.ndarray, refined: np.ndarray) -> np.ndarray:
    """`refined` where the head cut pixels out of the object's inside (a hole not open to the frame's edge
    through background) given back their guided value: the head trims and extends outlines only."""
    inside = refined >= 0.5
    cut = (guided >= 0.5) & ~inside
    if not cut.any():
        return refined
    n, lab = cv2.connectedComponents((~inside).astype(np.uint8), connectivity=4)
    edge = np.zeros(n, bool)
    edge[np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])] = True
    restore = cut & ~edge[lab]
    out = refined.copy()
    out[restore] = guided[restore]
    return out


def no_grown_islands(guided: np.ndarray, refined: np.ndarray) -> np.ndarray:
    """`refined` where the head added pixels to a piece of the object that is less than half the guided
    map's own (a speck it grew into a blob) given back their guided value: the head moves outlines, it does
    not make new parts of the object."""
    inside = refined >= 0.5
    added = inside & (guided < 0.5)
    if not added.any():
        return refined
    n, lab = cv2.connectedComponents(inside.astype(np.uint8), connectivity=4)
    size = np.bincount(lab.ravel(), minlength=n)
    was = np.bincount(lab[guided >= 0.5], minlength=n)
    restore = added & (2 * was < size)[lab]
    out = refined.copy()
    out[restore] = guided[restore]
    return out


def not_dissolved(guided: np.ndarray, refined: np.ndarray, most_removed: float) -> np.ndarray:
    """`refined`, unless the head took more than `most_removed` of the guided object away: then the pixels it
    took keep their guided value. The head trims outlines by a few percent of the object (at most 13 % on any
    frame of bmx-bumps, boat, horsejump-low, rhino and surf); taking up to 71 %, as on drift-turn, is eating an
    unsure object, not trimming it."""
    inside = guided >= 0.5
    removed = inside & (refined < 0.5)
    if removed.sum() <= most_removed * inside.sum():
        return refined
    out = refined.copy()
    out[removed] = guided[removed]
    return out


@lru_cache(maxsize=8)
def load_head(path: str | Path = WEIGHTS) -> BoundaryHead:
    """The head saved at `path` (cached: every upsampler of the process shares one copy)."""
    path = Path(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        head = BoundaryHead(**blob["config"])
        head.load_state_dict(blob["state"])
    except FileNotFoundError:
        raise FormatError(path, "boundary head weights not found") from None
    except Exception as e:  # corrupt or foreign file
        raise FormatError(path, f"not boundary head weights ({e.__class__.__name__})") from None
    return head.eval().requires_grad_(False)
