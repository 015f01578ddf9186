"""Semi-supervised mask propagation by pixel-wise retrieval (PML) with online adaptation.

A frame t is labelled on the stride-8 embedding grid by three cues, then upsampled edge-aware:

1. global retrieval: faiss nearest prototypes of each label's reference pool, built once per
   propagation from the objects' keyframes (k-means prototypes, so the cost per frame is fixed);
2. online adaptation: confident cells of the last few predicted frames join the pools, their
   similarity lowered by ``online_penalty + online_decay * age`` (an extra embedding coordinate
   carries the penalty, so it is still one inner-product search);
3. the previous frame as spatial prior: local matching of each cell against the previous frame's
   cells of each label within ``local_radius`` cells, and a penalty growing with the distance to
   the previous mask of each object.

An object tracked on the previous frame does not vanish unless retrieval says so, and a vanished
object is unsure on every frame of its gap (engine.continuity).

Labels are background (0) plus the active objects; pixels of fixed objects (locked, or outside
their own keyframe-bounded span) keep their current ids. ``Propagator.run`` is a generator: the
caller writes each yielded frame and may stop at any time.

Per-frame hook for refiners: ``Propagator(refiner=obj)`` where ``obj.refine(ctx: FrameContext)``
returns better (L, h, w) grid or (L, H, W) full-size probabilities in ``ctx.labels`` order.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator, NamedTuple

import cv2
import numpy as np
import torch

from .continuity import keep_tracked, present_objects
from .retrieval import LabelIndex, l2_normalise, make_prototypes, softmax_scores
from .upsample import EdgeAwareUpsampler, argmax_ids, label_fractions


# Several keyframes share one label's prototype budget (max_prototypes) instead of each having
# its own: measured better in interactive rounds on DAVIS train sequences, and the per-frame cost
# stays fixed however many keyframes there are.
SPLIT_BUDGET = True


@dataclass
class PropagationConfig:
    """Tuning knobs; defaults are the ones measured on DAVIS train sequences."""
    coord_weight: float = 0.0     # PML's (x, y) folded into the embedding (Session.embedding)
    k: int = 1                    # nearest prototypes averaged per label
    temperature: float = 0.05     # softmax temperature over label similarities
    max_prototypes: int = 512     # per label, keyframe pool (256: hold-out J&F 0.776 -> 512: 0.786)
    max_keyframes: int = 6        # nearest keyframes of each object used as references
    keyframe_decay: float = 0.0   # similarity lost per 100 frames between a keyframe and the frame
    online_frames: int = 0        # recent predicted frames kept in the pools (0 = off: with 3, hold-out
                                  # J&F 0.786 -> 0.784 and 6 training sequences 0.873 -> 0.868)
    online_per_label: int = 64    # cells sampled per label per frame
    online_threshold: float = 0.97  # grid probability a cell needs to join the pool
    online_penalty: float = 0.05
    online_decay: float = 0.02
    online_background: bool = False  # background cells join the pools too
    online_erode: int = 2         # cells eroded off each predicted region before sampling
    local_radius: int = 4         # cells; 0 disables local matching to the previous frame
    local_weight: float = 0.0     # blend of local vs global similarity (0 = off)
    prior_radius: float = 3.0     # cells from the previous mask before the penalty starts
    prior_relative: float = 0.0   # + this times sqrt(object area in cells)
    prior_strength: float = 0.03  # similarity lost per cell beyond that radius
    refine_radius: int = 8        # guided filter radius at half resolution (0 = bilinear only)
    refine_eps: float = 1e-3
    pure_fraction: float = 0.75   # a reference cell must be this much one label
    blend_previous: bool = True   # fuse with an earlier propagation's result, weighted by distance
    keep_floor: float = 0.2       # a vanishing object is kept where its probability is >= this (0 = off)


class FrameResult(NamedTuple):
    """One propagated frame: t; probs {label: (h, w) float32 grid probabilities, 0 = background};
    ids (H, W) uint8 final ids (fixed objects included); confidence {object id: float in [0, 1]}."""
    t: int
    probs: dict
    ids: np.ndarray
    confidence: dict


@dataclass
class FrameContext:
    """What a refiner sees for frame t (arrays as documented on each field)."""
    t: int
    image: np.ndarray | None          # (H, W, 3) RGB uint8 working size
    embedding: np.ndarray             # (h, w, D) float32
    labels: list[int]                 # label order of probs, 0 = background
    probs: np.ndarray                 # (L, h, w) float32 coarse probabilities
    prev_ids: np.ndarray | None       # (H, W) uint8 previous frame in propagation order
    reference_frames: list[int]       # keyframes used as references
    reference_ids: Callable[[int], np.ndarray]  # t -> (H, W) uint8 ids of a reference frame
    reference_image: Callable[[int], np.ndarray] | None = None      # t -> (H, W, 3) RGB uint8
    reference_embedding: Callable[[int], np.ndarray] | None = None  # t -> (h, w, D) float32


@dataclass
class PropagationTask:
    """Inputs of one propagation, independent of the project storage.

    embedding(t) -> (h, w, D) float32 unit vectors; read_ids(t) -> (H, W) uint8 current ids;
    image(t) -> (H, W, 3) RGB uint8 or None; keyframes {obj: set of frames}.
    click_refs: [(frame, object id, positive, (N, D) embeddings)] of the user's clicks and
    scribbles: positive ones join the object's pool, negative ones the background pool, so a
    correction on one frame also corrects look-alike mistakes on the others.
    """
    n_frames: int
    size_hw: tuple[int, int]
    embedding: Callable[[int], np.ndarray]
    read_ids: Callable[[int], np.ndarray]
    keyframes: dict[int, set[int]]
    objects: list[int]
    locked: set[int] = field(default_factory=set)
    image: Callable[[int], np.ndarray] | None = None
    click_refs: list = field(default_factory=list)
    previous: Callable[[int], bool] | None = None  # t -> frame t holds an earlier propagation's result
    previous_probs: Callable[[int], tuple | None] | None = None  # t -> (labels, (L, h, w) grid
    # probabilities) of that earlier result when still known, else None (its hard mask is used)
    reference_keyframes: dict[int, set[int]] | None = None  # {obj: keyframes whose whole mask is a
    # reference}; other keyframes (clicked corrections of a propagated mask, which keep the rest of
    # that mask's errors) bound the spans and give only their click references. None = all.


def object_spans(keyframes: dict[int, set[int]], objects, t0: int, n: int,
                 direction: str) -> dict[int, tuple[int, int]]:
    """Frames each object may rewrite: inclusive (lo, hi) around t0 bounded by its keyframes.

    A span may contain t0 when it is a keyframe in the middle ("both"): keyframes inside a span are
    skipped by the propagation. Objects without keyframes get no span.
    """
    if direction not in ("forward", "backward", "both"):
        raise ValueError(f"direction must be forward, backward or both, not {direction!r}")
    spans = {}
    for o in objects:
        kfs = keyframes.get(o) or set()
        if not kfs:
            continue
        before = [k for k in kfs if k < t0]
        after = [k for k in kfs if k > t0]
        lo = (max(before) + 1) if before else 0
        hi = (min(after) - 1) if after else n - 1
        if t0 in kfs:
            lo_f, hi_b = t0 + 1, t0 - 1
        else:
            lo_f, hi_b = t0, t0
        if direction == "forward":
            lo = lo_f
        elif direction == "backward":
            hi = hi_b
        if t0 in kfs:  # a keyframe t0 is never rewritten; trim it off the ends
            lo = t0 + 1 if lo == t0 else lo
            hi = t0 - 1 if hi == t0 else hi
        if lo <= hi:
            spans[o] = (lo, hi)
    return spans


def _local_match(emb: torch.Tensor, prev_emb: torch.Tensor, prev_lab: torch.Tensor,
                 n_labels: int, radius: int) -> np.ndarray:
    """For each cell, best similarity to previous-frame cells of each label within ``radius``.

    emb, prev_emb: (D, h, w); prev_lab: (h, w) int64 label index (-1 = none).
    Returns (L, h, w) float32, -1 where a label has no cell in the window.
    """
    D, h, w = emb.shape
    r = radius
    pe = torch.nn.functional.pad(prev_emb, (r, r, r, r))
    pl = torch.nn.functional.pad(prev_lab, (r, r, r, r), value=-1)
    best = torch.full((n_labels, h, w), -1.0)
    sim = torch.empty(h, w)
    neg = torch.tensor(-1.0)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            torch.sum(emb * pe[:, dy:dy + h, dx:dx + w], 0, out=sim)
            lab = pl[dy:dy + h, dx:dx + w]
            for i in range(n_labels):
                torch.maximum(best[i], torch.where(lab == i, sim, neg), out=best[i])
    return best.numpy()


class Propagator:
    """Runs a PropagationTask; one instance may be reused (it keeps only its config)."""

    def __init__(self, config: PropagationConfig | None = None, refiner=None):
        self.config = config or PropagationConfig()
        self.refiner = refiner
        self.upsampler = EdgeAwareUpsampler(self.config.refine_radius, self.config.refine_eps)

    # ---------------------------------------------------------------- references
    def reference_pools(self, task: PropagationTask, active: list[int], t0: int):
        """{label: [(keyframe, (M, D) prototypes)]} from the nearest keyframes of the active objects
        (at most max_prototypes per label in all), and the sorted list of frames used."""
        cfg = self.config
        frames: set[int] = set()
        per_obj_frames = {}
        for o in active:
            kfs = task.keyframes.get(o) or set()
            full = (task.reference_keyframes or {}).get(o, set())
            if kfs & full:
                kfs = kfs & full
            kfs = sorted(kfs, key=lambda k: (abs(k - t0), k))
            per_obj_frames[o] = set(kfs[: cfg.max_keyframes])
            frames |= per_obj_frames[o]
        labels = [0] + list(active)
        pools: dict[int, list] = {lab: [] for lab in labels}
        for f in sorted(frames):
            emb = task.embedding(f)
            h, w, D = emb.shape
            flat = emb.reshape(-1, D)
            ids = task.read_ids(f)
            # background = not an active object that is annotated here
            fr = label_fractions(ids, labels, (h, w))
            for i, lab in enumerate(labels):
                if lab != 0 and f not in per_obj_frames[lab]:
                    continue
                sel = fr[i] >= cfg.pure_fraction
                if lab != 0 and not sel.any():
                    sel = fr[i] >= max(0.05, fr[i].max() * 0.5)
                if sel.any():
                    pools[lab].append((f, flat[sel.reshape(-1)]))
        for f, o, positive, vecs in task.click_refs:
            if o in pools and len(vecs) and f in (task.keyframes.get(o) or ()):
                pools[o if positive else 0].append((f, np.asarray(vecs, np.float32)))
        out = {}
        for lab, chunks in pools.items():
            budget = max(32, cfg.max_prototypes // max(1, len(chunks))) if SPLIT_BUDGET else cfg.max_prototypes
            out[lab] = [(f, make_prototypes(v, budget, seed=lab)) for f, v in chunks]
        return out, sorted(frames)

    # ---------------------------------------------------------------- one frame
    def predict_grid(self, emb: np.ndarray, labels: list[int], base_pools: dict,
                     online: deque, prev: tuple | None, t: int = 0) -> np.ndarray:
        """(h, w, D) embedding of frame t -> (L, h, w) float32 probabilities in ``labels`` order.

        base_pools {label: [(keyframe, (M, D))]} (see reference_pools; a keyframe's similarity is
        lowered by keyframe_decay per 100 frames of distance); online: deque of {label: (n, D)}
        newest last;
        prev: (prev_emb (h, w, D), prev_fr (L, h, w) label fractions) or None.
        """
        cfg = self.config
        h, w, D = emb.shape
        q = np.ascontiguousarray(emb.reshape(-1, D), dtype=np.float32)
        # pools augmented with one coordinate carrying the age penalty: q' = [q, 1]
        pools = {}
        for lab in labels:
            parts = []
            for f, base in base_pools.get(lab, ()):
                pen = -cfg.keyframe_decay * abs(t - f) / 100.0
                parts.append(np.hstack([base, np.full((len(base), 1), pen, np.float32)]))
            for age, entry in enumerate(reversed(online), start=1):
                v = entry.get(lab)
                if v is not None and len(v):
                    pen = -(cfg.online_penalty + cfg.online_decay * (age - 1))
                    parts.append(np.hstack([v, np.full((len(v), 1), pen, np.float32)]))
            pools[lab] = np.concatenate(parts) if parts else np.zeros((0, D + 1), np.float32)
        # prototypes are already reduced; do not re-cluster the small pools
        index = LabelIndex(pools, k=cfg.k, max_prototypes=10 ** 9)
        qa = np.hstack([q, np.ones((len(q), 1), np.float32)])
        scores = index.scores(qa).reshape(len(labels), h, w)
        if prev is not None:
            prev_emb, prev_fr = prev
            if cfg.local_radius > 0 and cfg.local_weight > 0:
                lab_idx = np.argmax(prev_fr, axis=0)
                lab_idx[prev_fr.max(axis=0) < 0.5] = -1
                et = torch.from_numpy(np.ascontiguousarray(emb.transpose(2, 0, 1), np.float32))
                pt = torch.from_numpy(np.ascontiguousarray(prev_emb.transpose(2, 0, 1), np.float32))
                loc = _local_match(et, pt, torch.from_numpy(lab_idx.astype(np.int64)),
                                   len(labels), cfg.local_radius)
                a = cfg.local_weight
                scores = np.where(loc > -1, (1 - a) * scores + a * loc, scores - a * 0.5)
            if cfg.prior_strength > 0:
                for i, lab in enumerate(labels):
                    if lab == 0:
                        continue
                    m = prev_fr[i] >= 0.5
                    if not m.any():
                        continue
                    dist = cv2.distanceTransform((~m).astype(np.uint8), cv2.DIST_L2, 3)
                    radius = cfg.prior_radius + cfg.prior_relative * np.sqrt(m.sum())
                    scores[i] -= cfg.prior_strength * np.maximum(dist - radius, 0)
        return softmax_scores(scores, cfg.temperature)

    def _online_entry(self, emb: np.ndarray, probs: np.ndarray, labels: list[int],
                      rng: np.random.Generator) -> dict:
        """Confident interior cells of a predicted frame, per label: (n, D) unit vectors.

        Only cells whose probability is >= online_threshold and whose 3x3 neighbourhood has the
        same label join, so boundary mistakes do not feed back into the pools."""
        cfg = self.config
        D = emb.shape[-1]
        flat = emb.reshape(-1, D)
        arg = np.argmax(probs, axis=0)
        top = probs.max(axis=0)
        kernel = np.ones((3, 3), np.uint8)
        entry = {}
        for i, lab in enumerate(labels):
            if lab == 0 and not cfg.online_background:
                continue
            m = ((arg == i) & (top >= cfg.online_threshold)).astype(np.uint8)
            if cfg.online_erode:
                m = cv2.erode(m, kernel, iterations=cfg.online_erode, borderValue=1)
            sel = np.flatnonzero(m.reshape(-1))
            if len(sel) == 0:
                continue
            if len(sel) > cfg.online_per_label:
                sel = rng.choice(sel, cfg.online_per_label, replace=False)
            entry[lab] = l2_normalise(flat[sel])
        return entry

    @staticmethod
    def _blend_previous(probs, cur, labels, grid, t, t0, keyframes, active, soft=None) -> np.ndarray:
        """Bidirectional fusion: frame t already holds a propagation from the object's other
        keyframes; weight it against this run (anchored at t0) by the distance to each anchor, so a
        correction on t0 mostly changes the frames near t0 and its remaining errors do not
        overwrite frames that were well propagated from an earlier (more reliable) keyframe."""
        others = [k for o in active for k in keyframes.get(o, ()) if k != t0]
        if not others:
            return probs
        d_old = min(abs(t - k) for k in others)
        d_new = abs(t - t0)
        if d_old == 0:
            return probs
        w = d_old / (d_old + d_new)
        if soft is not None and list(soft[0]) == list(labels) and soft[1].shape[1:] == tuple(grid):
            old = np.asarray(soft[1], np.float32)
        else:
            old = label_fractions(cur, labels, grid).astype(np.float32)
            tot = old.sum(axis=0, keepdims=True)
            old[0] += np.maximum(1.0 - tot[0], 0)  # pixels of other objects count as background here
        out = w * probs + (1.0 - w) * old
        return (out / np.maximum(out.sum(axis=0, keepdims=True), 1e-6)).astype(np.float32)

    @staticmethod
    def confidence(probs: np.ndarray, labels: list[int], prev_fr: np.ndarray | None) -> dict:
        """Per object: mean top-1 minus top-2 probability over the object's cells and a one-cell
        band around them; 0 when an object vanished. (An area-stability factor, dropped, made the
        ranking worse: on 12 DAVIS sequences the Spearman correlation of confidence with J&F went
        from 0.34 to 0.55 without it, and the 5 least sure frames from J&F 0.700 to 0.653.)"""
        part = np.sort(probs, axis=0)
        marg = part[-1] - part[-2] if len(probs) > 1 else np.ones(probs.shape[1:], np.float32)
        arg = np.argmax(probs, axis=0)
        out = {}
        kernel = np.ones((3, 3), np.uint8)
        for i, lab in enumerate(labels):
            if lab == 0:
                continue
            m = (arg == i).astype(np.uint8)
            if not m.any():  # vanished: unsure if it was there on the previous frame
                out[lab] = 0.0 if prev_fr is not None and (prev_fr[i] >= 0.5).any() else 1.0
                continue
            band = cv2.dilate(m, kernel) > 0
            out[lab] = round(float(marg[band].mean()), 4)
        return out

    # ---------------------------------------------------------------- generator
    def run(self, task: PropagationTask, t0: int, direction: str = "both") -> Iterator[FrameResult]:
        """Yield FrameResult for every frame of the affected span, t0 outwards, forward first."""
        cfg = self.config
        n = task.n_frames
        if not 0 <= t0 < n:
            raise IndexError(f"frame {t0} out of range 0..{n - 1}")
        objs = [o for o in task.objects if o not in task.locked]
        spans = object_spans(task.keyframes, objs, t0, n, direction)
        if not spans:
            return
        active_all = sorted(spans)
        base_pools, ref_frames = self.reference_pools(task, active_all, t0)
        H, W = task.size_hw
        grid = None
        done_t0 = False
        passes = []
        if direction in ("forward", "both"):
            passes.append(1)
        if direction in ("backward", "both"):
            passes.append(-1)
        rng = np.random.default_rng(0)
        for step in passes:
            lo = min(s[0] for s in spans.values())
            hi = max(s[1] for s in spans.values())
            if step > 0:
                frames = range(max(lo, t0), hi + 1)
            else:
                frames = range(min(hi, t0), lo - 1, -1)
            online: deque = deque(maxlen=cfg.online_frames)
            prev_ids = None
            prev_emb = None
            for t in frames:
                active = [o for o in active_all if spans[o][0] <= t <= spans[o][1]
                          and t not in task.keyframes.get(o, ())]
                if t == t0 and done_t0:
                    active = []
                if prev_ids is None:
                    p = t - step
                    prev_ids = task.read_ids(p) if 0 <= p < n else None
                    prev_emb = task.embedding(p) if 0 <= p < n else None
                    seen = present_objects(prev_ids, active_all) if prev_ids is not None else set()
                if not active:
                    # nothing to rewrite here (a keyframe t0): it becomes the previous frame
                    prev_ids = task.read_ids(t)
                    prev_emb = task.embedding(t)
                    seen |= present_objects(prev_ids, active_all)
                    continue
                labels = [0] + active
                emb = task.embedding(t)
                if grid is None:
                    grid = emb.shape[:2]
                prev_fr = label_fractions(prev_ids, labels, grid) if prev_ids is not None else None
                prev = (prev_emb, prev_fr) if prev_ids is not None else None
                probs = self.predict_grid(emb, labels, base_pools, online, prev, t)
                image = task.image(t) if task.image is not None else None
                if cfg.keep_floor > 0 and prev_fr is not None:
                    probs = keep_tracked(probs, prev_fr, cfg.keep_floor)
                cur = task.read_ids(t)
                if cfg.blend_previous and task.previous is not None and task.previous(t):
                    soft = task.previous_probs(t) if task.previous_probs is not None else None
                    probs = self._blend_previous(probs, cur, labels, grid, t, t0, task.keyframes, active, soft)
                if self.refiner is not None:
                    ctx = FrameContext(t, image, emb, labels, probs, prev_ids, ref_frames, task.read_ids,
                                       task.image, task.embedding)
                    probs = np.asarray(self.refiner.refine(ctx), np.float32)
                if probs.shape[1:] == (H, W):
                    full = probs
                else:
                    full = self.upsampler(probs, image, (H, W))
                new = argmax_ids(full, labels)
                lut = np.ones(256, bool)
                lut[labels] = False  # background and active objects may change
                fixed = lut[cur]
                new[fixed] = cur[fixed]
                conf = self.confidence(probs if probs.shape[1:] == grid else
                                       label_fractions(new, labels, grid), labels, prev_fr)
                present = present_objects(new, labels)
                for lab in (seen - present) & set(conf):
                    conf[lab] = 0.0  # vanished: unsure on every frame of the gap
                seen |= present
                online.append(self._online_entry(emb, probs if probs.shape[1:] == grid else
                                                 label_fractions(new, labels, grid), labels, rng))
                if t == t0:
                    done_t0 = True
                yield FrameResult(t, {lab: probs[i] for i, lab in enumerate(labels)}, new, conf)
                prev_ids, prev_emb = new, emb
