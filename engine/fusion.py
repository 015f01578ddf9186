"""A learned fusion head: one frame's cues on the stride-8 grid -> each object's probability (FEELVOS-style).

The hand-made rule (Propagator.predict_grid) is a softmax of each label's global retrieval similarity, less a
penalty growing with the distance to the previous mask. This head reads, per object and cell, the cues that
rule uses and one it does not:

- global: similarity to the object's reference prototypes, and the best of the other labels';
- local (FEELVOS): the best similarity to the previous frame's object cells within LOCAL_RADIUS cells, and to
  its other cells;
- the previous frame's fraction of the object and the distance to it.

It predicts a residual logit added to the hand-made rule's own logit for the object, so an untrained head
(zero output layer) is that rule for a single object. Objects are combined by a soft aggregation
(background = the product of 1 - p over objects, then normalised). Cues, not features: the head never sees what the object looks
like, so it transfers from the 30 training sequences as the boundary head does.

Weights: made by `vos-engine train --fusion` (engine/fusion_train.py), loaded with weights_only=True.
"""

from functools import lru_cache
from importlib.resources import files
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.errors import FormatError
from engine.threads import torch_threads

WEIGHTS = Path(files("engine.resources") / "fusion") / "head.pt"
LOCAL_RADIUS = 2       # cells either side searched on the previous frame (5 x 5 = 40 px at 480p)
DIST_CAP = 16.0        # cells; the distance channel is min(d, DIST_CAP) / DIST_CAP
CHANNELS = 6
EPS = 1e-4


class FusionHead(nn.Module):
    """(N, CHANNELS, h, w) cues (see `cues`) -> (N, 1, h, w) residual logits."""

    def __init__(self, width: int = 16, dilations: tuple[int, ...] = (1, 2, 4, 8)):
        super().__init__()
        self.config = {"width": width, "dilations": list(dilations)}
        self.stem = nn.Conv2d(CHANNELS, width, 3, padding=1)
        self.body = nn.ModuleList(nn.Conv2d(width, width, 3, padding=d, dilation=d) for d in dilations)
        self.out = nn.Conv2d(width, 1, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        for conv in self.body:
            h = torch.relu(h + conv(h))
        return self.out(h)


def local_similarities(emb: np.ndarray, prev_emb: np.ndarray, radius: int = LOCAL_RADIUS) -> np.ndarray:
    """(h, w, D) embeddings of a frame and of the previous one -> ((2r+1)^2, h, w) float32 cosine similarity
    of each cell to the previous frame's cell at each offset (0 past the frame's edge: `_local_best` never
    reads those). Channels-last, so each offset's dot product runs over contiguous memory (half the time)."""
    with torch_threads(1), torch.inference_mode():
        a = torch.from_numpy(np.require(emb, np.float32, "CW"))
        b = torch.from_numpy(np.require(prev_emb, np.float32, "CW"))
        h, w = a.shape[:2]
        b = F.pad(b, (0, 0, radius, radius, radius, radius))
        k = 2 * radius + 1
        out = torch.empty((k * k, h, w))
        for i in range(k * k):
            dy, dx = divmod(i, k)
            out[i] = (a * b[dy:dy + h, dx:dx + w]).sum(-1)
        return out.numpy()


def _local_best(local: np.ndarray, mask: np.ndarray, radius: int = LOCAL_RADIUS) -> np.ndarray:
    """((2r+1)^2, h, w) local similarities + (h, w) bool cells of the previous frame -> (h, w) the best
    similarity to those cells within the window (-1 where none is)."""
    h, w = mask.shape
    padded = np.pad(mask, radius)
    k = 2 * radius + 1
    best = np.full((h, w), -1.0, np.float32)
    for i in range(k * k):
        dy, dx = divmod(i, k)
        m = padded[dy:dy + h, dx:dx + w]
        np.maximum(best, np.where(m, local[i], -1.0), out=best)
    return best


def cues(scores: np.ndarray, i: int, prev_fr: np.ndarray | None, local: np.ndarray | None) -> np.ndarray:
    """Object i's (CHANNELS, h, w) float32 cues: scores (L, h, w) global similarities (plane 0 background),
    prev_fr (L, h, w) previous-frame fractions or None, local: `local_similarities` or None."""
    h, w = scores.shape[1:]
    rest = np.max(np.delete(scores, i, axis=0), axis=0)
    if prev_fr is None or local is None or not (prev_fr[i] >= 0.5).any():
        prev = np.zeros((h, w), np.float32)
        dist = np.ones((h, w), np.float32)
        l_obj = np.full((h, w), -1.0, np.float32)
        l_rest = np.full((h, w), -1.0, np.float32) if local is None else _local_best(local, np.ones((h, w), bool))
    else:
        m = prev_fr[i] >= 0.5
        prev = prev_fr[i].astype(np.float32)
        d = cv2.distanceTransform((~m).astype(np.uint8), cv2.DIST_L2, 3)
        dist = np.minimum(d, DIST_CAP) / DIST_CAP
        l_obj = _local_best(local, m)
        l_rest = _local_best(local, ~m)
    return np.stack([scores[i], rest, l_obj, l_rest, prev, dist]).astype(np.float32)


def fuse(head: FusionHead, scores: np.ndarray, base_logits: np.ndarray, prev_fr: np.ndarray | None,
         local: np.ndarray | None) -> np.ndarray:
    """(L, h, w) global similarities and the hand-made rule's per-object logits (base_logits[i], plane 0 unused)
    -> (L, h, w) float32 probabilities (plane 0 background)."""
    x = np.stack([cues(scores, i, prev_fr, local) for i in range(1, len(scores))])
    with torch_threads(1), torch.inference_mode():
        r = head(torch.from_numpy(x))[:, 0].numpy()
    z = fused_logits(torch.from_numpy(base_logits[1:]), torch.from_numpy(r)).numpy()
    return aggregate(1.0 / (1.0 + np.exp(-z)))


def fused_logits(base: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """The rule's logits plus the head's residual, gated by the rule's own uncertainty 4 p (1 - p): cells the
    rule is sure of stay as they are (the same in training and in use)."""
    p = torch.sigmoid(base)
    return base + 4 * p * (1 - p) * residual


def aggregate(p: np.ndarray) -> np.ndarray:
    """(K, h, w) per-object probabilities -> (K + 1, h, w) label probabilities: background the product of
    1 - p, then normalised to sum to 1 (for one object exactly (1 - p, p), as the head was trained)."""
    p = np.clip(p, EPS, 1 - EPS)
    q = np.concatenate([np.prod(1 - p, axis=0, keepdims=True), p])
    return (q / q.sum(axis=0, keepdims=True)).astype(np.float32)


def base_logits(probs: np.ndarray) -> np.ndarray:
    """(L, h, w) probabilities of the hand-made rule -> (L, h, w) each label's logit against the rest."""
    p = np.clip(probs, EPS, 1 - EPS)
    return np.log(p / (1 - p)).astype(np.float32)


@lru_cache(maxsize=8)
def load_head(path: str | Path = WEIGHTS) -> FusionHead:
    """The head saved at `path` (cached: every propagator of the process shares one copy)."""
    path = Path(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        head = FusionHead(**blob["config"])
        head.load_state_dict(blob["state"])
    except FileNotFoundError:
        raise FormatError(path, "fusion head weights not found") from None
    except Exception as e:  # corrupt or foreign file
        raise FormatError(path, f"not fusion head weights ({e.__class__.__name__})") from None
    return head.eval().requires_grad_(False)
