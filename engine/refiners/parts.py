"""`parts` refiner, after FAVOS (Cheng et al., "Fast and Accurate Online Video Object Segmentation via
Tracking Parts", CVPR 2018).

Why: whole-frame retrieval labels any pixel that looks like the object, so look-alikes elsewhere in the
frame light up. Tracking the object's parts gives an independent idea of WHERE the object is.

Per object: on its reference (keyframe) the mask is split into parts by k-means on pixel coordinates
(sklearn); each part's box is tracked frame to frame by a correlation tracker of our own (normalised
cross-correlation, cv2.matchTemplate, at three scales, in a search window around its last position, on a
half-resolution grey image; the template follows the last frame so it adapts to deformation). OpenCV 5's
contrib trackers (TrackerCSRT, TrackerKCF, TrackerMIL, cv2.legacy.*) exist, but measured here (one 80x80
box, 854x480 frame, one thread, loaded machine) CSRT took 59 ms, MIL 86 ms, KCF 233 ms per update, against
0.07 ms for one template match in a search window. Each tracked part is scored against its reference
appearance (mean embedding similarity to the part's reference prototype, or an HSV histogram when
no embedding is given) and dropped when it drifted. Inside every surviving part box the object is
re-segmented by retrieval restricted to that part's own reference pixels (foreground) and the reference
pixels around it (background); that part map is averaged with the coarse map in the box. Far from every
surviving box, and from the previous result's own box, the object probability is suppressed smoothly
(the previous box is kept because fixed-size part boxes cannot follow an object that grows: without it the
car of drift-turn lost a third of its J). When the tracker and the coarse map disagree
badly (after gating, confident pixels cover under 30 % of the object's last area) or every part is lost,
the coarse map wins and the parts are re-initialised from it: a lost tracker never erases a confident
object.

Boxes are (x, y, w, h) float in working-size pixels, x = column.
"""

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from sklearn.cluster import KMeans

from engine.threads import torch_threads
from engine.refiners.base import (
    FrameContext, Reference, Refiner, Run, normalise_probs, reference_for,
)
from engine.upsample import STRIDE

TRACK_SCALE = 0.5          # tracking runs on a grey image at this scale of the working size


