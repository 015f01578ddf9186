"""User edits on one frame: clicks and scribbles (retrieval-based), brush/eraser, polygon, mask.

Every function takes the frame's current id mask and returns a new one; none mutates its input.
Coordinates of points are (x, y) in working-resolution pixels (floats allowed); masks are
(H, W) uint8 ids; embeddings are (h, w, D) float32 unit vectors on the stride-8 grid.
Pixels of locked objects are never changed by any edit.

Clicks and scribbles go through the click model (`model_edit`, engine/click_model.py: a small network
that reads every click of the object on the frame and the mask before the newest one) when the session's
embedder is the one it was trained on. Otherwise (another embedding head, test embedders) they are
PML-style (`retrieve_edit`): the touched cells' embeddings become references of the object (positive)
or of "not the object" (negative), the frame is retrieved against them, and only the region connected
to the click/stroke changes — so one click never recolours far-away look-alikes.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from .distance import distance_to_zero
from .palette import present_ids
from .retrieval import LabelIndex, softmax_scores
from .upsample import STRIDE, EdgeAwareUpsampler, label_fractions

# Tuned with a simulated user (interior-most point of the largest error) on DAVIS train frames.
_UPSAMPLER = EdgeAwareUpsampler()
BG_QUANTILE_NEW = 0.3         # first click: background guess = the 30% cells least like the click
BG_QUANTILE_EXISTING = 0.8    # correction: unlabelled cells unless among the 20% most like the click
SEED_RADIUS_CELLS = 2         # a click's references: its cell and look-alike cells within 2 cells
SEED_CLOSENESS = 0.7
NEG_KEEP_QUANTILE = 0.5       # negative click: the half of the object least like the click stays
NEG_GROW_CLOSENESS = 0.5      # ... and the connected look-alike region around the click goes
NEG_NEAR_FRACTION = 0.2       # ... object cells nearer the click than this x sqrt(object cells) are no
                              # references of the object (a mistake is often wider than its look-alike core)
NEG_BG_BAND_CELLS = 1         # background cells this close to the object join the click as "not the object"
                              # (a false alarm looks like the background it leaked into)
STROKE_REACH_PX = 32          # the click model's change of a correction scribble: this near the stroke (k-fold
                              # robot, README "Scribbles that stay near their stroke") ...
STROKE_REACH_PER_PX = 0.5     # ... and no farther than this times its length, one cell at least (README "Short
                              # scribbles, small changes")


def _editable(ids: np.ndarray, locked: set[int], obj: int) -> np.ndarray:
    """(H, W) bool: pixels an edit of ``obj`` may change (not owned by a locked other object)."""
    if not locked:
        return np.ones(ids.shape, bool)
    lut = np.ones(256, bool)
    lut[[o for o in locked if o != obj]] = False
    return lut[ids]


def _stroke_mask(shape_hw, points, thickness: int) -> np.ndarray:
    """(H, W) uint8 1 on a polyline through ``points`` drawn ``thickness`` px wide (dots if 1 point)."""
    m = np.zeros(shape_hw, np.uint8)
    pts = np.round(np.asarray(points, np.float64).reshape(-1, 2)).astype(np.int32)
    if len(pts) == 1:
        cv2.circle(m, tuple(int(v) for v in pts[0]), max(thickness // 2, 0), 1, -1)
    else:
        cv2.polylines(m, [pts], False, 1, max(thickness, 1))
    return m


def _seed_cells(points, grid, radius_cells: int = 1) -> np.ndarray:
    """(h, w) bool grid cells within ``radius_cells`` of the points' cells (polyline through them)."""
    h, w = grid
    m = np.zeros((h, w), np.uint8)
    pts = np.asarray(points, np.float64).reshape(-1, 2) / STRIDE
    pts = np.clip(np.floor(pts), [0, 0], [w - 1, h - 1]).astype(np.int32)
    if len(pts) == 1:
        m[pts[0, 1], pts[0, 0]] = 1
    else:
        cv2.polylines(m, [pts], False, 1, 1)
    if radius_cells > 0:
        k = 2 * radius_cells + 1
        m = cv2.dilate(m, np.ones((k, k), np.uint8))
    return m > 0


