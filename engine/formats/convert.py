"""Format detection and conversion between DAVIS, COCO, YouTube-VIS (and per-object binary masks)."""

from pathlib import Path

from engine.errors import FormatError
from engine.formats.annotations import Progress, TrackedMasks
from engine.formats.binary import _FOLDER, load_binary_masks
from engine.formats.coco import coco_from_dict
from engine.formats.davis import load_davis
from engine.formats.jsonfile import read_json
from engine.formats.registry import EXPORT_FORMATS, format_name
from engine.formats.youtube_vis import youtube_vis_from_dict


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
         for "binary" the output folder (one <seq>/ sub-folder per video when there are several).
    to:  "davis" | "coco" | "youtube-vis" | "binary".
    Every video in the source is converted; COCO/YouTube-VIS targets hold them all in one file.
    Masks are identical after the round trip; object names/categories are kept where the target
    format can hold them. Raises FormatError naming the file on bad input.
    """
    fmt = EXPORT_FORMATS[format_name(to)]
    src, dst = Path(src), Path(dst)
    videos = load_any(src, src_format)
    names = [v.name for v in videos]
    if fmt.file_name is None and len(set(names)) != len(names):
        raise FormatError(src, f"several videos share a name, they would overwrite each other: {names}")
    if fmt.file_name is not None and dst.is_dir():
        dst = dst / fmt.file_name
    return list(fmt.write(videos, dst, progress, False))
