"""Format detection and conversion between DAVIS, COCO, YouTube-VIS (and per-object binary masks)."""

import shutil
from pathlib import Path

from engine.atomic import check_output_file, check_output_folder, publish, staged_output
from engine.errors import FormatError
from engine.formats.annotations import Progress, TrackedMasks
from engine.formats.binary import _FOLDER, load_binary_masks, safe_name, save_binary_masks
from engine.formats.coco import coco_from_dict, save_coco
from engine.formats.davis import load_davis, save_davis
from engine.formats.jsonfile import read_json
from engine.formats.registry import EXPORT_FORMATS, format_name
from engine.formats.youtube_vis import save_youtube_vis, youtube_vis_from_dict


def detect_format(src: str | Path) -> str:
    """'davis' | 'coco' | 'youtube-vis' | 'binary' for a path; FormatError if it is none of them.

    A .json file is COCO when it has 'images', YouTube-VIS when it has 'videos' with per-object
    'segmentations'. A folder is binary when all its sub-folders are named <id>_<name> and hold PNGs
    (and it has no Annotations folder); otherwise DAVIS.
    """
    return _detect(Path(src))[0]


def _detect(src: Path) -> tuple[str, dict | None]:
    if src.is_file():
        data = read_json(src)
        if "images" in data:
            return "coco", data
        if "videos" in data and "annotations" in data:
            return "youtube-vis", data
        raise FormatError(src, "JSON is neither COCO (no 'images') nor YouTube-VIS (no 'videos' and 'annotations')")
    if src.is_dir():
        subs = [d for d in src.iterdir() if d.is_dir() and not d.name.startswith(".")]
        if (subs and not (src / "Annotations").is_dir() and not any(src.glob("*.png"))
                and all(_FOLDER.match(d.name) for d in subs) and all(any(d.glob("*.png")) for d in subs)):
            return "binary", None
        return "davis", None
    raise FormatError(src, "source not found")


def load_any(src: str | Path, src_format: str | None = None) -> list[TrackedMasks]:
    """Load every video in `src` (format detected unless `src_format` is given)."""
    src = Path(src)
    fmt, data = _detect(src) if src_format is None else (format_name(src_format), None)
    if fmt in ("coco", "youtube-vis"):
        if data is None:
            data = read_json(src)
        videos = coco_from_dict(data, src) if fmt == "coco" else youtube_vis_from_dict(data, src)
        if not videos:
            raise FormatError(src, "holds no videos/images")
        return videos
    if fmt == "binary":
        return [load_binary_masks(src)]
    return load_davis(src)


def convert(src: str | Path, dst: str | Path, to: str, *, src_format: str | None = None,
            progress: Progress = None) -> list[Path]:
    """Convert annotations between formats; returns the paths written.

    src: a DAVIS root / Annotations folder / sequence folder, a COCO or YouTube-VIS JSON file, or a
         folder of per-object binary masks (detected, or forced with `src_format`).
    dst: for to="davis" the DAVIS root (Annotations/<seq>/ is written inside); for "coco" and
         "youtube-vis" the JSON file (an existing folder gets coco.json / youtube-vis.json inside);
         for "binary" the output folder (one <seq>/ sub-folder per video when there are several, named
         after the video with unsafe characters replaced).
    to:  "davis" | "coco" | "youtube-vis" | "binary".
    Every video in the source is converted; COCO/YouTube-VIS targets hold them all in one file.
    Masks are identical after the round trip; object names/categories are kept where the target
    format can hold them. The destination is checked before anything is read; the output is written
    aside and moved into place whole, so a failure (a full disk) leaves `dst` as it was. Raises
    FormatError naming the file on bad input, StorageError when the destination cannot be written.
    """
    to = format_name(to)
    fmt = EXPORT_FORMATS[to]
    src, dst = Path(src), Path(dst)
    if to in ("davis", "binary"):
        check_output_folder(dst)
    else:
        check_output_file(dst)
    videos = load_any(src, src_format)
    for v in videos:
        if v.num_frames == 0:
            raise FormatError(v.source or src, f"video '{v.name}' has no frames")
    names = [v.name for v in videos] if to != "binary" or len(videos) == 1 else \
        [safe_name(v.name, "video") for v in videos]
    if to in ("davis", "binary") and len(set(names)) != len(names):
        raise FormatError(src, f"several videos share a name, they would overwrite each other: {names}")
    if to == "davis":
        with staged_output(dst) as stage:
            if (dst / "meta.json").is_file():  # merged with, not replaced by, this export's entries
                shutil.copyfile(dst / "meta.json", stage / "meta.json")
            folders = save_davis(videos, stage, write_images=False, progress=progress)
            return publish(stage, dst, folders + [stage / "meta.json"])[:-1]
    if to == "binary":
        with staged_output(dst) as stage:
            if len(videos) == 1:
                return publish(stage, dst, save_binary_masks(videos[0], stage, progress=progress))
            written = [p for v, name in zip(videos, names)
                       for p in save_binary_masks(v, stage / name, progress=progress)]
            publish(stage, dst, [stage / name for name in names])
            return [dst / p.relative_to(stage) for p in written]
    if dst.is_dir():
        dst = dst / fmt.file_name
    save = save_coco if to == "coco" else save_youtube_vis
    with staged_output(dst.parent) as stage:
        return publish(stage, dst.parent, [save(videos, stage / dst.name, progress=progress)])