def _seed_vectors(emb: np.ndarray, points, radius_cells: int = 1, closeness: float = 0.5,
                  within: np.ndarray | None = None) -> np.ndarray:
    """Embeddings of the clicked cells plus neighbours that look like them ((N, D) float32), all of them among
    the ``within`` cells ((h, w) bool) when given.

    A neighbour joins when its similarity to the clicked cells is above ``closeness`` of the way
    from the frame's median similarity to 1, so the rule adapts to any embedding's scale."""
    h, w, D = emb.shape
    core = _seed_cells(points, (h, w), 0)
    ring = _seed_cells(points, (h, w), radius_cells)
    if within is not None:
        core, ring = core & within, ring & within
        if not core.any():
            return np.zeros((0, D), np.float32)
    core_v = emb[core]
    ring_v = emb[ring & ~core]
    if len(ring_v) and len(core_v):
        typical = float(np.median((emb.reshape(-1, D) @ core_v.T).max(axis=1)))
        keep = (ring_v @ core_v.T).max(axis=1) >= typical + closeness * (1.0 - typical)
        ring_v = ring_v[keep]
    return np.concatenate([core_v, ring_v]).astype(np.float32)


def seed_vectors(emb: np.ndarray, points, within: np.ndarray | None = None) -> np.ndarray:
    """The reference embeddings (N, D) a click/scribble through ``points`` (x, y) contributes (only of the
    ``within`` cells, when given)."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    return _seed_vectors(emb, pts, SEED_RADIUS_CELLS, SEED_CLOSENESS, within)


def _own_side(vecs: np.ndarray, emb: np.ndarray, near: np.ndarray, frac: np.ndarray, positive: bool,
              pure: float) -> np.ndarray:
    """Those of ``vecs`` whose most similar pure cell of the frame (at least ``pure`` one label, as the
    propagation's reference cells), 3 cells or more from the ``near`` cells, is on their side: the object's
    (``frac``, its fraction per cell) when ``positive``. All of them when a side has no such cell."""
    away = cv2.dilate(near.astype(np.uint8), np.ones((7, 7), np.uint8)) == 0
    own, other = (frac >= pure) & away, (frac <= 1.0 - pure) & away
    if not positive:
        own, other = other, own
    if not len(vecs) or not own.any() or not other.any():
        return vecs
    return vecs[(vecs @ emb[own].T).max(axis=1) >= (vecs @ emb[other].T).max(axis=1)]


def scribble_references(emb: np.ndarray, points, ids: np.ndarray, obj: int, positive: bool,
                        pure: float) -> np.ndarray:
    """The propagation references of a scribble of ``obj`` on a frame whose mask is now ``ids``: its seed
    vectors that look like its own side of the frame (`_own_side`, away from the stroke), and for a negative
    scribble only those of cells that the mask now puts in the background (at least ``pure`` of them, as the
    propagation's reference cells). A stroke crosses cells that are partly the other side (a blurred wing
    drawn over stones looks like the stones), and the look-alike cells beside it may be the other side (beside
    a negative stroke along a duck's edge, duck); as references they would turn stones into the object, or the
    duck into background, on the frames around. A positive stroke keeps its mixed cells: the same rule for
    them lost more than it mended (README, "Negative scribbles refer with their background"). A click is one
    chosen cell and keeps its vectors (`seed_vectors`)."""
    grid = emb.shape[:2]
    frac = label_fractions(ids, [obj], grid)[0]
    vecs = seed_vectors(emb, points, within=None if positive else frac <= 1.0 - pure)
    return _own_side(vecs, emb, _seed_cells(points, grid, 0), frac, positive, pure)


def correction_references(emb: np.ndarray, before: np.ndarray, after: np.ndarray, clicks, pure: float,
                          reach: int) -> list[tuple[bool, np.ndarray]]:
    """The propagation references of what a frame's clicks changed: [(positive, (N, D) vectors)].

    before: (H, W) bool, the object's mask before its first edit there (the propagated one); after: now;
    clicks: [(points, positive)]. The cells a positive click moved into the object (a negative one: out of
    it), pure on both ends, connected to a click of that sign and within ``reach`` cells of one, that look
    like their new side of the frame (`_own_side`, away from them). A click's spot alone says little of the
    object at that frame's pose; farther changes are the click model's guess, not the user's, and as
    references they spread its mistakes (README, "What a correction click changed")."""
    grid = emb.shape[:2]
    was = label_fractions(before.astype(np.uint8), [1], grid)[0]
    now = label_fractions(after.astype(np.uint8), [1], grid)[0]
    out = []
    for positive in (True, False):
        points = [p for pts, sign in clicks if sign == positive for p in pts]
        if not points:
            continue
        moved = (now >= pure) & (was <= 1.0 - pure) if positive else (now <= 1.0 - pure) & (was >= pure)
        moved &= _seed_cells(points, grid, reach)
        _, parts = cv2.connectedComponents(moved.astype(np.uint8), connectivity=8)
        region = np.isin(parts, parts[_seed_cells(points, grid, 1) & moved])
        vecs = _own_side(emb[region], emb, region, now, positive, pure)
        if len(vecs):
            out.append((positive, vecs))
    return out


def _background_guess(emb: np.ndarray, seeds: np.ndarray, seed_cells: np.ndarray,
                      allowed: np.ndarray | None = None, n_max: int = 256, rng=None,
                      quantile: float = 0.5, border: bool = True) -> np.ndarray:
    """Background references nobody marked: among the ``allowed`` cells ((h, w) bool, default all)
    away from the seeds, the frame-border cells and the half least similar to the seeds
    ((N, D) float32). Look-alikes of the seeds are left out so they can join the object."""
    rng = rng or np.random.default_rng(0)
    h, w, D = emb.shape
    flat = emb.reshape(-1, D)
    sim = (flat @ seeds.T).max(axis=1).reshape(h, w)
    far = cv2.dilate(seed_cells.astype(np.uint8), np.ones((7, 7), np.uint8)) == 0
    if allowed is not None:
        far &= allowed
    if not far.any():
        return np.zeros((0, D), np.float32)
    edge = np.zeros((h, w), bool)
    if border:
        edge[[0, -1], :] = True
        edge[:, [0, -1]] = True
    low = sim <= np.quantile(sim[far], quantile)
    cand = np.flatnonzero((far & (edge | low)).reshape(-1) & (sim.reshape(-1) < 0.9))
    if len(cand) == 0:
        cand = np.flatnonzero(far.reshape(-1))
    if len(cand) > n_max:
        cand = rng.choice(cand, n_max, replace=False)
    return flat[cand]


def _cells_of(emb: np.ndarray, ids: np.ndarray, labels_in, exclude: np.ndarray | None = None,
              n_max: int = 512, pure: float = 0.75, rng=None) -> np.ndarray:
    """Embeddings of grid cells that are at least ``pure`` covered by any of ``labels_in``."""
    rng = rng or np.random.default_rng(0)
    h, w, D = emb.shape
    if isinstance(labels_in, (int, np.integer)):
        labels_in = [int(labels_in)]
    lut = np.zeros(256, np.uint8)
    lut[list(labels_in)] = 1
    fr = label_fractions(lut[ids], [1], (h, w))[0]
    sel = fr >= pure
    if exclude is not None:
        sel &= ~exclude
    idx = np.flatnonzero(sel.reshape(-1))
    if len(idx) > n_max:
        idx = rng.choice(idx, n_max, replace=False)
    return emb.reshape(-1, D)[idx]


def _grid_probability(emb, pos, neg, temperature=0.05, max_refs=512) -> np.ndarray:
    """(h, w) float32 probability of 'positive' from nearest positive vs negative references."""
    h, w, D = emb.shape
    if len(neg) == 0:
        neg = np.zeros((1, D), np.float32)  # a neutral reference: similarity 0
    # a click must answer in milliseconds: a random subsample instead of k-means prototypes
    rng = np.random.default_rng(0)
    pools = {0: neg, 1: pos}
    for lab, v in pools.items():
        if len(v) > max_refs:
            pools[lab] = v[rng.choice(len(v), max_refs, replace=False)]
    index = LabelIndex(pools, k=1, max_prototypes=max_refs)
    scores = index.scores(emb.reshape(-1, D)).reshape(2, h, w)
    return softmax_scores(scores, temperature)[1]


def _region_probability(emb, pos, neg, image, size_hw, temperature=0.05, max_refs=512) -> np.ndarray:
    """(H, W) float32 probability of 'positive', edge-aware upsampled from the grid."""
    p = _grid_probability(emb, pos, neg, temperature, max_refs)
    return _UPSAMPLER(np.stack([1.0 - p, p]), image, size_hw)[1]


def _grow_similar(emb: np.ndarray, start: np.ndarray, allowed: np.ndarray,
                  closeness: float, frame_median: bool = False) -> np.ndarray:
    """(h, w) bool: the 4-connected cells of ``allowed`` around ``start`` that look like the start
    cells: similarity to their mean above ``closeness`` of the way from the allowed cells' median
    similarity (or the whole frame's, ``frame_median``) to 1 (adaptive, like _seed_vectors)."""
    if not start.any():
        return start.copy()
    mean = emb[start].mean(axis=0)
    mean /= max(float(np.linalg.norm(mean)), 1e-6)
    sim = emb @ mean
    pool = sim if frame_median or not allowed.any() else sim[allowed]
    typical = float(np.median(pool))
    cand = (allowed & (sim >= typical + closeness * (1.0 - typical))) | start
    n, lab = cv2.connectedComponents(cand.astype(np.uint8), connectivity=4)
    lut = np.zeros(n, bool)
    lut[lab[start]] = True
    lut[0] = False
    return lut[lab]


def _connected_to(region: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """(H, W) bool: the connected components of ``region`` that touch any ``seeds`` pixel."""
    n, lab = cv2.connectedComponents(region.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros(region.shape, bool)
    lut = np.zeros(n, bool)
    lut[lab[seeds & region]] = True
    lut[0] = False
    return lut[lab]


def retrieve_edit(ids: np.ndarray, emb: np.ndarray, obj: int, points, positive: bool,
                  image: np.ndarray | None = None, locked: set[int] = frozenset(),
                  negatives: np.ndarray | None = None, positives: np.ndarray | None = None,
                  seed_radius_px: int = 3) -> np.ndarray:
    """A click (one point) or scribble (polyline) of ``obj`` on a frame -> new (H, W) uint8 ids.

    positive: the region similar to the touched cells and connected to them joins ``obj``
    (taken from background or unlocked objects). negative: the part of ``obj`` more similar to the
    touched cells than to the rest of ``obj``, connected to them, becomes background.
    ``negatives``/``positives``: optional extra reference embeddings (N, D) known for this object
    (e.g. earlier negative clicks, the object's other keyframes).
    """
    H, W = ids.shape
    h, w, D = emb.shape
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    pts[:, 0] = np.clip(pts[:, 0], 0, W - 1)
    pts[:, 1] = np.clip(pts[:, 1], 0, H - 1)
    seeds = _Seeds(px=_stroke_mask((H, W), pts, 2 * seed_radius_px + 1) > 0,
                   cells=_seed_cells(pts, (h, w), 1),
                   vecs=seed_vectors(emb, pts))
    extra_pos = positives if positives is not None and len(positives) else None
    extra_neg = negatives if negatives is not None and len(negatives) else None
    new = ids.copy()
    if positive:
        change = _grow_object(ids, emb, obj, seeds, image, extra_pos, extra_neg)
        new[change & _editable(ids, locked, obj)] = obj
    else:
        change = _shrink_object(ids, emb, obj, seeds, image, extra_pos, extra_neg)
        if change is not None:
            new[change & _editable(ids, locked, obj)] = 0
    return new


class _Seeds(NamedTuple):
    """What the user touched: px (H, W) bool stroke pixels, cells (h, w) bool grid cells, vecs (N, D)."""
    px: np.ndarray
    cells: np.ndarray
    vecs: np.ndarray


def _grow_object(ids, emb, obj, seeds: _Seeds, image, extra_pos, extra_neg) -> np.ndarray:
    """(H, W) bool pixels a positive click/scribble adds to ``obj``: the region like the seeds, connected
    to them. References: the seeds (+ extra_pos) against the other objects, the unlabelled cells unlike
    the seeds (+ extra_neg); then a second retrieval that knows the first one's surroundings."""
    H, W = ids.shape
    h, w, D = emb.shape
    rng = np.random.default_rng(0)
    obj_mask = ids == obj
    exists = bool(obj_mask.any())
    pos = [seeds.vecs]
    if not exists:
        pos.append(_cells_of(emb, ids, obj, rng=rng))
    if extra_pos is not None:
        pos.append(extra_pos)
    pos = np.concatenate(pos)
    present = present_ids(ids)
    others = [int(v) for v in present if v not in (0, obj)]
    neg = []
    if others:
        # a click on another object's look-alike region claims that region: not a negative
        lut = np.zeros(256, np.uint8)
        lut[others] = 1
        other_cells = label_fractions(lut[ids], [1], (h, w))[0] >= 0.5
        claimed = _grow_similar(emb, seeds.cells & other_cells, other_cells, NEG_GROW_CLOSENESS,
                                frame_median=True)
        neg.append(_cells_of(emb, ids, others, exclude=seeds.cells | claimed, rng=rng))
    if extra_neg is not None:
        neg.append(extra_neg)
    # unlabelled pixels are only probably background: keep the ones unlike the click
    unlabelled = label_fractions((ids == 0).astype(np.uint8), [1], (h, w))[0] >= 0.75
    neg.append(_background_guess(emb, seeds.vecs, seeds.cells, allowed=unlabelled, rng=rng,
                                 quantile=BG_QUANTILE_EXISTING if exists else BG_QUANTILE_NEW))
    neg = np.concatenate(neg)
    # pass 1 on the grid gives the likely region; pass 2 takes the unlabelled cells
    # around it, now known well enough, as background (sharper boundaries)
    p1 = _grid_probability(emb, pos, neg)
    r1 = _connected_to((p1 > 0.5) | seeds.cells, seeds.cells)
    if r1.any():
        inner = cv2.erode(r1.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        pos = np.concatenate([pos, emb[inner & ~seeds.cells][:512]])
        ring = cv2.dilate(r1.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        outside = emb[unlabelled & ~ring]
        if len(outside) > 512:
            outside = outside[rng.choice(len(outside), 512, replace=False)]
        neg = np.concatenate([neg, outside])
    prob = _region_probability(emb, pos, neg, image, (H, W))
    region = (prob > 0.5) & ~obj_mask
    return _connected_to(region | seeds.px, seeds.px) & ~obj_mask


def _shrink_object(ids, emb, obj, seeds: _Seeds, image, extra_pos, extra_neg) -> np.ndarray | None:
    """(H, W) bool pixels a negative click/scribble removes from ``obj`` (None: it missed the object): the
    part like the seeds, connected to them. A first pass finds the likely mistake by growing from the
    seeds; the rest of the object (minus the cells near the click) and the background band around it
    are the references of the second."""
    H, W = ids.shape
    h, w, D = emb.shape
    rng = np.random.default_rng(0)
    obj_mask = ids == obj
    if not (seeds.px & obj_mask).any():
        return None
    # the rest of the object, minus the cells most like the click (they may be the same mistake)
    obj_cells = label_fractions(obj_mask.astype(np.uint8), [1], (h, w))[0] >= 0.75
    near = cv2.dilate(seeds.cells.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    rest = _background_guess(emb, seeds.vecs, near, allowed=obj_cells & ~near, n_max=512, rng=rng,
                             quantile=NEG_KEEP_QUANTILE, border=False)
    pos = rest if extra_pos is None else np.concatenate([rest, extra_pos])
    neg = seeds.vecs if extra_neg is None else np.concatenate([seeds.vecs, extra_neg])
    if len(pos) == 0:
        return obj_mask  # the object is only the clicked bit
    r1 = _grow_similar(emb, seeds.cells & obj_cells, obj_cells, NEG_GROW_CLOSENESS)
    ring = cv2.dilate(r1.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    d = cv2.distanceTransform((~seeds.cells).astype(np.uint8), cv2.DIST_L2, 3)
    ring |= d < NEG_NEAR_FRACTION * np.sqrt(obj_cells.sum())
    keep = emb[obj_cells & ~ring]
    if len(keep):
        if len(keep) > 512:
            keep = keep[rng.choice(len(keep), 512, replace=False)]
        pos = keep if extra_pos is None else np.concatenate([keep, extra_pos])
        neg = np.concatenate([neg, emb[r1 & ~seeds.cells][:512]])
    k = 2 * NEG_BG_BAND_CELLS + 1
    band = cv2.dilate(obj_cells.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
    neg = np.concatenate([neg, _cells_of(emb, ids, 0, exclude=~band, rng=rng)])
    prob = _region_probability(emb, pos, neg, image, (H, W))
    region = ((prob < 0.5) & obj_mask) | (seeds.px & obj_mask)
    return _connected_to(region, seeds.px)


def _stroke_reach(pts: np.ndarray) -> float:
    """How far from a correction scribble the click model may change the frame: STROKE_REACH_PX, and less for a
    short stroke, which is drawn on a small mistake (the robot's skeleton of a thin miss is a few pixels long)."""
    length = float(np.linalg.norm(np.diff(pts, axis=0), axis=1).sum())
    return min(STROKE_REACH_PX, max(STRIDE, STROKE_REACH_PER_PX * length))


def model_edit(ids: np.ndarray, emb: np.ndarray, obj: int, strokes, image: np.ndarray, model,
               locked: set[int] = frozenset(), seed_radius_px: int = 3) -> np.ndarray:
    """The click model's answer to the object's strokes on a frame -> new (H, W) uint8 ids.

    strokes: [(points, positive)] every click/scribble of ``obj`` on this frame, oldest first, the new one
    last; ``model``: an engine.click_model.ClickModel. Only the model's region connected to the newest stroke
    changes: a positive stroke adds it, a negative one removes it (the pixels under the stroke always follow
    its sign, and those under the frame's earlier strokes keep theirs: what the person marked stays marked,
    README "Strokes that stay marked"), so a correction never spoils far-away parts (taking the model's whole
    mask instead was worse in the k-fold, resources/clicks/README.md). A scribble on a frame that already
    shows the object changes it only near the stroke (`_stroke_reach`: README, "Scribbles that stay near
    their stroke"); a click, which names a point of an object of any size, and the first stroke of an object
    on a frame take the whole connected region. It takes background pixels, and another unlocked object's
    pixels only where the newest stroke is positive and touches that object (a click on it claims it);
    locked objects never change.
    """
    H, W = ids.shape
    points, positive = strokes[-1]
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    pts[:, 0] = np.clip(pts[:, 0], 0, W - 1)
    pts[:, 1] = np.clip(pts[:, 1], 0, H - 1)
    touched = _stroke_mask((H, W), pts, 2 * seed_radius_px + 1) > 0
    marked = np.zeros((H, W), bool)  # under the frame's earlier strokes, where the newest does not go
    for stroke, _ in strokes[:-1]:
        marked |= _stroke_mask((H, W), stroke, 2 * seed_radius_px + 1) > 0
    marked &= ~touched
    cells = {True: np.zeros(emb.shape[:2], bool), False: np.zeros(emb.shape[:2], bool)}
    for stroke, sign in [*strokes[:-1], (pts, positive)]:
        on = _seed_cells(stroke, emb.shape[:2], 0)
        cells[sign] |= on
        cells[not sign] &= ~on
    before = ids == obj
    prob = model.grid_probability(emb, cells[True], cells[False], before, image)
    mask = _UPSAMPLER(np.stack([1.0 - prob, prob]), image, (H, W))[1] > 0.5
    if positive:
        mask = before | _connected_to(mask | touched, touched)
    else:
        mask = before & ~_connected_to((~mask | touched) & before, touched)
    if len(pts) > 1 and before.any():  # a scribble names its region along its path: a correction stays near it
        near = distance_to_zero((~touched).astype(np.uint8)) <= _stroke_reach(pts)
        mask = before ^ ((mask ^ before) & near)
    mask[marked] = before[marked]
    claimable = np.zeros(256, bool)
    claimable[[0, obj]] = True
    if positive:
        claimable[[int(v) for v in np.unique(ids[touched]) if int(v) not in locked]] = True
    new = ids.copy()
    new[before] = 0
    new[mask & claimable[ids] & _editable(ids, locked, obj)] = obj
    return new


def brush(ids: np.ndarray, obj: int, points, radius: float, erase: bool = False,
          locked: set[int] = frozenset()) -> np.ndarray:
    """Paint (or erase) a stroke of circles of ``radius`` px through ``points`` -> new ids."""
    stroke = _stroke_mask(ids.shape, points, int(round(2 * radius)) + 1) > 0
    if len(np.asarray(points).reshape(-1, 2)) == 1:
        stroke = _stroke_mask(ids.shape, points, int(round(2 * radius))) > 0
    new = ids.copy()
    if erase:
        new[stroke & (ids == obj)] = 0
    else:
        new[stroke & _editable(ids, locked, obj)] = obj
    return new


def polygon(ids: np.ndarray, obj: int, points, locked: set[int] = frozenset()) -> np.ndarray:
    """Fill the polygon through ``points`` (x, y) with ``obj`` -> new ids."""
    m = np.zeros(ids.shape, np.uint8)
    pts = np.round(np.asarray(points, np.float64).reshape(-1, 2)).astype(np.int32)
    cv2.fillPoly(m, [pts], 1)
    new = ids.copy()
    new[(m > 0) & _editable(ids, locked, obj)] = obj
    return new


def set_mask(ids: np.ndarray, obj: int, mask: np.ndarray, locked: set[int] = frozenset()) -> np.ndarray:
    """Make ``obj`` exactly ``mask`` ((H, W) bool) on this frame, except over locked objects."""
    mask = np.asarray(mask).astype(bool)
    if mask.shape != ids.shape:
        raise ValueError(f"mask shape {mask.shape} != frame shape {ids.shape}")
    new = ids.copy()
    new[new == obj] = 0
    new[mask & _editable(ids, locked, obj)] = obj
    return new
