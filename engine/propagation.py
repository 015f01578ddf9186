"""Semi-supervised mask propagation by pixel-wise retrieval (PML): references -> retrieval -> masks.

A frame t is labelled on the stride-8 embedding grid by two cues, then upsampled edge-aware:

1. global retrieval: faiss nearest prototypes of each label's reference pool, built once per
   propagation from the objects' reference keyframes and clicks (k-means prototypes, so the cost per
   frame is fixed however many keyframes there are: they share one label's budget);
2. the previous frame as spatial prior: a penalty growing with the distance to the previous mask of
   each object.

The background changes as the camera moves, so every few frames the background pool also takes the
newest frame's sure background far from every object (`Propagator._recent_background`): a look-alike
first seen away from the object, where the prior keeps it out, then stays out when it comes close.

An object tracked on the previous frame does not vanish unless retrieval says so, and a vanished
object is unsure on every frame of its gap (engine.continuity).

Labels are background (0) plus the active objects; pixels of fixed objects (locked, or outside
their own keyframe-bounded span) keep their current ids. ``Propagator.run`` is a generator: the
caller writes each yielded frame and may stop at any time. Which keyframes are references is the
caller's decision (`engine.annotation`); this module only uses what the task names.

Refiners (`engine.refiners`) plug in with ``Propagator(refiner=r)``: each pass calls ``r.start(run)``,
``r.refine(frame)`` per frame and ``r.finish()``; see engine/refiners/base.py for the layouts.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterator, NamedTuple

import cv2
import numpy as np

from .boundary import WEIGHTS, load_head, refine
from .continuity import keep_tracked, present_objects
from .refiners.base import FrameContext, Reference, Run, normalise_probs, with_background
from .retrieval import LabelIndex, make_prototypes, search_threads, share_budget, softmax_scores
from .threads import ALL_CORES
from .upsample import EdgeAwareUpsampler, argmax_ids, bilinear, grid_average, label_fractions


@dataclass
class PropagationConfig:
    """Tuning knobs; defaults are the ones measured on DAVIS train sequences (README, "Measured figures")."""
    k: int = 1                    # nearest prototypes averaged per label
    temperature: float = 0.05     # softmax temperature over label similarities
    max_prototypes: int = 512     # per label, shared by all its reference keyframes and clicks
    max_keyframes: int = 6        # nearest reference keyframes of each object
    prior_radius: float = 3.0     # cells from the previous mask before the penalty starts
    prior_strength: float = 0.03  # similarity lost per cell beyond that radius
    refine_radius: int = 8        # guided filter radius at half resolution (0 = bilinear only)
    refine_eps: float = 1e-3
    boundary_head: str = "shipped"  # learned boundary head after the guided filter: "shipped"
    # (resources/boundary/head.pt), "none", or the path of another head (the k-fold runs)
    boundary_band: int = 4        # half-size pixels from the guided 0.5 contour the head may change
    boundary_most_removed: float = 0.15  # the head takes at most this fraction of an object away, else none
    pure_fraction: float = 0.75   # a reference cell must be this much one label
    keep_floor: float = 0.2       # a vanishing object is kept where its probability is >= this (0 = off)
    correction_reach: int = 2     # cells around a click whose change of its frame refers too (0 = the click only)
    background_every: int = 5     # every this many propagated frames, the background pool takes that frame's
    # sure background cells far from every object (0 = never; README, "Background as it is seen")
    background_gap: float = 8.0   # cells from every object that such a background cell is at least


RECENT_BACKGROUND_PROTOTYPES = 128  # the newest sure-background frame's share, beside the keyframes' pool
MIN_RECENT_CELLS = 8


def boundary_refiner(name: str, band: int, most_removed: float):
    """PropagationConfig.boundary_head, boundary_band and boundary_most_removed -> the upsampler's boundary
    step, or None."""
    if name == "none":
        return None
    return partial(refine, load_head(WEIGHTS if name == "shipped" else name), band=band, most_removed=most_removed)


class FrameResult(NamedTuple):
    """One propagated frame: t; probs {label: (h, w) float32 grid probabilities, 0 = background};
    ids (H, W) uint8 final ids (fixed objects included); confidence {object id: float in [0, 1]}."""
    t: int
    probs: dict
    ids: np.ndarray
    confidence: dict


@dataclass
class PropagationTask:
    """Inputs of one propagation, independent of the project storage.

    embedding(t) -> (h, w, D) float32 unit vectors; read_ids(t) -> (H, W) uint8 current ids;
    image(t) -> (H, W, 3) RGB uint8 or None; keyframes {obj: set of frames} bound the spans.
    reference_keyframes {obj: frames whose whole mask is a reference} (None: all keyframes).
    click_refs: [(frame, object id, positive, (N, D) embeddings)] of the user's clicks and
    scribbles (and of what correction clicks changed near them): positive ones join the object's pool, negative ones the background pool, so a
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
    reference_keyframes: dict[int, set[int]] | None = None