def _mm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b through torch: numpy's OpenBLAS spreads even tiny products over all cores and is ~100x
    slower than this when the other core is busy (measured 12 ms vs 0.1 ms for 312x32 @ 32x256)."""
    return (torch.from_numpy(np.ascontiguousarray(a, np.float32)) @
            torch.from_numpy(np.ascontiguousarray(b, np.float32))).numpy()


@dataclass
class Part:
    box: np.ndarray                 # (4,) float32 x, y, w, h at working size
    template: np.ndarray            # grey uint8 patch at TRACK_SCALE, last frame's content of the box
    ref_score: float                # appearance score of the part on its own reference (the yardstick)
    proto: np.ndarray | None        # (D,) unit mean embedding of the part's reference pixels
    fg_emb: np.ndarray | None       # (n, D) reference embeddings of the part's pixels (subsampled)
    bg_emb: np.ndarray | None       # (m, D) reference embeddings of background around the part
    hist: np.ndarray | None         # HSV histogram of the part's reference pixels (no-embedding fallback)
    alive: bool = True


@dataclass
class _ObjectState:
    parts: list[Part]
    diag: float                     # object bbox diagonal on its reference, pixels
    area: float                     # object area (pixels) on the last refined frame


def _gray_small(image: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return cv2.resize(g, None, fx=TRACK_SCALE, fy=TRACK_SCALE, interpolation=cv2.INTER_AREA)


def _clip_box(box: np.ndarray, w: int, h: int) -> np.ndarray:
    x, y, bw, bh = box
    bw, bh = min(bw, w), min(bh, h)
    x = float(np.clip(x, 0, w - bw))
    y = float(np.clip(y, 0, h - bh))
    return np.array([x, y, bw, bh], np.float32)


def _cells(box: np.ndarray, shape_hw: tuple[int, int]) -> tuple[slice, slice]:
    """Embedding-grid cells covering a working-size box."""
    x, y, bw, bh = box
    h, w = shape_hw
    c0, c1 = int(x // STRIDE), int(np.ceil((x + bw) / STRIDE))
    r0, r1 = int(y // STRIDE), int(np.ceil((y + bh) / STRIDE))
    return slice(max(r0, 0), min(max(r1, r0 + 1), h)), slice(max(c0, 0), min(max(c1, c0 + 1), w))


def _hsv_hist(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    m = None if mask is None else mask.astype(np.uint8)
    hist = cv2.calcHist([hsv], [0, 1], m, [16, 8], [0, 180, 0, 256])
    return cv2.normalize(hist, hist, 1.0, 0.0, cv2.NORM_L1)


class PartsRefiner(Refiner):
    name = "parts"
    description = "FAVOS-style part tracking: gate retrieval by tracked part boxes, re-segment inside them"
    grid_scale = True       # its changes live at the embedding-grid scale; the engine upsamples edge-aware

    def __init__(self, max_parts: int = 4, part_area: int = 56 * 56, search: float = 0.6,
                 min_corr: float = 0.25, drift_drop: float = 0.2, part_weight: float = 0.5,
                 sigma: float = 0.15, floor: float = 0.05, margin: float = 0.25, tau: float = 0.05,
                 recover: float = 0.0, scales: tuple[float, ...] = (1 / 1.06, 1.0, 1.06),
                 keep_previous: bool = True):
        self.max_parts = max_parts          # parts per object at most
        self.part_area = part_area          # about one part per this many object pixels
        self.search = search                # search window = box grown by this fraction of its size per side
        self.min_corr = min_corr            # tracker correlation below this = part lost
        self.drift_drop = drift_drop        # appearance score below ref_score - drift_drop = drifted
        self.part_weight = part_weight      # weight of the part retrieval map inside part boxes
        self.sigma = sigma                  # fall-off outside boxes, as a fraction of the object diagonal
        self.floor = floor                  # probability factor far from every box
        self.margin = margin                # boxes grown by this fraction of their size before gating
        self.tau = tau                      # temperature of the part retrieval (similarity units)
        self.recover = recover              # inside boxes, at least recover * part map (finds lost parts)
        self.scales = tuple(scales)         # template scales tried per frame (the object grows or shrinks)
        self.keep_previous = keep_previous  # never gate away the previous result's own (grown) box
        self.references: list[Reference] = []
        self._objects: dict[int, _ObjectState] = {}
        self._prev_gray: np.ndarray | None = None

    # ------------------------------------------------------------------------------------------ life cycle
    def start(self, run: Run) -> None:
        self.references = list(run.references)
        self._objects = {}
        self._prev_gray = None

    def finish(self) -> None:
        self._objects = {}
        self._prev_gray = None

    def refine(self, ctx: FrameContext) -> dict[int, np.ndarray]:
        with torch_threads(1):  # small ops: splitting them over busy cores was 10-40x slower
            return self._refine(ctx)

    def _refine(self, ctx: FrameContext) -> dict[int, np.ndarray]:
        h, w = ctx.image.shape[:2]
        gray = _gray_small(ctx.image)
        refs = self.references
        out: dict[int, np.ndarray] = {}
        for obj_id, coarse in ctx.probs.items():
            coarse = coarse.astype(np.float32, copy=False)
            state = self._objects.get(obj_id)
            if state is None:
                state = self._init_from_reference(refs, obj_id, ctx.t)
                if state is None:           # never annotated: nothing to track
                    out[obj_id] = coarse
                    continue
                self._objects[obj_id] = state
            prev_gray = self._prev_gray
            self._track(state, gray, prev_gray, ctx.embedding, ctx.image)
            prev = None if ctx.prev_ids is None or not self.keep_previous else ctx.prev_ids == obj_id
            refined, trusted = self._merge(state, coarse, ctx.embedding, (h, w), prev)
            if not trusted:
                # tracker and coarse map disagree: keep the coarse map, restart the parts from it
                refined = coarse
                new = self._init_parts(ctx.image, ctx.embedding, coarse > 0.5)
                if new is not None:
                    self._objects[obj_id] = new
            out[obj_id] = refined
        self._prev_gray = gray
        return normalise_probs(out)

    # ------------------------------------------------------------------------------------------ parts
    def _init_from_reference(self, refs: list[Reference], obj_id: int, t: int) -> _ObjectState | None:
        ref = reference_for(refs, obj_id, t)
        if ref is None:
            return None
        state = self._init_parts(ref.image, ref.embedding, ref.ids == obj_id)
        if state is not None and self._prev_gray is None:
            self._prev_gray = _gray_small(ref.image)    # first step tracks from the keyframe itself
        return state

    def _init_parts(self, image: np.ndarray, emb: np.ndarray | None, mask: np.ndarray) -> _ObjectState | None:
        ys, xs = np.nonzero(mask)
        if len(xs) < 16:
            return None
        h, w = mask.shape
        k = int(np.clip(round(len(xs) / self.part_area), 1, self.max_parts))
        pts = np.stack([xs, ys], 1).astype(np.float32)
        if k > 1:
            sub = pts[np.random.default_rng(0).choice(len(pts), min(len(pts), 3000), replace=False)]
            km = KMeans(n_clusters=k, n_init=3, random_state=0).fit(sub)
            labels = km.predict(pts)
        else:
            labels = np.zeros(len(pts), np.int64)
        gray = _gray_small(image)
        diag = float(np.hypot(np.ptp(xs) + 1, np.ptp(ys) + 1))
        parts = []
        for j in range(k):
            sel = labels == j
            if sel.sum() < 8:
                continue
            px, py = xs[sel], ys[sel]
            x0, y0, x1, y1 = px.min(), py.min(), px.max() + 1, py.max() + 1
            bw, bh = max(x1 - x0, 24), max(y1 - y0, 24)
            box = _clip_box(np.array([(x0 + x1 - bw) / 2, (y0 + y1 - bh) / 2, bw, bh], np.float32), w, h)
            part_mask = np.zeros_like(mask)
            part_mask[py, px] = True
            part = Part(box=box, template=self._patch(gray, box), ref_score=1.0, proto=None,
                        fg_emb=None, bg_emb=None, hist=None)
            if emb is not None:
                self._part_embeddings(part, emb, part_mask, mask)
            else:
                part.hist = _hsv_hist(image, part_mask)
            part.ref_score = self._appearance(part, emb, image, box)
            parts.append(part)
        return _ObjectState(parts=parts, diag=diag, area=float(mask.sum())) if parts else None

    def _part_embeddings(self, part: Part, emb: np.ndarray, part_mask: np.ndarray, obj_mask: np.ndarray) -> None:
        eh, ew = emb.shape[:2]
        small_part = cv2.resize(part_mask.astype(np.uint8), (ew, eh), interpolation=cv2.INTER_AREA) > 0
        small_obj = cv2.resize(obj_mask.astype(np.uint8), (ew, eh), interpolation=cv2.INTER_LINEAR) > 0
        if not small_part.any():
            cy, cx = np.unravel_index(np.argmax(cv2.resize(part_mask.astype(np.float32), (ew, eh))), (eh, ew))
            small_part[cy, cx] = True
        fg = emb[small_part]
        proto = fg.mean(0)
        part.proto = proto / max(np.linalg.norm(proto), 1e-6)
        rng = np.random.default_rng(0)
        part.fg_emb = fg[rng.choice(len(fg), min(len(fg), 128), replace=False)]
        grown = self._grow(part.box, 1.0, obj_mask.shape)
        rs, cs = _cells(grown, (eh, ew))
        ring = np.zeros((eh, ew), bool)
        ring[rs, cs] = True
        ring &= ~small_obj
        bg = emb[ring]
        if len(bg) < 8:                       # object fills the neighbourhood: use any background
            bg = emb[~small_obj]
        part.bg_emb = bg[rng.choice(len(bg), min(len(bg), 256), replace=False)] if len(bg) else None

    @staticmethod
    def _patch(gray: np.ndarray, box: np.ndarray) -> np.ndarray:
        x, y, bw, bh = (box * TRACK_SCALE).round().astype(int)
        gh, gw = gray.shape
        x, y = max(0, min(x, gw - 2)), max(0, min(y, gh - 2))
        return gray[y:y + max(bh, 2), x:x + max(bw, 2)].copy()

    @staticmethod
    def _grow(box: np.ndarray, frac: float, shape_hw: tuple[int, int]) -> np.ndarray:
        x, y, bw, bh = box
        h, w = shape_hw
        gx, gy = bw * frac, bh * frac
        x0, y0 = max(0.0, x - gx), max(0.0, y - gy)
        x1, y1 = min(float(w), x + bw + gx), min(float(h), y + bh + gy)
        return np.array([x0, y0, x1 - x0, y1 - y0], np.float32)

    def _appearance(self, part: Part, emb: np.ndarray | None, image: np.ndarray, box: np.ndarray) -> float:
        """How much the box content looks like the part's reference: mean of the best quarter of cell
        similarities to the prototype (embedding), or histogram correlation (no embedding)."""
        if emb is not None and part.proto is not None:
            rs, cs = _cells(box, emb.shape[:2])
            sims = _mm(emb[rs, cs].reshape(-1, emb.shape[2]), part.proto[:, None]).ravel()
            if sims.size == 0:
                return 0.0
            top = np.sort(sims)[-max(1, sims.size // 4):]
            return float(top.mean())
        if part.hist is not None:
            x, y, bw, bh = box.round().astype(int)
            crop = image[y:y + bh, x:x + bw]
            if crop.size == 0:
                return 0.0
            return float(cv2.compareHist(part.hist, _hsv_hist(crop, None), cv2.HISTCMP_CORREL))
        return 1.0

    def _track(self, state: _ObjectState, gray: np.ndarray, prev_gray: np.ndarray | None,
               emb: np.ndarray | None, image: np.ndarray) -> None:
        gh, gw = gray.shape
        h, w = image.shape[:2]
        for part in state.parts:
            if not part.alive:
                continue
            tpl = part.template
            th, tw = tpl.shape
            if th < 4 or tw < 4 or tpl.std() < 1.0:
                continue                     # flat patch: nothing to correlate, keep the box where it is
            x, y, bw, bh = part.box * TRACK_SCALE
            sx, sy = max(self.search * bw, 8.0), max(self.search * bh, 8.0)
            x0, y0 = int(max(0, x - sx)), int(max(0, y - sy))
            x1, y1 = int(min(gw, x + bw + sx + 1)), int(min(gh, y + bh + sy + 1))
            win = gray[y0:y1, x0:x1]
            if win.shape[0] < th or win.shape[1] < tw:
                continue
            # multi-scale correlation: the template resized by each of self.scales, best response wins
            best = (-2.0, None, 1.0)
            for sc in self.scales:
                t = tpl if sc == 1.0 else cv2.resize(tpl, (max(4, round(tw * sc)), max(4, round(th * sc))),
                                                     interpolation=cv2.INTER_LINEAR)
                if win.shape[0] < t.shape[0] or win.shape[1] < t.shape[1]:
                    continue
                _, corr, _, loc = cv2.minMaxLoc(cv2.matchTemplate(win, t, cv2.TM_CCOEFF_NORMED))
                if corr > best[0] + (0.0 if sc == 1.0 else 0.01):     # a scale change must earn its keep
                    best = (corr, loc, sc)
            corr, loc, sc = best
            if loc is None or corr < self.min_corr:
                part.alive = False
                continue
            nx, ny = (x0 + loc[0]) / TRACK_SCALE, (y0 + loc[1]) / TRACK_SCALE
            part.box = _clip_box(np.array([nx, ny, part.box[2] * sc, part.box[3] * sc], np.float32), w, h)
            part.template = self._patch(gray, part.box)
            score = self._appearance(part, emb, image, part.box)
            if score < part.ref_score - self.drift_drop:
                part.alive = False

    # ------------------------------------------------------------------------------------------ merge
    def _merge(self, state: _ObjectState, coarse: np.ndarray, emb: np.ndarray | None,
               shape_hw: tuple[int, int], prev: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
        h, w = shape_hw
        alive = [p for p in state.parts if p.alive]
        if not alive:
            return coarse, False
        q = 4                                   # the gate is smooth: build it at 1/4 size
        hq, wq = (h + q - 1) // q, (w + q - 1) // q
        region = np.zeros((hq, wq), np.uint8)
        refined = coarse.copy()
        for p in alive:
            g = (self._grow(p.box, self.margin, (h, w)) / q).round().astype(int)
            region[g[1]:g[1] + max(g[3], 1), g[0]:g[0] + max(g[2], 1)] = 1
            if emb is not None and p.fg_emb is not None and p.bg_emb is not None and (self.part_weight > 0 or self.recover > 0):
                self._segment_part(p, coarse, refined, emb, (h, w))
        if prev is not None and prev.any():
            x, y, bw, bh = cv2.boundingRect(prev.astype(np.uint8))
            g = (self._grow(np.array([x, y, bw, bh], np.float32), self.margin, (h, w)) / q).round().astype(int)
            region[g[1]:g[1] + max(g[3], 1), g[0]:g[0] + max(g[2], 1)] = 1
        dist = cv2.distanceTransform(1 - region, cv2.DIST_L2, 3)
        sigma = max(self.sigma * state.diag, 8.0) / q
        gate = self.floor + (1.0 - self.floor) * np.exp(-((dist / sigma) ** 2))
        gate = cv2.resize(gate.astype(np.float32), (wq * q, hq * q), interpolation=cv2.INTER_LINEAR)[:h, :w]
        refined *= gate
        # the tracker is trusted when its boxes hold a fair share of the object's last area in confident
        # coarse pixels; otherwise it lost the object (or the object left) and the coarse map wins
        kept = float((refined > 0.5).sum())
        n_conf = float((coarse > 0.5).sum())
        trusted = n_conf < 50 or kept >= 0.3 * min(state.area, n_conf)
        if trusted:
            state.area = max(kept, 1.0)
        return refined, trusted

    def _segment_part(self, p: Part, coarse: np.ndarray, refined: np.ndarray, emb: np.ndarray,
                      shape_hw: tuple[int, int]) -> None:
        """Retrieval restricted to the part: its box's cells vs the part's own fg/bg reference pixels."""
        h, w = shape_hw
        eh, ew, d = emb.shape
        rs, cs = _cells(p.box, (eh, ew))
        cells = emb[rs, cs].reshape(-1, d)
        if cells.size == 0:
            return
        k = 4
        sf = _mm(cells, p.fg_emb.T)
        sb = _mm(cells, p.bg_emb.T)
        kf, kb = min(k, sf.shape[1]), min(k, sb.shape[1])
        s_fg = np.partition(sf, sf.shape[1] - kf, axis=1)[:, -kf:].mean(1)
        s_bg = np.partition(sb, sb.shape[1] - kb, axis=1)[:, -kb:].mean(1)
        pm = 1.0 / (1.0 + np.exp(-(s_fg - s_bg) / self.tau))
        pm = pm.reshape(rs.stop - rs.start, cs.stop - cs.start).astype(np.float32)
        # cells -> working pixels of the cell block, then cut to the box
        y0, x0 = rs.start * STRIDE, cs.start * STRIDE
        up = cv2.resize(pm, (pm.shape[1] * STRIDE, pm.shape[0] * STRIDE), interpolation=cv2.INTER_LINEAR)
        up = up[: h - y0, : w - x0]
        bx, by, bw, bh = p.box.round().astype(int)
        ys, xs = slice(max(by, y0), min(by + bh, y0 + up.shape[0])), slice(max(bx, x0), min(bx + bw, x0 + up.shape[1]))
        part_map = up[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0]
        mixed = (1 - self.part_weight) * coarse[ys, xs] + self.part_weight * part_map
        if self.recover > 0:
            mixed = np.maximum(mixed, self.recover * part_map)
        refined[ys, xs] = mixed
