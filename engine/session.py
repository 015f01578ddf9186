"""The engine's public API: one annotation session over a project (video + masks + objects).

This is the only engine object the GUI (annotator/) and the CLI use. All arrays are at the
project's WORKING size unless a name says native: frames (H, W, 3) RGB uint8, id masks (H, W)
uint8 (0 = background, object ids 1..255), probabilities (H, W) float32; points are (x, y)
working-size pixel coordinates (x = column, y = row), floats allowed.

    s = Session.create(project_dir, video_path, short_side=480, embedder=None, refiner=None)
    s = Session.open(project_dir, embedder=None, refiner=None)   # refiner None: the project's choice
    s = Session.open_sample_copy(dest)          # a writable copy of the bundled sample project
    s.set_refiner(name | instance | None) ; s.refiner_name -> str  # kept in project.json settings
    Session.refiner_names() -> ["none", ...]    # what set_refiner accepts
    s.video -> VideoSource ; s.project -> Project ; s.objects -> dict[int, ObjectInfo]
    s.folder -> Path ; s.dirty -> bool ; s.masked_frames() -> list[int] ; s.keyframes() -> {obj_id: set[int]}
    s.add_object(name=None, category="object", color=None) -> ObjectInfo
    s.update_object(obj_id, name=None, category=None, color=None, hidden=None, locked=None) -> ObjectInfo
    s.remove_object(obj_id) -> None
    s.embed(progress=None, cancel=None) -> Iterator[int]       # frame indices as they are cached
    s.is_embedded(t) -> bool ; s.embedded_count() -> int
    s.click(t, obj_id, x, y, positive=True) -> (H, W) uint8     # ids of frame t, updated
    s.scribble(t, obj_id, points, positive=True) -> (H, W) uint8
    s.brush(t, obj_id, points, radius, erase=False) -> (H, W) uint8
    s.polygon(t, obj_id, points) -> (H, W) uint8
    s.set_object_mask(t, obj_id, mask_bool_HW) -> (H, W) uint8
    s.add_objects_from_ids(t, ids_HW) -> {id in ids: new obj_id}  # a first-frame annotation
    s.propagation_span(t0, direction="both", objects=None) -> (first, last) | None
    s.propagate(t0, direction="both", objects=None) -> Iterator[(t, (H, W) uint8 ids)]
    s.mask(t) -> (H, W) uint8 ; s.probabilities(t) -> dict[obj_id, (H, W) float32]
    s.confidence(t) -> dict[obj_id, float]   # 0..1; {} for frames never propagated
    s.frames_most_likely_wrong(n=10) -> list[int]              # lowest confidence first
    s.snapshot(frames=None) -> Snapshot ; s.restore(snapshot)   # undo/redo; None = all masked frames
    s.save() ; s.save_as(folder) ; s.export(out_dir, fmt, progress=None) -> list[Path]
    Snapshot.to_bytes() -> bytes ; Snapshot.from_bytes(data, where) -> Snapshot   # undo state as data (autosave)
    s.last_timing -> dict (e.g. {"click_ms": 12.3, "propagate_fps": 71.0})
    s.close()

Edits (click, scribble, brush, polygon, set_object_mask) log an Interaction in the project and
make frame t a keyframe of the object; a keyframe's whole mask is a reference for propagation,
except on a frame where a click/scribble corrected a propagated mask (the rest of that mask is
unchecked: only the clicked spots are references there, until the frame is brushed, drawn or set
by hand; such frames are recorded in project.json), and clicks/scribbles add their own embeddings
to the object's (positive) or the background's (negative) references. A click/scribble needs
frame t's embedding: it is computed on demand when the background embedding pass has not reached
t yet (~0.1 s once). Editing a locked object raises ProjectError.

propagate(t0, direction) recomputes, for each chosen unlocked object, only the frames between
its keyframes around t0 ("forward": after t0, "backward": before, "both"; t0 itself too when it
is not a keyframe of that object); keyframes and locked objects are never changed. A frame
that already holds an earlier propagation is fused with it, weighted by its distance to t0
and to the object's other keyframes (bidirectional fusion; with that run's soft probabilities
while the session still holds them, else its mask). It is a generator that writes each frame into the project before
yielding it; closing it (or just stopping iterating) cancels, and the frames done stay done.

Threads: every method takes the session's re-entrant lock (``s.lock``) while it changes state,
and a propagation takes it only per frame, so the GUI thread may call the read-only methods
(mask, probabilities, confidence, is_embedded, frames_most_likely_wrong, snapshot) while a worker
propagates or embeds. embed() may run in its own worker at the same time as edits and
propagation. Do not run two mutating calls (edits, propagate, restore, remove_object) at once
from different threads: serialise them (the GUI does so with its own lock).
"""