def object_spans(keyframes: dict[int, set[int]], objects, t0: int, n: int,
                 direction: str, until: int | None = None) -> dict[int, tuple[int, int]]:
    """Frames each object may rewrite: inclusive (lo, hi) around t0 bounded by its keyframes, or with
    `until` (the last frame to write, in `direction`) from t0 to there, across keyframes.

    A span may contain keyframes (t0 in the middle for "both", or crossed on the way to `until`): keyframes
    inside a span are skipped by the propagation. Objects without keyframes get no span.
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
        if until is not None:
            lo, hi = (lo_f, until) if direction == "forward" else (until, hi_b)
        if t0 in kfs:  # a keyframe t0 is never rewritten; trim it off the ends
            lo = t0 + 1 if lo == t0 else lo
            hi = t0 - 1 if hi == t0 else hi
        if lo <= hi:
            spans[o] = (lo, hi)
    return spans


def forward_from_first_mask(propagator: "Propagator", n_frames: int, size_hw: tuple[int, int], embedding,
                            image, mask0: np.ndarray) -> Iterator[FrameResult]:
    """Object 1 propagated forward from its mask on frame 0 (the semi-supervised protocol), each result
    the next frame's previous one: how the learned parts get the engine's own output to train on."""
    results = {0: mask0.astype(np.uint8)}
    task = PropagationTask(n_frames=n_frames, size_hw=size_hw, embedding=embedding,
                           read_ids=lambda t: results.get(t, np.zeros(size_hw, np.uint8)),
                           keyframes={1: {0}}, objects=[1], image=image)
    for r in propagator.run(task, 0, "forward"):
        results[r.t] = r.ids
        yield r


class Propagator:
    """Runs a PropagationTask; one instance may be reused (it keeps its config, refiner and upsampler)."""

    def __init__(self, config: PropagationConfig | None = None, refiner=None):
        self.config = config or PropagationConfig()
        self.refiner = refiner
        self.upsampler = EdgeAwareUpsampler(self.config.refine_radius, self.config.refine_eps,
                                            boundary_refiner(self.config.boundary_head, self.config.boundary_band,
                                                             self.config.boundary_most_removed))

    # ---------------------------------------------------------------- references
    def reference_pools(self, task: PropagationTask, active: list[int], t0: int):
        """{label: (M, D) prototypes} from the nearest reference keyframes of the active objects and
        their clicks (each label's chunks share max_prototypes, see share_budget), and the sorted list of
        frames used."""
        cfg = self.config
        frames: set[int] = set()
        per_obj_frames = {}
        refs = task.reference_keyframes if task.reference_keyframes is not None else task.keyframes
        for o in active:
            kfs = sorted(refs.get(o) or (), key=lambda k: (abs(k - t0), k))
            per_obj_frames[o] = set(kfs[: cfg.max_keyframes])
            frames |= per_obj_frames[o]
        labels = [0] + list(active)
        chunks: dict[int, list] = {lab: [] for lab in labels}
        for f in sorted(frames):
            emb = task.embedding(f)
            h, w, D = emb.shape
            flat = emb.reshape(-1, D)
            # background = not an active object that is annotated here
            fr = label_fractions(task.read_ids(f), labels, (h, w))
            for i, lab in enumerate(labels):
                if lab != 0 and f not in per_obj_frames[lab]:
                    continue
                sel = fr[i] >= cfg.pure_fraction
                if lab != 0 and not sel.any():
                    sel = fr[i] >= max(0.05, fr[i].max() * 0.5)
                if sel.any():
                    chunks[lab].append(flat[sel.reshape(-1)])
        for f, o, positive, vecs in task.click_refs:
            if o in chunks and len(vecs):
                chunks[o if positive else 0].append(np.asarray(vecs, np.float32))
        dim = task.embedding(t0).shape[-1]
        pools = {}
        for lab, parts in chunks.items():
            budgets = share_budget([len(v) for v in parts], cfg.max_prototypes)
            pools[lab] = np.concatenate([make_prototypes(v, b, seed=lab) for v, b in zip(parts, budgets)]
                                        or [np.zeros((0, dim), np.float32)])
        return pools, sorted(frames)

    # ---------------------------------------------------------------- one frame
    @staticmethod
    def search(index: LabelIndex, emb: np.ndarray) -> np.ndarray:
        """(h, w, D) embedding -> (len(index.labels), h, w) similarities: a frame's faiss search, the one
        step that does not depend on the frame before (so `_pass` runs it a frame ahead)."""
        h, w, D = emb.shape
        return index.scores(np.ascontiguousarray(emb.reshape(-1, D), dtype=np.float32)).reshape(-1, h, w)

    def predict_grid(self, scores: np.ndarray, labels: list[int], index: LabelIndex,
                     prev_fr: np.ndarray | None) -> np.ndarray:
        """`search` similarities -> (L, h, w) float32 probabilities in ``labels`` order.

        index: the run's LabelIndex over every active label (see reference_pools);
        prev_fr: (L, h, w) label fractions of the previous frame, or None.
        """
        cfg = self.config
        scores = scores[[index.labels.index(lab) for lab in labels]]
        if prev_fr is not None and cfg.prior_strength > 0:
            for i, lab in enumerate(labels):
                if lab == 0:
                    continue
                m = prev_fr[i] >= 0.5
                if not m.any():
                    continue
                dist = cv2.distanceTransform((~m).astype(np.uint8), cv2.DIST_L2, 3)
                scores[i] -= cfg.prior_strength * np.maximum(dist - cfg.prior_radius, 0)
        return softmax_scores(scores, cfg.temperature)

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
        band around them; 0 when an object vanished (how it was chosen: README, "Measured figures")."""
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
    def run(self, task: PropagationTask, t0: int, direction: str = "both",
            until: int | None = None) -> Iterator[FrameResult]:
        """Yield FrameResult for every frame of the affected span (see object_spans), t0 outwards, forward first."""
        n = task.n_frames
        if not 0 <= t0 < n:
            raise IndexError(f"frame {t0} out of range 0..{n - 1}")
        objs = [o for o in task.objects if o not in task.locked]
        spans = object_spans(task.keyframes, objs, t0, n, direction, until)
        if not spans:
            return
        pools, ref_frames = self.reference_pools(task, sorted(spans), t0)
        done: set[int] = set()  # t0 is rewritten by the forward pass only
        for step in [s for s, d in ((1, "forward"), (-1, "backward")) if direction in (d, "both")]:
            yield from self._pass(task, t0, step, spans, pools, ref_frames, done)

    def _index(self, pools: dict, recent: np.ndarray | None = None) -> LabelIndex:
        """The run's LabelIndex over `pools` (already prototypes: not clustered again), the background's
        with `recent` (the newest `_recent_background`) added."""
        if recent is not None and len(recent):
            pools = dict(pools)
            pools[0] = np.concatenate([pools[0], recent])
        return LabelIndex(pools, k=self.config.k, max_prototypes=10 ** 9)

    def _recent_background(self, emb: np.ndarray, result: "FrameResult", scores: np.ndarray,
                           index: LabelIndex) -> np.ndarray | None:
        """Prototypes of frame `result`'s sure background cells (background_every): probability >= 0.9, at least
        background_gap cells from every object (any cell when none is there), and more like the background than
        like any object by their own similarity (`scores`, before the distance prior), so the prior alone never
        makes an object's look-alike a background reference. None when there are too few."""
        probs = result.probs
        objects = np.zeros(emb.shape[:2], bool)
        for lab, p in probs.items():
            if lab != 0:
                objects |= p >= 0.5
        bg = index.labels.index(0)
        sel = probs[0] >= 0.9
        if objects.any():
            sel &= cv2.distanceTransform((~objects).astype(np.uint8), cv2.DIST_L2, 3) >= self.config.background_gap
        sel &= scores[bg] >= np.delete(scores, bg, axis=0).max(axis=0)
        if sel.sum() < MIN_RECENT_CELLS:
            return None
        return make_prototypes(emb[sel], RECENT_BACKGROUND_PROTOTYPES, seed=0)

    def _pass(self, task: PropagationTask, t0: int, step: int, spans: dict, pools: dict,
              ref_frames: list[int], done: set[int]) -> Iterator[FrameResult]:
        """One direction from t0: each frame's previous frame is the one just propagated."""
        n = task.n_frames
        # `index` serves the searches; after a background refresh it is the Future of the new one, built on the
        # search thread (its k-means costs ~15 ms), before the searches that use it (one worker, in order)
        index = labels_of = self._index(pools)  # labels_of: the label order, the same for every refresh
        every = self.config.background_every
        lo = min(s[0] for s in spans.values())
        hi = max(s[1] for s in spans.values())
        frames = range(max(lo, t0), hi + 1) if step > 0 else range(min(hi, t0), lo - 1, -1)
        p = frames[0] - step if len(frames) else -1
        prev_ids = task.read_ids(p) if 0 <= p < n else None
        seen = present_objects(prev_ids, sorted(spans)) if prev_ids is not None else set()
        if self.refiner is not None and task.image is not None:
            refs = [Reference(f, task.image(f), task.read_ids(f), task.embedding(f)) for f in ref_frames]
            self.refiner.start(Run(references=refs, t0=t0, step=step))

        def active_at(t: int) -> list[int]:
            return [] if t in done else [o for o in sorted(spans) if spans[o][0] <= t <= spans[o][1]
                                         and t not in task.keyframes.get(o, ())]

        # the next frame's search runs on a second thread, on every core but the one that refines the current
        # frame here (faiss releases the GIL; `bench`-style runs: 2 threads 42-47 frames/s, 1 thread 49-51 on
        # this 2-core machine); embeddings are read here, on the caller's thread
        searcher = ThreadPoolExecutor(1, thread_name_prefix="vos-search", initializer=search_threads,
                                      initargs=(max(1, ALL_CORES - 1),))
        ahead = {}
        try:
            for i, t in enumerate(frames):
                active = active_at(t)
                if not active:
                    # nothing to rewrite here (a keyframe t0): it becomes the previous frame
                    prev_ids = task.read_ids(t)
                    seen |= present_objects(prev_ids, sorted(spans))
                    continue
                emb, found = ahead.pop(t, None) or self._search_on(searcher, index, task.embedding(t))
                scores = found.result()
                if i + 1 < len(frames) and active_at(frames[i + 1]):
                    ahead[frames[i + 1]] = self._search_on(searcher, index, task.embedding(frames[i + 1]))
                result = self._frame(task, t, t0, [0] + active, labels_of, prev_ids, emb, scores)
                present = present_objects(result.ids, active)
                for lab in seen - present:
                    if lab in result.confidence:
                        result.confidence[lab] = 0.0  # vanished: unsure on every frame of the gap
                seen |= present
                done.add(t)
                if every and i % every == every - 1:  # serves from frame i + 2 on: i + 1's search is under way
                    index = searcher.submit(self._refreshed_index, pools, emb, result, scores, labels_of)
                yield result
                prev_ids = result.ids
        finally:
            searcher.shutdown(cancel_futures=True)
            if self.refiner is not None and task.image is not None:
                self.refiner.finish()

    def _search_on(self, searcher: ThreadPoolExecutor, index: LabelIndex | Future, emb: np.ndarray):
        """(emb, Future of `search(index, emb)`) run on `searcher`; `index` may be the Future of an index that an
        earlier job on `searcher` builds."""
        return emb, searcher.submit(lambda: self.search(_ready(index), emb))

    def _refreshed_index(self, pools: dict, emb: np.ndarray, result: "FrameResult", scores: np.ndarray,
                         index: LabelIndex) -> LabelIndex:
        """The run's index with frame `result`'s sure background as the newest background (`_recent_background`)."""
        return self._index(pools, self._recent_background(emb, result, scores, index))

    def _frame(self, task: PropagationTask, t: int, t0: int, labels: list[int], index: LabelIndex,
               prev_ids: np.ndarray | None, emb: np.ndarray, scores: np.ndarray) -> FrameResult:
        """Prior, fusion with an earlier result, refinement, upsampling, argmax for frame t (embedding
        `emb`, `search` similarities `scores`)."""
        grid = emb.shape[:2]
        prev_fr = label_fractions(prev_ids, labels, grid) if prev_ids is not None else None
        probs = self.predict_grid(scores, labels, index, prev_fr)
        if self.config.keep_floor > 0 and prev_fr is not None:
            probs = keep_tracked(probs, prev_fr, self.config.keep_floor)
        cur = task.read_ids(t)
        if task.previous is not None and task.previous(t):
            soft = task.previous_probs(t) if task.previous_probs is not None else None
            probs = self._blend_previous(probs, cur, labels, grid, t, t0, task.keyframes, labels[1:], soft)
        image = task.image(t) if task.image is not None else None
        probs, full = self._refine(t, probs, labels, image, emb, prev_ids, task.size_hw)
        new = argmax_ids(full, labels)
        lut = np.ones(256, bool)
        lut[labels] = False  # background and active objects may change
        fixed = lut[cur]
        new[fixed] = cur[fixed]
        conf = self.confidence(probs, labels, prev_fr)
        return FrameResult(t, {lab: probs[i] for i, lab in enumerate(labels)}, new, conf)

    def _refine(self, t: int, probs: np.ndarray, labels: list[int], image: np.ndarray | None,
                emb: np.ndarray, prev_ids: np.ndarray | None, size_hw: tuple[int, int]):
        """(L, h, w) grid probabilities -> (grid, (L, H, W) full-size) after the refiner, if any."""
        if self.refiner is None or image is None:
            return probs, self.upsampler(probs, image, size_hw)
        grid_scale = self.refiner.grid_scale
        coarse = bilinear(probs, size_hw) if grid_scale else self.upsampler(probs, image, size_hw)
        coarse = np.clip(coarse, 0.0, None)
        coarse /= np.maximum(coarse.sum(0, keepdims=True), 1e-6)
        given = {lab: coarse[i] for i, lab in enumerate(labels) if lab != 0}
        out = normalise_probs(self.refiner.refine(FrameContext(t, image, given, emb, prev_ids)))
        full = with_background({lab: out.get(lab, given[lab]) for lab in given}, labels)
        probs = grid_average(full, probs.shape[1:])
        return (probs, self.upsampler(probs, image, size_hw)) if grid_scale else (probs, full)


def _ready(index: LabelIndex | Future) -> LabelIndex:
    """`index`, or the index its Future holds (done already when asked on the search thread, which built it)."""
    return index.result() if isinstance(index, Future) else index
