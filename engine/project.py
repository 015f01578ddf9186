"""The project: a folder with `project.json` and `masks/` (indexed VOC-palette PNGs at working size, one per frame).

A save commits whole, the way a database commits:
- every mask file is named after its frame and its content, `masks/00007.<16 hex digits of blake2b>.png`, so a save
  never changes a file that the committed project.json lists: a changed frame gets a new file;
- a save writes the new mask files (each fsynced, then the folder), then project.json, which lists every mask file
  with the object ids it holds ("mask_files"). The atomic rename of project.json is the commit;
- after the commit the files it no longer lists are deleted; whatever a killed save left (unlisted mask files,
  `.NAME.*.tmp`) is deleted the next time the project is opened.
A kill at any instant therefore leaves exactly one complete save: the last committed one, or the one being written
if its rename happened. A save writes only the changed frames' files and project.json. A failed write (a full disk)
deletes the files that save wrote and names the file; the last save stays as it was. Saves and the cleanup on open
hold an advisory lock on the folder (POSIX), so a second process opening the project never deletes the files of a
save in progress.

Opening checks everything before anything is used or changed: project.json field by field, every listed mask
file (its content against the checksum in its name, 8-bit palette PNG, working size). The rule for bad data is one:
it is refused with a ProjectError naming the file and the problem, and nothing is changed. That includes references
to objects project.json never issued: a mask pixel id or keyframe of no listed object, an interaction for an id
at or above next_object_id (interactions of removed objects stay in the log). The one exception is a preference, not
data: a settings.refiner this installation lacks opens with a warning (Project.warnings, and the log) and no refiner.
Schema 1 projects (masks/NNNNN.png, no listing) are checked by decoding every mask, and their first save writes
schema 2.
The video is stored relative to the project folder (so a folder moved with its video still loads); when it
lies outside the folder its absolute path is kept too ("video_absolute"), for a project folder moved alone.
"""

import base64
import binascii
import hashlib
import json
import logging
import os
import re
import shutil
import threading
from contextlib import contextmanager
from importlib.resources import files
from time import time as now
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from engine.atomic import atomic_write_bytes, fsync_folder, why
from engine.errors import EngineError, ProjectError, StorageError
from engine.palette import PALETTE, decode_id_png, encode_id_png, present_ids
from engine.video import VideoSource, open_video

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one process per project
    fcntl = None

SCHEMA_VERSION = 2  # 2: keyframes carry their role, mask files are listed; 1 (kept readable): neither
PROJECT_FILE = "project.json"
MASKS_DIR = "masks"
INTERACTION_KINDS = ("click", "scribble", "brush", "eraser", "mask", "polygon")
MAX_OBJECT_ID = 255
SAMPLE_PROJECT = Path(files("engine.sample_projects") / "bigbuckbunny")  # sample_projects/ in a checkout
MASK_FILE = re.compile(r"^(\d{5,})\.([0-9a-f]{16})\.png$")
LEGACY_MASK_FILE = re.compile(r"^(\d+)\.png$")  # schema 1
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

log = logging.getLogger(__name__)
FULL, CORRECTED = "full", "corrected"  # keyframe roles, see engine.annotation
MARKED, ABSENT = "marked", "absent"    # set by the user: "this mask is right" / "the object is not here"
KEYFRAME_ROLES = (FULL, CORRECTED, MARKED, ABSENT)
ALWAYS_WRITTEN_ROLES = (FULL, CORRECTED)  # the others only when used, so such files still open in older apps


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
    deleted: bool = False   # a prompt the user deleted: kept in the log so prompt ids (log indices) stay put


def mask_filename(t: int, data: bytes) -> str:
    """The file name of frame t's mask with these PNG bytes: frame number and content checksum."""
    return f"{t:05d}.{hashlib.blake2b(data, digest_size=8).hexdigest()}.png"


def _leftover(name: str) -> bool:
    """A name our saves write: a mask file (either schema) or a temporary file of an atomic write."""
    return bool(MASK_FILE.match(name) or LEGACY_MASK_FILE.match(name)
                or (name.startswith(".") and name.endswith(".tmp")))


