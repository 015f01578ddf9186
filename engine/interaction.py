"""User edits on one frame: clicks and scribbles (retrieval-based), brush/eraser, polygon, mask.

Every function takes the frame's current id mask and returns a new one; none mutates its input.
Coordinates of points are (x, y) in working-resolution pixels (floats allowed); masks are
(H, W) uint8 ids; embeddings are (h, w, D) float32 unit vectors on the stride-8 grid.
Pixels of locked objects are never changed by any edit.

Clicks and scribbles are PML-style: the touched cells' embeddings become references of the
object (positive) or of "not the object" (negative), the frame is retrieved against them, and
only the region connected to the click/stroke changes — so one click never recolours far-away
look-alikes.
"""

from __future__ import annotations

import cv2
import numpy as np

from .retrieval import LabelIndex, softmax_scores
from .upsample import STRIDE, EdgeAwareUpsampler, label_fractions

_UPSAMPLER = EdgeAwareUpsampler(radius=4, eps=1e-3)


def _editable(ids: np.ndarray, locked: set[int], obj: int) -> np.ndarray:
    """(H, W) bool: pixels an edit of ``obj`` may change (not owned by a locked other object)."""
    if not locked:
        return np.ones(ids.shape, bool)
    return ~np.isin(ids, [o for o in locked if o != obj])


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


def _seed_vectors(emb: np.ndarray, points, radius_cells: int = 1, min_sim: float = 0.7) -> np.ndarray:
    """Embeddings of the clicked cells plus neighbours that look like them ((N, D) float32)."""
    h, w, D = emb.shape
    core = _seed_cells(points, (h, w), 0)
    ring = _seed_cells(points, (h, w), radius_cells)
    core_v = emb[core]
    ring_v = emb[ring & ~core]
    if len(ring_v) and len(core_v):
        keep = (ring_v @ core_v.T).max(axis=1) >= min_sim
        ring_v = ring_v[keep]
    return np.concatenate([core_v, ring_v]).astype(np.float32)


def _background_guess(emb: np.ndarray, seeds: np.ndarray, seed_cells: np.ndarray,
                      n_max: int = 256, rng=None) -> np.ndarray:
    """When nothing is known about the background: frame-border cells and the half of the cells
    least similar to the seeds, away from the seed cells ((N, D) float32)."""
    rng = rng or np.random.default_rng(0)
    h, w, D = emb.shape
    flat = emb.reshape(-1, D)
    sim = (flat @ seeds.T).max(axis=1).reshape(h, w)
    far = cv2.dilate(seed_cells.astype(np.uint8), np.ones((7, 7), np.uint8)) == 0
    border = np.zeros((h, w), bool)
    border[[0, -1], :] = True
    border[:, [0, -1]] = True
    low = sim <= np.quantile(sim, 0.5)
    cand = np.flatnonzero((far & (border | low)).reshape(-1) & (sim.reshape(-1) < 0.9))
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
    fr = label_fractions(np.isin(ids, list(labels_in)).astype(np.uint8), [1], (h, w))[0]
    sel = fr >= pure
    if exclude is not None:
        sel &= ~exclude
    idx = np.flatnonzero(sel.reshape(-1))
    if len(idx) > n_max:
        idx = rng.choice(idx, n_max, replace=False)
    return emb.reshape(-1, D)[idx]


def _region_probability(emb, pos, neg, image, size_hw, temperature=0.05) -> np.ndarray:
    """(H, W) float32 probability of 'positive' from nearest positive vs negative references."""
    h, w, D = emb.shape
    if len(neg) == 0:
        neg = np.zeros((1, D), np.float32)  # a neutral reference: similarity 0
    index = LabelIndex({0: neg, 1: pos}, k=1, max_prototypes=256)
    scores = index.scores(emb.reshape(-1, D)).reshape(2, h, w)
    probs = softmax_scores(scores, temperature)
    return _UPSAMPLER(probs, image, size_hw)[1]


def _connected_to(region: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """(H, W) bool: the connected components of ``region`` that touch any ``seeds`` pixel."""
    n, lab = cv2.connectedComponents(region.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros(region.shape, bool)
    hit = np.unique(lab[seeds & region])
    hit = hit[hit > 0]
    return np.isin(lab, hit)


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
    seeds_px = _stroke_mask((H, W), pts, 2 * seed_radius_px + 1) > 0
    seed_cells = _seed_cells(pts, (h, w), 1)
    seed_vecs = _seed_vectors(emb, pts)
    editable = _editable(ids, locked, obj)
    new = ids.copy()
    obj_mask = ids == obj
    rng = np.random.default_rng(0)
    if positive:
        pos = [seed_vecs, _cells_of(emb, ids, obj, rng=rng)]
        if positives is not None and len(positives):
            pos.append(positives)
        pos = np.concatenate(pos)
        others = [int(v) for v in np.unique(ids) if v != obj]
        neg = [_cells_of(emb, ids, others, exclude=seed_cells, rng=rng)] if others else []
        if negatives is not None and len(negatives):
            neg.append(negatives)
        known_bg = sum(len(n) for n in neg)
        if known_bg < 16:
            neg.append(_background_guess(emb, seed_vecs, seed_cells, rng=rng))
        neg = np.concatenate(neg) if neg else np.zeros((0, D), np.float32)
        prob = _region_probability(emb, pos, neg, image, (H, W))
        region = (prob > 0.5) & ~obj_mask
        grow = _connected_to(region | obj_mask | seeds_px, seeds_px) & ~obj_mask
        new[grow & editable] = obj
        return new
    # negative
    if not obj_mask.any():
        return new
    hit_obj = seeds_px & obj_mask
    if not hit_obj.any():
        return new
    rest = _cells_of(emb, ids, obj, exclude=cv2.dilate(seed_cells.astype(np.uint8),
                                                      np.ones((5, 5), np.uint8)) > 0, rng=rng)
    pos = [rest]
    if positives is not None and len(positives):
        pos.append(positives)
    pos = np.concatenate(pos)
    neg = [seed_vecs]
    if negatives is not None and len(negatives):
        neg.append(negatives)
    neg = np.concatenate(neg)
    if len(pos) == 0:
        remove = obj_mask  # the object is only the clicked bit
    else:
        prob = _region_probability(emb, pos, neg, image, (H, W))
        region = ((prob < 0.5) & obj_mask) | (seeds_px & obj_mask)
        remove = _connected_to(region, seeds_px)
    new[remove & editable] = 0
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