from __future__ import annotations

import copy
import io
import json
import threading
import time
import zipfile
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from engine.atomic import atomic_write_json
from engine.errors import ProjectError
from engine.project import SAMPLE_PROJECT, Interaction, ObjectInfo, Project, open_sample_copy
from engine import interaction as edits
from engine.propagation import PropagationConfig, PropagationTask, Propagator, object_spans
from engine.upsample import resize_ids

CONFIDENCE_FILE = "confidence.json"
CORRECTED_SETTING = "corrected_keyframes"  # project.json settings key, see Session._corrected
EXPORT_FORMATS = ("davis", "coco", "youtube-vis", "binary", "overlay")
# which clicks join the propagation's reference pools: both|positive|none. "both" measured best
# (hold-out interactive-eval J&F 0.730 vs 0.706 with "positive" after 3 rounds) once corrected frames stopped being
# whole-mask references.
CLICK_REFS = "both"


@dataclass
class Snapshot:
    """Undo state of some frames: their masks (PNG bytes, None = no mask), plus objects,
    keyframes, corrected keyframes, interaction log and confidences (all small).

    `to_bytes` stores it as data, never as code: a zip of snapshot.json and masks/NNNNN.png;
    `from_bytes` validates every field and raises ProjectError naming `where` for anything else."""
    masks: dict
    objects: dict
    next_object_id: int
    keyframes: dict
    interactions: list
    confidence: dict
    corrected: dict = field(default_factory=dict)
    frames: list = field(default_factory=list)

    def to_bytes(self) -> bytes:
        doc = {
            "format": SNAPSHOT_FORMAT,
            "frames": [int(t) for t in self.frames],
            "masks": {str(t): data is not None for t, data in self.masks.items()},
            "objects": [{**asdict(o), "color": list(o.color)} for o in self.objects.values()],
            "next_object_id": int(self.next_object_id),
            "keyframes": {str(o): sorted(v) for o, v in self.keyframes.items()},
            "corrected": {str(o): sorted(v) for o, v in self.corrected.items()},
            "interactions": [{**asdict(i), "points": [list(p) for p in i.points]} for i in self.interactions],
            "confidence": {str(t): {str(o): float(v) for o, v in c.items()} for t, c in self.confidence.items()},
        }
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            z.writestr("snapshot.json", json.dumps(doc))
            for t, data in self.masks.items():
                if data is not None:
                    z.writestr(f"masks/{int(t):05d}.png", data)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, where) -> "Snapshot":
        from engine.palette import decode_id_png
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                doc = json.loads(z.read("snapshot.json"))
                if not isinstance(doc, dict) or doc.get("format") != SNAPSHOT_FORMAT:
                    raise ValueError(f"not a {SNAPSHOT_FORMAT} file")
                masks = {}
                for key, present in dict(doc["masks"]).items():
                    t = _index(key)
                    masks[t] = z.read(f"masks/{t:05d}.png") if _flag(present) else None
                    if masks[t] is not None:
                        decode_id_png(masks[t], f"{where}: frame {t}")
            objects = {}
            for o in doc["objects"]:
                info = ObjectInfo(_index(o["id"]), _text(o["name"]), _text(o["category"]),
                                  tuple(_byte(c) for c in o["color"]), _flag(o["hidden"]), _flag(o["locked"]))
                if len(info.color) != 3:
                    raise ValueError(f"object {info.id}: colour {o['color']!r}")
                objects[info.id] = info
            interactions = [Interaction(_text(i["kind"]), _index(i["frame"]), _index(i["object_id"]),
                                        _flag(i["positive"]), [(_num(x), _num(y)) for x, y in i["points"]],
                                        None if i["radius"] is None else _num(i["radius"]), _num(i["time"]))
                            for i in doc["interactions"]]
            return cls(
                masks=masks, objects=objects, next_object_id=_index(doc["next_object_id"]),
                keyframes={_index(o): frozenset(_index(t) for t in v) for o, v in dict(doc["keyframes"]).items()},
                corrected={_index(o): frozenset(_index(t) for t in v) for o, v in dict(doc["corrected"]).items()},
                interactions=interactions,
                confidence={_index(t): {_index(o): _num(v) for o, v in dict(c).items()}
                            for t, c in dict(doc["confidence"]).items()},
                frames=[_index(t) for t in doc["frames"]])
        except ProjectError:
            raise
        except (zipfile.BadZipFile, KeyError, ValueError, TypeError, AttributeError, RecursionError) as e:
            raise ProjectError(where, f"not a readable snapshot ({type(e).__name__}: {e})") from None


