"""Formats: exact round trips for DAVIS, COCO, YouTube-VIS, binary PNGs, convert; overlay MP4; errors."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from engine.errors import FormatError
from engine.formats import (
    ObjectMeta, TrackedMasks, convert, detect_format, load_any, load_binary_masks, load_coco, load_davis,
    load_youtube_vis, save_binary_masks, save_coco, save_davis, save_overlay_video, save_youtube_vis,
)
from engine.palette import PALETTE, read_id_png

# pycocotools' decode trips a numpy 2 DeprecationWarning inside its own Cython code; not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

W, H, N = 37, 23, 7  # odd sizes on purpose


def make_masks(w=W, h=H, n=N, seed=0) -> list[np.ndarray]:
    """Several objects (ids 1, 3, 200) moving around; object 3 absent on frames 2-4; frame 5 empty.

    Object 1 touches the image border (first and last pixel), object 200 has a hole.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for t in range(n):
        m = np.zeros((h, w), np.uint8)
        if t == 5:
            out.append(m)
            continue
        m[: h // 2, : 8 + t] = 1
        m[-1, -1] = 1
        if t not in (2, 3, 4):
            m[(xx - 20 - t) ** 2 + (yy - 12) ** 2 < 30] = 3
        ring = ((xx - 10) ** 2 + (yy - 17) ** 2 < 25) & ((xx - 10) ** 2 + (yy - 17) ** 2 >= 4)
        m[ring] = 200
        m[rng.random((h, w)) < 0.02] = 200  # scattered single pixels: many RLE runs
        out.append(m)
    return out


def make_images(w=W, h=H, n=N, seed=1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


OBJECTS = {
    1: ObjectMeta(1, "dog", "animal", (10, 200, 30)),
    3: ObjectMeta(3, "ball", "toy"),
    200: ObjectMeta(200, "cat", "animal"),
    9: ObjectMeta(9, "ghost", "person"),  # never in any frame: metadata must still survive
}


@pytest.fixture
def seq() -> TrackedMasks:
    masks = make_masks()
    # a callable mask source, as the project hands over: count reads to check frame-by-frame export
    calls = []

    def frame(t):
        calls.append(t)
        return masks[t]

    tm = TrackedMasks(name="seq-a", size=(W, H), objects=dict(OBJECTS), frames=frame, num_frames=N, fps=12.0)
    tm.calls = calls
    tm.expected = masks
    return tm


def assert_same(loaded: TrackedMasks, expected: list[np.ndarray], size=(W, H)):
    assert loaded.size == size
    assert loaded.num_frames == len(expected)
    for t, m in loaded.iter_masks():
        assert m.dtype == np.uint8 and m.shape == expected[t].shape
        np.testing.assert_array_equal(m, expected[t], err_msg=f"frame {t}")


def assert_objects(loaded: TrackedMasks, ids=(1, 3, 9, 200)):
    assert sorted(loaded.objects) == sorted(ids)
    for oid in ids:
        assert loaded.objects[oid].name == OBJECTS[oid].name
        assert loaded.objects[oid].category == OBJECTS[oid].category
    assert loaded.objects[1].color == (10, 200, 30)


# ---------------------------------------------------------------- DAVIS

def test_davis_round_trip_palette_png_and_jpegs(tmp_path, seq):
    images = make_images()
    folders = save_davis(seq, tmp_path, images=lambda t: images[t])
    assert folders == [tmp_path / "Annotations" / "seq-a"]
    assert seq.calls == list(range(N))  # each frame read once, in order
    pngs = sorted((tmp_path / "Annotations" / "seq-a").glob("*.png"))
    assert [p.name for p in pngs] == [f"{t:05d}.png" for t in range(N)]
    with Image.open(pngs[0]) as im:
        assert im.mode == "P" and im.size == (W, H)
        pal = np.array(im.getpalette(), np.uint8).reshape(-1, 3)
        np.testing.assert_array_equal(pal[:256], PALETTE)
        np.testing.assert_array_equal(np.array(im), seq.expected[0])
    jpg = cv2.imread(str(tmp_path / "JPEGImages" / "seq-a" / "00003.jpg"))
    assert jpg.shape == (H, W, 3)

    for path in (tmp_path, tmp_path / "Annotations", tmp_path / "Annotations" / "seq-a"):
        [loaded] = load_davis(path)
        assert loaded.name == "seq-a"
        assert_same(loaded, seq.expected)
        assert_objects(loaded)
        assert loaded.frame_names[0] == "00000.jpg"
        assert loaded.images is not None and loaded.images(0).shape == (H, W, 3)


def test_davis_reexport_removes_stale_frames(tmp_path, seq):
    save_davis(seq, tmp_path)
    short = TrackedMasks("seq-a", (W, H), OBJECTS, seq.expected[:3])
    save_davis(short, tmp_path)
    [loaded] = load_davis(tmp_path)
    assert_same(loaded, seq.expected[:3])


def test_davis2016_binary_masks_import(tmp_path):
    folder = tmp_path / "Annotations" / "480p" / "blob"
    folder.mkdir(parents=True)
    masks = make_masks()
    expected = [(m > 0).astype(np.uint8) for m in masks]
    for t, m in enumerate(expected):
        cv2.imwrite(str(folder / f"{t:05d}.png"), m * 255)  # 8-bit grey 0/255, DAVIS 2016 style
    for path in (tmp_path, folder):
        [loaded] = load_davis(path)
        assert loaded.name == "blob" and sorted(loaded.objects) == [1]
        assert_same(loaded, expected)


# ---------------------------------------------------------------- COCO

def test_coco_round_trip_and_pycocotools(tmp_path, seq):
    path = save_coco(seq, tmp_path / "out" / "coco.json")
    assert seq.calls == list(range(N))
    data = json.loads(path.read_text())
    assert len(data["images"]) == N
    assert data["images"][1]["file_name"] == "seq-a/00001.jpg"
    assert {c["name"] for c in data["categories"]} == {"animal", "toy", "person"}
    cat_name = {c["id"]: c["name"] for c in data["categories"]}
    n_expected = sum(len(set(np.unique(m).tolist()) - {0}) for m in seq.expected)
    assert len(data["annotations"]) == n_expected
    for a in data["annotations"]:
        assert isinstance(a["segmentation"]["counts"], str)
        assert cat_name[a["category_id"]] == OBJECTS[a["track_id"]].category

    coco = COCO(str(path))
    img_by_frame = {im["frame_id"]: im["id"] for im in coco.dataset["images"]}
    for t, m in enumerate(seq.expected):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_by_frame[t]]))
        assert sorted(a["track_id"] for a in anns) == sorted(set(np.unique(m).tolist()) - {0})
        for a in anns:
            np.testing.assert_array_equal(coco.annToMask(a), (m == a["track_id"]).astype(np.uint8))
            assert a["area"] == int((m == a["track_id"]).sum())
            rle = mask_utils.encode(np.asfortranarray((m == a["track_id"]).astype(np.uint8)))
            assert a["bbox"] == [float(v) for v in mask_utils.toBbox(rle)]
    assert coco.getAnnIds(imgIds=[img_by_frame[5]]) == []  # the empty frame has no annotations

    [loaded] = load_coco(path)
    assert loaded.name == "seq-a" and loaded.fps == 12.0
    assert_same(loaded, seq.expected)
    assert_objects(loaded)


