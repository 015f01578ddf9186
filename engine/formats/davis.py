"""DAVIS layout: ROOT/Annotations/<seq>/00000.png (indexed, VOC palette) and ROOT/JPEGImages/<seq>/00000.jpg.

Written: one 8-bit indexed PNG per frame at native size (0 = background, object ids as pixel values),
optional JPEG frames, and ROOT/meta.json in the YouTube-VOS style
({"videos": {seq: {"objects": {"1": {"name", "category", "frames": [...]}}}}}) so object names and
categories survive; DAVIS tools ignore it. Read: our own output, DAVIS 2017 palette PNGs and DAVIS
2016 binary 0/255 masks (object id 1), in ROOT/Annotations/<seq> or ROOT/Annotations/480p/<seq>.
"""

import json
import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from engine.atomic import atomic_write_json
from engine.errors import FormatError
from engine.formats.annotations import (ImageSource, ObjectMeta, Progress, TrackedMasks, as_list, with_unknown_ids,
                                        write_jpeg)
from engine.formats.coco import natural_key
from engine.palette import read_id_png, write_id_png

RESOLUTIONS = ("480p", "Full-Resolution", "1080p")


def save_davis(videos: TrackedMasks | Sequence[TrackedMasks], root: str | Path, *,
               images: ImageSource | None = None, write_images: bool = True,
               progress: Progress = None) -> list[Path]:
    """Write each video to ROOT/Annotations/<name>/<stem>.png; returns the annotation folders.

    JPEG frames go to ROOT/JPEGImages/<name>/<stem>.jpg when `write_images` and a frame source is
    known: `images` (t -> (H, W, 3) RGB uint8 at native size; single video only) or the video's own
    `images`. A sequence folder ends up holding exactly this export: stale PNGs of an earlier, longer
    export are removed. Every file is written atomically, one frame at a time.
    """
    root = Path(root)
    videos = as_list(videos)
    if images is not None and len(videos) != 1:
        raise ValueError("images= applies to a single video; set TrackedMasks.images for several")
    total = sum(v.num_frames for v in videos)
    done = 0
    folders = []
    meta_entries = {}
    for v in videos:
        _check_name(v.name, root)
        folder = root / "Annotations" / v.name
        source = images if images is not None else (v.images if write_images else None)
        img_folder = root / "JPEGImages" / v.name
        objects = dict(v.objects)
        present_in: dict[int, list[str]] = {oid: [] for oid in objects}
        written = set()
        for t, m in v.iter_masks(folder):
            stem = v.frame_stem(t)
            png = folder / f"{stem}.png"
            write_id_png(png, m)
            written.add(png.name)
            with_unknown_ids(objects, m)
            for oid in np.unique(m).tolist():
                if oid:
                    present_in.setdefault(oid, []).append(stem)
            if write_images and source is not None:
                write_jpeg(img_folder / f"{stem}.jpg", source(t), t, m.shape)
            done += 1
            if progress is not None:
                progress(done, total)
        for stale in folder.glob("*.png"):
            if stale.name not in written:
                stale.unlink()
        meta_entries[v.name] = {"objects": {
            str(oid): {"name": o.name, "category": o.category, **({"color": list(o.color)} if o.color else {}),
                       "frames": present_in.get(oid, [])}
            for oid, o in sorted(objects.items())}}
        folders.append(folder)
    _update_meta(root / "meta.json", meta_entries)
    return folders


def load_davis(path: str | Path, sequences: Sequence[str] | None = None) -> list[TrackedMasks]:
    """Read DAVIS annotations; masks are read lazily, one PNG per frame.

    `path` may be a DAVIS root (with Annotations/[480p/]<seq>), an Annotations folder, or a single
    sequence folder of PNGs. `sequences` restricts which sequences are read. Object names come from
    ROOT/meta.json when present, else every mask is scanned once for its ids. Frame images are
    attached (`images`) when ROOT/JPEGImages/[res/]<seq> exists.
    """
    path = Path(path)
    if not path.is_dir():
        raise FormatError(path, "not a folder: expected a DAVIS root, an Annotations folder or a "
                                "sequence folder of PNG masks")
    seq_dirs, root, res = _find_sequences(path)
    if sequences is not None:
        wanted = set(sequences)
        missing = wanted - {d.name for d in seq_dirs}
        if missing:
            raise FormatError(path, f"sequence(s) not found: {', '.join(sorted(missing))}")
        seq_dirs = [d for d in seq_dirs if d.name in wanted]
    meta = _read_meta(root / "meta.json") if root is not None else {}
    return [_load_sequence(d, root, res, meta.get(d.name)) for d in seq_dirs]