class MaskStore:
    """Per-frame id masks, (H, W) uint8 at working size, kept as indexed-PNG bytes (the bytes saved on disk).

    Each mask also keeps its file name and the object ids it holds (both listed in project.json), and the name
    its frame has in the committed save, so a save knows which files to write and which to delete.
    Thread-safe: a background propagation may set masks while the GUI reads them.
    """

    def __init__(self, size: tuple[int, int], num_frames: int):
        self.size = size  # (width, height)
        self.num_frames = num_frames
        self.folder: Path | None = None  # the masks folder the files are in (named in errors)
        self._png: dict[int, bytes] = {}
        self._file: dict[int, str] = {}
        self._ids: dict[int, tuple[int, ...]] = {}
        self._committed: dict[int, str] = {}  # frame -> file name in the project.json on disk
        self._dirty: set[int] = set()  # frames changed by set/delete since the last save
        self._lock = threading.Lock()

    def get(self, t: int) -> np.ndarray:
        """(H, W) uint8 ids of frame t; zeros if no mask was ever set."""
        self._check(t)
        with self._lock:
            data, name = self._png.get(t), self._file.get(t)
        if data is None:
            return np.zeros((self.size[1], self.size[0]), dtype=np.uint8)
        return decode_id_png(data, self.folder / name if self.folder else name)

    def set(self, t: int, ids: np.ndarray) -> None:
        self._check(t)
        if ids.shape != (self.size[1], self.size[0]) or ids.dtype != np.uint8:
            raise ValueError(f"mask for frame {t} must be {(self.size[1], self.size[0])} uint8, "
                             f"got {ids.shape} {ids.dtype}")
        data = encode_id_png(ids)
        present = tuple(int(i) for i in present_ids(ids) if i)
        with self._lock:
            self._put(t, data, present)
            self._dirty.add(t)

    def delete(self, t: int) -> None:
        """Forget frame t's mask (its file is deleted after the next save commits)."""
        with self._lock:
            if self._png.pop(t, None) is not None:
                del self._file[t], self._ids[t]
                self._dirty.add(t)

    def has(self, t: int) -> bool:
        return t in self._png

    def frames(self) -> list[int]:
        with self._lock:
            return sorted(self._png)

    def ids(self, t: int) -> tuple[int, ...]:
        """The object ids frame t's mask holds (known without decoding it)."""
        with self._lock:
            return self._ids.get(t, ())

    @property
    def dirty(self) -> bool:
        return bool(self._dirty)

    def _put(self, t: int, data: bytes, ids: tuple[int, ...]) -> None:
        self._png[t], self._file[t], self._ids[t] = data, mask_filename(t, data), ids

    def _check(self, t: int) -> None:
        if not 0 <= t < self.num_frames:
            raise IndexError(f"frame {t} out of range 0..{self.num_frames - 1}")

    # ---- loading: every file is read and checked up front

    def _load(self, folder: Path, listing: dict | None, pj: Path) -> None:
        """Read the masks project.json lists (schema 2) or every masks/NNNNN.png (schema 1, decoded for ids)."""
        self.folder = folder
        if folder.exists() and not folder.is_dir():
            raise ProjectError(folder, "is a file, but the project keeps its masks in a folder of that name")
        if listing is not None:
            for key, entry in listing.items():
                p = folder / entry["file"]
                data = self._read(p, listed_in=pj)
                if mask_filename(int(key), data) != entry["file"]:
                    raise ProjectError(p, "damaged: its content does not match the checksum in its name "
                                          "(the file was truncated or changed after it was saved)")
                self._png[int(key)], self._file[int(key)], self._ids[int(key)] = data, entry["file"], \
                    tuple(entry["ids"])
                self._committed[int(key)] = entry["file"]
            return
        if not folder.is_dir():
            return
        for p in sorted(folder.iterdir()):
            m = LEGACY_MASK_FILE.match(p.name)
            if not m:
                continue
            t = int(m.group(1))
            if t >= self.num_frames:
                raise ProjectError(p, f"mask for frame {t} but the video has {self.num_frames} frames")
            data = self._read(p)
            try:
                ids = decode_id_png(data, p)
            except EngineError as e:
                raise ProjectError(p, e.problem) from None
            self._put(t, data, tuple(int(i) for i in np.unique(ids) if i))
            self._committed[t] = p.name

    def _read(self, p: Path, listed_in: Path | None = None) -> bytes:
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise ProjectError(p, f"missing, but {listed_in.name if listed_in else 'the project'} lists it: "
                                  "the project folder is incomplete") from None
        except OSError as e:
            raise ProjectError(p, f"cannot read mask file ({e.strerror or e})") from None
        if data[:8] != _PNG_SIGNATURE or len(data) < 33 or data[12:16] != b"IHDR":
            raise ProjectError(p, "not a PNG file")
        size = (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"))
        if size != self.size:
            raise ProjectError(p, f"mask is {size[0]}x{size[1]}, expected the working size "
                                  f"{self.size[0]}x{self.size[1]}")
        if data[24] != 8:
            raise ProjectError(p, f"mask is a {data[24]}-bit PNG; id masks are 8-bit")
        return data

    def _leftovers(self) -> list[Path]:
        """Files in the masks folder that a save wrote but the committed project.json does not list."""
        if self.folder is None or not self.folder.is_dir():
            return []
        keep = set(self._committed.values())
        return [p for p in self.folder.iterdir() if _leftover(p.name) and p.name not in keep]

    # ---- saving (see the module doc)

    def _plan(self, everything: bool) -> "tuple[dict[int, tuple[str, tuple[int, ...]]], dict[str, bytes], set[int]]":
        """(listing {t: (file, ids)} of the state now, {file: bytes} to write, frames dirty now)."""
        with self._lock:
            listing = {t: (self._file[t], self._ids[t]) for t in sorted(self._png)}
            todo = {self._file[t]: self._png[t] for t in self._png
                    if everything or self._committed.get(t) != self._file[t]}
            return listing, todo, set(self._dirty)

    def _committed_as(self, listing: dict, dirty: "set[int]", prune: bool) -> None:
        """After a commit: forget the dirt that save covered; with `prune`, delete the files it unlisted."""
        new = {t: name for t, (name, _) in listing.items()}
        with self._lock:
            old, self._committed = self._committed, new
            self._dirty -= {t for t in dirty if self._file.get(t) == new.get(t)}
        if prune:
            for name in set(old.values()) - set(new.values()):
                try:
                    (self.folder / name).unlink()
                except OSError:
                    pass  # already gone, or a leftover for the next open to remove


class Project:
    """A video, its objects, keyframes, interaction log and masks. Use `create`, `load` or `open_sample_copy`."""

    def __init__(self, folder: Path, video: VideoSource, video_ref: str):
        self.folder = folder
        self.video = video
        self.video_ref = video_ref  # "video" as stored in project.json
        self.objects: dict[int, ObjectInfo] = {}
        self.next_object_id = 1
        self.keyframes: dict[int, dict[int, str]] = {}  # {object id: {frame: one of KEYFRAME_ROLES}}
        self.interactions: list[Interaction] = []
        # {object id: {keyframe: (log index, PNG of its 0/1 mask)}}: the object's mask on that frame before the
        # edits logged from that index on, which deleting a prompt replays (see engine.annotation)
        self.prompt_bases: dict[int, dict[int, tuple[int, bytes]]] = {}
        self.settings: dict = {}
        self.masks = MaskStore(video.working_size, len(video))
        self.masks.folder = folder / MASKS_DIR
        self.warnings: list[str] = []  # what opening repaired (see the module doc); one line each
        self._meta_dirty = False

    # ---- creation and loading

    @classmethod
    def create(cls, folder: str | Path, video_path: str | Path, short_side: int | None = 480) -> "Project":
        """Make a new project in a folder holding no project yet (it may hold the video); saved at once."""
        folder = Path(folder).absolute()
        _check_free(folder)
        video = open_video(video_path, short_side)  # a bad video fails before anything is written
        project = cls(folder, video, _video_ref(Path(video_path).absolute(), folder))
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(e.filename or folder, f"cannot create the project folder ({e.strerror or e})") from None
        project.save()
        return project

    @classmethod
    def load(cls, folder: str | Path) -> "Project":
        """Open a project folder: validate project.json and every mask, re-open the video, then delete what a
        killed save left behind."""
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
        except RecursionError:
            raise ProjectError(pj, "JSON nested too deeply to be a project file") from None
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
                                            [tuple(p) for p in i["points"]], i["radius"], i["time"],
                                            i.get("deleted", False))
                                for i in doc["interactions"]]
        project.prompt_bases = _prompt_bases_from_json(doc.get("prompt_bases", {}), project.video.working_size,
                                                        len(video), pj)
        project.settings = {k: v for k, v in dict(doc.get("settings", {})).items()
                            if not (k == _V1_CORRECTED and doc["schema_version"] < ROLES_SINCE)}
        project.masks._load(folder / MASKS_DIR, doc["mask_files"] if doc["schema_version"] >= 2 else None, pj)
        for t in project.masks.frames():
            unknown = sorted(set(project.masks.ids(t)) - set(project.objects))
            if unknown:
                raise ProjectError(project.masks.folder / project.masks._committed[t],
                                   f"frame {t} holds object id(s) {', '.join(map(str, unknown))}, which no object "
                                   f"in {pj} lists; add the object(s) there or restore the last good save")
        project._check_refiner(pj)
        project._remove_leftovers()
        return project

    def _check_refiner(self, pj: Path) -> None:
        """An unknown settings.refiner (e.g. from a newer installation) opens with a warning and no refiner."""
        name = self.settings.get("refiner")
        if name is None:
            return
        if isinstance(name, str):
            from engine.refiners import NO_REFINER, available_refiners

            if name.lower() in NO_REFINER or name in available_refiners():
                return
        self.settings.pop("refiner")
        self.warnings.append(f"{pj}: settings.refiner {name!r} is not a refiner of this installation; "
                             "opening without a refiner")
        log.warning(self.warnings[-1])

    def _remove_leftovers(self) -> None:
        """Delete what a killed save left: unlisted mask files and temporary files (skipped while a save runs)."""
        with _save_lock(self.folder, wait=False) as held:
            if not held:
                return
            extra = [p for p in self.folder.iterdir() if p.name.startswith(f".{PROJECT_FILE}.") and _leftover(p.name)]
            for p in self.masks._leftovers() + extra:
                try:
                    p.unlink()
                except OSError:
                    pass  # read-only folder: the leftovers are ignored anyway

    # ---- saving

    @property
    def dirty(self) -> bool:
        return self._meta_dirty or self.masks.dirty

    def mark_dirty(self) -> None:
        """Call after changing keyframes, interactions or settings directly."""
        self._meta_dirty = True

    def save(self) -> None:
        """Commit the project whole (see the module doc); a failed write raises StorageError naming the file."""
        self._commit(self.folder, self.video_ref, prune=True)

    def save_as(self, new_folder: str | Path) -> None:
        """Write the whole project to a folder holding no project yet, which becomes this project's folder."""
        new_folder = Path(new_folder).absolute()
        _check_free(new_folder)
        video_ref = _video_ref(self.video.path.absolute(), new_folder)
        try:
            new_folder.mkdir(parents=True, exist_ok=True)
            self._commit(new_folder, video_ref, prune=False)
        except BaseException:
            shutil.rmtree(new_folder / MASKS_DIR, ignore_errors=True)  # _check_free: nothing of ours was there
            raise
        self.folder, self.video_ref, self.masks.folder = new_folder, video_ref, new_folder / MASKS_DIR

    def _commit(self, folder: Path, video_ref: str, prune: bool) -> None:
        self._drop_stray_ids()
        listing, todo, dirty = self.masks._plan(everything=folder != self.folder)
        doc = self.to_json(video_ref, listing)
        masks_dir = folder / MASKS_DIR
        with _save_lock(folder):
            written = []
            try:
                for name, data in todo.items():
                    atomic_write_bytes(masks_dir / name, data, sync_folder=False)
                    written.append(name)
                if written:
                    fsync_folder(masks_dir)
                # the commit: when this raises, project.json was not replaced
                atomic_write_bytes(folder / PROJECT_FILE, _dumps(doc).encode("utf-8"), sync_folder=False)
            except OSError as e:
                for name in written:
                    try:
                        (masks_dir / name).unlink()
                    except OSError:
                        pass  # unlisted: the next open removes it
                raise StorageError(e.filename or folder, f"cannot save the project ({why(e)}); "
                                                         "the last save on disk is unchanged") from None
            self._meta_dirty = False
            self.masks._committed_as(listing, dirty, prune)
            try:
                fsync_folder(folder)  # makes the commit durable (a power cut before it may keep the last save)
            except OSError as e:
                raise StorageError(folder, f"saved, but the folder could not be synced to disk ({why(e)})") from None

    def _drop_stray_ids(self) -> None:
        """Keep the saved state one that opens: pixels of removed objects (left by a propagation that raced
        remove_object) are erased, and next_object_id stays above every id the log uses."""
        for t in self.masks.frames():
            stray = set(self.masks.ids(t)) - set(self.objects)
            if stray:
                ids = self.masks.get(t)
                ids[np.isin(ids, sorted(stray))] = 0
                self.masks.set(t, ids)
                log.warning("frame %d: erased pixels of removed object(s) %s before saving", t, sorted(stray))
        used = [i.object_id for i in self.interactions] + list(self.objects)
        self.next_object_id = max([self.next_object_id] + [i + 1 for i in used])

    def to_json(self, video_ref: str | None = None, listing: dict | None = None) -> dict:
        """project.json's content; `listing` {t: (file, ids)} defaults to the masks as they are now."""
        video_ref = self.video_ref if video_ref is None else video_ref
        if listing is None:
            listing = self.masks._plan(everything=False)[0]
        doc = {
            "schema_version": SCHEMA_VERSION,
            "video": video_ref,
            "short_side": self.video.short_side,
            "working_size": list(self.video.working_size),
            "native_size": list(self.video.native_size),
            "num_frames": len(self.video),
            "objects": [{**asdict(o), "color": list(o.color)} for o in self.objects.values()],
            "next_object_id": self.next_object_id,
            "keyframes": {str(k): {role: sorted(t for t, r in v.items() if r == role) for role in KEYFRAME_ROLES
                                   if role in ALWAYS_WRITTEN_ROLES or role in v.values()}
                          for k, v in sorted(self.keyframes.items())},
            "interactions": [{**asdict(i), "points": [list(p) for p in i.points]} for i in self.interactions],
            "prompt_bases": {str(o): {str(t): {"since": since, "png": base64.b64encode(png).decode("ascii")}
                                      for t, (since, png) in sorted(b.items())}
                             for o, b in sorted(self.prompt_bases.items()) if b},
            "settings": self.settings,
            "mask_files": {str(t): {"file": name, "ids": list(ids)} for t, (name, ids) in listing.items()},
        }
        if video_ref.startswith("../"):  # the video lies outside the folder: keep a fallback
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
        self.prompt_bases.pop(oid, None)
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