def test_coco_without_track_ids_and_with_polygons(tmp_path):
    """A plain COCO file from another tool: no track ids, polygon and uncompressed-RLE segmentations."""
    m = np.zeros((10, 12), np.uint8)
    m[2:6, 3:9] = 1
    unc = {"size": [10, 12], "counts": [int(c) for c in _uncompressed_counts(m)]}
    data = {"images": [{"id": 7, "file_name": "clip/a.jpg", "width": 12, "height": 10}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "segmentation": unc},
                            {"id": 2, "image_id": 7, "category_id": 2,
                             "segmentation": [[0.0, 7.0, 2.0, 7.0, 2.0, 9.0, 0.0, 9.0]]}],
            "categories": [{"id": 1, "name": "box"}, {"id": 2, "name": "corner"}]}
    path = tmp_path / "plain.json"
    path.write_text(json.dumps(data))
    [loaded] = load_coco(path)
    assert loaded.name == "clip" and loaded.frame_names == ["a.jpg"]
    ids = loaded.mask(0)
    np.testing.assert_array_equal(ids == 1, m == 1)
    assert (ids == 2).sum() > 0 and loaded.objects[2].category == "corner"


def _uncompressed_counts(m):
    flat = m.flatten(order="F")
    counts, cur, run = [], 0, 0
    for v in flat:
        if v == cur:
            run += 1
        else:
            counts.append(run)
            cur, run = v, 1
    counts.append(run)
    return counts


