"""The refiner interface: a per-frame post-step that takes the engine's coarse object probabilities and
returns better ones, plus the name registry that `engine.refiners` exposes.

Conventions at this boundary (all at the project's WORKING size, H x W):

- images: RGB uint8 (H, W, 3);
- embeddings: float32 (h, w, D), h = ceil(H/8), w = ceil(W/8), L2-normalised (as `Embedder.embed` returns);
  may be None when the caller has none (refiners must then work without them);
- id masks: uint8 (H, W), 0 = background, object ids 1..255;
- probabilities: ``dict[obj_id, (H, W) float32]`` in [0, 1] -- the same layout as `Session.probabilities(t)`.
  Background is implicit: ``1 - sum(probs.values())``; the sum over objects never exceeds 1 at any pixel.
  A refiner returns the same keys, shapes and guarantee (use `normalise_probs`), so the caller's
  argmax (`probs_to_ids`) stays what it was.
- points and boxes: (x, y) / (x, y, w, h) in working-size pixels, x = column, y = row.

Life cycle, driven by the propagation: ``r = get_refiner(name)``; ``r.start(references)`` once per propagation
run (the keyframes it propagates from); then ``r.refine(ctx)`` for every propagated frame in propagation order
(forward or backward), where ``ctx.prev_ids`` is the final result of the frame propagated just before it.
Subclasses implement ``refine_frame(ctx)``; ``refine`` also accepts the Propagator's own per-frame context
and then adapts both ways (`EngineAdapter`), so ``Propagator(refiner=get_refiner(name))`` just works.
"""

from dataclasses import dataclass, field
from typing import ClassVar

import cv2
import numpy as np

from engine.upsample import EdgeAwareUpsampler


@dataclass
class Reference:
    """An annotated frame the propagation starts from (a keyframe of one or more objects)."""

    t: int                                  # frame index
    image: np.ndarray                       # (H, W, 3) RGB uint8
    ids: np.ndarray                         # (H, W) uint8 id mask
    embedding: np.ndarray | None = None     # (h, w, D) float32, L2-normalised, or None


@dataclass
class FrameContext:
    """Everything a refiner may look at for one propagated frame."""

    t: int                                          # frame index
    image: np.ndarray                               # (H, W, 3) RGB uint8
    probs: dict[int, np.ndarray]                    # obj_id -> (H, W) float32 coarse probability
    embedding: np.ndarray | None = None             # (h, w, D) float32 or None
    references: list[Reference] = field(default_factory=list)
    prev_ids: np.ndarray | None = None              # (H, W) uint8: result of the previously propagated frame
    prev_probs: dict[int, np.ndarray] | None = None  # same layout as probs, or None
    prev_t: int | None = None                       # index of that frame (t-1 forward, t+1 backward)


