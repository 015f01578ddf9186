"""The annotation state of a project: masks, keyframes with their role, the interaction log, confidence.

One rule decides what a propagation takes as references, and it lives here (`reference_keyframes`,
`click_interactions`):

- a keyframe is a frame the user edited for an object. Its role is FULL when its mask was drawn,
  brushed, polygon-filled or set by hand: the whole mask is a reference. A click or scribble on a
  frame whose mask came from a propagation makes it a CORRECTED keyframe: the rest of that mask was
  never checked, so only the clicked spots and what the clicks changed near them are references there
  (`corrected_frames`, `interaction.correction_references`), until the frame is edited by hand;
- a MARKED keyframe is a frame the user declared right as it is (a propagated mask they checked): a
  whole reference too. An ABSENT keyframe says the object is not on that frame (occluded, out of view):
  its mask is empty, propagation keeps it so and does not cross it, and it is no reference;
- an object whose keyframes are all corrected uses their whole masks after all (there is nothing else);
- the clicks and scribbles on an object's keyframes add their embeddings to the object's references
  (positive) or to the background's (negative); a scribble only those of its cells that look like its side
  of the frame (`interaction.scribble_references`); one whose keyframe was undone or removed, or that the
  user deleted, no longer counts.

Prompts (the clicks and scribbles) can be deleted one by one, as in the SAM 2 demo: the frame is then
re-segmented from the remaining edits. For that the state keeps, per keyframe, its base: the object's
mask there before its first edit (or after its last whole-mask edit) and the log index it holds from;
`replay_edits` lists the edits to apply to it again. A prompt's id is its index in the interaction log:
deleting marks the entry deleted instead of dropping it, so the ids of the others never change.

Keyframes and the log are stored in the project (project.json, schema 2: see engine.project); confidence,
a hint only, beside the embedding cache. Undo state is a `Snapshot` of some frames, kept as data.
`Annotation` holds no lock: its owner (`engine.session.Session`) serialises the calls.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from engine.atomic import atomic_write_json
from engine.errors import EngineError, ProjectError
from engine.palette import decode_id_png, encode_id_png
from engine.project import ABSENT, CORRECTED, FULL, KEYFRAME_ROLES, MARKED, Interaction, ObjectInfo, Project

RETRIEVAL_KINDS = ("click", "scribble")   # edits whose points are embedding references
SNAPSHOT_FORMAT = "vos-snapshot-3"   # 3: interactions carry `deleted`, and the frames' prompt bases
_SNAPSHOT_2 = "vos-snapshot-2"       # still read (autosaves of the version before)


@dataclass(frozen=True)
class Prompt:
    """A click or scribble on a frame, as the GUI draws it. id: its index in the interaction log (stable)."""
    id: int
    frame: int
    object_id: int
    kind: str                                  # "click" | "scribble"
    positive: bool
    points: tuple[tuple[float, float], ...]


class Annotation:
    """The editable state of one project (objects and video stay with the `Project`)."""

    def __init__(self, project: Project, confidence: dict[int, dict[int, float]] | None = None):
        self._project = project
        self.masks = project.masks
        self.confidence: dict[int, dict[int, float]] = confidence or {}  # {t: {obj: 0..1}}

    # ------------------------------------------------------------------ keyframes
    def keyframes(self) -> dict[int, set[int]]:
        """{obj: its keyframes, whatever their role} (a copy)."""
        return {o: set(roles) for o, roles in self._project.keyframes.items()}

    def is_keyframe(self, obj: int, t: int) -> bool:
        return t in self._project.keyframes.get(obj, {})

    def reference_keyframes(self, objs) -> dict[int, set[int]]:
        """{obj: keyframes whose whole mask is a propagation reference} (see the module doc)."""
        out = {}
        for o in objs:
            roles = self._project.keyframes.get(o, {})
            full = {t for t, role in roles.items() if role in (FULL, MARKED)}
            out[o] = full or {t for t, role in roles.items() if role != ABSENT}
        return out

    def corrected_frames(self, objs) -> list[tuple[int, int]]:
        """[(t, obj)]: the objects' CORRECTED keyframes that are no whole-mask reference, where what their clicks
        changed (against the keyframe's base, the propagated mask) is a reference instead."""
        whole = self.reference_keyframes(objs)
        return [(t, o) for o in objs for t, role in sorted(self._project.keyframes.get(o, {}).items())
                if role == CORRECTED and t not in whole[o]]

    def keyframe_roles(self) -> dict[int, dict[int, str]]:
        """{obj: {t: role}} (a copy)."""
        return {o: dict(roles) for o, roles in self._project.keyframes.items()}

    def click_interactions(self, objs) -> list[Interaction]:
        """The objects' clicks and scribbles that are still references (on one of their keyframes)."""
        return [it for it in self._project.interactions
                if it.object_id in objs and it.kind in RETRIEVAL_KINDS and it.points and not it.deleted
                and self.is_keyframe(it.object_id, it.frame)]

    def clicks_on(self, t: int, obj: int) -> list[Interaction]:
        """The object's live clicks and scribbles on frame t since its base."""
        return [it for _, it in self.replay_edits(t, obj) if it.kind in RETRIEVAL_KINDS]

    # ------------------------------------------------------------------ prompts
    def prompts(self, t: int, obj: int | None = None) -> list[Prompt]:
        """The live clicks and scribbles on frame t (of one object, or of all existing ones), oldest first."""
        objs = [obj] if obj is not None else list(self._project.objects)
        out = [Prompt(i, it.frame, it.object_id, it.kind, it.positive, tuple(it.points))
               for o in objs for i, it in self.replay_edits(t, o) if it.kind in RETRIEVAL_KINDS]
        return sorted(out, key=lambda p: p.id)

    def prompt(self, prompt_id: int) -> Interaction:
        """The live prompt with this id; KeyError for another id."""
        log = self._project.interactions
        if not (isinstance(prompt_id, int) and 0 <= prompt_id < len(log)) or log[prompt_id].deleted \
                or log[prompt_id].kind not in RETRIEVAL_KINDS:
            raise KeyError(f"no prompt with id {prompt_id}")
        return log[prompt_id]

    def base(self, t: int, obj: int) -> tuple[int, np.ndarray]:
        """(log index, (H, W) bool mask): the object's mask on keyframe t before the edits from that index on.
        A keyframe saved before bases were kept has none: it replays from an empty mask."""
        since, png = self._project.prompt_bases.get(obj, {}).get(t, (0, None))
        if png is None:
            w, h = self.masks.size
            return since, np.zeros((h, w), bool)
        return since, decode_id_png(png, f"prompt base of object {obj} on frame {t}") > 0

    def replay_edits(self, t: int, obj: int) -> list[tuple[int, Interaction]]:
        """[(log index, edit)] of the object's live edits on keyframe t since its base, in order."""
        if not self.is_keyframe(obj, t):
            return []
        since = self._project.prompt_bases.get(obj, {}).get(t, (0, None))[0]
        log = self._project.interactions
        return [(i, log[i]) for i in range(since, len(log))
                if log[i].frame == t and log[i].object_id == obj and not log[i].deleted]

    def delete_prompts(self, ids) -> None:
        """Mark these prompts deleted (the caller re-segments their frames)."""
        log = self._project.interactions
        for i in ids:
            log[i] = dataclasses.replace(self.prompt(i), deleted=True)
        self._project.mark_dirty()

    def set_replayed(self, t: int, obj: int, ids: np.ndarray) -> None:
        """Frame t's ids re-segmented from the base and the remaining edits; with none left, t is no
        keyframe of the object any more (its mask is the base again, its confidence unknown), unless
        the user marked it one."""
        self.masks.set(t, ids)
        if not self.replay_edits(t, obj) and self._project.keyframes.get(obj, {}).get(t) != MARKED:
            self._project.keyframes.get(obj, {}).pop(t, None)
            self._project.prompt_bases.get(obj, {}).pop(t, None)
            self.confidence.get(t, {}).pop(obj, None)
        self._project.mark_dirty()

    def was_propagated(self, t: int) -> bool:
        """Frame t holds the result of an earlier propagation (it has confidences)."""
        return bool(self.confidence.get(t))

    # ------------------------------------------------------------------ changes
    def record_edit(self, t: int, obj: int, ids: np.ndarray, interaction: Interaction) -> None:
        """Frame t's new ids after the user's edit of ``obj``: store them, make t a keyframe with its role,
        log the edit, and mark the object sure there."""
        roles = self._project.keyframes.setdefault(obj, {})
        bases = self._project.prompt_bases.setdefault(obj, {})
        index = len(self._project.interactions)
        if roles.get(t) == ABSENT:          # drawn on a frame marked absent: the object is there after all
            del roles[t]
        if interaction.kind == "mask":      # a whole mask: later edits replay from it
            bases[t] = (index + 1, encode_id_png((ids == obj).astype(np.uint8)))
        elif t not in roles:                # the first edit: keep what it starts from
            bases[t] = (index, encode_id_png((self.masks.get(t) == obj).astype(np.uint8)))
        if interaction.kind not in RETRIEVAL_KINDS:
            roles[t] = FULL          # painted or drawn by hand: the whole mask is meant
        elif t not in roles:
            was_propagated = self.confidence.get(t, {}).get(obj, 1.0) < 1.0 and (self.masks.get(t) == obj).any()
            roles[t] = CORRECTED if was_propagated else FULL
        self.masks.set(t, ids)
        self._project.log(interaction)
        self.confidence.setdefault(t, {})[obj] = 1.0

    def record_propagated(self, t: int, ids: np.ndarray, confidence: dict[int, float]) -> None:
        self.masks.set(t, ids)
        self.confidence.setdefault(t, {}).update(confidence)

    def set_keyframe(self, t: int, obj: int, on: bool) -> None:
        """Mark frame t a keyframe of the object as it is (MARKED; an existing keyframe keeps its role), or
        unmark it: its mask stays, a later propagation may rewrite it, its prompts are no longer listed."""
        roles = self._project.keyframes.setdefault(obj, {})
        if on and t not in roles:
            roles[t] = MARKED
            self._project.prompt_bases.setdefault(obj, {})[t] = (
                len(self._project.interactions), encode_id_png((self.masks.get(t) == obj).astype(np.uint8)))
            self.confidence.setdefault(t, {})[obj] = 1.0
        elif not on and t in roles:
            del roles[t]
            self._project.prompt_bases.get(obj, {}).pop(t, None)
            self.confidence.get(t, {}).pop(obj, None)
        self._project.mark_dirty()

    def clear(self, obj: int, frames, absent: bool = False) -> None:
        """Erase the object on `frames`; they stop being its keyframes, or (absent) become ABSENT ones."""
        roles = self._project.keyframes.setdefault(obj, {})
        for t in frames:
            if self.masks.has(t) and obj in self.masks.ids(t):
                ids = self.masks.get(t)
                ids[ids == obj] = 0
                self.masks.set(t, ids)
            self._project.prompt_bases.get(obj, {}).pop(t, None)
            if absent:
                roles[t] = ABSENT
                self._project.prompt_bases.setdefault(obj, {})[t] = (
                    len(self._project.interactions), encode_id_png(np.zeros(self.masks.get(t).shape, np.uint8)))
                self.confidence.setdefault(t, {})[obj] = 1.0
            else:
                roles.pop(t, None)
                self.confidence.get(t, {}).pop(obj, None)
        self._project.mark_dirty()

    def remove_object(self, obj: int) -> None:
        """Forget the object's pixels, keyframes and confidences (the interaction log is kept)."""
        self._project.remove_object(obj)
        for conf in self.confidence.values():
            conf.pop(obj, None)

    # ------------------------------------------------------------------ undo
    def snapshot(self, frames=None) -> "Snapshot":
        """State of ``frames`` (iterable of indices; None = every frame with a mask) for restore()."""
        frames = self.masks.frames() if frames is None else sorted({int(t) for t in frames})
        return Snapshot(
            masks={t: (encode_id_png(self.masks.get(t)) if self.masks.has(t) else None) for t in frames},
            objects={o: copy.copy(info) for o, info in self._project.objects.items()},
            next_object_id=self._project.next_object_id,
            keyframes={o: dict(roles) for o, roles in self._project.keyframes.items()},
            interactions=list(self._project.interactions),
            confidence={t: dict(self.confidence[t]) for t in frames if t in self.confidence},
            frames=list(frames),
            bases={o: {t: b[t] for t in frames if t in b} for o, b in self._project.prompt_bases.items()})

    def restore(self, snap: "Snapshot") -> None:
        """Put back the state captured by snapshot(): those frames' masks and confidences, objects,
        keyframes with their roles, log."""
        p = self._project
        for t, data in snap.masks.items():
            if data is None:
                self.masks.delete(t)
            else:
                self.masks.set(t, decode_id_png(data, f"snapshot frame {t}"))
            if t in snap.confidence:
                self.confidence[t] = dict(snap.confidence[t])
            else:
                self.confidence.pop(t, None)
        p.objects.clear()
        p.objects.update({o: copy.copy(i) for o, i in snap.objects.items()})
        p.next_object_id = max(p.next_object_id, snap.next_object_id)
        p.keyframes = {o: dict(roles) for o, roles in snap.keyframes.items()}
        p.interactions[:] = list(snap.interactions)
        for o in set(p.prompt_bases) | set(snap.bases):
            mine = p.prompt_bases.setdefault(o, {})
            for t in snap.frames:
                if t in snap.bases.get(o, {}):
                    mine[t] = snap.bases[o][t]
                else:
                    mine.pop(t, None)
        for o in set(p.prompt_bases) - set(p.objects):
            del p.prompt_bases[o]
        p.mark_dirty()

    # ------------------------------------------------------------------ confidence file
    def write_confidence(self, path: Path) -> None:
        doc = {"frames": {str(t): {str(o): v for o, v in c.items()} for t, c in sorted(self.confidence.items())}}
        try:
            atomic_write_json(path, doc)
        except OSError:
            pass  # hints only; the project itself is saved


def read_confidence(path: Path) -> dict[int, dict[int, float]]:
    """The confidence hints written by `Annotation.write_confidence`; {} when absent or unreadable."""
    try:
        doc = json.loads(Path(path).read_text())
        return {int(t): {int(o): float(v) for o, v in c.items()} for t, c in doc["frames"].items()}
    except Exception:  # absent or stale: confidences are only hints
        return {}


@dataclass
class Snapshot:
    """Undo state of some frames: their masks (PNG bytes, None = no mask) and prompt bases ({obj: {t:
    (log index, PNG)}}), plus objects, keyframes with their roles ({obj: {t: role}}), interaction log and
    confidences (all small).

    `to_bytes` stores it as data, never as code: a zip of snapshot.json and masks/NNNNN.png;
    `from_bytes` validates every field and raises ProjectError naming `where` for anything else."""
    masks: dict
    objects: dict
    next_object_id: int
    keyframes: dict
    interactions: list
    confidence: dict
    frames: list
    bases: dict

    def to_bytes(self) -> bytes:
        doc = {
            "format": SNAPSHOT_FORMAT,
            "frames": [int(t) for t in self.frames],
            "masks": {str(t): data is not None for t, data in self.masks.items()},
            "objects": [{**asdict(o), "color": list(o.color)} for o in self.objects.values()],
            "next_object_id": int(self.next_object_id),
            "keyframes": {str(o): {str(t): role for t, role in sorted(r.items())} for o, r in self.keyframes.items()},
            "interactions": [{**asdict(i), "points": [list(p) for p in i.points]} for i in self.interactions],
            "confidence": {str(t): {str(o): float(v) for o, v in c.items()} for t, c in self.confidence.items()},
            "bases": {str(o): {str(t): since for t, (since, _) in b.items()} for o, b in self.bases.items()},
        }
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            z.writestr("snapshot.json", json.dumps(doc))
            for t, data in self.masks.items():
                if data is not None:
                    z.writestr(f"masks/{int(t):05d}.png", data)
            for o, b in self.bases.items():
                for t, (_, data) in b.items():
                    z.writestr(f"bases/{int(o)}/{int(t):05d}.png", data)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, where) -> "Snapshot":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                doc = json.loads(z.read("snapshot.json"))
                if not isinstance(doc, dict) or doc.get("format") not in (SNAPSHOT_FORMAT, _SNAPSHOT_2):
                    raise ValueError(f"not a {SNAPSHOT_FORMAT} file")
                if doc["format"] == _SNAPSHOT_2:   # an autosave of the version before: no bases, nothing deleted
                    doc["bases"] = {}
                    for i in doc["interactions"]:
                        i["deleted"] = False
                masks = {}
                for key, present in dict(doc["masks"]).items():
                    t = _index(key)
                    masks[t] = z.read(f"masks/{t:05d}.png") if _flag(present) else None
                    if masks[t] is not None:
                        decode_id_png(masks[t], f"{where}: frame {t}")
                bases = {}
                for o, b in dict(doc["bases"]).items():
                    for t, since in dict(b).items():
                        data = z.read(f"bases/{_index(o)}/{_index(t):05d}.png")
                        decode_id_png(data, f"{where}: prompt base of object {o} on frame {t}")
                        bases.setdefault(_index(o), {})[_index(t)] = (_index(since), data)
            objects = {}
            for o in doc["objects"]:
                info = ObjectInfo(_index(o["id"]), _text(o["name"]), _text(o["category"]),
                                  tuple(_byte(c) for c in o["color"]), _flag(o["hidden"]), _flag(o["locked"]))
                if len(info.color) != 3:
                    raise ValueError(f"object {info.id}: colour {o['color']!r}")
                objects[info.id] = info
            interactions = [Interaction(_text(i["kind"]), _index(i["frame"]), _index(i["object_id"]),
                                        _flag(i["positive"]), [(_num(x), _num(y)) for x, y in i["points"]],
                                        None if i["radius"] is None else _num(i["radius"]), _num(i["time"]),
                                        _flag(i["deleted"]))
                            for i in doc["interactions"]]
            return cls(
                masks=masks, objects=objects, next_object_id=_index(doc["next_object_id"]),
                keyframes={_index(o): {_index(t): _role(r) for t, r in dict(roles).items()}
                           for o, roles in dict(doc["keyframes"]).items()},
                interactions=interactions,
                confidence={_index(t): {_index(o): _num(v) for o, v in dict(c).items()}
                            for t, c in dict(doc["confidence"]).items()},
                frames=[_index(t) for t in doc["frames"]], bases=bases)
        except (zipfile.BadZipFile, KeyError, ValueError, TypeError, AttributeError, RecursionError,
                EngineError) as e:
            raise ProjectError(where, f"not a readable snapshot ({type(e).__name__}: {e})") from None


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


def _role(v) -> str:
    if v not in KEYFRAME_ROLES:
        raise ValueError(f"expected a keyframe role ({', '.join(KEYFRAME_ROLES)}), got {v!r}")
    return v
