"""`modulation` refiner, after OSMN (Yang et al., "Efficient Video Object Segmentation via Network
Modulation", CVPR 2018), shrunk to a few ms per frame on a CPU.

A small segmentation network at 1/4 of the working size reads the frame and the engine's coarse
probability map of one object and predicts a residual logit on top of that map (so an untrained or unsure
network leaves the engine's answer as it is: it refines rather than replaces). Its intermediate channels
(stride 8) are
- scaled per channel by a VISUAL modulator, computed once per propagation from the object's crop in its
  reference frame (background zeroed, 64 x 64): a tiny CNN -> global pooling -> per-channel scales;
- shifted by a SPATIAL modulator: a 2-D Gaussian fitted to the object's mask in the previous frame
  (mean and covariance of its pixel coordinates, widened), turned into per-channel shift maps by 1x1 convs.
One forward pass per frame and object, no per-video fine-tuning.

The network does not read the engine's embeddings: the embedding head was still being trained when this
was built, and a refiner trained on one version of it would silently break with the next. It learns its own
low-level features from the image; the engine's knowledge arrives through the coarse map.

Weights: resources/refiners/modulation.pt (state dict + config, loaded with weights_only=True), made by
`vos-engine train --refiner modulation` (see engine/refiners/train_modulation.py and
resources/refiners/modulation.json for how).
"""

from importlib.resources import files
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.threads import torch_threads
from engine.refiners.base import (
    FrameContext, Reference, Refiner, Run, normalise_probs, reference_for,
)

RESOURCES = Path(files("engine.resources") / "refiners")  # resources/refiners in a checkout
WEIGHTS = RESOURCES / "modulation.pt"
SCALE = 4            # the network runs at 1/SCALE of the working size
CROP = 64            # visual-modulator crop side
PRIOR_WIDEN = 1.5    # the spatial prior's standard deviations are the mask's times this
EPS = 1e-4
MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


# ----------------------------------------------------------------------------------------------- network

class VisualModulator(nn.Module):
    """(N, 3, CROP, CROP) normalised masked crop -> (N, n_scales) per-channel scales around 1."""

    def __init__(self, n_scales: int, width: int = 24):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, 2, 1), nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(width, n_scales)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, crop: torch.Tensor) -> torch.Tensor:
        z = self.body(crop).mean((2, 3))
        return 2.0 * torch.sigmoid(self.fc(z))          # 1.0 at initialisation