# ---------------------------------------------------------------- YouTube-VIS

def test_youtube_vis_round_trip(tmp_path, seq):
    path = save_youtube_vis(seq, tmp_path / "vis.json")
    assert seq.calls == list(range(N))
    data = json.loads(path.read_text())
    [video] = data["videos"]
    assert video["file_names"][0] == "seq-a/00000.jpg"
    assert (video["width"], video["height"], video["length"]) == (W, H, N)
    by_track = {a["track_id"]: a for a in data["annotations"]}
    assert sorted(by_track) == [1, 3, 9, 200]
    ball = by_track[3]
    assert [s is None for s in ball["segmentations"]] == [False, False, True, True, True, True, False]
    assert ball["bboxes"][2] is None and ball["areas"][2] is None
    assert all(s is None for s in by_track[9]["segmentations"])
    for t in (0, 6):
        np.testing.assert_array_equal(mask_utils.decode(ball["segmentations"][t]), seq.expected[t] == 3)
        assert ball["areas"][t] == int((seq.expected[t] == 3).sum())

    [loaded] = load_youtube_vis(path)
    assert loaded.name == "seq-a"
    assert_same(loaded, seq.expected)
    assert_objects(loaded)


def test_youtube_vis_global_annotation_ids(tmp_path):
    """Files from other tools: no track_id, global annotation ids -> objects 1..N per video."""
    m = np.zeros((5, 6), np.uint8)
    m[1:3, 1:4] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode()
    data = {"videos": [{"id": 4, "file_names": ["v/0.jpg", "v/1.jpg"], "width": 6, "height": 5, "length": 2}],
            "annotations": [{"id": 900, "video_id": 4, "category_id": 1, "segmentations": [rle, None]},
                            {"id": 901, "video_id": 4, "category_id": 1, "segmentations": [None, rle]}],
            "categories": [{"id": 1, "name": "thing"}]}
    path = tmp_path / "other.json"
    path.write_text(json.dumps(data))
    [loaded] = load_youtube_vis(path)
    assert loaded.name == "v" and sorted(loaded.objects) == [1, 2]
    np.testing.assert_array_equal(loaded.mask(0), m * 1)
    np.testing.assert_array_equal(loaded.mask(1), m * 2)


@pytest.mark.parametrize("fmt", ["coco", "youtube-vis"])
def test_several_videos_in_one_file(tmp_path, fmt):
    a = TrackedMasks("a", (W, H), OBJECTS, make_masks())
    b_masks = make_masks(16, 9, 3, seed=5)
    b = TrackedMasks("b", (16, 9), {1: ObjectMeta(1, "x", "toy")}, b_masks)
    path = tmp_path / "multi.json"
    (save_coco if fmt == "coco" else save_youtube_vis)([a, b], path)
    la, lb = (load_coco if fmt == "coco" else load_youtube_vis)(path)
    assert (la.name, lb.name) == ("a", "b")
    assert_same(la, make_masks())
    assert_same(lb, b_masks, size=(16, 9))
    assert lb.objects[1].name == "x"
    # convert handles all videos: one DAVIS folder per video
    convert(path, tmp_path / "davis", to="davis")
    loaded = {v.name: v for v in load_davis(tmp_path / "davis")}
    assert_same(loaded["b"], b_masks, size=(16, 9))


# ---------------------------------------------------------------- binary masks