def _dumps(doc: dict) -> str:
    """project.json's text: indented, with one line per mask file (json's indenting encoder is pure Python and
    took 43 ms for the listing of 3000 frames; this takes 3 ms)."""
    listing = ",\n".join(f'    "{k}": {{"file": "{v["file"]}", "ids": {v["ids"]}}}'  # validated names: no escapes
                          for k, v in doc["mask_files"].items())
    rest = json.dumps({k: v for k, v in doc.items() if k != "mask_files"}, indent=2)
    return f'{rest[:-2]},\n  "mask_files": {{\n{listing}\n  }}\n}}\n' if listing else \
        f'{rest[:-2]},\n  "mask_files": {{}}\n}}\n'


def open_sample_copy(dest_folder: str | Path) -> Project:
    """Copy the bundled sample project (video included) to an absent or empty folder and open the copy."""
    dest = Path(dest_folder).absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ProjectError(dest, "exists and is not an empty folder; choose a new folder for the sample copy")
    if not (SAMPLE_PROJECT / PROJECT_FILE).is_file():
        raise ProjectError(SAMPLE_PROJECT, "the bundled sample project is missing from this installation")
    shutil.copytree(SAMPLE_PROJECT, dest, dirs_exist_ok=True)
    return Project.load(dest)


@contextmanager
def _save_lock(folder: Path, wait: bool = True):
    """Yield whether this process holds the folder's save lock (an advisory flock on the folder itself, so it
    needs no file of its own); with wait=False it yields False at once when another save holds it."""
    if fcntl is None:
        yield True
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError as e:
        raise StorageError(folder, f"cannot open the project folder ({e.strerror or e})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            held = False
        else:
            held = True
        yield held
    finally:
        os.close(fd)  # releases the lock


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
    if isinstance(doc.get("video_absolute"), str) and "\0" not in doc["video_absolute"]:
        candidates.append(Path(doc["video_absolute"]))
    for c in candidates:
        try:
            c.stat()
            return c
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as e:
            raise ProjectError(pj, f"video {_short(doc['video'])!r}: cannot use this path ({e.strerror or e})") \
                from None
    looked = " and ".join(_short(str(c.resolve())) for c in candidates)
    raise ProjectError(pj, f"video {_short(doc['video'])!r} not found; looked at {looked}")


def _short(text: str) -> str:
    return text if len(text) <= 200 else f"{text[:120]}...{text[-60:]} ({len(text)} characters)"


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
    "video": (lambda v: isinstance(v, str) and v != "" and "\0" not in v, "a non-empty path string without NUL"),
    "short_side": (lambda v: v is None or (_is_int(v) and v > 0), "a positive int or null"),
    "working_size": (_is_size, "[width, height] positive ints"),
    "native_size": (_is_size, "[width, height] positive ints"),
    "num_frames": (lambda v: _is_int(v) and v > 0, "a positive int"),
    "objects": (lambda v: isinstance(v, list), "a list"),
    "next_object_id": (lambda v: _is_int(v) and v >= 1, "an int >= 1"),
    "keyframes": (lambda v: isinstance(v, dict), "an object {object_id: {role: [frames]}}"),
    "interactions": (lambda v: isinstance(v, list), "a list"),
}
_MASK_FILES = {"mask_files": (lambda v: isinstance(v, dict), "an object {frame: {file, ids}}")}  # schema 2
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
            raise ProjectError(pj, f"{where}{key}: expected {expected}, got {_shown(obj[key])}")


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def _is_index(key, n: int) -> bool:
    """A JSON object key naming a frame 0..n-1 or an object id (ASCII digits only: int('²') fails)."""
    return isinstance(key, str) and re.fullmatch(r"[0-9]{1,9}", key) is not None and int(key) < n


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
    _check_fields(doc, _TOP if version == 1 else {**_TOP, **_MASK_FILES}, "", pj)
    settings = doc.get("settings", {})
    if not isinstance(settings, dict):
        raise ProjectError(pj, f"settings: expected a JSON object, got {_shown(settings)}")
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
        if "deleted" in i and not isinstance(i["deleted"], bool):
            raise ProjectError(pj, f"interactions[{k}].deleted: expected true or false, got {_shown(i['deleted'])}")
        if i["frame"] >= n:
            raise ProjectError(pj, f"interactions[{k}].frame: {i['frame']} is past the last frame {n - 1}")
        if not 1 <= i["object_id"] < doc["next_object_id"]:
            raise ProjectError(pj, f"interactions[{k}].object_id: {i['object_id']} was never an object's id "
                                   f"(ids so far: 1..{doc['next_object_id'] - 1})")
    if version >= 2:
        _check_mask_files(doc["mask_files"], ids, n, pj)


