"""The project: a folder with `project.json` and `masks/NNNNN.png` (indexed VOC-palette PNGs, working size).

Saving writes the dirty mask PNGs first, then project.json, then deletes the files of removed masks; every
file is written atomically. A crash mid-save therefore leaves the previous project.json, which always loads;
at worst some mask files are already the newer ones (each file itself is whole).
The video is stored relative to the project folder (so a folder moved with its video still loads); when it
lies outside the folder its absolute path is kept too ("video_absolute"), for a project folder moved alone.
"""

import json
import os
import shutil
import threading
from time import time as now
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from engine.atomic import atomic_write_bytes, atomic_write_json
from engine.errors import EngineError, ProjectError
from engine.palette import PALETTE, decode_id_png, encode_id_png
from engine.video import VideoSource, open_video

SCHEMA_VERSION = 2  # 2: keyframes carry their role; 1 (kept readable): lists, corrected ones in settings
PROJECT_FILE = "project.json"
MASKS_DIR = "masks"
INTERACTION_KINDS = ("click", "scribble", "brush", "eraser", "mask", "polygon")
MAX_OBJECT_ID = 255
FULL, CORRECTED = "full", "corrected"  # keyframe roles, see engine.annotation
KEYFRAME_ROLES = (FULL, CORRECTED)
SAMPLE_PROJECT = Path(__file__).resolve().parents[1] / "sample_projects" / "bigbuckbunny"


@dataclass
class ObjectInfo:
    id: int
    name: str
    category: str = "object"
    color: tuple[int, int, int] = (255, 0, 0)
    hidden: bool = False
    locked: bool = False


@dataclass
class Interaction:
    """One user action. points: [(x, y)] in working-size pixel coordinates; time: Unix epoch seconds."""
    kind: str
    frame: int
    object_id: int
    positive: bool = True
    points: list[tuple[float, float]] = field(default_factory=list)
    radius: float | None = None
    time: float = field(default_factory=now)


def mask_filename(t: int) -> str:
    return f"{t:05d}.png"