class Refiner:
    """Base class. Subclasses set `name`, decorate themselves with `@register`, override `refine_frame`.

    A refiner instance keeps per-propagation state (tracked parts, modulation parameters); `start` resets it.
    It must never raise on odd but valid input (empty masks, objects absent from the references): in doubt,
    return the coarse probabilities unchanged.

    `refine(ctx)` is the entry point and accepts two context shapes:
    - this module's `FrameContext` -> returns ``dict[obj_id, (H, W) float32]`` (the layout above);
    - the propagation's own context (`engine.propagation.FrameContext`: ``labels`` with 0 first,
      ``probs`` (L, h, w) grid probabilities, ``prev_ids``, ``reference_frames``, ``reference_ids(t)``) ->
      returns ``(L, H, W)`` float32 full-size probabilities in ``ctx.labels`` order (background first,
      summing to 1), or ``(L, h, w)`` grid probabilities for refiners with ``grid_output = True``, so the
      Propagator's existing hook ``probs = refiner.refine(ctx)`` works unchanged. See `EngineAdapter`.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    grid_output: ClassVar[bool] = False   # engine adapter: hand back stride-8 grid probabilities

    def start(self, references: list[Reference]) -> None:
        self.references = list(references)

    def refine(self, ctx) -> dict[int, np.ndarray] | np.ndarray:
        if isinstance(ctx, FrameContext):
            return self.refine_frame(ctx)
        adapter = self.__dict__.get("_engine_adapter")
        if adapter is None:
            adapter = self.__dict__["_engine_adapter"] = EngineAdapter(self)
        return adapter(ctx)

    def refine_frame(self, ctx: FrameContext) -> dict[int, np.ndarray]:
        return {k: v.astype(np.float32, copy=False) for k, v in ctx.probs.items()}

    @classmethod
    def train(cls, davis_root, out_dir=None, seed: int = 0, progress=None):
        """Reproduce this refiner's shipped weights (progress(stage, done, total) as it goes); refiners
        without weights have nothing to train."""
        raise ValueError(f"refiner {cls.name!r} has no weights to train")


class EngineAdapter:
    """Drives a Refiner from `engine.propagation.Propagator`'s per-frame hook.

    The Propagator does not call `start`, so a new propagation run is detected here: a change of the
    reference frames or labels, or a frame that does not follow the last one in the same direction. The
    references are then built from ``ctx.reference_frames`` / ``ctx.reference_ids(t)``, with images and
    embeddings from ``ctx.reference_image(t)`` / ``ctx.reference_embedding(t)`` when the context has them;
    without them the previous frame of the run (the keyframe the run starts from) stands in: its result
    ``ctx.prev_ids`` over the current image and embedding (one frame of motion off).
    Grid probabilities are upsampled edge-aware (as the Propagator does) before refining.
    """

    def __init__(self, refiner: "Refiner"):
        self.refiner = refiner
        self.key = None
        self.last_t: int | None = None
        self.step = 0

    def __call__(self, ctx) -> np.ndarray:
        labels = [int(v) for v in ctx.labels]
        grid = np.asarray(ctx.probs, np.float32)
        if ctx.image is None or not any(labels):
            return grid
        H, W = ctx.image.shape[:2]
        h, w = grid.shape[1:]
        key = (tuple(ctx.reference_frames), tuple(labels))
        step = 0 if self.last_t is None else ctx.t - self.last_t
        new_run = key != self.key or abs(step) != 1 or (self.step and step != self.step)
        if new_run:
            self._start(ctx, labels)
            self.key, self.step = key, 0
            prev_t = None
        else:
            self.step = step
            prev_t = self.last_t
        self.last_t = ctx.t
        if self.refiner.grid_output:      # cell (i, j) covers rows 8i..8i+7: resize x8 exactly, then crop
            full = np.stack([cv2.resize(g, (w * 8, h * 8), interpolation=cv2.INTER_LINEAR)[:H, :W] for g in grid])
        else:
            full = EdgeAwareUpsampler()(grid, ctx.image, (H, W))
        full = np.clip(full, 0.0, None)
        full /= np.maximum(full.sum(0, keepdims=True), 1e-6)
        probs = {lab: full[i] for i, lab in enumerate(labels) if lab != 0}
        fc = FrameContext(t=ctx.t, image=ctx.image, probs=probs, embedding=ctx.embedding,
                          references=self.refiner.references, prev_ids=ctx.prev_ids, prev_t=prev_t)
        out = normalise_probs(self.refiner.refine_frame(fc))
        objs = [out.get(lab, probs[lab]) for lab in labels if lab != 0]
        bg = np.clip(1.0 - np.sum(objs, axis=0), 0.0, 1.0)
        stack = np.stack([bg if lab == 0 else out.get(lab, probs[lab]) for lab in labels])
        if not self.refiner.grid_output:
            return stack.astype(np.float32)
        pad = ((0, 0), (0, h * 8 - H), (0, w * 8 - W))
        stack = np.pad(stack, pad, mode="edge")
        return np.stack([cv2.resize(s, (w, h), interpolation=cv2.INTER_AREA) for s in stack]).astype(np.float32)

    def _start(self, ctx, labels: list[int]) -> None:
        img_fn = getattr(ctx, "reference_image", None)
        emb_fn = getattr(ctx, "reference_embedding", None)
        refs = []
        if callable(img_fn):
            for f in ctx.reference_frames:
                ids = ctx.reference_ids(f)
                refs.append(Reference(t=int(f), image=img_fn(f), ids=ids,
                                      embedding=emb_fn(f) if callable(emb_fn) else None))
        elif ctx.prev_ids is not None:
            refs.append(Reference(t=-1, image=ctx.image, ids=ctx.prev_ids, embedding=ctx.embedding))
        self.refiner.start(refs)


_REGISTRY: dict[str, type[Refiner]] = {}


def register(cls: type[Refiner]) -> type[Refiner]:
    """Class decorator: make a refiner available under ``cls.name``."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} must set a non-empty `name`")
    _REGISTRY[cls.name] = cls
    return cls


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


def probs_to_ids(probs: dict[int, np.ndarray], shape: tuple[int, int] | None = None) -> np.ndarray:
    """Argmax over background (implicit, 1 - sum) and objects -> (H, W) uint8 id mask."""
    if not probs:
        if shape is None:
            raise ValueError("no probabilities and no shape")
        return np.zeros(shape, np.uint8)
    keys = sorted(probs)
    stack = np.stack([probs[k] for k in keys])
    bg = 1.0 - stack.sum(0)
    best = stack.argmax(0)
    ids = np.asarray(keys, np.uint8)[best]
    ids[stack.max(0) <= bg] = 0
    return ids


def reference_for(references: list[Reference], obj_id: int, t: int) -> Reference | None:
    """The reference nearest in time to frame t in which object obj_id has pixels (None if none)."""
    best = None
    for r in references:
        if (r.ids == obj_id).any() and (best is None or abs(r.t - t) < abs(best.t - t)):
            best = r
    return best