def _check_mask_files(listing: dict, ids: set[int], n: int, pj: Path) -> None:
    for key, entry in listing.items():
        where = f"mask_files.{_shown(key)}"
        if not _is_index(key, n):
            raise ProjectError(pj, f"mask_files: key {_shown(key)} is not a frame index 0..{n - 1}")
        if not (isinstance(entry, dict) and isinstance(entry.get("file"), str) and isinstance(entry.get("ids"), list)):
            raise ProjectError(pj, f"{where}: expected {{\"file\": name, \"ids\": [object ids]}}, got {_shown(entry)}")
        m = MASK_FILE.match(entry["file"])
        if not m or int(m.group(1)) != int(key):
            raise ProjectError(pj, f"{where}.file: {_shown(entry['file'])} is not a mask file name of frame {key} "
                                   f"(like {int(key):05d}.0123456789abcdef.png)")
        got = entry["ids"]
        if not all(_is_int(i) for i in got) or got != sorted(set(got)):
            raise ProjectError(pj, f"{where}.ids: expected increasing object ids, got {_shown(got)}")
        unknown = [i for i in got if i not in ids]
        if unknown:
            raise ProjectError(pj, f"{where}.ids: the mask holds object id(s) {', '.join(map(str, unknown))}, "
                                   "which no object lists")


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
            raise ProjectError(pj, f"{tables[-1][0]}: expected an object {{object_id: [frames]}}, got {_shown(tables[-1][1])}")
    for name, table in tables:
        for key, value in table.items():
            if not _is_index(key, MAX_OBJECT_ID + 1) or int(key) not in ids:
                raise ProjectError(pj, f"{name}: key {_shown(key)} is not the id of an object")
            if name == "keyframes" and doc["schema_version"] >= ROLES_SINCE:
                if not isinstance(value, dict) or set(value) - set(KEYFRAME_ROLES):
                    raise ProjectError(pj, f"{name}.{key}: expected an object with keys among "
                                           f"{', '.join(KEYFRAME_ROLES)}, got {_shown(value)}")
                lists = list(value.items())
            else:
                lists = [("", value)]
            for role, frames in lists:
                if not _frames_ok(frames, n):
                    where = f"{name}.{key}" + (f".{role}" if role else "")
                    raise ProjectError(pj, f"{where}: expected a list of frame indices 0..{n - 1}, got {_shown(frames)}")