class MaskStore:
    """Per-frame id masks, (H, W) uint8 at working size, kept as indexed-PNG bytes (the bytes saved on disk).

    Thread-safe: a background propagation may set masks while the GUI reads them.
    """

    def __init__(self, size: tuple[int, int], num_frames: int):
        self.size = size  # (width, height)
        self.num_frames = num_frames
        self._png: dict[int, bytes] = {}
        self._dirty: set[int] = set()
        self._removed: set[int] = set()
        self._lock = threading.Lock()

    def get(self, t: int) -> np.ndarray:
        """(H, W) uint8 ids of frame t; zeros if no mask was ever set."""
        self._check(t)
        data = self._png.get(t)
        if data is None:
            return np.zeros((self.size[1], self.size[0]), dtype=np.uint8)
        return decode_id_png(data, mask_filename(t))

    def set(self, t: int, ids: np.ndarray) -> None:
        self._check(t)
        if ids.shape != (self.size[1], self.size[0]) or ids.dtype != np.uint8:
            raise ValueError(f"mask for frame {t} must be {(self.size[1], self.size[0])} uint8, "
                             f"got {ids.shape} {ids.dtype}")
        data = encode_id_png(ids)
        with self._lock:
            self._png[t] = data
            self._dirty.add(t)
            self._removed.discard(t)

    def delete(self, t: int) -> None:
        """Forget frame t's mask (its file is deleted on the next save)."""
        with self._lock:
            if self._png.pop(t, None) is not None:
                self._dirty.discard(t)
                self._removed.add(t)

    def has(self, t: int) -> bool:
        return t in self._png

    def frames(self) -> list[int]:
        with self._lock:
            return sorted(self._png)

    @property
    def dirty(self) -> bool:
        return bool(self._dirty or self._removed)

    def _check(self, t: int) -> None:
        if not 0 <= t < self.num_frames:
            raise IndexError(f"frame {t} out of range 0..{self.num_frames - 1}")

    def _load_folder(self, folder: Path) -> None:
        """Keep the bytes of every masks/NNNNN.png (decoded only when asked for); checks names and sizes."""
        if not folder.is_dir():
            return
        for p in folder.iterdir():
            if not (p.suffix == ".png" and p.stem.isdigit()):
                continue  # e.g. a temporary file left by a killed save
            t = int(p.stem)
            try:
                data = p.read_bytes()
            except OSError as e:
                raise ProjectError(p, f"cannot read mask file ({e.strerror or e})") from None
            if t >= self.num_frames:
                raise ProjectError(p, f"mask for frame {t} but the video has {self.num_frames} frames")
            if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24:
                raise ProjectError(p, "not a PNG file")
            size = (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"))
            if size != self.size:
                raise ProjectError(p, f"mask is {size[0]}x{size[1]}, expected the working size "
                                      f"{self.size[0]}x{self.size[1]}")
            self._png[t] = data

    def _write(self, folder: Path, everything: bool = False) -> None:
        """Write dirty (or all) masks into folder/masks; files of removed masks are deleted by `_prune`."""
        with self._lock:
            todo = {t: self._png[t] for t in (self._png if everything else self._dirty)}
        for t, data in todo.items():
            atomic_write_bytes(folder / MASKS_DIR / mask_filename(t), data)
        with self._lock:  # a mask set again while we wrote stays dirty
            self._dirty -= {t for t, data in todo.items() if self._png.get(t) is data}

    def _prune(self, folder: Path) -> None:
        with self._lock:
            removed, self._removed = self._removed, set()
        for t in removed:
            (folder / MASKS_DIR / mask_filename(t)).unlink(missing_ok=True)


class Project:
    """A video, its objects, keyframes, interaction log and masks. Use `create`, `load` or `open_sample_copy`."""

    def __init__(self, folder: Path, video: VideoSource, video_ref: str):
        self.folder = folder
        self.video = video
        self.video_ref = video_ref  # "video" as stored in project.json
        self.objects: dict[int, ObjectInfo] = {}
        self.next_object_id = 1
        self.keyframes: dict[int, dict[int, str]] = {}  # {object id: {frame: FULL or CORRECTED}}
        self.interactions: list[Interaction] = []
        self.settings: dict = {}
        self.masks = MaskStore(video.working_size, len(video))
        self._meta_dirty = False

    # ---- creation and loading

    @classmethod
    def create(cls, folder: str | Path, video_path: str | Path, short_side: int | None = 480) -> "Project":
        """Make a new project in a folder holding no project yet (it may hold the video); saved at once."""
        folder = Path(folder).absolute()
        _check_free(folder)
        video = open_video(video_path, short_side)  # a bad video fails before anything is written
        project = cls(folder, video, _video_ref(Path(video_path).absolute(), folder))
        project.save()
        return project

    @classmethod
    def load(cls, folder: str | Path) -> "Project":
        """Open a project folder, validating project.json and re-opening its video."""
        folder = Path(folder).absolute()
        pj = folder / PROJECT_FILE
        if not folder.is_dir():
            raise ProjectError(folder, "no such project folder")
        if not pj.is_file():
            raise ProjectError(pj, "missing: this folder is not a project")
        try:
            doc = json.loads(pj.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise ProjectError(pj, f"cannot read ({e})") from None
        except json.JSONDecodeError as e:
            raise ProjectError(pj, f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
        _validate(doc, pj)

        video_path = _find_video(doc, folder, pj)
        try:
            video = open_video(video_path, doc["short_side"])
        except EngineError as e:
            raise ProjectError(pj, f"cannot open the project's video: {e}") from None
        for key, have in (("num_frames", len(video)), ("native_size", list(video.native_size)),
                          ("working_size", list(video.working_size))):
            if doc[key] != have:
                raise ProjectError(pj, f"{key} is {doc[key]} but the video {video_path} has {have}; "
                                       "was the video replaced?")

        project = cls(folder, video, _video_ref(video_path.absolute(), folder))
        for o in doc["objects"]:
            project.objects[o["id"]] = ObjectInfo(o["id"], o["name"], o["category"], tuple(o["color"]),
                                                  o["hidden"], o["locked"])
        project.next_object_id = doc["next_object_id"]
        project.keyframes = _keyframes_from_json(doc)
        project.interactions = [Interaction(i["kind"], i["frame"], i["object_id"], i["positive"],
                                            [tuple(p) for p in i["points"]], i["radius"], i["time"])
                                for i in doc["interactions"]]
        project.settings = {k: v for k, v in doc.get("settings", {}).items()
                            if not (k == _V1_CORRECTED and doc["schema_version"] < ROLES_SINCE)}
        project.masks._load_folder(folder / MASKS_DIR)
        return project

    # ---- saving

    @property
    def dirty(self) -> bool:
        return self._meta_dirty or self.masks.dirty

    def mark_dirty(self) -> None:
        """Call after changing keyframes, interactions or settings directly."""
        self._meta_dirty = True

    def save(self) -> None:
        """Atomic save: dirty masks, then project.json, then delete removed masks' files."""
        self.masks._write(self.folder)
        atomic_write_json(self.folder / PROJECT_FILE, self.to_json())
        self.masks._prune(self.folder)
        self._meta_dirty = False

    def save_as(self, new_folder: str | Path) -> None:
        """Write the whole project to a folder holding no project yet, which becomes this project's folder."""
        new_folder = Path(new_folder).absolute()
        _check_free(new_folder)
        self.masks._write(new_folder, everything=True)
        self.video_ref = _video_ref(self.video.path.absolute(), new_folder)
        self.folder = new_folder
        atomic_write_json(new_folder / PROJECT_FILE, self.to_json())
        self.masks._prune(new_folder)
        self._meta_dirty = False

    def to_json(self) -> dict:
        doc = {
            "schema_version": SCHEMA_VERSION,
            "video": self.video_ref,
            "short_side": self.video.short_side,
            "working_size": list(self.video.working_size),
            "native_size": list(self.video.native_size),
            "num_frames": len(self.video),
            "objects": [{**asdict(o), "color": list(o.color)} for o in self.objects.values()],
            "next_object_id": self.next_object_id,
            "keyframes": {str(k): {role: sorted(t for t, r in v.items() if r == role) for role in KEYFRAME_ROLES}
                          for k, v in sorted(self.keyframes.items())},
            "interactions": [{**asdict(i), "points": [list(p) for p in i.points]} for i in self.interactions],
            "settings": self.settings,
        }
        if self.video_ref.startswith("../"):  # the video lies outside the folder: keep a fallback
            doc["video_absolute"] = str(self.video.path.absolute())
        return doc

    # ---- objects

    def add_object(self, name: str | None = None, category: str = "object",
                   color: tuple[int, int, int] | None = None) -> ObjectInfo:
        """A new object with the next unused id (ids are never reused); colour defaults to PALETTE[id]."""
        oid = self.next_object_id
        if oid > MAX_OBJECT_ID:
            raise ProjectError(self.folder, f"no object id left: masks are 8-bit, ids go up to {MAX_OBJECT_ID}")
        color = tuple(int(c) for c in PALETTE[oid]) if color is None else _check_color(color)
        obj = ObjectInfo(oid, name or f"object {oid}", category, color)
        self.objects[oid] = obj
        self.next_object_id = oid + 1
        self._meta_dirty = True
        return obj

    def update_object(self, oid: int, *, name: str | None = None, category: str | None = None,
                      color: tuple[int, int, int] | None = None, hidden: bool | None = None,
                      locked: bool | None = None) -> ObjectInfo:
        """Rename, recolour, recategorise, hide or lock; arguments left as None are unchanged."""
        obj = self._object(oid)
        if name is not None:
            obj.name = name
        if category is not None:
            obj.category = category
        if color is not None:
            obj.color = _check_color(color)
        if hidden is not None:
            obj.hidden = bool(hidden)
        if locked is not None:
            obj.locked = bool(locked)
        self._meta_dirty = True
        return obj

    def remove_object(self, oid: int) -> None:
        """Delete the object, its keyframes and its pixels in every mask (the interaction log is kept)."""
        self._object(oid)
        for t in self.masks.frames():
            ids = self.masks.get(t)
            hit = ids == oid
            if hit.any():
                ids[hit] = 0
                self.masks.set(t, ids)
        del self.objects[oid]
        self.keyframes.pop(oid, None)
        self._meta_dirty = True

    def _object(self, oid: int) -> ObjectInfo:
        if oid not in self.objects:
            raise KeyError(f"no object with id {oid}")
        return self.objects[oid]

    # ---- keyframes and interactions

    def add_keyframe(self, oid: int, t: int, role: str = FULL) -> None:
        if role not in KEYFRAME_ROLES:
            raise ValueError(f"unknown keyframe role {role!r}; expected one of {KEYFRAME_ROLES}")
        self.keyframes.setdefault(oid, {})[int(t)] = role
        self._meta_dirty = True

    def log(self, interaction: Interaction) -> None:
        """Append to the interaction log."""
        if interaction.kind not in INTERACTION_KINDS:
            raise ValueError(f"unknown interaction kind {interaction.kind!r}; expected one of {INTERACTION_KINDS}")
        self.interactions.append(interaction)
        self._meta_dirty = True


def open_sample_copy(dest_folder: str | Path) -> Project:
    """Copy the bundled sample project (video included) to an absent or empty folder and open the copy."""
    dest = Path(dest_folder).absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ProjectError(dest, "exists and is not an empty folder; choose a new folder for the sample copy")
    if not (SAMPLE_PROJECT / PROJECT_FILE).is_file():
        raise ProjectError(SAMPLE_PROJECT, "the bundled sample project is missing from this installation")
    shutil.copytree(SAMPLE_PROJECT, dest, dirs_exist_ok=True)
    return Project.load(dest)


def _check_free(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise ProjectError(folder, "is a file, not a folder")
    for name in (PROJECT_FILE, MASKS_DIR):
        if (folder / name).exists():
            raise ProjectError(folder / name, "already exists: this folder holds a project; choose another folder")


def _video_ref(video: Path, folder: Path) -> str:
    """The video path relative to the project folder when one exists (same drive), else absolute."""
    try:
        return Path(os.path.relpath(video, folder)).as_posix()
    except ValueError:
        return str(video)


def _find_video(doc: dict, folder: Path, pj: Path) -> Path:
    """Where the video is: the stored path (relative to the folder), else the stored absolute path."""
    candidates = [folder / doc["video"]]
    if isinstance(doc.get("video_absolute"), str):
        candidates.append(Path(doc["video_absolute"]))
    for c in candidates:
        if c.exists():
            return c
    looked = " and ".join(str(c.resolve()) for c in candidates)
    raise ProjectError(pj, f"video {doc['video']!r} not found; looked at {looked}")


def _check_color(color) -> tuple[int, int, int]:
    c = tuple(int(v) for v in color)
    if len(c) != 3 or not all(0 <= v <= 255 for v in c):
        raise ValueError(f"colour must be (r, g, b) with values 0..255, got {color!r}")
    return c


# ---- schema validation: every problem is reported as "<where>: <what>", naming project.json

def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_size(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(_is_int(x) and x > 0 for x in v)


_TOP = {  # key: (check, expected)
    "video": (lambda v: isinstance(v, str) and v != "", "a non-empty path string"),
    "short_side": (lambda v: v is None or (_is_int(v) and v > 0), "a positive int or null"),
    "working_size": (_is_size, "[width, height] positive ints"),
    "native_size": (_is_size, "[width, height] positive ints"),
    "num_frames": (lambda v: _is_int(v) and v > 0, "a positive int"),
    "objects": (lambda v: isinstance(v, list), "a list"),
    "next_object_id": (lambda v: _is_int(v) and v >= 1, "an int >= 1"),
    "keyframes": (lambda v: isinstance(v, dict), "an object {object_id: {role: [frames]}}"),
    "interactions": (lambda v: isinstance(v, list), "a list"),
}
_OBJECT = {
    "id": (lambda v: _is_int(v) and 1 <= v <= MAX_OBJECT_ID, f"an int 1..{MAX_OBJECT_ID}"),
    "name": (lambda v: isinstance(v, str), "a string"),
    "category": (lambda v: isinstance(v, str), "a string"),
    "color": (lambda v: isinstance(v, list) and len(v) == 3 and all(_is_int(c) and 0 <= c <= 255 for c in v),
              "[r, g, b] ints 0..255"),
    "hidden": (lambda v: isinstance(v, bool), "true or false"),
    "locked": (lambda v: isinstance(v, bool), "true or false"),
}
_INTERACTION = {
    "kind": (lambda v: v in INTERACTION_KINDS, f"one of {', '.join(INTERACTION_KINDS)}"),
    "frame": (lambda v: _is_int(v) and v >= 0, "a frame index"),
    "object_id": (_is_int, "an int"),
    "positive": (lambda v: isinstance(v, bool), "true or false"),
    "points": (lambda v: isinstance(v, list) and all(isinstance(p, list) and len(p) == 2
                                                     and all(_is_num(x) for x in p) for p in v),
               "a list of [x, y] numbers"),
    "radius": (lambda v: v is None or _is_num(v), "a number or null"),
    "time": (_is_num, "epoch seconds"),
}


def _check_fields(obj, spec: dict, where: str, pj: Path) -> None:
    if not isinstance(obj, dict):
        raise ProjectError(pj, f"{where.rstrip('.')}: expected a JSON object, got {type(obj).__name__}")
    for key, (ok, expected) in spec.items():
        if key not in obj:
            raise ProjectError(pj, f"{where.rstrip('.') or 'top level'}: missing key {key!r}")
        if not ok(obj[key]):
            raise ProjectError(pj, f"{where}{key}: expected {expected}, got {obj[key]!r}")


def _validate(doc, pj: Path) -> None:
    if not isinstance(doc, dict):
        raise ProjectError(pj, "expected a JSON object at the top level")
    version = doc.get("schema_version")
    if not _is_int(version):
        raise ProjectError(pj, f"missing or invalid schema_version ({version!r}); not a project file?")
    if version > SCHEMA_VERSION:
        raise ProjectError(pj, f"schema_version {version} is newer than this app reads ({SCHEMA_VERSION}); "
                               "update the app")
    if version < 1:
        raise ProjectError(pj, f"unknown schema_version {version}")
    _check_fields(doc, _TOP, "", pj)
    if "settings" in doc and not isinstance(doc["settings"], dict):
        raise ProjectError(pj, f"settings: expected a JSON object, got {doc['settings']!r}")
    n = doc["num_frames"]
    ids = set()
    for k, o in enumerate(doc["objects"]):
        _check_fields(o, _OBJECT, f"objects[{k}].", pj)
        if o["id"] in ids:
            raise ProjectError(pj, f"objects[{k}].id: id {o['id']} used twice")
        ids.add(o["id"])
    if ids and doc["next_object_id"] <= max(ids):
        raise ProjectError(pj, f"next_object_id: {doc['next_object_id']} must be above every object id")
    _validate_keyframes(doc, ids, pj)
    for k, i in enumerate(doc["interactions"]):
        _check_fields(i, _INTERACTION, f"interactions[{k}].", pj)
        if i["frame"] >= n:
            raise ProjectError(pj, f"interactions[{k}].frame: {i['frame']} is past the last frame {n - 1}")


# ---- keyframes: schema 2 stores {object id: {"full": [frames], "corrected": [frames]}}; schema 1 stored
# {object id: [frames]} with the corrected ones in settings["corrected_keyframes"] {object id: [frames]}

_V1_CORRECTED = "corrected_keyframes"
ROLES_SINCE = 2  # the first schema whose keyframes carry their role


def _frames_ok(frames, n: int) -> bool:
    return isinstance(frames, list) and all(_is_int(t) and 0 <= t < n for t in frames)


def _validate_keyframes(doc: dict, ids: set[int], pj: Path) -> None:
    n = doc["num_frames"]
    tables = [("keyframes", doc["keyframes"])]
    if doc["schema_version"] < ROLES_SINCE and _V1_CORRECTED in doc.get("settings", {}):
        tables.append((f"settings.{_V1_CORRECTED}", doc["settings"][_V1_CORRECTED]))
        if not isinstance(tables[-1][1], dict):
            raise ProjectError(pj, f"{tables[-1][0]}: expected an object {{object_id: [frames]}}, got {tables[-1][1]!r}")
    for name, table in tables:
        for key, value in table.items():
            if not key.isdigit() or int(key) not in ids:
                raise ProjectError(pj, f"{name}: key {key!r} is not the id of an object")
            if name == "keyframes" and doc["schema_version"] >= ROLES_SINCE:
                if not isinstance(value, dict) or set(value) - set(KEYFRAME_ROLES):
                    raise ProjectError(pj, f"{name}.{key}: expected an object with the keys "
                                           f"{' and '.join(KEYFRAME_ROLES)}, got {value!r}")
                lists = list(value.items())
            else:
                lists = [("", value)]
            for role, frames in lists:
                if not _frames_ok(frames, n):
                    where = f"{name}.{key}" + (f".{role}" if role else "")
                    raise ProjectError(pj, f"{where}: expected a list of frame indices 0..{n - 1}, got {frames!r}")


def _keyframes_from_json(doc: dict) -> dict[int, dict[int, str]]:
    """{object id: {frame: role}} from a validated project.json of either schema."""
    if doc["schema_version"] >= ROLES_SINCE:
        return {int(k): {t: role for role, frames in v.items() for t in frames} for k, v in doc["keyframes"].items()}
    corrected = doc.get("settings", {}).get(_V1_CORRECTED, {})
    return {int(k): {t: CORRECTED if t in corrected.get(k, ()) else FULL for t in v}
            for k, v in doc["keyframes"].items()}
