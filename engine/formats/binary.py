"""Per-object binary masks: OUT/<object_id>_<name>/00000.png, 8-bit grey, 0 = background, 255 = object.

The simplest format for tools that want one object at a time. Every object gets a PNG for every
frame (all black where it is absent), so each folder is a complete mask sequence.
"""

import re
from pathlib import Path

import cv2
import numpy as np

from engine.atomic import atomic_write_bytes
from engine.errors import FormatError
from engine.formats.annotations import ObjectMeta, Progress, TrackedMasks
from engine.formats.coco import natural_key

_FOLDER = re.compile(r"^(\d+)_(.*)$")


def safe_name(name: str, fallback: str) -> str:
    """`name` as one file name: characters unsafe in file names (path separators included) become "_"."""
    return re.sub(r"[^\w.\- ]+", "_", name).strip(" .") or fallback


def object_folder_name(obj: ObjectMeta) -> str:
    """"<id>_<name>", the name made safe as a file name."""
    return f"{obj.id}_{safe_name(obj.name, 'object')}"


def save_binary_masks(masks: TrackedMasks, out_dir: str | Path, *, progress: Progress = None) -> list[Path]:
    """Write OUT/<id>_<name>/<stem>.png for every object and frame; returns the object folders."""
    out_dir = Path(out_dir)
    objects = dict(masks.objects)
    folders = {oid: out_dir / object_folder_name(o) for oid, o in objects.items()}
    stems = [masks.frame_stem(t) for t in range(masks.num_frames)]
    zero_png = None
    for t, m in masks.iter_masks(out_dir):
        present = np.unique(m)
        for oid in present[present > 0].tolist():
            if oid not in folders:  # an id the metadata does not know: give it the earlier (empty) frames too
                objects[oid] = ObjectMeta(oid)
                folders[oid] = out_dir / object_folder_name(objects[oid])
                if zero_png is None:
                    zero_png = _encode(np.zeros_like(m), folders[oid])
                for s in stems[:t]:
                    atomic_write_bytes(folders[oid] / f"{s}.png", zero_png)
        for oid, folder in folders.items():
            path = folder / f"{stems[t]}.png"
            atomic_write_bytes(path, _encode(np.where(m == oid, 255, 0).astype(np.uint8), path))
        if progress is not None:
            progress(t + 1, masks.num_frames)
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    return [folders[oid] for oid in sorted(folders)]


def _encode(grey: np.ndarray, path: Path) -> bytes:
    ok, buf = cv2.imencode(".png", grey)
    if not ok:
        raise FormatError(path, "PNG encoding failed")
    return buf.tobytes()


def load_binary_masks(folder: str | Path, name: str | None = None) -> TrackedMasks:
    """Read OUT/<id>_<name>/<stem>.png folders back into one TrackedMasks (any non-zero pixel = object).

    All object folders must hold the same frames at the same size. Where binary masks overlap, the
    higher id wins. Masks are read lazily.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FormatError(folder, "not a folder of per-object mask folders")
    objs: dict[int, tuple[ObjectMeta, Path]] = {}
    for d in sorted(folder.iterdir()):
        m = _FOLDER.match(d.name)
        if d.is_dir() and m:
            oid = int(m.group(1))
            if not 1 <= oid <= 255:
                raise FormatError(d, f"object id {oid} is outside 1..255")
            if oid in objs:
                raise FormatError(d, f"object id {oid} appears twice (also {objs[oid][1].name})")
            objs[oid] = (ObjectMeta(oid, m.group(2)), d)
    if not objs:
        raise FormatError(folder, "no per-object folders named <id>_<name> found")
    stems = None
    for oid, (_, d) in sorted(objs.items()):
        s = sorted((p.stem for p in d.glob("*.png") if not p.name.startswith(".")), key=natural_key)
        if stems is None:
            stems, first_dir = s, d
        elif s != stems:
            raise FormatError(d, f"holds {len(s)} frames that differ from the {len(stems)} of {first_dir.name}")
    if not stems:
        raise FormatError(folder, "the object folders hold no PNG masks")
    first = _read_grey(next(iter(objs.values()))[1] / f"{stems[0]}.png")
    h, w = first.shape

    def frame(t: int) -> np.ndarray:
        ids = np.zeros((h, w), np.uint8)
        for oid, (_, d) in sorted(objs.items()):
            p = d / f"{stems[t]}.png"
            g = _read_grey(p)
            if g.shape != (h, w):
                raise FormatError(p, f"mask is {g.shape[1]}x{g.shape[0]}, other masks are {w}x{h}")
            ids[g > 0] = oid
        return ids

    return TrackedMasks(name=name or folder.name, size=(w, h), objects={k: o for k, (o, _) in objs.items()},
                        frames=frame, num_frames=len(stems), frame_names=[f"{s}.jpg" for s in stems],
                        source=folder)


def _read_grey(path: Path) -> np.ndarray:
    g = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if g is None:
        raise FormatError(path, "unreadable PNG")
    if g.ndim == 3:
        g = g[:, :, :3].max(axis=2)
    return g