SNAPSHOT_FORMAT = "vos-snapshot-1"


def _index(v) -> int:
    """A non-negative int, also from a JSON object key."""
    if isinstance(v, str) and v.isdigit():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ValueError(f"expected a non-negative integer, got {v!r}")
    return v


def _byte(v) -> int:
    if _index(v) > 255:
        raise ValueError(f"expected 0..255, got {v!r}")
    return v


def _num(v) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        raise ValueError(f"expected a number, got {v!r}")
    return float(v)


def _flag(v) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {v!r}")
    return v


def _text(v) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {v!r}")
    return v


class Session:
    """An annotation session. Build with `Session.create` or `Session.open` (see module doc)."""

    def __init__(self, project: Project, embedder=None, refiner=None,
                 config: PropagationConfig | None = None, cache=None):
        self.project = project
        self.lock = threading.RLock()
        self._embedder = embedder
        self._cache = cache
        self._cache_lock = threading.Lock()
        self.config = config or PropagationConfig()
        self.refiner = None
        self._propagator = Propagator(self.config)
        self.set_refiner(refiner if refiner is not None else project.settings.get("refiner"))
        self._emb_lru: OrderedDict[int, np.ndarray] = OrderedDict()
        self._emb_lru_size = 24
        self._probs: OrderedDict[int, tuple[list[int], np.ndarray]] = OrderedDict()
        self._probs_size = 256
        self._confidence: dict[int, dict[int, float]] = self._load_confidence()
        self.last_timing: dict[str, float] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, project_dir, video_path, short_side: int = 480, embedder=None, refiner=None,
               config: PropagationConfig | None = None) -> "Session":
        """New project folder for a video file or frame folder (saved at once)."""
        return cls(Project.create(project_dir, video_path, short_side), embedder, refiner, config)

    @classmethod
    def open(cls, project_dir, embedder=None, refiner=None,
             config: PropagationConfig | None = None) -> "Session":
        """Open an existing project folder (ProjectError if it is not a valid project)."""
        return cls(Project.load(project_dir), embedder, refiner, config)

    @classmethod
    def open_sample_copy(cls, dest_folder, embedder=None, refiner=None) -> "Session":
        """Copy the bundled sample project (video included) to an absent or empty folder and open the copy."""
        return cls(open_sample_copy(dest_folder), embedder, refiner)

    SAMPLE_NAME = SAMPLE_PROJECT.name  # the sample project's folder name, for where to keep its copy

    @staticmethod
    def refiner_names() -> list[str]:
        """What set_refiner accepts by name: "none" (off) first, then every registered refiner."""
        from engine.refiners import available_refiners
        return ["none", *available_refiners()]

    def set_refiner(self, refiner) -> None:
        """Refine every propagated frame with `refiner`: a registered name, an instance, or None (off).

        A name is kept in the project's settings, so the choice is per project and survives reopening.
        """
        from engine.refiners import get_refiner

        name = None
        if refiner is None or isinstance(refiner, str):
            name, refiner = refiner, get_refiner(refiner)
        with self.lock:
            self.refiner = refiner
            self._propagator.refiner = refiner
            if name != self.project.settings.get("refiner") and (name or "refiner" in self.project.settings):
                self.project.settings["refiner"] = name
                self.project.mark_dirty()

    @property
    def refiner_name(self) -> str:
        """The chosen refiner's registered name, "none" when off."""
        return getattr(self.refiner, "name", None) or self.project.settings.get("refiner") or "none"

    def close(self) -> None:
        """Release the video and the cache files; the session must not be used afterwards."""
        if self._cache is not None and hasattr(self._cache, "close"):
            self._cache.close()
        close = getattr(self.project.video, "close", None)
        if close is not None:
            close()

    @property
    def video(self):
        return self.project.video

    @property
    def folder(self) -> Path:
        """The project folder (it changes with save_as)."""
        return Path(self.project.folder)

    @property
    def dirty(self) -> bool:
        """True when something changed since the last save."""
        return self.project.dirty

    def masked_frames(self) -> list[int]:
        """Frames that hold a mask (annotated or propagated), ascending."""
        return self.project.masks.frames()

    def keyframes(self) -> dict[int, set[int]]:
        """{obj_id: its keyframes} (a copy)."""
        with self.lock:
            return {o: set(v) for o, v in self.project.keyframes.items()}

    @property
    def objects(self) -> dict[int, ObjectInfo]:
        return self.project.objects

    @property
    def size_hw(self) -> tuple[int, int]:
        w, h = self.video.working_size
        return h, w

    def __len__(self) -> int:
        return len(self.video)

    # ------------------------------------------------------------------ objects
    def add_object(self, name: str | None = None, category: str = "object",
                   color: tuple[int, int, int] | None = None) -> ObjectInfo:
        with self.lock:
            return self.project.add_object(name=name, category=category, color=color)

    def add_objects_from_ids(self, t: int, ids: np.ndarray) -> dict[int, int]:
        """One new object per non-zero id of ``ids`` ((H, W) uint8 at the working or the native
        size), given its mask on frame t: how a first-frame annotation or ground truth is loaded.
        Returns {id in ids: new object id}. ValueError for another size or no object."""
        self._check(t)
        ids = np.asarray(ids, np.uint8)
        width, height = self.video.working_size
        if ids.shape[::-1] != (width, height):
            if ids.shape[::-1] != tuple(self.video.native_size):
                nw, nh = self.video.native_size
                raise ValueError(f"mask is {ids.shape[1]}x{ids.shape[0]}, the video is {nw}x{nh} "
                                 f"(working size {width}x{height})")
            ids = resize_ids(ids, (width, height), smooth=False)
        values = [int(v) for v in np.unique(ids) if v != 0]
        if not values:
            raise ValueError("the mask is empty: mark at least one object")
        out = {}
        with self.lock:
            for value in values:
                out[value] = self.add_object(name=f"object {value}").id
                self.set_object_mask(t, out[value], ids == value)
        return out

    def update_object(self, obj_id: int, **fields) -> ObjectInfo:
        """fields: name, category, color (r, g, b), hidden, locked; others raise TypeError."""
        with self.lock:
            return self.project.update_object(obj_id, **fields)

    def remove_object(self, obj_id: int) -> None:
        """Delete the object and its pixels in every frame (ids are never reused)."""
        with self.lock:
            self.project.remove_object(obj_id)
            self._set_corrected(obj_id, set())
            for conf in self._confidence.values():
                conf.pop(obj_id, None)
            self._probs.clear()

    # ------------------------------------------------------------------ embeddings
    @property
    def embedder(self):
        if self._embedder is None:
            from engine.embedding import Embedder
            self._embedder = Embedder.load(device="auto")  # CUDA when torch sees a GPU
        return self._embedder

    @property
    def cache(self):
        """The project's on-disk EmbeddingCache (created on first use)."""
        if self._cache is None:
            from engine.embedding.cache import EmbeddingCache
            self._cache = EmbeddingCache(Path(self.project.folder) / "cache", self.video, self.embedder)
        return self._cache

    def embed(self, progress: Callable | None = None, cancel: Callable[[], bool] | None = None) -> Iterator[int]:
        """Cache every frame's embedding; yields frame indices as they are done (cancellable:
        stop iterating, or make ``cancel()`` return True). progress(done, total) if given."""
        return self.cache.compute(progress=progress, cancel=cancel)

    def is_embedded(self, t: int) -> bool:
        return t in self._emb_lru or self.cache.has(t)

    def embedded_count(self) -> int:
        return sum(1 for t in range(len(self.video)) if self.cache.has(t))

    def embedding(self, t: int) -> np.ndarray:
        """(h, w, D') float32 unit embeddings of frame t (computed now if not cached yet), with
        the pixel coordinates folded in when config.coord_weight > 0 (D' = D + 4)."""
        with self._cache_lock:
            e = self._emb_lru.get(t)
            if e is not None:
                self._emb_lru.move_to_end(t)
                return e
        e = np.ascontiguousarray(self.cache.get(t), dtype=np.float32)  # embeds t now if not cached
        if self.config.coord_weight > 0:
            from engine.embedding import append_coords
            e = append_coords(e, self.config.coord_weight)
        with self._cache_lock:
            self._emb_lru[t] = e
            while len(self._emb_lru) > self._emb_lru_size:
                self._emb_lru.popitem(last=False)
        return e

    # ------------------------------------------------------------------ edits
    def _check(self, t: int, obj_id: int | None = None) -> None:
        if not 0 <= t < len(self.video):
            raise IndexError(f"frame {t} out of range 0..{len(self.video) - 1}")
        if obj_id is not None:
            if obj_id not in self.project.objects:
                raise KeyError(f"no object with id {obj_id}")
            if self.project.objects[obj_id].locked:
                raise ProjectError(self.project.folder, f"object {obj_id} "
                                   f"({self.project.objects[obj_id].name}) is locked; unlock it to edit")

    def _locked(self) -> set[int]:
        return {o for o, info in self.project.objects.items() if info.locked}

    def _commit_edit(self, t: int, obj_id: int, new: np.ndarray, kind: str, positive: bool,
                     points, radius=None) -> np.ndarray:
        if kind not in ("click", "scribble"):  # painted or drawn by hand: the whole mask is meant
            self._set_corrected(obj_id, self._corrected().get(obj_id, set()) - {t})
        self.project.masks.set(t, new)
        self.project.add_keyframe(obj_id, t)
        pts = [(float(x), float(y)) for x, y in np.asarray(points, np.float64).reshape(-1, 2)]
        self.project.log(Interaction(kind, t, obj_id, bool(positive), pts,
                                     None if radius is None else float(radius)))
        conf = self._confidence.setdefault(t, {})
        conf[obj_id] = 1.0
        self._probs.pop(t, None)
        return new

    def _known_refs(self, t: int, obj_id: int, emb: np.ndarray):
        """Embeddings at this object's earlier click/scribble points on frame t: (pos, neg)."""
        pos, neg = [], []
        h, w, _ = emb.shape
        for it in self.project.interactions:
            if it.frame != t or it.object_id != obj_id or it.kind not in ("click", "scribble"):
                continue
            for x, y in it.points:
                i, j = min(int(y) // 8, h - 1), min(int(x) // 8, w - 1)
                (pos if it.positive else neg).append(emb[i, j])
        f = lambda v: np.asarray(v, np.float32).reshape(-1, emb.shape[-1])
        return f(pos), f(neg)

    def _retrieve(self, t, obj_id, points, positive, kind) -> np.ndarray:
        start = time.perf_counter()
        with self.lock:
            self._check(t, obj_id)
            emb = self.embedding(t)
            ids = self.project.masks.get(t)
            if (t not in self.project.keyframes.get(obj_id, ()) and (ids == obj_id).any()
                    and self._confidence.get(t, {}).get(obj_id, 1.0) < 1.0):
                self._set_corrected(obj_id, self._corrected().get(obj_id, set()) | {t})
            pos, neg = self._known_refs(t, obj_id, emb)
            new = edits.retrieve_edit(ids, emb, obj_id, points, positive, image=self.video.frame(t),
                                      locked=self._locked(), negatives=neg, positives=pos)
            out = self._commit_edit(t, obj_id, new, kind, positive, points)
        self.last_timing[f"{kind}_ms"] = (time.perf_counter() - start) * 1000
        return out

    def click(self, t: int, obj_id: int, x: float, y: float, positive: bool = True) -> np.ndarray:
        """Positive: add the region like the clicked spot and connected to it; negative: remove the
        part of the object like the clicked spot and connected to it. Returns frame t's ids."""
        return self._retrieve(t, obj_id, [(x, y)], positive, "click")

    def scribble(self, t: int, obj_id: int, points, positive: bool = True) -> np.ndarray:
        """Like click with a polyline [(x, y), ...]. Returns frame t's ids."""
        if len(points) == 0:
            raise ValueError("a scribble needs at least one point")
        return self._retrieve(t, obj_id, points, positive, "scribble")

    def brush(self, t: int, obj_id: int, points, radius: float, erase: bool = False) -> np.ndarray:
        """Paint (erase=False) or erase the object along a stroke of ``radius`` px. Returns ids."""
        start = time.perf_counter()
        with self.lock:
            self._check(t, obj_id)
            new = edits.brush(self.project.masks.get(t), obj_id, points, radius, erase, self._locked())
            out = self._commit_edit(t, obj_id, new, "eraser" if erase else "brush", not erase, points, radius)
        self.last_timing["brush_ms"] = (time.perf_counter() - start) * 1000
        return out

    def polygon(self, t: int, obj_id: int, points) -> np.ndarray:
        """Fill the polygon [(x, y), ...] with the object. Returns frame t's ids."""
        with self.lock:
            self._check(t, obj_id)
            new = edits.polygon(self.project.masks.get(t), obj_id, points, self._locked())
            return self._commit_edit(t, obj_id, new, "polygon", True, points)

    def set_object_mask(self, t: int, obj_id: int, mask: np.ndarray) -> np.ndarray:
        """The object's whole mask on frame t ((H, W) bool, working size). Returns frame t's ids."""
        with self.lock:
            self._check(t, obj_id)
            new = edits.set_mask(self.project.masks.get(t), obj_id, mask, self._locked())
            return self._commit_edit(t, obj_id, new, "mask", True, [])

    # ------------------------------------------------------------------ propagation
    def _objects_for(self, objects) -> list[int]:
        if objects is None:
            return [o for o, info in self.project.objects.items() if not info.locked]
        out = []
        for o in objects:
            if o not in self.project.objects:
                raise KeyError(f"no object with id {o}")
            if not self.project.objects[o].locked:
                out.append(int(o))
        return out

    def _click_refs(self, objs) -> list:
        """[(frame, obj, positive, (N, D))]: embeddings at the objects' clicks and scribbles."""
        out = []
        for it in self.project.interactions:
            if it.object_id not in objs or it.kind not in ("click", "scribble") or not it.points:
                continue
            if CLICK_REFS == "none" or (CLICK_REFS == "positive" and not it.positive):
                continue
            if it.frame not in self.project.keyframes.get(it.object_id, ()):
                continue  # undone, or the frame's keyframe was removed
            emb = self.embedding(it.frame)
            out.append((it.frame, it.object_id, it.positive,
                        edits.seed_vectors(emb, it.points)))
        return out

    def _reference_keyframes(self, objs) -> dict[int, set[int]]:
        """{obj: keyframes whose whole mask is a propagation reference}: all but clicked corrections."""
        corrected = self._corrected()
        return {o: set(self.project.keyframes.get(o, ())) - corrected.get(o, set()) for o in objs}

    def _corrected(self) -> dict[int, set[int]]:
        """{obj: keyframes made by a click/scribble on a propagated mask}. The rest of such a mask was
        never checked, so propagation takes only the clicks there as references. Kept in the project's
        settings so a reopened project propagates the same way."""
        raw = self.project.settings.get(CORRECTED_SETTING, {})
        return {int(o): set(int(t) for t in frames) for o, frames in raw.items()}

    def _set_corrected(self, obj_id: int, frames: set[int]) -> None:
        """Make ``frames`` the corrected keyframes of obj_id (the project is dirty only if they change)."""
        corrected = self._corrected()
        if corrected.get(obj_id, set()) == frames:
            return
        corrected[obj_id] = frames
        self.project.settings[CORRECTED_SETTING] = {str(o): sorted(f) for o, f in corrected.items() if f}
        self.project.mark_dirty()

    def _grid_probs(self, t: int):
        """(labels, (L, h, w) float32 grid probabilities) of frame t's last propagation in this
        session, or None: what probabilities() upsamples and what a re-propagation blends with."""
        with self.lock:
            cached = self._probs.get(t)
        return None if cached is None else (cached[0], cached[1].astype(np.float32))

    def _was_propagated(self, t: int) -> bool:
        """Frame t holds the result of an earlier propagation (it has confidences, no edit)."""
        return bool(self._confidence.get(t))

    def propagation_span(self, t0: int, direction: str = "both", objects=None) -> tuple[int, int] | None:
        """(first, last) frames a propagate(t0, direction, objects) may rewrite, or None (nothing)."""
        self._check(t0)
        spans = object_spans(self.project.keyframes, self._objects_for(objects), t0,
                             len(self.video), direction)
        if not spans:
            return None
        return min(s[0] for s in spans.values()), max(s[1] for s in spans.values())

    def propagate(self, t0: int, direction: str = "both", objects=None) -> Iterator[tuple[int, np.ndarray]]:
        """Generator of (t, ids) as frames are propagated and written; see module doc."""
        self._check(t0)
        if direction not in ("forward", "backward", "both"):
            raise ValueError(f"direction must be forward, backward or both, not {direction!r}")
        objs = self._objects_for(objects)
        return self._propagate(t0, direction, objs)

    def _propagate(self, t0, direction, objs):
        with self.lock:
            task = PropagationTask(
                n_frames=len(self.video), size_hw=self.size_hw, embedding=self.embedding,
                read_ids=self.project.masks.get,
                keyframes={o: set(v) for o, v in self.project.keyframes.items()},
                objects=objs, locked=self._locked(), image=self.video.frame,
                click_refs=self._click_refs(objs), previous=self._was_propagated,
                previous_probs=self._grid_probs,
                reference_keyframes=self._reference_keyframes(objs))
        gen = self._propagator.run(task, t0, direction)
        start = time.perf_counter()
        count = 0
        try:
            for r in gen:
                with self.lock:
                    self.project.masks.set(r.t, r.ids)
                    conf = self._confidence.setdefault(r.t, {})
                    conf.update(r.confidence)
                    labels = list(r.probs)
                    self._probs[r.t] = (labels, np.stack([r.probs[k] for k in labels]).astype(np.float16))
                    self._probs.move_to_end(r.t)
                    while len(self._probs) > self._probs_size:
                        self._probs.popitem(last=False)
                count += 1
                self.last_timing["propagate_fps"] = count / max(time.perf_counter() - start, 1e-9)
                yield r.t, r.ids
        finally:
            gen.close()

    # ------------------------------------------------------------------ reading
    def mask(self, t: int) -> np.ndarray:
        """(H, W) uint8 ids of frame t (zeros where nothing was annotated or propagated)."""
        return self.project.masks.get(t)

    def probabilities(self, t: int) -> dict[int, np.ndarray]:
        """{obj_id: (H, W) float32 in [0, 1]} for the objects on frame t. Frames propagated in this
        session give the retrieval's soft probabilities (edge-aware upsampled); others (keyframes,
        reopened projects) give the hard mask as 0/1."""
        cached = self._grid_probs(t)
        ids = self.project.masks.get(t)
        if cached is not None:
            labels, grid = cached
            full = self._propagator.upsampler(grid, self.video.frame(t), ids.shape)
            full /= np.maximum(full.sum(0, keepdims=True), 1e-6)
            out = {lab: np.clip(full[i], 0, 1) for i, lab in enumerate(labels) if lab != 0}
            for o in np.unique(ids):  # fixed objects of that run keep their hard mask
                if o != 0 and int(o) not in out:
                    out[int(o)] = (ids == o).astype(np.float32)
            return out
        return {int(o): (ids == o).astype(np.float32) for o in np.unique(ids) if o != 0}

    def confidence(self, t: int) -> dict[int, float]:
        """{obj_id: 0..1} for frame t (1 = user-annotated here); {} if never propagated."""
        return dict(self._confidence.get(t, {}))

    def frames_most_likely_wrong(self, n: int = 10) -> list[int]:
        """Propagated frames with the lowest confidence of any object, worst first."""
        scored = []
        for t, conf in list(self._confidence.items()):
            vals = [v for o, v in conf.items() if o in self.project.objects
                    and t not in self.project.keyframes.get(o, ())]
            if vals:
                scored.append((min(vals), t))
        scored.sort()
        return [t for _, t in scored[:n]]

    # ------------------------------------------------------------------ undo
    def snapshot(self, frames=None) -> Snapshot:
        """State of ``frames`` (iterable of indices; None = every frame with a mask) for restore()."""
        from engine.palette import encode_id_png
        with self.lock:
            masks = self.project.masks
            frames = masks.frames() if frames is None else sorted({int(t) for t in frames})
            data = {t: (encode_id_png(masks.get(t)) if masks.has(t) else None) for t in frames}
            return Snapshot(
                masks=data,
                objects={o: copy.copy(info) for o, info in self.project.objects.items()},
                next_object_id=self.project.next_object_id,
                keyframes={o: frozenset(v) for o, v in self.project.keyframes.items()},
                corrected={o: frozenset(v) for o, v in self._corrected().items()},
                interactions=list(self.project.interactions),
                confidence={t: dict(self._confidence[t]) for t in frames if t in self._confidence},
                frames=list(frames))

    def restore(self, snap: Snapshot) -> None:
        """Put back the state captured by snapshot(): those frames' masks, objects, keyframes
        (corrected ones too), log."""
        from engine.palette import decode_id_png
        with self.lock:
            masks = self.project.masks
            for t, data in snap.masks.items():
                if data is None:
                    masks.delete(t)
                else:
                    masks.set(t, decode_id_png(data, f"snapshot frame {t}"))
                self._probs.pop(t, None)
                if t in snap.confidence:
                    self._confidence[t] = dict(snap.confidence[t])
                else:
                    self._confidence.pop(t, None)
            self.project.objects.clear()
            self.project.objects.update({o: copy.copy(i) for o, i in snap.objects.items()})
            self.project.next_object_id = max(self.project.next_object_id, snap.next_object_id)
            self.project.keyframes = {o: set(v) for o, v in snap.keyframes.items()}
            for o in set(self._corrected()) | set(snap.corrected):
                self._set_corrected(o, set(snap.corrected.get(o, ())))
            self.project.interactions[:] = list(snap.interactions)
            self.project.mark_dirty()

    # ------------------------------------------------------------------ files
    def _confidence_path(self) -> Path:
        return Path(self.project.folder) / "cache" / CONFIDENCE_FILE

    def _load_confidence(self) -> dict[int, dict[int, float]]:
        try:
            doc = json.loads(self._confidence_path().read_text())
            return {int(t): {int(o): float(v) for o, v in c.items()} for t, c in doc["frames"].items()}
        except Exception:  # absent or stale: confidences are only hints
            return {}

    def save(self) -> None:
        """Atomic save of the project (and the confidence hints beside the embedding cache)."""
        with self.lock:
            self.project.save()
            self._save_confidence()

    def _save_confidence(self) -> None:
        with self.lock:
            doc = {"frames": {str(t): {str(o): v for o, v in c.items()}
                              for t, c in sorted(self._confidence.items())}}
            try:
                atomic_write_json(self._confidence_path(), doc)
            except OSError:
                pass  # hints only; the project itself is saved

    def save_as(self, folder) -> None:
        """Write the whole project to a folder holding no project yet, which becomes this session's folder;
        the confidence hints and the embedding cache go with it, so nothing is recomputed there."""
        with self.lock:
            self.project.save_as(folder)
            if self._cache is not None:
                old, self._cache = self._cache, self._cache.copy_to(Path(self.project.folder) / "cache")
                old.close()
            self._save_confidence()

    def native_mask(self, t: int) -> np.ndarray:
        """(H, W) uint8 ids of frame t at the video's native size (smooth label upscaling)."""
        return resize_ids(self.project.masks.get(t), self.video.native_size)

    def tracked_masks(self):
        """The project's masks at native size as an engine.formats.TrackedMasks (lazy, per frame)."""
        from engine.formats import TrackedMasks
        names = [p.name for p in getattr(self.video, "files", [])] or None
        if names is not None:
            names = [Path(n).stem + ".jpg" for n in names]
        return TrackedMasks(name=self.video.name, size=self.video.native_size,
                            objects=dict(self.project.objects), frames=self.native_mask,
                            num_frames=len(self.video), frame_names=names,
                            images=self.video.native_frame, fps=self.video.fps)

    def export(self, out_dir, fmt: str, progress: Callable | None = None) -> list[Path]:
        """Write all masks at native resolution in ``fmt``: davis (Annotations + JPEGImages under
        out_dir), coco (out_dir/coco.json), youtube-vis (out_dir/youtube-vis.json), binary
        (out_dir/<id>_<name>/...), overlay (out_dir/<video>.mp4). progress(done, total) per frame."""
        from engine import formats
        out = Path(out_dir)
        fmt = fmt.lower()
        tm = self.tracked_masks()
        if fmt == "overlay":
            return [formats.save_overlay_video(tm, out / f"{self.video.name}_overlay.mp4",
                                               fps=self.video.fps, progress=progress)]
        fmt = formats.format_name(fmt)
        if fmt == "davis":
            return list(formats.save_davis(tm, out, progress=progress))
        if fmt == "coco":
            return [formats.save_coco(tm, out / "coco.json", progress=progress)]
        if fmt == "youtube-vis":
            return [formats.save_youtube_vis(tm, out / "youtube-vis.json", progress=progress)]
        return list(formats.save_binary_masks(tm, out, progress=progress))
