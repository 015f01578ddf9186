"""The engine's face: one annotation session over a project (video + objects + annotation state).

In the spirit of segment-anything's SamPredictor: embed a video once, then cheap prompts. This is the only
engine object the GUI (annotator/) and the CLI use; it hands out no internals. All arrays are at the
project's WORKING size unless a name says native: frames (H, W, 3) RGB uint8, id masks (H, W)
uint8 (0 = background, object ids 1..255), probabilities (H, W) float32; points are (x, y)
working-size pixel coordinates (x = column, y = row), floats allowed.

    s = Session.create(project_dir, video_path, short_side=480, embedder=None, refiner=None)
    #   embedding_dir=DIR: keep the embedding cache there instead of <project>/cache (evaluation runs)
    s = Session.open(project_dir, embedder=None, refiner=None)   # refiner None: the project's choice
    s = Session.open_sample_copy(dest)          # a writable copy of the bundled sample project
    Session.SAMPLE_NAME -> str                  # the sample project's folder name
    s.set_refiner(name | instance | None) ; s.refiner_name -> str  # kept in project.json settings
    Session.refiner_names() -> ["none", ...]    # what set_refiner accepts
    Session.export_formats() -> [(name, label), ...]   # what export accepts
    s.video -> VideoSource ; s.objects -> {obj_id: ObjectInfo} (copies) ; s.size_hw ; len(s)
    s.folder -> Path ; s.dirty -> bool ; s.masked_frames() -> list[int]
    s.keyframes() -> {obj_id: set[int]} ; s.interactions() -> list[Interaction]
    s.keyframe_info() -> {obj_id: {t: "annotated" | "corrected" | "marked" | "absent"}}   # why each is one
    s.add_object(name=None, category="object", color=None) -> ObjectInfo
    s.update_object(obj_id, name=None, category=None, color=None, hidden=None, locked=None) -> ObjectInfo
    s.remove_object(obj_id) -> None
    s.embed(progress=None, cancel=None) -> Iterator[int]       # frame indices as they are cached
    s.is_embedded(t) -> bool ; s.embedded_count() -> int ; s.embedding(t) -> (h, w, D) float32
    s.click(t, obj_id, x, y, positive=True) -> (H, W) uint8     # ids of frame t, updated
    s.set_click_model(model | None)   # an engine.click_model.ClickModel (default: the shipped one), None: heuristics
    s.scribble(t, obj_id, points, positive=True) -> (H, W) uint8
    s.brush(t, obj_id, points, radius, erase=False) -> (H, W) uint8
    s.polygon(t, obj_id, points) -> (H, W) uint8
    s.set_object_mask(t, obj_id, mask_bool_HW) -> (H, W) uint8
    s.prompts(t, obj_id=None) -> list[Prompt]         # the live clicks/scribbles on frame t, oldest first
    s.delete_prompt(prompt_id) -> (H, W) uint8        # frame t re-segmented from the remaining edits
    s.clear_prompts(t, obj_id=None) -> (H, W) uint8   # every prompt of frame t (of one object)
    s.set_keyframe(t, obj_id, on) -> None              # mark (the mask is right as it is) / unmark
    s.set_absent(t, obj_id, absent=True) -> (H, W) uint8   # the object is not on frame t: an empty keyframe
    s.clear_mask(obj_id, first, last=None) -> list[int]   # erase it on first..last (None: first only)
    s.add_objects_from_ids(t, ids_HW) -> {id in ids: new obj_id}  # a first-frame annotation
    s.propagation_span(t0, direction="both", objects=None, until=None) -> (first, last) | None
    s.propagate(t0, direction="both", objects=None, until=None) -> Iterator[(t, (H, W) uint8 ids)]
    s.mask(t) -> (H, W) uint8 ; s.native_mask(t) -> native-size ids
    s.probabilities(t) -> dict[obj_id, (H, W) float32]
    s.confidence(t) -> dict[obj_id, float]   # 0..1; {} for frames never propagated
    s.frames_most_likely_wrong(n=10, objects=None) -> list[int]   # lowest confidence (of those objects) first
    s.snapshot(frames=None) -> Snapshot ; s.restore(snapshot)   # undo/redo; None = all masked frames
    s.save() ; s.save_as(folder) ; s.export(out_dir, fmt, progress=None) -> list[Path]
    Snapshot.to_bytes() -> bytes ; Snapshot.from_bytes(data, where) -> Snapshot   # undo state as data (autosave)
    s.last_timing -> dict (e.g. {"click_ms": 12.3, "propagate_fps": 71.0})
    s.close()

Edits (click, scribble, brush, polygon, set_object_mask) log an Interaction and make frame t a
keyframe of the object. A Prompt's id is its index in the interaction log and never changes; deleting
one re-segments its frame from the object's mask there before its first edit and the remaining edits
(so a frame whose prompts are all deleted is the propagated result again, and no keyframe). The user
also marks keyframes (set_keyframe), says an object is absent on a frame (set_absent: an empty keyframe
that propagation keeps and does not cross) and clears masks (clear_mask). Which keyframes and clicks
become propagation references is one rule, in engine/annotation.py (a click on a propagated mask corrects only the clicked spots and what it changed near them). A click/scribble
needs frame t's embedding: it is computed on demand when the background embedding pass has not reached
t yet (~0.1 s once). Editing a locked object raises ProjectError.

propagate(t0, direction) recomputes, for each chosen unlocked object, only the frames between
its keyframes around t0 ("forward": after t0, "backward": before, "both"; t0 itself too when it
is not a keyframe of that object); keyframes and locked objects are never changed. With `until` (a frame
index) it runs from t0 to that frame instead, across keyframes (which it skips), in the direction that
reaches it ("both" means that one; the other direction is a ValueError). A frame
that already holds an earlier propagation is fused with it, weighted by its distance to t0
and to the object's other keyframes (bidirectional fusion; with that run's soft probabilities
while the session still holds them, else its mask). It is a generator that writes each frame into the project before
yielding it; closing it (or just stopping iterating) cancels, and the frames done stay done.

Threads: every method takes the session's re-entrant lock while it changes state, and a propagation
takes it only per frame, so the GUI thread may call the read-only methods (mask, probabilities,
confidence, is_embedded, embedded_count, masked_frames, keyframes, keyframe_info, prompts,
frames_most_likely_wrong, snapshot) while a worker propagates or embeds. embed() may run in its own worker
at the same time as edits and propagation. Do not run two mutating calls (edits, prompt deletions,
keyframe changes, propagate, restore, remove_object, save, save_as, export) at once from different
threads: serialise them (the GUI does so with its own lock).
"""