class ModulatedRefiner(nn.Module):
    """Image + coarse probability at 1/4 size, modulated at 1/8, residual logit out at 1/4.

    forward(image (N,3,h4,w4) normalised, coarse (N,1,h4,w4) in [0,1], prior (N,1,h8,w8) in [0,1],
    scales (N, 3*width)) -> (N,1,h4,w4) refined logits. h8 = ceil(h4/2).

    refined logit = logit(coarse) + 4 c (1 - c) * residual: the correction is gated by the engine's own
    uncertainty, so pixels the engine is sure of (c near 0 or 1) barely move. Without this gate a first
    version rewrote confident, correct regions of unfamiliar objects (a white horse lost its tail).
    """

    def __init__(self, width: int = 24, low: int = 16):
        super().__init__()
        self.config = {"width": width, "low": low}
        self.width = width
        self.enc1 = nn.Conv2d(4, low, 3, 1, 1)
        self.enc2 = nn.Conv2d(low, width, 3, 2, 1)
        self.enc3 = nn.Conv2d(width, width, 3, 1, 2, dilation=2)
        self.enc4 = nn.Conv2d(width, width, 3, 1, 4, dilation=4)
        self.shift = nn.Conv2d(1, 3 * width, 1)        # spatial modulator: prior -> per-layer shifts
        self.fuse = nn.Conv2d(low + width, low, 1)
        self.dec = nn.Conv2d(low, low, 3, 1, 1)
        self.out = nn.Conv2d(low, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.visual = VisualModulator(3 * width)

    def forward(self, image, coarse, prior, scales):
        c = coarse.clamp(EPS, 1 - EPS)
        return torch.logit(c) + uncertainty(c) * self.residual(image, c, prior, scales)

    def residual(self, image, coarse, prior, scales):
        """The ungated correction (N,1,h4,w4), smooth enough to be upsampled before gating."""
        c = coarse.clamp(EPS, 1 - EPS)
        x1 = F.relu(self.enc1(torch.cat([image, 2 * c - 1], 1)))
        b = self.shift(prior)
        w = self.width
        g = scales[:, :, None, None]
        x = F.relu(self.enc2(x1))
        x = x * g[:, :w] + b[:, :w, : x.shape[2], : x.shape[3]]
        x = F.relu(self.enc3(x))
        x = x * g[:, w:2 * w] + b[:, w:2 * w, : x.shape[2], : x.shape[3]]
        x = F.relu(self.enc4(x))
        x = x * g[:, 2 * w:] + b[:, 2 * w:, : x.shape[2], : x.shape[3]]
        up = F.interpolate(x, size=x1.shape[2:], mode="bilinear", align_corners=False)
        y = F.relu(self.fuse(torch.cat([x1, up], 1)))
        y = F.relu(self.dec(y))
        return self.out(y)


def uncertainty(c):
    """4 c (1 - c): 1 at c = 0.5, 0 at c = 0 or 1 (works on tensors and arrays)."""
    return 4.0 * c * (1.0 - c)


# ----------------------------------------------------------------------------------------------- inputs
# The same functions make the training inputs (train_modulation.py) and the inference inputs.

def quarter_size(h: int, w: int) -> tuple[int, int]:
    """(H, W) working size -> (h4, w4) network size."""
    return (h + SCALE - 1) // SCALE, (w + SCALE - 1) // SCALE


def prep_image(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) RGB uint8 -> (3, h, w) float32 ImageNet-normalised at size_hw."""
    small = cv2.resize(image, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_AREA).astype(np.float32)
    return ((small - MEAN) / STD).transpose(2, 0, 1)


def object_crop(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Visual-modulator input: (3, CROP, CROP) float32, the mask's bounding box (+10 %) with background
    zeroed (after normalisation, i.e. set to the ImageNet mean). Zeros when the mask is empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return np.zeros((3, CROP, CROP), np.float32)
    H, W = mask.shape
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    px, py = int(0.1 * (x1 - x0)) + 1, int(0.1 * (y1 - y0)) + 1
    x0, x1, y0, y1 = max(0, x0 - px), min(W, x1 + px), max(0, y0 - py), min(H, y1 + py)
    crop = image[y0:y1, x0:x1].astype(np.float32)
    crop[~mask[y0:y1, x0:x1].astype(bool)] = MEAN
    crop = cv2.resize(crop, (CROP, CROP), interpolation=cv2.INTER_AREA)
    return ((crop - MEAN) / STD).transpose(2, 0, 1).astype(np.float32)


def gaussian_prior(mask: np.ndarray | None, size_hw: tuple[int, int], widen: float = PRIOR_WIDEN) -> np.ndarray:
    """Spatial modulator input: (h, w) float32 in [0, 1], a 2-D Gaussian with the mean and (widened)
    covariance of the mask's pixel coordinates, rendered at size_hw; all ones when there is no mask."""
    h, w = size_hw
    if mask is None or not mask.any():
        return np.ones((h, w), np.float32)
    H, W = mask.shape
    ys, xs = np.nonzero(mask)
    pts = np.stack([xs * (w / W), ys * (h / H)], 1).astype(np.float64)
    mu = pts.mean(0)
    cov = np.cov(pts.T) if len(pts) > 2 else np.eye(2)
    cov = cov * widen ** 2 + np.eye(2) * 1.0
    inv = np.linalg.inv(cov)
    gy, gx = np.mgrid[0:h, 0:w]
    d = np.stack([gx - mu[0] + 0.5, gy - mu[1] + 0.5], -1)
    m = np.einsum("...i,ij,...j->...", d, inv, d)
    return np.exp(-0.5 * m).astype(np.float32)


# ----------------------------------------------------------------------------------------------- refiner

def _roi(c4: np.ndarray, prev: np.ndarray | None, size_hw: tuple[int, int], margin: int = 16,
         threshold: float = 0.05) -> tuple[int, int, int, int] | None:
    """Where the network runs, at 1/4 size: the box of the coarse map above `threshold` and of the previous
    mask, grown by `margin` cells, even-aligned (so the 1/8 prior lines up); (y0, y1, x0, x1) or None.

    Outside it the coarse map is near 0 and its uncertainty gate near 0, so the correction would be
    negligible there anyway; skipping it saves most of the cost for objects smaller than the frame."""
    h4, w4 = size_hw
    boxes = []
    ys, xs = np.nonzero(c4 > threshold)
    if len(xs):
        boxes.append((ys.min(), ys.max() + 1, xs.min(), xs.max() + 1))
    if prev is not None and prev.any():
        x, y, w, h = cv2.boundingRect(prev.astype(np.uint8))
        boxes.append((y // SCALE, (y + h) // SCALE + 1, x // SCALE, (x + w) // SCALE + 1))
    if not boxes:
        return None
    y0 = max(0, min(b[0] for b in boxes) - margin) // 2 * 2
    x0 = max(0, min(b[2] for b in boxes) - margin) // 2 * 2
    y1 = min(h4, max(b[1] for b in boxes) + margin)
    x1 = min(w4, max(b[3] for b in boxes) + margin)
    return y0, y1, x0, x1


def load_model(path: str | Path = WEIGHTS) -> ModulatedRefiner:
    blob = torch.load(path, map_location="cpu", weights_only=True)
    model = ModulatedRefiner(**blob["config"])
    model.load_state_dict(blob["state"])
    return model.eval()


class ModulationRefiner(Refiner):
    name = "modulation"
    description = "OSMN-style modulated decoder: coarse map + image, visual and spatial modulators"

    def __init__(self, weights: str | Path | None = None, model: ModulatedRefiner | None = None,
                 strength: float = 1.0):
        self.strength = float(strength)     # scales the learnt correction (0 = the engine's map unchanged)
        if model is None:
            path = Path(weights) if weights is not None else WEIGHTS
            model = load_model(path) if path.is_file() else ModulatedRefiner().eval()
            self.trained = path.is_file()
        else:
            self.trained = True
        self.model = model
        self.references: list[Reference] = []
        self._scales: dict[int, torch.Tensor] = {}

    def start(self, run: Run) -> None:
        self.references = list(run.references)
        self._scales = {}

    def finish(self) -> None:
        self._scales = {}

    def _scales_for(self, obj_id: int, t: int, refs: list[Reference]) -> torch.Tensor | None:
        if obj_id not in self._scales:
            ref = reference_for(refs, obj_id, t)
            if ref is None:
                return None
            crop = torch.from_numpy(object_crop(ref.image, ref.ids == obj_id))[None]
            with torch.inference_mode():
                self._scales[obj_id] = self.model.visual(crop)
        return self._scales[obj_id]

    def refine(self, ctx: FrameContext) -> dict[int, np.ndarray]:
        with torch_threads(1):  # small ops: splitting them over busy cores was 10-40x slower
            return self._refine(ctx)

    def _refine(self, ctx: FrameContext) -> dict[int, np.ndarray]:
        H, W = ctx.image.shape[:2]
        h4, w4 = quarter_size(H, W)
        h8, w8 = (h4 + 1) // 2, (w4 + 1) // 2
        refs = self.references
        image = None
        out: dict[int, np.ndarray] = {}
        for obj_id, coarse in ctx.probs.items():
            coarse = coarse.astype(np.float32, copy=False)
            scales = self._scales_for(obj_id, ctx.t, refs)
            if scales is None:
                out[obj_id] = coarse
                continue
            if image is None:
                image = torch.from_numpy(prep_image(ctx.image, (h4, w4)))[None]
            prev = None if ctx.prev_ids is None else ctx.prev_ids == obj_id
            c4 = cv2.resize(coarse, (w4, h4), interpolation=cv2.INTER_AREA)
            roi = _roi(c4, prev, (h4, w4))
            if roi is None:                 # nothing of the object anywhere: nothing to refine
                out[obj_id] = coarse
                continue
            y0, y1, x0, x1 = roi
            prior = gaussian_prior(prev, (h8, w8))[y0 // 2:, x0 // 2:]
            with torch.inference_mode():
                resid = self.model.residual(image[:, :, y0:y1, x0:x1],
                                            torch.from_numpy(np.ascontiguousarray(c4[y0:y1, x0:x1]))[None, None],
                                            torch.from_numpy(np.ascontiguousarray(prior))[None, None],
                                            scales)[0, 0].numpy()
            # the residual is smooth: upsample it (x4 exactly), gate it by the full-size map's uncertainty
            Y0, X0 = y0 * SCALE, x0 * SCALE
            Y1, X1 = min(H, y1 * SCALE), min(W, x1 * SCALE)
            resid = cv2.resize(resid, ((x1 - x0) * SCALE, (y1 - y0) * SCALE),
                               interpolation=cv2.INTER_LINEAR)[: Y1 - Y0, : X1 - X0]
            c = np.clip(coarse[Y0:Y1, X0:X1], EPS, 1 - EPS)
            logit = np.log(c / (1 - c)) + self.strength * uncertainty(c) * resid
            refined = coarse.copy()
            refined[Y0:Y1, X0:X1] = 1.0 / (1.0 + np.exp(-logit))
            out[obj_id] = refined
        return normalise_probs(out)
