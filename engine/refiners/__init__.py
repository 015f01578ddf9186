"""Optional refiners of the propagation's per-frame object probabilities, chosen by name.

    from engine.refiners import get_refiner, available_refiners
    r = get_refiner("parts")            # None for "none" / "" / None: the plain engine
    Propagator(refiner=r)               # calls r.start(run), r.refine(frame), r.finish(): see base

Adding a refiner = one module with a `Refiner` subclass plus one entry in `REFINERS` below (and a training
function there when it has weights to reproduce).
"""

import importlib
import time
from pathlib import Path

import numpy as np

from engine.refiners.base import FrameContext, Reference, Refiner, Run, normalise_probs, with_background
from engine.upsample import argmax_ids, grid_size

__all__ = [
    "FrameContext", "Reference", "Refiner", "Run", "normalise_probs", "with_background",
    "available_refiners", "get_refiner", "train_refiner", "time_refiner", "NO_REFINER", "REFINERS",
]

# name -> ("module:Class", "module:training function" or None); modules are imported on first use
REFINERS = {
    "modulation": ("engine.refiners.modulation:ModulationRefiner",
                   "engine.refiners.train_modulation:train_modulation"),
    "parts": ("engine.refiners.parts:PartsRefiner", None),
}
NO_REFINER = ("", "none", "off")


def _load(target: str):
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def available_refiners() -> list[str]:
    """Names accepted by `get_refiner`, sorted (the plain engine, "none", is not listed)."""
    return sorted(REFINERS)


def _entry(name: str) -> tuple[str, str | None]:
    try:
        return REFINERS[name]
    except KeyError:
        raise ValueError(
            f"unknown refiner {name!r}; available: {', '.join(sorted(REFINERS))} (or 'none')"
        ) from None


def get_refiner(name: str | None, **options) -> Refiner | None:
    """A fresh refiner instance by name; None for None/''/'none'/'off' (the plain engine).

    Raises ValueError naming the available refiners for an unknown name.
    """
    if name is None or name.strip().lower() in NO_REFINER:
        return None
    return _load(_entry(name.strip().lower())[0])(**options)


def train_refiner(name: str, davis_root: str | Path, out_dir: str | Path | None = None, seed: int = 0,
                  progress=None):
    """Reproduce a refiner's shipped weights from a DAVIS 2016 root (hold-out sequences excluded).

    Returns the path of the written weights. Raises ValueError for unknown names or refiners without weights.
    progress(stage, done, total) as training goes.
    """
    trainer = _entry(name)[1]
    if trainer is None:
        raise ValueError(f"refiner {name!r} has no weights to train")
    return _load(trainer)(Path(davis_root), out_dir=None if out_dir is None else Path(out_dir), seed=seed, progress=progress)


def time_refiner(name: str, frames=None, n: int = 20, size: tuple[int, int] = (854, 480), dim: int = 32) -> float:
    """Median extra milliseconds per frame that refiner `name` adds, single-object propagation.

    frames: optional sequence of (H, W, 3) RGB uint8 frames (e.g. a video's working-size frames); without it,
    a synthetic textured sequence of `size` = (width, height). The coarse probabilities and embeddings are
    synthetic (a moving ellipse with a false blob; random unit embeddings of `dim` channels): the figure is
    the refiner's own cost, not the engine's.
    """
    refiner = get_refiner(name)
    if refiner is None:
        return 0.0
    rng = np.random.default_rng(0)
    if frames is None:
        w, h = size
        base = (rng.random((h // 4 + 1, w // 4 + 1, 3)) * 255).astype(np.uint8)
        base = np.ascontiguousarray(np.repeat(np.repeat(base, 4, 0), 4, 1)[:h, :w])
        frames = [np.roll(base, 3 * i, axis=1) for i in range(n)]
    frames = list(frames)[:n]
    h, w = frames[0].shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]

    def mask_at(i: int) -> np.ndarray:
        cx, cy = w * 0.35 + 3 * i, h * 0.5
        return (((xx - cx) / (w * 0.12)) ** 2 + ((yy - cy) / (h * 0.2)) ** 2 <= 1).astype(np.uint8)

    def emb() -> np.ndarray:
        e = rng.standard_normal((*grid_size(h, w), dim)).astype(np.float32)
        return e / np.linalg.norm(e, axis=2, keepdims=True)

    refs = [Reference(t=0, image=frames[0], ids=mask_at(0), embedding=emb())]
    refiner.start(Run(references=refs))
    prev = refs[0].ids
    times = []
    for i in range(1, len(frames)):
        m = mask_at(i).astype(np.float32)
        coarse = 0.85 * m
        coarse[h // 4: h // 4 + h // 8, int(w * 0.8): int(w * 0.8) + w // 10] = 0.7  # a look-alike blob
        ctx = FrameContext(t=i, image=frames[i], probs={1: coarse}, embedding=emb(), prev_ids=prev)
        t0 = time.perf_counter()
        out = refiner.refine(ctx)
        times.append((time.perf_counter() - t0) * 1000.0)
        prev = argmax_ids(with_background(out, [0, 1]), [0, 1])
    refiner.finish()
    return float(np.median(times[1:] if len(times) > 2 else times))
