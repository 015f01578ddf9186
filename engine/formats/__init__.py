"""Annotation formats: DAVIS, COCO, YouTube-VIS, per-object binary PNGs, overlay MP4.

Every format is a pair of plain functions around one Qt-free type, `TrackedMasks` (one video's
object metadata + a lazy per-frame id-mask source at native size):

    save_davis(videos, root) / load_davis(path)            -> list[TrackedMasks]
    save_coco(videos, json_path) / load_coco(json_path)    -> list[TrackedMasks]
    save_youtube_vis(videos, json_path) / load_youtube_vis(json_path) -> list[TrackedMasks]
    save_binary_masks(masks, out_dir) / load_binary_masks(out_dir) -> TrackedMasks
    save_overlay_video(masks, mp4_path, images=...)
    convert(src, dst, to="davis"|"coco"|"youtube-vis"|"binary")
    EXPORT_FORMATS {name: Format(label, file_name, write)}; export_format(name) -> Format  (the one table)

Savers read one frame at a time and write atomically; loaders decode masks lazily.
"""

from engine.formats.annotations import ObjectMeta, TrackedMasks
from engine.formats.binary import load_binary_masks, save_binary_masks
from engine.formats.coco import load_coco, save_coco
from engine.formats.convert import convert, detect_format, load_any
from engine.formats.davis import load_davis, save_davis
from engine.formats.overlay import draw_overlay, save_overlay_video
from engine.formats.registry import EXPORT_FORMATS, FORMATS, Format, export_format, format_name
from engine.formats.youtube_vis import load_youtube_vis, save_youtube_vis

__all__ = [
    "EXPORT_FORMATS", "FORMATS", "Format", "ObjectMeta", "TrackedMasks", "convert", "detect_format", "draw_overlay",
    "export_format", "format_name", "load_any", "load_binary_masks", "load_coco", "load_davis", "load_youtube_vis", "save_binary_masks",
    "save_coco", "save_davis", "save_overlay_video", "save_youtube_vis",
]
