"""COCO instances JSON for videos: one image per frame, one annotation per object per frame.

Layout written (readable by `pycocotools.coco.COCO`; the video keys follow the CocoVID convention
of mmtracking, extra keys are ignored by COCO tools):

    images:      {id, file_name "<seq>/00000.jpg", width, height, video_id, frame_id (0-based t)}; with
                 write_images the frames are written beside the JSON and file_name is their path from the
                 JSON's folder, "images/<seq>/00000.jpg", so the export stands alone
    annotations: {id, image_id, category_id, segmentation (RLE, counts str), area, bbox [x, y, w, h],
                  iscrowd 0, track_id (= object id), video_id}
    categories:  {id, name, supercategory}, built from the objects' categories
    videos:      {id, name, width, height, length, fps?, objects: [{track_id, name, category, color?}]}

`videos[].objects` keeps each object's name, and objects absent from every frame, across a round trip.
"""

import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from engine.atomic import atomic_write_json
from engine.errors import FormatError
from engine.formats import rle as rle_utils
from engine.formats.annotations import ObjectMeta, Progress, TrackedMasks, as_list, check_frame_size, write_jpeg
from engine.formats.jsonfile import need, read_json


class CategoryTable:
    """Category name <-> id, in order of first appearance (ids 1..K), shared by COCO and YouTube-VIS."""

    def __init__(self):
        self.ids: dict[str, int] = {}

    def id(self, name: str) -> int:
        return self.ids.setdefault(name, len(self.ids) + 1)

    def to_json(self) -> list[dict]:
        return [{"id": i, "name": n, "supercategory": n} for n, i in self.ids.items()]


def objects_json(objects: dict[int, ObjectMeta], cats: CategoryTable) -> list[dict]:
    out = []
    for o in objects.values():
        d = {"track_id": o.id, "name": o.name, "category": o.category, "category_id": cats.id(o.category)}
        if o.color is not None:
            d["color"] = list(o.color)
        out.append(d)
    return out


IMAGES_DIR = "images"   # beside the JSON, when the frames are written with it


def save_coco(videos: TrackedMasks | Sequence[TrackedMasks], path: str | Path, *,
              progress: Progress = None, write_images: bool = False) -> Path:
    """Write one or several videos as a COCO instances JSON file at `path` (atomic, in one go); with
    `write_images`, each video's frames (its `images`, which it must have) as JPEGs under images/<seq>/
    beside it, named by the images' file_name.

    Masks are read one frame at a time. `progress(done_frames, total_frames)` is called per frame.
    """
    path = Path(path)
    videos = as_list(videos)
    total = sum(v.num_frames for v in videos)
    cats = CategoryTable()
    images, annotations, video_entries = [], [], []
    done = 0
    for vid, v in enumerate(videos, start=1):
        objects = dict(v.objects)
        for o in objects.values():
            cats.id(o.category)
        if write_images and v.images is None:
            raise FormatError(path, f"video {v.name!r} has no frame images to write beside the COCO file")
        for t, encoded in rle_utils.encoded_frames(v, objects, path):
            image_id = len(images) + 1
            file_name = f"{v.name}/{v.frame_names[t]}"
            if write_images:
                file_name = f"{IMAGES_DIR}/{file_name}"
                write_jpeg(path.parent / file_name, v.images(t), t, (v.height, v.width))
            images.append({"id": image_id, "file_name": file_name, "width": v.width,
                           "height": v.height, "video_id": vid, "frame_id": t})
            for oid, (seg, area, bbox) in encoded.items():
                annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                    "category_id": cats.id(objects[oid].category), "segmentation": seg,
                                    "area": area, "bbox": bbox, "iscrowd": 0, "track_id": oid,
                                    "video_id": vid})
            done += 1
            if progress is not None:
                progress(done, total)
        entry = {"id": vid, "name": v.name, "width": v.width, "height": v.height, "length": v.num_frames}
        if v.fps:
            entry["fps"] = float(v.fps)
        entry["objects"] = objects_json(dict(sorted(objects.items())), cats)
        video_entries.append(entry)
    data = {
        "info": {"description": "video object masks (vos-annotator)", "version": "1.0"},
        "licenses": [],
        "videos": video_entries,
        "images": images,
        "annotations": annotations,
        "categories": cats.to_json(),
    }
    atomic_write_json(path, data)
    return path


def load_coco(path: str | Path) -> list[TrackedMasks]:
    """Read a COCO instances JSON file into one TrackedMasks per video (masks decoded lazily).

    Videos are told apart by `video_id` (else by the folder part of `file_name`), frames ordered by
    `frame_id` (else by file name). Objects are `track_id` (or `instance_id`); when a file has no
    track ids, each image's annotations become objects 1..k in order. Overlapping masks: later
    annotations win.
    """
    return coco_from_dict(read_json(path), Path(path))