def test_binary_masks_round_trip(tmp_path, seq):
    folders = save_binary_masks(seq, tmp_path / "bin")
    assert [f.name for f in folders] == ["1_dog", "3_ball", "9_ghost", "200_cat"]
    g = cv2.imread(str(tmp_path / "bin" / "3_ball" / "00000.png"), cv2.IMREAD_UNCHANGED)
    assert g.dtype == np.uint8 and g.shape == (H, W) and set(np.unique(g).tolist()) <= {0, 255}
    np.testing.assert_array_equal(g == 255, seq.expected[0] == 3)
    assert len(list((tmp_path / "bin" / "9_ghost").glob("*.png"))) == N
    loaded = load_binary_masks(tmp_path / "bin")
    assert_same(loaded, seq.expected)
    assert {o.name for o in loaded.objects.values()} == {"dog", "ball", "ghost", "cat"}


# ---------------------------------------------------------------- overlay video

def test_overlay_mp4(tmp_path, seq):
    images = make_images()
    path = save_overlay_video(seq, tmp_path / "review.mp4", images=lambda t: images[t])
    assert path.exists() and not list(tmp_path.glob(".*"))  # no temporary file left behind
    cap = cv2.VideoCapture(str(path))
    try:
        assert cap.isOpened()
        frames = []
        while True:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(f)
    finally:
        cap.release()
    assert len(frames) == N
    assert frames[0].shape == (H + 1, W + 1, 3)  # odd size: padded by one black row/column, not cropped
    assert frames[0][:, -1].mean() < 40 and frames[0][-1, :].mean() < 40  # black (up to codec blur)
    # the object colour shows where the object is (dog = (10, 200, 30) RGB, half blended)
    inside = frames[0][2:8, 1:5].reshape(-1, 3).mean(axis=0)  # BGR
    assert inside[1] > inside[2] + 30


def test_overlay_mp4_even_size_is_native(tmp_path):
    masks = make_masks(40, 24, 3)
    images = make_images(40, 24, 3)
    tm = TrackedMasks("even", (40, 24), {}, masks, images=lambda t: images[t])
    path = save_overlay_video(tm, tmp_path / "even.mp4", fps=5)
    cap = cv2.VideoCapture(str(path))
    try:
        assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 3
        ok, f = cap.read()
        assert ok and f.shape == (24, 40, 3)
    finally:
        cap.release()


def test_overlay_needs_frames(tmp_path, seq):
    with pytest.raises(FormatError, match="review.mp4"):
        save_overlay_video(seq, tmp_path / "review.mp4")


# ---------------------------------------------------------------- convert

def _export(fmt, seq, tmp_path) -> Path:
    if fmt == "davis":
        save_davis(seq, tmp_path / "src_davis")
        return tmp_path / "src_davis"
    if fmt == "coco":
        return save_coco(seq, tmp_path / "src.json")
    if fmt == "youtube-vis":
        return save_youtube_vis(seq, tmp_path / "src_vis.json")
    save_binary_masks(seq, tmp_path / "src_bin")
    return tmp_path / "src_bin"


@pytest.mark.parametrize("src_fmt", ["davis", "coco", "youtube-vis", "binary"])
@pytest.mark.parametrize("to", ["davis", "coco", "youtube-vis"])
def test_convert_every_pair_is_exact(tmp_path, seq, src_fmt, to):
    src = _export(src_fmt, seq, tmp_path)
    assert detect_format(src) == src_fmt
    dst = tmp_path / ("dst" if to == "davis" else f"dst_{to}.json")
    written = convert(src, dst, to=to)
    assert all(p.exists() for p in written)
    assert detect_format(dst) == to
    [loaded] = load_any(dst)
    assert_same(loaded, seq.expected)
    assert sorted(loaded.objects) == [1, 3, 9, 200]
    assert loaded.objects[3].name == "ball" and loaded.objects[3].category == (
        "object" if src_fmt == "binary" else "toy")


def test_convert_to_existing_folder_and_alias(tmp_path, seq):
    src = save_coco(seq, tmp_path / "c.json")
    (tmp_path / "out").mkdir()
    [p] = convert(src, tmp_path / "out", to="ytvis")
    assert p == tmp_path / "out" / "youtube-vis.json"
    assert_same(load_youtube_vis(p)[0], seq.expected)
    with pytest.raises(ValueError, match="unknown format"):
        convert(src, tmp_path / "x", to="pascal")


