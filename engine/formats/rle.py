"""COCO run-length encoding through pycocotools, shared by the COCO and YouTube-VIS formats."""

from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from engine.errors import FormatError
from engine.formats.annotations import with_unknown_ids


def encode(binary: np.ndarray) -> tuple[dict, int, list[float]]:
    """(H, W) bool mask -> (RLE {"size": [H, W], "counts": str}, area, bbox [x, y, w, h] in pixels)."""
    rle = mask_utils.encode(np.asfortranarray(binary, dtype=np.uint8))
    area = int(mask_utils.area(rle))
    bbox = [float(v) for v in mask_utils.toBbox(rle)]
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}, area, bbox


def encoded_frames(video, objects: dict, path: str | Path):
    """(t, {object id: encode(mask of that object)}) for each masked frame of a TrackedMasks, in order;
    ids missing from ``objects`` are added to it with default metadata (savers never drop pixels)."""
    for t, m in video.iter_masks(path):
        with_unknown_ids(objects, m)
        present = np.unique(m)
        yield t, {oid: encode(m == oid) for oid in present[present > 0].tolist()}


def compressed(segm, height: int, width: int, path: str | Path, where: str) -> dict:
    """Any COCO segmentation (compressed RLE, uncompressed RLE, polygons) -> compressed RLE with bytes counts.

    Checks that the RLE size is (height, width); raises FormatError naming `path` and `where` otherwise.
    """
    try:
        if isinstance(segm, list):  # polygons
            if not segm:
                return mask_utils.encode(np.zeros((height, width), np.uint8, order="F"))
            return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
        if not isinstance(segm, dict) or "counts" not in segm or "size" not in segm:
            raise FormatError(path, f"{where}: segmentation is not an RLE dict with 'size' and 'counts' "
                                    "nor a polygon list")
        size = [int(v) for v in segm["size"]]
        if size != [height, width]:
            raise FormatError(path, f"{where}: mask size {size[1]}x{size[0]} (width x height) does not match "
                                    f"the frame size {width}x{height}")
        counts = segm["counts"]
        if isinstance(counts, list):  # uncompressed RLE
            if (not all(isinstance(c, int) and c >= 0 for c in counts)) or sum(counts) != height * width:
                raise FormatError(path, f"{where}: corrupt RLE (its runs do not cover the {width}x{height} frame)")
            return mask_utils.frPyObjects(segm, height, width)
        if isinstance(counts, str):
            counts = counts.encode("ascii")
        if not isinstance(counts, bytes):
            raise FormatError(path, f"{where}: RLE counts must be a string or a list")
        runs = run_lengths(counts)
        if runs is None or (runs < 0).any() or int(runs.sum()) != height * width:
            raise FormatError(path, f"{where}: corrupt RLE (its runs do not cover the {width}x{height} frame)")
        return {"size": size, "counts": counts}
    except FormatError:
        raise
    except Exception as e:  # pycocotools raises bare Exceptions/TypeErrors on garbage
        raise FormatError(path, f"{where}: unreadable segmentation ({e})") from None


def decode(rle: dict, path: str | Path, where: str) -> np.ndarray:
    """Compressed RLE -> (H, W) bool mask."""
    try:
        m = mask_utils.decode(rle)
    except Exception as e:
        raise FormatError(path, f"{where}: corrupt RLE ({e})") from None
    if m.ndim == 3:
        m = m[:, :, 0]
    if m.shape != tuple(rle["size"]):
        raise FormatError(path, f"{where}: corrupt RLE")
    return m.astype(bool)


def run_lengths(counts: bytes) -> np.ndarray | None:
    """Decode COCO's compressed RLE string into run lengths (int64), or None if it is malformed.

    pycocotools decodes a truncated string into uninitialised memory instead of failing, so loaders
    check that the runs cover the frame exactly. Vectorised port of rleFrString (maskApi.c): each run
    is 5-bit groups, 0x20 = more groups follow, 0x10 in the last group = negative; from the fourth
    run on, values are deltas to the run two places before.
    """
    b = np.frombuffer(counts, np.uint8).astype(np.int64) - 48
    if b.size == 0:
        return np.zeros(0, np.int64)
    if (b < 0).any() or (b > 63).any():
        return None
    end = (b & 0x20) == 0
    if not end[-1]:
        return None
    starts = np.flatnonzero(np.concatenate([[True], end[:-1]]))
    group = np.cumsum(np.concatenate([[0], end[:-1].astype(np.int64)]))
    k = np.arange(b.size) - starts[group]
    if k.max() > 11:
        return None
    x = np.add.reduceat((b & 0x1F) << (5 * k), starts)
    last = np.flatnonzero(end)
    neg = (b[last] & 0x10) != 0
    x[neg] -= np.int64(1) << (5 * (k[last[neg]] + 1))
    if x.size > 3:
        x[3::2] = x[1] + np.cumsum(x[3::2])
    if x.size > 4:
        x[4::2] = x[2] + np.cumsum(x[4::2])
    return x
