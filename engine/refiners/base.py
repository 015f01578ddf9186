"""The refiner seam: a per-frame step that takes the propagation's coarse object probabilities and
returns better ones.

Conventions at this boundary (all at the project's WORKING size, H x W):

- images: RGB uint8 (H, W, 3);
- embeddings: float32 (h, w, D) on the stride-`upsample.STRIDE` grid, L2-normalised (as `Embedder.embed`
  returns); may be None when the caller has none (refiners must then work without them);
- id masks: uint8 (H, W), 0 = background, object ids 1..255;
- probabilities: ``dict[obj_id, (H, W) float32]`` in [0, 1] -- the same layout as `Session.probabilities(t)`.
  Background is implicit: ``1 - sum(probs.values())``; the sum over objects never exceeds 1 at any pixel.
  A refiner returns the same keys, shapes and guarantee (use `normalise_probs`).

Life cycle, driven by `engine.propagation.Propagator` (one pass = one direction from the start frame):
``r.start(run)`` at the start of each pass (``run.references``: the keyframes it propagates from), then
``r.refine(frame)`` for every propagated frame in propagation order, where ``frame.prev_ids`` is the final
result of the frame propagated just before it, then ``r.finish()`` when the pass ends or is cancelled.
A refiner with ``grid_scale = True`` changes the map at the embedding-grid scale: it is given the grid
probabilities upsampled bilinearly, and its result is averaged back to the grid and then upsampled
edge-aware like an unrefined frame; otherwise it is given the edge-aware map and its result is final.
"""

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np


@dataclass
class Reference:
    """An annotated frame the propagation starts from (a keyframe of one or more objects)."""

    t: int                                  # frame index
    image: np.ndarray                       # (H, W, 3) RGB uint8
    ids: np.ndarray                         # (H, W) uint8 id mask
    embedding: np.ndarray | None = None     # (h, w, D) float32, L2-normalised, or None


@dataclass
class Run:
    """One propagation pass, given to `Refiner.start`."""

    references: list[Reference] = field(default_factory=list)   # nearest keyframes first
    t0: int = 0                             # the frame the pass starts from
    step: int = 1                           # +1 forward, -1 backward


@dataclass
class FrameContext:
    """Everything a refiner may look at for one propagated frame."""

    t: int                                          # frame index
    image: np.ndarray                               # (H, W, 3) RGB uint8
    probs: dict[int, np.ndarray]                    # obj_id -> (H, W) float32 coarse probability
    embedding: np.ndarray | None = None             # (h, w, D) float32 or None
    prev_ids: np.ndarray | None = None              # (H, W) uint8: result of the previously propagated frame


class Refiner:
    """Base class: subclasses set `name` and `description`, override `refine` (and `start` for state).

    A refiner instance keeps per-pass state (tracked parts, modulation parameters); `start` resets it.
    It must never raise on odd but valid input (empty masks, objects absent from the references): in doubt,
    return the coarse probabilities unchanged.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    grid_scale: ClassVar[bool] = False   # see the module doc

    def start(self, run: Run) -> None:
        self.references = list(run.references)

    def refine(self, frame: FrameContext) -> dict[int, np.ndarray]:
        return {k: v.astype(np.float32, copy=False) for k, v in frame.probs.items()}

    def finish(self) -> None:
        """The pass is over: drop what only that pass needed."""


# ----------------------------------------------------------------------------------------------- helpers

def normalise_probs(probs: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Clip to [0, 1] and rescale where the objects' sum exceeds 1, so background stays >= 0."""
    out = {k: np.clip(v.astype(np.float32, copy=False), 0.0, 1.0) for k, v in probs.items()}
    if len(out) > 1:
        total = np.sum(list(out.values()), axis=0)
        over = total > 1.0
        if over.any():
            scale = np.where(over, 1.0 / np.maximum(total, 1e-6), 1.0).astype(np.float32)
            out = {k: v * scale for k, v in out.items()}
    return out


def with_background(probs: dict[int, np.ndarray], labels: list[int]) -> np.ndarray:
    """Object probabilities -> (L, H, W) float32 in ``labels`` order (0 first: background = 1 - the rest)."""
    objs = [probs[lab] for lab in labels if lab != 0]
    bg = np.clip(1.0 - np.sum(objs, axis=0), 0.0, 1.0)
    return np.stack([bg if lab == 0 else probs[lab] for lab in labels]).astype(np.float32)


def reference_for(references: list[Reference], obj_id: int, t: int) -> Reference | None:
    """The reference nearest in time to frame t in which object obj_id has pixels (None if none)."""
    best = None
    for r in references:
        if (r.ids == obj_id).any() and (best is None or abs(r.t - t) < abs(best.t - t)):
            best = r
    return best