def test_one_format_table_serves_export_convert_and_the_command_line(tmp_path, seq, capsys):
    """Every registered format exports where the table says; the command line converts to exactly the
    convertible ones (binary included) and refuses the rest."""
    from engine.cli import main
    from engine.formats import EXPORT_FORMATS, FORMATS

    assert FORMATS == ("davis", "coco", "youtube-vis", "binary") and "overlay" in EXPORT_FORMATS
    seq.images = lambda t: np.full((H, W, 3), 40 * t, np.uint8)
    for name, fmt in EXPORT_FORMATS.items():
        written = fmt.export([seq], tmp_path / name)
        assert written and all(p.exists() for p in written)
        if fmt.file_name is not None:
            assert written == [tmp_path / name / fmt.file_name.format(video="seq-a")]
    src = save_coco(seq, tmp_path / "c.json")
    assert main(["convert", str(src), str(tmp_path / "bin"), "--to", "binary"]) == 0
    assert_same(load_binary_masks(tmp_path / "bin"), seq.expected)
    with pytest.raises(SystemExit):
        main(["convert", str(src), str(tmp_path / "ov"), "--to", "overlay"])
    assert "invalid choice: 'overlay'" in capsys.readouterr().err


def test_unknown_ids_are_not_dropped(tmp_path):
    m = np.zeros((4, 5), np.uint8)
    m[1, 1] = 7  # id 7 is not in the objects dict
    tm = TrackedMasks("u", (5, 4), {}, [m])
    for fmt in ("coco", "youtube-vis"):
        p = (save_coco if fmt == "coco" else save_youtube_vis)(tm, tmp_path / f"{fmt}.json")
        [loaded] = load_any(p)
        assert 7 in loaded.objects
        np.testing.assert_array_equal(loaded.mask(0), m)


# ---------------------------------------------------------------- errors name the file

def test_error_malformed_json(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text('{"images": [')
    for fn in (load_coco, load_youtube_vis, load_any):
        with pytest.raises(FormatError, match="broken.json.*malformed JSON"):
            fn(p)
    with pytest.raises(FormatError, match="broken.json"):
        convert(p, tmp_path / "o", to="davis")


def test_error_missing_keys(tmp_path, seq):
    p = tmp_path / "nokeys.json"
    p.write_text(json.dumps({"images": []}))
    with pytest.raises(FormatError, match="nokeys.json.*'annotations'"):
        load_coco(p)
    data = json.loads(save_coco(seq, tmp_path / "c.json").read_text())
    del data["annotations"][3]["segmentation"]
    p.write_text(json.dumps(data))
    with pytest.raises(FormatError, match=r"nokeys.json: annotations\[3\]: missing key 'segmentation'"):
        load_coco(p)
    data = json.loads(save_youtube_vis(seq, tmp_path / "v.json").read_text())
    del data["videos"][0]["file_names"]
    p.write_text(json.dumps(data))
    with pytest.raises(FormatError, match=r"nokeys.json: videos\[0\]: missing key 'file_names'"):
        load_youtube_vis(p)
    data["videos"] = [{"id": 1, "file_names": ["a/0.jpg"], "width": W, "height": H}]
    p.write_text(json.dumps(data))
    with pytest.raises(FormatError, match="nokeys.json.*segmentations for a video of 1 frames"):
        load_youtube_vis(p)


def test_error_mask_size_mismatch(tmp_path, seq):
    # COCO: an RLE whose size is not the image size
    data = json.loads(save_coco(seq, tmp_path / "c.json").read_text())
    data["images"][0]["width"] = W + 1
    for im in data["images"]:
        im["width"] = W + 1
    p = tmp_path / "badsize.json"
    p.write_text(json.dumps(data))
    with pytest.raises(FormatError, match="badsize.json.*does not match the frame size"):
        load_coco(p)
    # YouTube-VIS: same
    data = json.loads(save_youtube_vis(seq, tmp_path / "v.json").read_text())
    data["videos"][0]["height"] = H - 1
    p.write_text(json.dumps(data))
    with pytest.raises(FormatError, match="badsize.json.*does not match the frame size"):
        load_youtube_vis(p)
    # DAVIS: one PNG of another size
    save_davis(seq, tmp_path / "d")
    Image.fromarray(np.zeros((H, W + 2), np.uint8), "L").save(tmp_path / "d" / "Annotations" / "seq-a" / "00004.png")
    [loaded] = load_davis(tmp_path / "d")
    with pytest.raises(FormatError, match="00004.png"):
        for _ in loaded.iter_masks():
            pass
    # export: the mask source gives a wrong size -> names the output
    bad = TrackedMasks("bad", (W, H), OBJECTS, [np.zeros((H, W - 1), np.uint8)])
    with pytest.raises(FormatError, match="out.json.*does not match the video size"):
        save_coco(bad, tmp_path / "out.json")
    assert not (tmp_path / "out.json").exists()


def test_error_unknown_source(tmp_path):
    with pytest.raises(FormatError, match="nowhere.*not found"):
        convert(tmp_path / "nowhere", tmp_path / "o", to="coco")
    p = tmp_path / "other.json"
    p.write_text(json.dumps({"foo": 1}))
    with pytest.raises(FormatError, match="other.json.*neither COCO"):
        convert(p, tmp_path / "o", to="davis")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FormatError, match="empty.*no DAVIS annotations"):
        convert(tmp_path / "empty", tmp_path / "o.json", to="coco")
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with pytest.raises(FormatError, match="notes.txt.*malformed JSON"):
        convert(txt, tmp_path / "o.json", to="coco")


