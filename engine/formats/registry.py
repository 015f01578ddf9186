"""The one table of annotation formats: name -> label, file name and writer, read by `Session.export`,
`convert`, the command line and the GUI's export dialog.

A writer takes (videos, target, progress, with_images): target is the JSON or MP4 file for one-file
formats, else the output folder; with_images writes the frames too where the format can hold them
(DAVIS JPEGImages, COCO images/ beside the JSON: an export has them, a conversion does not).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from engine.formats.annotations import Progress, TrackedMasks
from engine.formats.binary import save_binary_masks
from engine.formats.coco import save_coco
from engine.formats.davis import save_davis
from engine.formats.overlay import save_overlay_video
from engine.formats.youtube_vis import save_youtube_vis


@dataclass(frozen=True)
class Format:
    name: str
    label: str                  # for menus and dialogs
    file_name: str | None       # the file written inside an output folder ("{video}": the video's name);
                                # None: the format is a folder tree
    write: Callable[[list[TrackedMasks], Path, Progress, bool], list[Path]]
    convertible: bool = True    # `convert` can write it (an overlay needs the video frames)

    def export(self, videos: list[TrackedMasks], out_dir: Path, progress: Progress = None) -> list[Path]:
        """Write the videos into out_dir (where this format's file name says); returns the paths written."""
        out_dir = Path(out_dir)
        target = out_dir if self.file_name is None else out_dir / self.file_name.format(video=videos[0].name)
        return self.write(videos, target, progress, True)


def _binary(videos, out, progress, with_images):
    if len(videos) == 1:
        return save_binary_masks(videos[0], out, progress=progress)
    return [p for v in videos for p in save_binary_masks(v, out / v.name, progress=progress)]


EXPORT_FORMATS = {f.name: f for f in (
    Format("davis", "DAVIS (indexed PNG per frame, VOC palette)", None,
           lambda v, out, progress, images: list(save_davis(v, out, write_images=images, progress=progress))),
    Format("coco", "COCO instances JSON (RLE, track ids)", "coco.json",
           lambda v, out, progress, images: [save_coco(v, out, progress=progress,
                                                       write_images=images and all(x.images for x in v))]),
    Format("youtube-vis", "YouTube-VIS JSON", "youtube-vis.json",
           lambda v, out, progress, images: [save_youtube_vis(v, out, progress=progress)]),
    Format("binary", "Binary PNG masks per object", None, _binary),
    Format("overlay", "Overlay video (MP4) for review", "{video}_overlay.mp4",
           lambda v, out, progress, images: [save_overlay_video(v[0], out, progress=progress)],
           convertible=False),
)}
FORMATS = tuple(name for name, f in EXPORT_FORMATS.items() if f.convertible)   # what convert writes
_ALIASES = {"ytvis": "youtube-vis", "youtube_vis": "youtube-vis", "youtubevis": "youtube-vis", "vis": "youtube-vis"}


def export_format(name: str) -> Format:
    """The registry entry of a format name (ytvis/youtube_vis aliases accepted); ValueError for others."""
    n = _ALIASES.get(name.lower(), name.lower())
    if n not in EXPORT_FORMATS:
        raise ValueError(f"unknown format {name!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    return EXPORT_FORMATS[n]


def format_name(name: str) -> str:
    """Canonical name of a format `convert` writes (aliases accepted); ValueError for unknown names."""
    n = export_format(name).name
    if n not in FORMATS:
        raise ValueError(f"unknown format {name!r}: choose one of {', '.join(FORMATS)}")
    return n