from __future__ import annotations

import copy
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from engine.annotation import RETRIEVAL_KINDS, Annotation, Prompt, Snapshot, read_confidence
from engine.embedding.cache import to_float, to_half
from engine.errors import ProjectError
from engine.project import (ABSENT, CORRECTED, FULL, MARKED, SAMPLE_PROJECT, Interaction, ObjectInfo, Project,
                            open_sample_copy)
from engine import interaction as edits
from engine.propagation import PropagationConfig, PropagationTask, Propagator, object_spans
from engine.upsample import STRIDE, resize_ids

__all__ = ["Prompt", "Session", "Snapshot"]

CONFIDENCE_FILE = "confidence.json"
KEYFRAME_REASONS = {FULL: "annotated", CORRECTED: "corrected", MARKED: "marked", ABSENT: "absent"}
EMBEDDING_LRU = 24  # frames kept in memory: a propagation's reference keyframes and its last frames
_SHIPPED = object()  # the click model of resources/clicks, loaded when first needed


class Session:
    """An annotation session. Build with `Session.create` or `Session.open` (see module doc)."""

    SAMPLE_NAME = SAMPLE_PROJECT.name  # the sample project's folder name, for where to keep its copy

    def __init__(self, project: Project, embedder=None, refiner=None,
                 config: PropagationConfig | None = None, embedding_dir=None):
        self._project = project
        self._embedding_dir = Path(embedding_dir) if embedding_dir is not None else None
        self._lock = threading.RLock()
        self._embedder = embedder
        self._cache = None
        self._annotation = Annotation(project, read_confidence(self._confidence_path()))
        self._propagator = Propagator(config or PropagationConfig())
        self._refiner = None
        self.set_refiner(refiner if refiner is not None else project.settings.get("refiner"))
        self._probs: OrderedDict[int, tuple[list[int], np.ndarray]] = OrderedDict()
        self._probs_size = 256
        self._click_model = _SHIPPED  # loaded on the first click
        self.last_timing: dict[str, float] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, project_dir, video_path, short_side: int = 480, embedder=None, refiner=None,
               config: PropagationConfig | None = None, embedding_dir=None) -> "Session":
        """New project folder for a video file or frame folder (saved at once)."""
        return cls(Project.create(project_dir, video_path, short_side), embedder, refiner, config, embedding_dir)

    @classmethod
    def open(cls, project_dir, embedder=None, refiner=None,
             config: PropagationConfig | None = None) -> "Session":
        """Open an existing project folder (ProjectError if it is not a valid project)."""
        return cls(Project.load(project_dir), embedder, refiner, config)

    @classmethod
    def open_sample_copy(cls, dest_folder, embedder=None, refiner=None) -> "Session":
        """Copy the bundled sample project (video included) to an absent or empty folder and open the copy."""
        return cls(open_sample_copy(dest_folder), embedder, refiner)

    @staticmethod
    def refiner_names() -> list[str]:
        """What set_refiner accepts by name: "none" (off) first, then every registered refiner."""
        from engine.refiners import available_refiners
        return ["none", *available_refiners()]

    @staticmethod
    def export_formats() -> list[tuple[str, str]]:
        """What export accepts: [(name, label for a menu)], from the one format registry."""
        from engine.formats import EXPORT_FORMATS
        return [(f.name, f.label) for f in EXPORT_FORMATS.values()]

    def set_refiner(self, refiner) -> None:
        """Refine every propagated frame with `refiner`: a registered name, an instance, or None (off).

        A name is kept in the project's settings, so the choice is per project and survives reopening.
        """
        from engine.refiners import get_refiner

        name = None
        if refiner is None or isinstance(refiner, str):
            name, refiner = refiner, get_refiner(refiner)
        with self._lock:
            self._refiner = refiner
            self._propagator.refiner = refiner
            settings = self._project.settings
            if name != settings.get("refiner") and (name or "refiner" in settings):
                settings["refiner"] = name
                self._project.mark_dirty()

    @property
    def refiner_name(self) -> str:
        """The chosen refiner's registered name, "none" when off."""
        return getattr(self._refiner, "name", None) or self._project.settings.get("refiner") or "none"

    def close(self) -> None:
        """Release the video and the cache files; the session must not be used afterwards."""
        if self._cache is not None:
            self._cache.close()
        close = getattr(self.video, "close", None)
        if close is not None:
            close()

    # ------------------------------------------------------------------ the project
    @property
    def video(self):
        return self._project.video

    @property
    def folder(self) -> Path:
        """The project folder (it changes with save_as)."""
        return Path(self._project.folder)

    @property
    def dirty(self) -> bool:
        """True when something changed since the last save."""
        return self._project.dirty

    def masked_frames(self) -> list[int]:
        """Frames that hold a mask (annotated or propagated), ascending."""
        return self._annotation.masks.frames()

    def keyframes(self) -> dict[int, set[int]]:
        """{obj_id: its keyframes} (a copy)."""
        with self._lock:
            return self._annotation.keyframes()

    def keyframe_info(self) -> dict[int, dict[int, str]]:
        """{obj_id: {keyframe: why it is one}}: "annotated" (drawn or clicked on an empty frame), "corrected"
        (clicks on a propagated mask), "marked" (declared right by the user), "absent" (the object is not there)."""
        with self._lock:
            roles = self._annotation.keyframe_roles()
        return {o: {t: KEYFRAME_REASONS[role] for t, role in sorted(rs.items())} for o, rs in roles.items()}

    def interactions(self) -> list[Interaction]:
        """The interaction log, oldest first (a copy); deleted prompts stay in it, marked `deleted`."""
        with self._lock:
            return list(self._project.interactions)

    @property
    def objects(self) -> dict[int, ObjectInfo]:
        """{obj_id: ObjectInfo} (copies: change them with update_object)."""
        with self._lock:
            return {o: copy.copy(info) for o, info in self._project.objects.items()}

    @property
    def size_hw(self) -> tuple[int, int]:
        w, h = self.video.working_size
        return h, w

    def __len__(self) -> int:
        return len(self.video)

    # ------------------------------------------------------------------ objects
    def add_object(self, name: str | None = None, category: str = "object",
                   color: tuple[int, int, int] | None = None) -> ObjectInfo:
        with self._lock:
            return copy.copy(self._project.add_object(name=name, category=category, color=color))

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
        with self._lock:
            for value in values:
                out[value] = self.add_object(name=f"object {value}").id
                self.set_object_mask(t, out[value], ids == value)
        return out

    def update_object(self, obj_id: int, **fields) -> ObjectInfo:
        """fields: name, category, color (r, g, b), hidden, locked; others raise TypeError."""
        with self._lock:
            return copy.copy(self._project.update_object(obj_id, **fields))

    def remove_object(self, obj_id: int) -> None:
        """Delete the object and its pixels in every frame (ids are never reused)."""
        with self._lock:
            self._annotation.remove_object(obj_id)
            self._probs.clear()

    # ------------------------------------------------------------------ embeddings
    def _embeddings(self):
        """The project's on-disk EmbeddingCache (created, and the embedder loaded, on first use); its
        in-memory LRU holds the last EMBEDDING_LRU frames a propagation or a click read."""
        with self._lock:
            if self._cache is None:
                from engine.embedding import Embedder, EmbeddingCache
                if self._embedder is None:
                    self._embedder = Embedder.load(device="auto")  # CUDA when torch sees a GPU
                folder = self._embedding_dir or self.folder / "cache"
                self._cache = EmbeddingCache(folder, self.video, self._embedder, lru_frames=EMBEDDING_LRU)
            return self._cache

    def embed(self, progress: Callable | None = None, cancel: Callable[[], bool] | None = None) -> Iterator[int]:
        """Cache every frame's embedding; yields frame indices as they are done (cancellable:
        stop iterating, or make ``cancel()`` return True). progress(done, total) if given."""
        return self._embeddings().compute(progress=progress, cancel=cancel)

    def is_embedded(self, t: int) -> bool:
        return self._embeddings().has(t)

    def embedded_count(self) -> int:
        cache = self._embeddings()
        return sum(1 for t in range(len(self.video)) if cache.has(t))

    def embedding(self, t: int) -> np.ndarray:
        """(h, w, D) float32 unit embeddings of frame t on the stride-8 grid, read-only (computed now if
        not cached)."""
        return self._embeddings().get(t)

    # ------------------------------------------------------------------ edits
    def _check(self, t: int, obj_id: int | None = None) -> None:
        if not 0 <= t < len(self.video):
            raise IndexError(f"frame {t} out of range 0..{len(self.video) - 1}")
        if obj_id is not None:
            objects = self._project.objects
            if obj_id not in objects:
                raise KeyError(f"no object with id {obj_id}")
            if objects[obj_id].locked:
                raise ProjectError(self.folder, f"object {obj_id} ({objects[obj_id].name}) is locked; unlock it to edit")

    def _locked(self) -> set[int]:
        return {o for o, info in self._project.objects.items() if info.locked}

    def _commit_edit(self, t: int, obj_id: int, new: np.ndarray, kind: str, positive: bool,
                     points, radius=None) -> np.ndarray:
        pts = [(float(x), float(y)) for x, y in np.asarray(points, np.float64).reshape(-1, 2)]
        self._annotation.record_edit(t, obj_id, new, Interaction(
            kind, t, obj_id, bool(positive), pts, None if radius is None else float(radius)))
        self._probs.pop(t, None)
        return new

    @staticmethod
    def _known_refs(clicks, emb: np.ndarray):
        """Embeddings at the points of these clicks/scribbles: (pos, neg), the extra references of the next one."""
        pos, neg = [], []
        h, w, _ = emb.shape
        for it in clicks:
            for x, y in it.points:
                i, j = min(int(y) // STRIDE, h - 1), min(int(x) // STRIDE, w - 1)
                (pos if it.positive else neg).append(emb[i, j])
        f = lambda v: np.asarray(v, np.float32).reshape(-1, emb.shape[-1])
        return f(pos), f(neg)

    def set_click_model(self, model) -> None:
        """What segments clicks and scribbles: an engine.click_model.ClickModel, or None for the retrieval
        heuristics (engine.interaction.retrieve_edit); the shipped model until set."""
        with self._lock:
            self._click_model = model

    def _clicker(self):
        """The click model, or None (the heuristics): also None when this session's embedder is not the one the
        model was trained on (another head, a test embedder), whose embeddings it cannot read."""
        if self._click_model is _SHIPPED:
            from engine.click_model import ClickModel
            self._click_model = ClickModel.load()
        model = self._click_model
        return model if model is not None and model.fits(self._embeddings().embedder) else None

    def _click_edit(self, ids, t, obj_id, before, points, positive) -> np.ndarray:
        """Frame t's ids after a click/scribble of the object; ``before``: its earlier ones on t, oldest first."""
        emb = self.embedding(t)
        model = self._clicker()
        if model is not None:
            strokes = [(it.points, it.positive) for it in before] + [(points, positive)]
            return edits.model_edit(ids, emb, obj_id, strokes, self.video.frame(t), model, self._locked())
        pos, neg = self._known_refs(before, emb)
        return edits.retrieve_edit(ids, emb, obj_id, points, positive, image=self.video.frame(t),
                                   locked=self._locked(), negatives=neg, positives=pos)

    def _retrieve(self, t, obj_id, points, positive, kind) -> np.ndarray:
        start = time.perf_counter()
        with self._lock:
            self._check(t, obj_id)
            new = self._click_edit(self._annotation.masks.get(t), t, obj_id, self._annotation.clicks_on(t, obj_id),
                                   points, positive)
            out = self._commit_edit(t, obj_id, new, kind, positive, points)
        self.last_timing[f"{kind}_ms"] = (time.perf_counter() - start) * 1000
        return out

    def click(self, t: int, obj_id: int, x: float, y: float, positive: bool = True) -> np.ndarray:
        """Positive: add the region like the clicked spot and connected to it; negative: remove the
        part of the object like the clicked spot and connected to it. Returns frame t's ids."""
        return self._retrieve(t, obj_id, [(x, y)], positive, "click")

    def scribble(self, t: int, obj_id: int, points, positive: bool = True) -> np.ndarray:
        """Like click with a polyline [(x, y), ...], except that on a frame already showing the object it changes
        only what is near the stroke (within engine.interaction.STROKE_REACH_PX, and half the stroke's length for a
        short one). Returns frame t's ids."""
        if len(points) == 0:
            raise ValueError("a scribble needs at least one point")
        return self._retrieve(t, obj_id, points, positive, "scribble")

    def brush(self, t: int, obj_id: int, points, radius: float, erase: bool = False) -> np.ndarray:
        """Paint (erase=False) or erase the object along a stroke of ``radius`` px. Returns ids."""
        start = time.perf_counter()
        with self._lock:
            self._check(t, obj_id)
            new = edits.brush(self._annotation.masks.get(t), obj_id, points, radius, erase, self._locked())
            out = self._commit_edit(t, obj_id, new, "eraser" if erase else "brush", not erase, points, radius)
        self.last_timing["brush_ms"] = (time.perf_counter() - start) * 1000
        return out

    def polygon(self, t: int, obj_id: int, points) -> np.ndarray:
        """Fill the polygon [(x, y), ...] with the object. Returns frame t's ids."""
        with self._lock:
            self._check(t, obj_id)
            new = edits.polygon(self._annotation.masks.get(t), obj_id, points, self._locked())
            return self._commit_edit(t, obj_id, new, "polygon", True, points)

    def set_object_mask(self, t: int, obj_id: int, mask: np.ndarray) -> np.ndarray:
        """The object's whole mask on frame t ((H, W) bool, working size). Returns frame t's ids."""
        with self._lock:
            self._check(t, obj_id)
            new = edits.set_mask(self._annotation.masks.get(t), obj_id, mask, self._locked())
            return self._commit_edit(t, obj_id, new, "mask", True, [])

    # ------------------------------------------------------------------ keyframes
    def set_keyframe(self, t: int, obj_id: int, on: bool = True) -> None:
        """Mark frame t a keyframe of the object with its mask as it is (a whole propagation reference from
        then on, never rewritten), or unmark it (its mask stays until a propagation rewrites it)."""
        with self._lock:
            self._check(t, obj_id)
            self._annotation.set_keyframe(t, obj_id, bool(on))

    def set_absent(self, t: int, obj_id: int, absent: bool = True) -> np.ndarray:
        """The object is not on frame t (occluded, out of view; CVAT's "outside"): its pixels there are
        erased and t becomes an empty keyframe, so propagation keeps it empty. absent=False undoes that
        (t is no keyframe then). Returns frame t's ids."""
        with self._lock:
            self._check(t, obj_id)
            if absent:
                self._annotation.clear(obj_id, [t], absent=True)
            elif self._annotation.keyframe_roles().get(obj_id, {}).get(t) == ABSENT:
                self._annotation.set_keyframe(t, obj_id, False)
            self._probs.pop(t, None)
            return self.mask(t)

    def clear_mask(self, obj_id: int, first: int, last: int | None = None) -> list[int]:
        """Erase the object on frames first..last (inclusive; None: first only; len(s) - 1: to the end);
        they are no keyframes of it any more. Returns the frames that changed."""
        last = first if last is None else last
        with self._lock:
            self._check(first, obj_id)
            self._check(last)
            if last < first:
                raise ValueError(f"the range {first}..{last} is empty")
            state = self._annotation
            frames = [t for t in range(first, last + 1)
                      if obj_id in state.masks.ids(t) or state.is_keyframe(obj_id, t)]
            state.clear(obj_id, frames)
            for t in frames:
                self._probs.pop(t, None)
            return frames

    # ------------------------------------------------------------------ prompts
    def prompts(self, t: int, obj_id: int | None = None) -> list[Prompt]:
        """The live clicks and scribbles on frame t (of one object, or all), oldest first."""
        self._check(t)
        with self._lock:
            return self._annotation.prompts(t, obj_id)

    def delete_prompt(self, prompt_id: int) -> np.ndarray:
        """Delete one click or scribble (KeyError for an unknown id) and re-segment its frame for its
        object from the remaining edits. Returns that frame's ids."""
        with self._lock:
            it = self._annotation.prompt(prompt_id)
            self._check(it.frame, it.object_id)
            self._annotation.delete_prompts([prompt_id])
            return self._replay(it.frame, it.object_id)

    def clear_prompts(self, t: int, obj_id: int | None = None) -> np.ndarray:
        """Delete every click and scribble on frame t (of one object, else of all unlocked objects) and
        re-segment the frame. Returns frame t's ids."""
        with self._lock:
            self._check(t, obj_id)
            prompts = [p for p in self._annotation.prompts(t, obj_id) if p.object_id not in self._locked()]
            self._annotation.delete_prompts([p.id for p in prompts])
            for obj in sorted({p.object_id for p in prompts}):
                self._replay(t, obj)
            return self.mask(t)

    def _replay(self, t: int, obj_id: int) -> np.ndarray:
        """Frame t's ids with the object re-segmented: its base mask, then its remaining edits in order."""
        state = self._annotation
        _, base = state.base(t, obj_id)
        ids = state.masks.get(t)
        ids[(ids == obj_id) & ~base] = 0
        ids[base & (ids == 0)] = obj_id
        locked = self._locked()
        done = []
        for _, it in state.replay_edits(t, obj_id):
            if it.kind in RETRIEVAL_KINDS:
                ids = self._click_edit(ids, t, obj_id, done, it.points, it.positive)
                done.append(it)
            elif it.kind in ("brush", "eraser"):
                ids = edits.brush(ids, obj_id, it.points, it.radius, it.kind == "eraser", locked)
            elif it.kind == "polygon":
                ids = edits.polygon(ids, obj_id, it.points, locked)
        state.set_replayed(t, obj_id, ids)
        self._probs.pop(t, None)
        return ids

    # ------------------------------------------------------------------ propagation
    def _objects_for(self, objects) -> list[int]:
        known = self._project.objects
        if objects is None:
            return [o for o, info in known.items() if not info.locked]
        out = []
        for o in objects:
            if o not in known:
                raise KeyError(f"no object with id {o}")
            if not known[o].locked:
                out.append(int(o))
        return out

    def _grid_probs(self, t: int):
        """(labels, (L, h, w) float32 grid probabilities) of frame t's last propagation in this
        session, or None: what probabilities() upsamples and what a re-propagation blends with."""
        with self._lock:
            cached = self._probs.get(t)
        return None if cached is None else (cached[0], to_float(cached[1]))

    def _direction(self, t0: int, direction: str, until: int | None) -> str:
        """The direction to run; with `until`, the one that reaches that frame."""
        self._check(t0)
        if direction not in ("forward", "backward", "both"):
            raise ValueError(f"direction must be forward, backward or both, not {direction!r}")
        if until is None:
            return direction
        self._check(until)
        toward = "forward" if until >= t0 else "backward"
        if direction not in ("both", toward):
            raise ValueError(f"frame {until} is not {direction} of frame {t0}")
        return toward

    def propagation_span(self, t0: int, direction: str = "both", objects=None,
                         until: int | None = None) -> tuple[int, int] | None:
        """(first, last) frames a propagate(t0, direction, objects, until) may rewrite, or None (nothing)."""
        direction = self._direction(t0, direction, until)
        spans = object_spans(self._annotation.keyframes(), self._objects_for(objects), t0,
                             len(self.video), direction, until)
        if not spans:
            return None
        return min(s[0] for s in spans.values()), max(s[1] for s in spans.values())

    def propagate(self, t0: int, direction: str = "both", objects=None,
                  until: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Generator of (t, ids) as frames are propagated and written; see module doc."""
        direction = self._direction(t0, direction, until)
        return self._propagate(t0, direction, self._objects_for(objects), until)

    def _task(self, objs: list[int]) -> PropagationTask:
        """The propagation's inputs: the annotation's references, read through this session."""
        state = self._annotation
        clicks = [(it.frame, it.object_id, it.positive, self._references(it))
                  for it in state.click_interactions(objs)] + self._correction_references(objs)
        return PropagationTask(
            n_frames=len(self.video), size_hw=self.size_hw, embedding=self.embedding,
            read_ids=state.masks.get, keyframes=state.keyframes(), objects=objs, locked=self._locked(),
            image=self.video.frame, click_refs=clicks, previous=state.was_propagated,
            previous_probs=self._grid_probs, reference_keyframes=state.reference_keyframes(objs))

    def _correction_references(self, objs) -> list:
        """[(frame, object id, positive, (N, D))]: what the clicks on the objects' corrected keyframes changed
        near them (engine.interaction.correction_references). Scribbles name their cells themselves."""
        cfg, state, out = self._propagator.config, self._annotation, []
        if cfg.correction_reach <= 0:
            return out
        for t, o in state.corrected_frames(objs):
            clicks = [(it.points, it.positive) for it in state.clicks_on(t, o) if it.kind == "click"]
            if clicks:
                out += [(t, o, positive, vecs) for positive, vecs in edits.correction_references(
                    self.embedding(t), state.base(t, o)[1], state.masks.get(t) == o, clicks, cfg.pure_fraction,
                    cfg.correction_reach)]
        return out

    def _references(self, it) -> np.ndarray:
        """(N, D) propagation references of one live click or scribble (engine.interaction)."""
        emb = self.embedding(it.frame)
        if it.kind == "scribble":
            return edits.scribble_references(emb, it.points, self._annotation.masks.get(it.frame), it.object_id,
                                             it.positive, self._propagator.config.pure_fraction)
        return edits.seed_vectors(emb, it.points)

    def _propagate(self, t0, direction, objs, until):
        with self._lock:
            task = self._task(objs)
        gen = self._propagator.run(task, t0, direction, until)
        start = time.perf_counter()
        count = 0
        try:
            for r in gen:
                with self._lock:
                    self._annotation.record_propagated(r.t, r.ids, r.confidence)
                    labels = list(r.probs)
                    self._probs[r.t] = (labels, to_half(np.stack([r.probs[k] for k in labels])))
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
        return self._annotation.masks.get(t)

    def probabilities(self, t: int) -> dict[int, np.ndarray]:
        """{obj_id: (H, W) float32 in [0, 1]} for the objects on frame t. Frames propagated in this
        session give the retrieval's soft probabilities (edge-aware upsampled); others (keyframes,
        reopened projects) give the hard mask as 0/1."""
        cached = self._grid_probs(t)
        ids = self.mask(t)
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
        return dict(self._annotation.confidence.get(t, {}))

    def frames_most_likely_wrong(self, n: int = 10, objects=None) -> list[int]:
        """Propagated frames with the lowest confidence of any object (of `objects`: ids, None = all),
        worst first; an object's keyframes are not in doubt."""
        state = self._annotation
        wanted = set(self._project.objects) if objects is None else set(objects) & set(self._project.objects)
        scored = []
        for t, conf in list(state.confidence.items()):
            vals = [v for o, v in conf.items() if o in wanted and not state.is_keyframe(o, t)]
            if vals:
                scored.append((min(vals), t))
        scored.sort()
        return [t for _, t in scored[:n]]

    # ------------------------------------------------------------------ undo
    def snapshot(self, frames=None) -> Snapshot:
        """State of ``frames`` (iterable of indices; None = every frame with a mask) for restore()."""
        with self._lock:
            return self._annotation.snapshot(frames)

    def restore(self, snap: Snapshot) -> None:
        """Put back the state captured by snapshot(): those frames' masks, objects, keyframes (with their
        roles), log."""
        with self._lock:
            self._annotation.restore(snap)
            for t in snap.masks:
                self._probs.pop(t, None)

    # ------------------------------------------------------------------ files
    def _confidence_path(self) -> Path:
        return self.folder / "cache" / CONFIDENCE_FILE

    def save(self) -> None:
        """Atomic save of the project (and the confidence hints beside the embedding cache)."""
        with self._lock:
            self._project.save()
            self._annotation.write_confidence(self._confidence_path())

    def save_as(self, folder) -> None:
        """Write the whole project to a folder holding no project yet, which becomes this session's folder;
        the confidence hints and the embedding cache go with it, so nothing is recomputed there."""
        with self._lock:
            self._project.save_as(folder)
            if self._cache is not None:
                old, self._cache = self._cache, self._cache.copy_to(self.folder / "cache")
                old.close()
            self._annotation.write_confidence(self._confidence_path())

    def native_mask(self, t: int) -> np.ndarray:
        """(H, W) uint8 ids of frame t at the video's native size (smooth label upscaling)."""
        return resize_ids(self.mask(t), self.video.native_size)

    def _tracked_masks(self):
        """The project's masks at native size as an engine.formats.TrackedMasks (lazy, per frame)."""
        from engine.formats import TrackedMasks
        names = [p.name for p in getattr(self.video, "files", [])] or None
        if names is not None:
            names = [Path(n).stem + ".jpg" for n in names]
        return TrackedMasks(name=self.video.name, size=self.video.native_size,
                            objects=self.objects, frames=self.native_mask,
                            num_frames=len(self.video), frame_names=names,
                            images=self.video.native_frame, fps=self.video.fps)

    def export(self, out_dir, fmt: str, progress: Callable | None = None) -> list[Path]:
        """Write all masks at native resolution in ``fmt`` (one of export_formats(); aliases such as
        ytvis accepted) into out_dir, where the format's registry entry says. progress(done, total)."""
        from engine.formats import export_format
        return export_format(fmt).export([self._tracked_masks()], Path(out_dir), progress)