def test_error_corrupt_rle_and_bad_types(tmp_path):
    data = {"images": [{"id": 1, "file_name": "s/0.jpg", "width": 4, "height": 3}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "track_id": 1,
                             "segmentation": {"size": [3, 4], "counts": 5}}]}
    p = tmp_path / "corrupt.json"
    p.write_text(json.dumps(data))
    with pytest.raises(FormatError, match="corrupt.json"):
        load_coco(p)
    # a truncated RLE string: pycocotools would decode it into garbage without complaint
    good = mask_utils.encode(np.asfortranarray(np.eye(3, 4, dtype=np.uint8)))["counts"].decode()
    for counts in (good[:-1], "", good + "1"):
        data["annotations"][0]["segmentation"] = {"size": [3, 4], "counts": counts}
        p.write_text(json.dumps(data))
        with pytest.raises(FormatError, match=r"corrupt.json: annotations\[0\]: corrupt RLE"):
            load_coco(p)
    data["annotations"][0]["segmentation"] = {"size": [3, 4], "counts": good}
    p.write_text(json.dumps(data))
    np.testing.assert_array_equal(load_coco(p)[0].mask(0), np.eye(3, 4, dtype=np.uint8))
    data["images"][0]["width"] = "4"
    p.write_text(json.dumps(data))
    with pytest.raises(FormatError, match=r"corrupt.json: images\[0\]: 'width' should be int"):
        load_coco(p)
    data["annotations"][0]["image_id"] = 99
    data["images"][0]["width"] = 4
    p.write_text(json.dumps(data))
    with pytest.raises(FormatError, match="corrupt.json.*image_id 99"):
        load_coco(p)


# ---------------------------------------------------------------- real DAVIS data

def test_real_davis_sequence_converts_exactly(tmp_path, davis_root):
    seq_dir = davis_root / "Annotations" / "480p" / "dog-agility"  # the shortest sequence (25 frames)
    originals = [read_id_png(p) for p in sorted(seq_dir.glob("*.png"))]
    assert originals and set(np.unique(np.stack(originals)).tolist()) <= {0, 1}

    coco_path = convert(seq_dir, tmp_path / "dog.json", to="coco")[0]
    coco = COCO(str(coco_path))
    for im in coco.dataset["images"]:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[im["id"]]))
        gt = originals[im["frame_id"]]
        assert (im["width"], im["height"]) == (854, 480)
        if gt.any():
            [a] = anns
            np.testing.assert_array_equal(coco.annToMask(a), gt)
    vis_path = convert(seq_dir, tmp_path / "dog_vis.json", to="youtube-vis")[0]

    for src, out in ((coco_path, "from_coco"), (vis_path, "from_vis")):
        [folder] = convert(src, tmp_path / out, to="davis")
        back = sorted(folder.glob("*.png"))
        assert [p.name for p in back] == sorted(p.name for p in seq_dir.glob("*.png"))
        for p, gt in zip(back, originals):
            np.testing.assert_array_equal(read_id_png(p), gt)