def _keyframes_from_json(doc: dict) -> dict[int, dict[int, str]]:
    """{object id: {frame: role}} from a validated project.json of either schema."""
    if doc["schema_version"] >= ROLES_SINCE:
        return {int(k): {t: role for role, frames in v.items() for t in frames} for k, v in doc["keyframes"].items()}
    corrected = doc.get("settings", {}).get(_V1_CORRECTED, {})
    return {int(k): {t: CORRECTED if t in corrected.get(k, ()) else FULL for t in v}
            for k, v in doc["keyframes"].items()}


def _prompt_bases_from_json(table, size: tuple[int, int], n: int, pj: Path) -> dict[int, dict[int, tuple[int, bytes]]]:
    """{object id: {frame: (log index, PNG bytes)}} from project.json's optional "prompt_bases", checked."""
    out: dict[int, dict[int, tuple[int, bytes]]] = {}
    if not isinstance(table, dict):
        raise ProjectError(pj, f"prompt_bases: expected an object {{object_id: {{frame: base}}}}, got {_shown(table)}")
    for key, frames in table.items():
        if not _is_index(key, MAX_OBJECT_ID + 1) or not isinstance(frames, dict):
            raise ProjectError(pj, f"prompt_bases: {_shown(key)}: expected an object id and {{frame: base}}")
        for t, entry in frames.items():
            where = f"prompt_bases.{key}.{_shown(t)}"
            if not (_is_index(t, n) and isinstance(entry, dict) and _is_int(entry.get("since"))
                    and entry["since"] >= 0 and isinstance(entry.get("png"), str)):
                raise ProjectError(pj, f"{where}: expected {{\"since\": log index, \"png\": base64}}, got {_shown(entry)}")
            try:
                png = base64.b64decode(entry["png"], validate=True)
                shape = decode_id_png(png, f"{pj}: {where}").shape
            except (binascii.Error, ValueError, EngineError) as e:
                raise ProjectError(pj, f"{where}.png: not a base64 mask PNG ({e})") from None
            if shape != (size[1], size[0]):
                raise ProjectError(pj, f"{where}.png: mask is {shape[1]}x{shape[0]}, expected {size[0]}x{size[1]}")
            out.setdefault(int(key), {})[int(t)] = (entry["since"], png)
    return out
