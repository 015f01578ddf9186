"""YouTube-VIS JSON: one annotation per object per video with a per-frame list of RLEs.

Layout written (the YouTube-VIS 2019/2021 schema; `name`, `fps` and `track_id` are extra keys):

    videos:      {id, name, file_names ["<seq>/00000.jpg", ...], width, height, length, fps?}
    annotations: {id, video_id, category_id, segmentations [RLE | null per frame], areas [int | null],
                  bboxes [[x, y, w, h] | null], iscrowd 0, width, height, track_id (= object id), name}
    categories:  {id, name, supercategory}

An object absent from every frame still gets an annotation (all null), so it survives a round trip.
"""

from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from engine.atomic import atomic_write_json
from engine.errors import FormatError
from engine.formats import rle as rle_utils
from engine.formats.annotations import ObjectMeta, Progress, TrackedMasks, as_list, check_frame_size
from engine.formats.coco import CategoryTable, RleFrames, category_names, category_of, track_id_map
from engine.formats.jsonfile import need, read_json


def save_youtube_vis(videos: TrackedMasks | Sequence[TrackedMasks], path: str | Path, *,
                     progress: Progress = None) -> Path:
    """Write one or several videos as a YouTube-VIS JSON file at `path` (atomic, in one go).

    Masks are read one frame at a time; only compressed RLE strings are kept until the write.
    """
    path = Path(path)
    videos = as_list(videos)
    total = sum(v.num_frames for v in videos)
    cats = CategoryTable()
    video_entries, annotations = [], []
    done = 0
    for vid, v in enumerate(videos, start=1):
        n = v.num_frames
        objects = dict(v.objects)
        tracks: dict[int, dict] = {}

        def track(oid: int) -> dict:
            if oid not in tracks:
                tracks[oid] = {"segmentations": [None] * n, "areas": [None] * n, "bboxes": [None] * n}
            return tracks[oid]

        for oid in objects:
            track(oid)
        for t, encoded in rle_utils.encoded_frames(v, objects, path):
            for oid, (seg, area, bbox) in encoded.items():
                tr = track(oid)
                tr["segmentations"][t], tr["areas"][t], tr["bboxes"][t] = seg, area, bbox
            done += 1
            if progress is not None:
                progress(done, total)
        entry = {"id": vid, "name": v.name, "width": v.width, "height": v.height, "length": n,
                 "file_names": [f"{v.name}/{fn}" for fn in v.frame_names]}
        if v.fps:
            entry["fps"] = float(v.fps)
        video_entries.append(entry)
        for oid in sorted(tracks):
            o = objects[oid]
            ann = {"id": len(annotations) + 1, "video_id": vid, "category_id": cats.id(o.category),
                   **tracks[oid], "iscrowd": 0, "width": v.width, "height": v.height,
                   "track_id": oid, "name": o.name}
            if o.color is not None:
                ann["color"] = list(o.color)
            annotations.append(ann)
    data = {
        "info": {"description": "video object masks (vos-annotator)", "version": "1.0"},
        "licenses": [],
        "videos": video_entries,
        "annotations": annotations,
        "categories": cats.to_json(),
    }
    atomic_write_json(path, data)
    return path


def load_youtube_vis(path: str | Path) -> list[TrackedMasks]:
    """Read a YouTube-VIS JSON file into one TrackedMasks per video (masks decoded lazily).

    Object ids are `track_id` when present and within 1..255, else annotations renumbered 1..N
    per video in file order (YouTube-VIS annotation ids are global to the file).
    """
    return youtube_vis_from_dict(read_json(path), Path(path))


def youtube_vis_from_dict(data: dict, path: Path) -> list[TrackedMasks]:
    videos = need(data, "videos", path, "top level", list)
    annotations = need(data, "annotations", path, "top level", list)
    cat_names = category_names(data, path)
    by_video: dict[object, list[tuple[int, dict]]] = {}
    for i, v in enumerate(videos):
        where = f"videos[{i}]"
        vid = need(v, "id", path, where, (int, str))
        file_names = need(v, "file_names", path, where, list)
        check_frame_size(need(v, "width", path, where, int), need(v, "height", path, where, int), path, where)
        if not all(isinstance(f, str) for f in file_names):
            raise FormatError(path, f"{where}: 'file_names' should be a list of strings")
        if not file_names:
            raise FormatError(path, f"{where}: the video has no frames ('file_names' is empty)")
        if vid in by_video:
            raise FormatError(path, f"{where}: duplicate video id {vid}")
        by_video[vid] = []
    for i, a in enumerate(annotations):
        where = f"annotations[{i}]"
        vid = need(a, "video_id", path, where, (int, str))
        need(a, "segmentations", path, where, list)
        if vid not in by_video:
            raise FormatError(path, f"{where}: video_id {vid} is not in 'videos'")
        by_video[vid].append((i, a))

    out = []
    used_names: set[str] = set()
    for v in videos:
        vid, w, h, file_names = v["id"], v["width"], v["height"], v["file_names"]
        n = len(file_names)
        name = str(v.get("name") or (PurePosixPath(file_names[0]).parent.name if file_names else "") or
                   f"video_{vid}")
        if name in used_names:
            name = f"{name}_{vid}"
        used_names.add(name)
        anns = by_video[vid]
        raw = [a.get("track_id") for _, a in anns]
        if anns and all(isinstance(r, int) and not isinstance(r, bool) for r in raw) and len(set(raw)) == len(raw):
            id_map = track_id_map(raw, path, name)
            oids = [id_map[r] for r in raw]
        else:
            if len(anns) > 255:
                raise FormatError(path, f"video '{name}': {len(anns)} objects, id masks hold at most 255")
            oids = list(range(1, len(anns) + 1))
        objects: dict[int, ObjectMeta] = {}
        frame_rles: list[list[tuple[int, dict]]] = [[] for _ in range(n)]
        for oid, (i, a) in zip(oids, anns):
            segs = a["segmentations"]
            if len(segs) != n:
                raise FormatError(path, f"annotations[{i}]: {len(segs)} segmentations for a video of {n} frames")
            objects[oid] = ObjectMeta(oid, a.get("name", ""), category_of(cat_names, a.get("category_id")),
                                      a.get("color"))
            for t, seg in enumerate(segs):
                if seg is not None:
                    frame_rles[t].append((oid, rle_utils.compressed(seg, h, w, path,
                                                                    f"annotations[{i}] frame {t}")))
        out.append(TrackedMasks(
            name=name, size=(w, h), objects=objects, frames=RleFrames(frame_rles, h, w, path),
            frame_names=[PurePosixPath(f).name for f in file_names], fps=v.get("fps"), source=path))
    return out