def _find_sequences(path: Path) -> tuple[list[Path], Path | None, str | None]:
    """-> (sequence folders, DAVIS root or None, resolution subfolder name or None)."""
    if _pngs(path):  # a sequence folder
        parent = path.parent
        if parent.name == "Annotations":
            return [path], parent.parent, None
        if parent.parent.name == "Annotations":
            return [path], parent.parent.parent, parent.name
        return [path], None, None
    if (path / "Annotations").is_dir():
        root, ann = path, path / "Annotations"
    elif path.name == "Annotations":
        root, ann = path.parent, path
    elif path.parent.name == "Annotations":
        root, ann = path.parent.parent, path.parent
        seqs = _seq_dirs(path)
        if seqs:
            return seqs, root, path.name
        raise FormatError(path, "no sequence folders with PNG masks found")
    else:
        root, ann = None, path
    seqs = _seq_dirs(ann)
    if seqs:
        return seqs, root, None
    for res in RESOLUTIONS + tuple(sorted(d.name for d in ann.iterdir() if d.is_dir())):
        seqs = _seq_dirs(ann / res)
        if seqs:
            return seqs, root, res
    raise FormatError(path, "no DAVIS annotations found (expected Annotations/<seq>/00000.png, "
                            "Annotations/480p/<seq>/00000.png or a folder of PNG masks)")


def _seq_dirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted((d for d in folder.iterdir() if d.is_dir() and _pngs(d)), key=lambda d: natural_key(d.name))


def _pngs(folder: Path) -> list[Path]:
    return sorted((p for p in folder.glob("*.png") if not p.name.startswith(".")), key=lambda p: natural_key(p.name))


def _load_sequence(folder: Path, root: Path | None, res: str | None, meta: dict | None) -> TrackedMasks:
    pngs = _pngs(folder)
    first = read_id_png(pngs[0])
    h, w = first.shape

    def frame(t: int) -> np.ndarray:
        m = read_id_png(pngs[t])
        if m.shape != (h, w):
            raise FormatError(pngs[t], f"mask is {m.shape[1]}x{m.shape[0]} but {pngs[0].name} is {w}x{h}")
        return m

    objects: dict[int, ObjectMeta] = {}
    if isinstance(meta, dict) and isinstance(meta.get("objects"), dict):
        for k, o in meta["objects"].items():
            if re.fullmatch(r"[0-9]{1,3}", k) and 1 <= int(k) <= 255 and isinstance(o, dict):
                objects[int(k)] = ObjectMeta(int(k), o.get("name", ""), o.get("category", "object"), o.get("color"))
    else:
        seen: set[int] = set()
        for t in range(len(pngs)):
            seen.update(np.unique(first if t == 0 else frame(t)).tolist())
        objects = {i: ObjectMeta(i) for i in sorted(seen - {0})}

    images = None
    if root is not None:
        img_dir = root / "JPEGImages" / res / folder.name if res else root / "JPEGImages" / folder.name
        if img_dir.is_dir():
            images = _jpeg_reader(img_dir, [p.stem for p in pngs])
    return TrackedMasks(name=folder.name, size=(w, h), objects=objects, frames=frame, num_frames=len(pngs),
                        frame_names=[f"{p.stem}.jpg" for p in pngs], images=images, source=folder)


def _jpeg_reader(img_dir: Path, stems: list[str]):
    def image(t: int) -> np.ndarray:
        for ext in (".jpg", ".jpeg", ".png"):
            p = img_dir / f"{stems[t]}{ext}"
            if p.exists():
                bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
                if bgr is None:
                    raise FormatError(p, "unreadable image")
                return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        raise FormatError(img_dir, f"no image for frame {stems[t]}")
    return image


def _check_name(name: str, root: Path) -> None:
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise FormatError(root, f"sequence name {name!r} cannot be a folder name")


def _read_meta(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return {}  # a foreign or broken meta.json only costs us object names
    videos = data.get("videos") if isinstance(data, dict) else None
    return videos if isinstance(videos, dict) else {}


def _update_meta(path: Path, entries: dict) -> None:
    data = {}
    if path.is_file():
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError, RecursionError) as e:
            raise FormatError(path, f"existing meta.json is unreadable, not overwriting it ({type(e).__name__})") \
                from None
        if not isinstance(data, dict):
            raise FormatError(path, "existing meta.json is not a JSON object, not overwriting it")
    videos = data.setdefault("videos", {})
    if not isinstance(videos, dict):
        raise FormatError(path, "existing meta.json has a 'videos' entry that is not an object")
    videos.update(entries)
    atomic_write_json(path, data)