def coco_from_dict(data: dict, path: Path) -> list[TrackedMasks]:
    images = need(data, "images", path, "top level", list)
    annotations = need(data, "annotations", path, "top level", list)
    cat_names = category_names(data, path)
    video_info = {}
    for i, v in enumerate(optional_list(data, "videos", path)):
        video_info[need(v, "id", path, f"videos[{i}]", (int, str))] = v

    groups: dict[object, list[dict]] = defaultdict(list)
    image_by_id: dict[int, tuple[object, dict]] = {}
    for i, im in enumerate(images):
        where = f"images[{i}]"
        image_id = need(im, "id", path, where, (int, str))
        file_name = need(im, "file_name", path, where, str)
        check_frame_size(need(im, "width", path, where, int), need(im, "height", path, where, int), path, where)
        if "frame_id" in im:
            need(im, "frame_id", path, where, int)
        if image_id in image_by_id:
            raise FormatError(path, f"{where}: duplicate image id {image_id}")
        if "video_id" in im:
            key = need(im, "video_id", path, where, (int, str))
        else:
            key = str(PurePosixPath(file_name).parent)
        groups[key].append(im)
        image_by_id[image_id] = (key, im)

    anns_by_image: dict[object, list[tuple[int, dict]]] = defaultdict(list)
    for i, a in enumerate(annotations):
        where = f"annotations[{i}]"
        image_id = need(a, "image_id", path, where, (int, str))
        need(a, "segmentation", path, where)
        if image_id not in image_by_id:
            raise FormatError(path, f"{where}: image_id {image_id} is not in 'images'")
        anns_by_image[image_id].append((i, a))

    out = []
    used_names: set[str] = set()
    for key, ims in groups.items():
        if all("frame_id" in im for im in ims):
            ims.sort(key=lambda im: im["frame_id"])
            for a, b in zip(ims, ims[1:]):
                if a["frame_id"] == b["frame_id"]:
                    raise FormatError(path, f"images {a['id']} and {b['id']} of one video both have frame_id "
                                            f"{a['frame_id']}")
        else:
            ims.sort(key=lambda im: natural_key(im["file_name"]))
        w, h = ims[0]["width"], ims[0]["height"]
        for im in ims:
            if (im["width"], im["height"]) != (w, h):
                raise FormatError(path, f"image {im['id']} ({im['file_name']}) is {im['width']}x{im['height']} "
                                        f"but other frames of its video are {w}x{h}")
        info = video_info.get(key, {})
        listed = optional_list(info, "objects", path)
        name = str(info.get("name") or PurePosixPath(ims[0]["file_name"]).parent.name or path.stem)
        if name in used_names:
            name = f"{name}_{key}"
        used_names.add(name)

        per_frame = [[(i, a) for i, a in anns_by_image.get(im["id"], [])] for im in ims]
        flat = [a for frame in per_frame for _, a in frame]
        raw_ids = [a.get("track_id", a.get("instance_id")) for a in flat]
        if flat and all(isinstance(r, int) and not isinstance(r, bool) for r in raw_ids):
            id_map = track_id_map(raw_ids, path, name)
            oid_of = lambda t, k, a: id_map[a.get("track_id", a.get("instance_id"))]  # noqa: E731
        else:
            if flat and max(len(f) for f in per_frame) > 255:
                raise FormatError(path, f"video '{name}': more than 255 objects in one image")
            id_map = {}
            oid_of = lambda t, k, a: k + 1  # noqa: E731

        objects: dict[int, ObjectMeta] = {}
        for o in listed:
            if not isinstance(o, dict):
                continue
            raw = o.get("track_id")
            identity = all(k == v for k, v in id_map.items())
            if not isinstance(raw, int) or isinstance(raw, bool):
                continue
            if raw in id_map or (identity and 1 <= raw <= 255):
                oid = id_map.get(raw, raw)
                objects[oid] = ObjectMeta(oid, o.get("name", ""), o.get("category") or
                                          category_of(cat_names, o.get("category_id")), o.get("color"))
        frame_rles: list[list[tuple[int, dict]]] = []
        for t, (im, frame) in enumerate(zip(ims, per_frame)):
            rles = []
            for k, (i, a) in enumerate(frame):
                oid = oid_of(t, k, a)
                rles.append((oid, rle_utils.compressed(a["segmentation"], h, w, path, f"annotations[{i}]")))
                if oid not in objects:
                    objects[oid] = ObjectMeta(oid, a.get("name", ""), category_of(cat_names, a.get("category_id")))
            frame_rles.append(rles)
        out.append(TrackedMasks(
            name=name, size=(w, h), objects=objects, frames=RleFrames(frame_rles, h, w, path),
            frame_names=[PurePosixPath(im["file_name"]).name for im in ims],
            fps=info.get("fps"), source=path))
    return out


class RleFrames:
    """Lazily decoded id masks: frame t = its objects' compressed RLEs painted in order."""

    def __init__(self, frame_rles: list[list[tuple[int, dict]]], height: int, width: int, path: Path):
        self.frame_rles, self.height, self.width, self.path = frame_rles, height, width, path

    def __len__(self) -> int:
        return len(self.frame_rles)

    def __getitem__(self, t: int) -> np.ndarray:
        m = np.zeros((self.height, self.width), np.uint8)
        for oid, rle in self.frame_rles[t]:
            m[rle_utils.decode(rle, self.path, f"frame {t}, object {oid}")] = oid
        return m


def category_names(data: dict, path: Path) -> dict[int | str, str]:
    return {need(c, "id", path, f"categories[{i}]", (int, str)): str(need(c, "name", path, f"categories[{i}]"))
            for i, c in enumerate(optional_list(data, "categories", path))}


def category_of(cat_names: dict, category_id) -> str:
    """The name of a category id, "object" when it names none (or is not even an id)."""
    return cat_names.get(category_id, "object") if isinstance(category_id, (int, str)) else "object"


def optional_list(d: dict, key: str, path: Path) -> list:
    """d[key] when present (null counts as absent), which must then be a list."""
    v = d.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        raise FormatError(path, f"'{key}' should be a list, found {type(v).__name__}")
    return v


def track_id_map(raw_ids: list[int], path: Path, video: str) -> dict[int, int]:
    """Keep track ids that already fit in 1..255 (ours do); renumber 1..N in order otherwise."""
    uniq = sorted(set(raw_ids))
    if all(1 <= r <= 255 for r in uniq):
        return {r: r for r in uniq}
    if len(uniq) > 255:
        raise FormatError(path, f"video '{video}': {len(uniq)} tracks, id masks hold at most 255 objects")
    return {r: k for k, r in enumerate(uniq, start=1)}


def natural_key(s: str):
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", s)]
