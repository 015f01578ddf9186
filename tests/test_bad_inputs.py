"""Every bad input of issue 11 gets one clear line naming the file (exit 2 from the CLI) and changes nothing."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from engine.cli import main
from engine.errors import EngineError, FormatError, ProjectError, StorageError, VideoError
from engine.formats import convert, load_coco, load_youtube_vis
from engine.formats.annotations import MAX_PIXELS
from engine.project import Project
from engine.session import Session
from engine.video import open_video
from tests.test_project import _edit, _square, _write_avi


def _fails_with_one_line(capsys, argv, *names):
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vos-engine: error: ") and err.count("\n") == 1, err
    for name in names:
        assert str(name) in err, err
    return err


def _tree(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size if p.is_file() else -1) for p in folder.rglob("*"))


def _rle(mask):
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(r["size"]), "counts": r["counts"].decode("ascii")}


def _coco(images, with_masks=True, w=8, h=6):
    """A COCO file: images given as (file_name, video_id, frame_id); each frame holds object 1 as a 2x2 square."""
    m = np.zeros((h, w), bool)
    m[1:3, 1:3] = True
    ims, anns = [], []
    for k, (name, vid, fid) in enumerate(images, start=1):
        im = {"id": k, "file_name": name, "width": w, "height": h, "video_id": vid}
        if fid is not None:
            im["frame_id"] = fid
        ims.append(im)
        if with_masks:
            anns.append({"id": k, "image_id": k, "category_id": 1, "segmentation": _rle(m), "track_id": 1})
    return {"images": ims, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}


def _write(path, doc):
    path.write_text(json.dumps(doc))
    return path


# ---- convert


def test_json_nested_100000_deep_is_one_line(tmp_path, capsys):
    src = tmp_path / "deep.json"
    src.write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}")
    _fails_with_one_line(capsys, ["convert", src, tmp_path / "out", "--to", "davis"], src, "nested too deeply")
    assert not (tmp_path / "out").exists()


def test_coco_frame_id_mixing_int_and_str(tmp_path, capsys):
    src = _write(tmp_path / "mix.json", _coco([("v/00000.jpg", 1, 0), ("v/00001.jpg", 1, "1")]))
    _fails_with_one_line(capsys, ["convert", src, tmp_path / "out", "--to", "davis"], src,
                         "images[1]: 'frame_id' should be int, found str")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("to", ["davis", "coco"])
def test_convert_destination_that_is_a_file_or_inside_one(tmp_path, capsys, to):
    src = _write(tmp_path / "ok.json", _coco([("v/00000.jpg", 1, 0)]))
    blocker = tmp_path / "blocker"
    blocker.write_text("keep me")
    inside = blocker / "sub" / "out.json"
    if to != "coco":  # a json target may replace an existing file; a folder target may not
        _fails_with_one_line(capsys, ["convert", src, blocker, "--to", to], blocker, "is a file, not a folder")
    _fails_with_one_line(capsys, ["convert", src, inside, "--to", to], blocker, "is a file, so")
    with pytest.raises(StorageError, match=f"{blocker}: is a file, not a folder"):
        convert(src, blocker, to="binary")
    assert blocker.read_text() == "keep me"
    old = tmp_path / "old.json"
    old.write_text("{}")
    assert convert(src, old, to="coco") == [old] and "images" in json.loads(old.read_text())  # replacing is fine


def test_binary_convert_keeps_every_video_inside_dst(tmp_path):
    doc = _coco([("a/00000.jpg", 1, 0), ("b/00000.jpg", 2, 0), ("c/00000.jpg", 3, 0)])
    doc["videos"] = [{"id": 1, "name": "../../escaped"}, {"id": 2, "name": str(tmp_path / "absolute")},
                     {"id": 3, "name": ".."}]
    src = _write(tmp_path / "names.json", doc)
    dst = tmp_path / "deep" / "dst"
    written = convert(src, dst, to="binary")
    assert len(written) == 3
    for p in written:
        assert p.resolve().is_relative_to(dst.resolve()) and (p / "00000.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep", "names.json"]
    assert sorted(p.name for p in dst.iterdir()) == sorted(
        ["_.._escaped", str(tmp_path / "absolute").replace("/", "_").strip(" ."), "video"])


def test_coco_frames_sharing_a_basename_are_refused(tmp_path, capsys):
    src = _write(tmp_path / "same.json", _coco([("v/x/00000.jpg", 1, 0), ("v/y/00000.jpg", 1, 1),
                                                ("v/z/00001.jpg", 1, 2)]))
    _fails_with_one_line(capsys, ["convert", src, tmp_path / "out", "--to", "davis"], src,
                         "frames 0 and 1 are both named '00000'")
    assert not (tmp_path / "out").exists()


def test_youtube_vis_with_no_frames(tmp_path, capsys):
    src = _write(tmp_path / "empty.json", {"videos": [{"id": 1, "name": "v", "width": 8, "height": 6,
                                                        "file_names": []}], "annotations": []})
    _fails_with_one_line(capsys, ["convert", src, tmp_path / "out", "--to", "davis"], src,
                         "videos[0]: the video has no frames")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("side", [20000, 40000])
def test_declared_huge_frames_are_refused_before_any_allocation(tmp_path, side):
    doc = {"images": [{"id": 1, "file_name": "v/0.jpg", "width": side, "height": side}],
           "annotations": [{"id": 1, "image_id": 1, "segmentation": {"size": [side, side], "counts": f"0{side}"}}]}
    src = _write(tmp_path / "bomb.json", doc)
    assert src.stat().st_size < 300
    with pytest.raises(FormatError, match=rf"bomb.json: images\[0\]: frame size {side}x{side} is not a video "
                                          rf"frame size .*at most {MAX_PIXELS} pixels"):
        load_coco(src)
    yvis = _write(tmp_path / "ybomb.json", {"videos": [{"id": 1, "width": side, "height": side,
                                                        "file_names": ["a.jpg"]}], "annotations": []})
    with pytest.raises(FormatError, match="ybomb.json: videos.0.: frame size"):
        load_youtube_vis(yvis)


def test_convert_onto_a_full_disk_leaves_nothing(tmp_path, small_disk, capsys):
    frames = [(f"v/{t:05d}.jpg", 1, t) for t in range(200)]
    src = _write(tmp_path / "many.json", _coco(frames, w=64, h=48))
    _fill(small_disk, leave=16 * 1024)
    before = _tree(small_disk)
    dst = small_disk / "new" / "export"
    for to in ("davis", "youtube-vis"):
        _fails_with_one_line(capsys, ["convert", src, dst, "--to", to], small_disk, "No space left on device")
        assert _tree(small_disk) == before
    with pytest.raises(StorageError, match="No space left on device"):
        convert(src, dst, to="binary")
    assert _tree(small_disk) == before


# ---- propagate


def test_propagate_out_is_checked_before_the_work(tmp_path, capsys):
    video = _write_avi(tmp_path / "clip.avi")
    mask = tmp_path / "m.png"
    cv2.imwrite(str(mask), np.zeros((120, 160), np.uint8))
    out = tmp_path / "out.txt"
    out.write_text("not a folder")
    _fails_with_one_line(capsys, ["propagate", video, "--mask", mask, "--out", out, "--project", tmp_path / "proj"],
                         out, "is a file, not a folder")
    assert not (tmp_path / "proj").exists()  # it stopped before creating the project
    assert out.read_text() == "not a folder"


# ---- videos


def test_video_path_with_nul_byte_or_5000_characters(tmp_path, capsys):
    with pytest.raises(VideoError, match=r"a\\0b.mp4: the path contains a NUL byte"):
        open_video(tmp_path / "a\0b.mp4")
    long = tmp_path / ("x" * 5000 + ".mp4")
    with pytest.raises(VideoError, match=r"xxx\.\.\.xxx.*\.mp4 \(\d+ characters\): cannot open \(File name too long\)"):
        open_video(long)
    mask = tmp_path / "m.png"
    cv2.imwrite(str(mask), np.zeros((4, 4), np.uint8))
    err = _fails_with_one_line(capsys, ["propagate", long, "--mask", mask, "--out", tmp_path / "o"], "characters")
    assert len(err) < 400


def test_ffmpeg_noise_is_not_printed(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(100))  # an mp4 cut after its header
    mask = tmp_path / "m.png"
    cv2.imwrite(str(mask), np.zeros((4, 4), np.uint8))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    r = subprocess.run([sys.executable, "-m", "engine.cli", "propagate", str(bad), "--mask", str(mask),
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [f"vos-engine: error: {bad}: cannot open: not a video, or a codec OpenCV "
                                     "cannot decode, or a truncated file"]
    loud = subprocess.run([sys.executable, "-c", "import cv2, sys; cv2.VideoCapture(sys.argv[1])", str(bad)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert "moov atom not found" in loud.stderr  # without the engine's setting FFmpeg does print


# ---- projects


@pytest.fixture
def saved(tmp_path):
    """A saved project with one object on frames 0 and 3."""
    p = Project.create(tmp_path / "proj", _write_avi(tmp_path / "clip.avi"), short_side=60)
    p.add_object("dog")
    p.masks.set(0, _square(1, 5, 5))
    p.masks.set(3, _square(1, 20, 20))
    p.save()
    return p.folder


def _refused(folder, *patterns):
    before = _tree(folder)
    with pytest.raises(ProjectError) as info:
        Project.load(folder)
    line = str(info.value)
    assert "\n" not in line
    for pattern in patterns:
        assert pattern in line, line
    assert _tree(folder) == before  # nothing changed
    return line


def _mask_file(folder, t):
    doc = json.loads((folder / "project.json").read_text())
    return folder / "masks" / doc["mask_files"][str(t)]["file"]


def test_project_json_nested_too_deeply(saved):
    (saved / "project.json").write_text("[" * 100_000 + "]" * 100_000)
    _refused(saved, f"{saved / 'project.json'}: JSON nested too deeply")


def test_unknown_refiner_opens_with_a_warning_and_no_refiner(saved, caplog):
    _edit(saved, lambda d: d["settings"].update(refiner="from-the-future"))
    p = Project.load(saved)
    assert p.warnings == [f"{saved / 'project.json'}: settings.refiner 'from-the-future' is not a refiner of this "
                          "installation; opening without a refiner"]
    assert p.warnings[0] in caplog.text
    s = Session(p)
    assert s.refiner_name == "none"
    s.close()


@pytest.mark.parametrize("value, pattern", [
    (["1", 2], "settings.corrected_keyframes: expected an object {object_id: [frames]}, got ['1', 2]"),
    ({"1": "0"}, "settings.corrected_keyframes.1: expected a list of frame indices 0..11, got '0'"),
    ({"7": [0]}, "settings.corrected_keyframes: key '7' is not the id of an object"),
    ({"1": [99]}, "settings.corrected_keyframes.1: expected a list of frame indices"),
])
def test_malformed_corrected_keyframes_are_refused_at_load(saved, value, pattern):
    def as_schema_1(doc):  # schema 1 kept the corrected keyframes in settings; schema 2 gives keyframes a role
        doc.update(schema_version=1, keyframes={k: v["full"] + v["corrected"] for k, v in doc["keyframes"].items()})
        doc.pop("mask_files")
        doc["settings"].update(corrected_keyframes=value)
    _edit(saved, as_schema_1)
    _refused(saved, str(saved / "project.json"), pattern)


def test_masks_being_a_file_is_refused(saved):
    import shutil
    shutil.rmtree(saved / "masks")
    (saved / "masks").write_text("")
    _refused(saved, f"{saved / 'masks'}: is a file")


def test_truncated_mask_is_found_at_load_with_its_full_path(saved):
    f = _mask_file(saved, 3)
    f.write_bytes(f.read_bytes()[:-20])
    _refused(saved, f"{f}: damaged: its content does not match the checksum")


def test_16_bit_mask_is_refused(saved):
    f = _mask_file(saved, 0)
    cv2.imwrite(str(f), np.zeros((60, 80), np.uint16))
    _refused(saved, f"{f}: mask is a 16-bit PNG")


def test_mask_id_no_object_lists_is_refused(saved):
    _edit(saved, lambda d: d["mask_files"]["3"].update(ids=[1, 77]))
    _refused(saved, "mask_files.'3'.ids: the mask holds object id(s) 77, which no object lists")


def test_interaction_for_an_object_never_issued_is_refused(saved):
    _edit(saved, lambda d: d["interactions"].append(
        {"kind": "click", "frame": 0, "object_id": 99, "positive": True, "points": [[1, 1]], "radius": None,
         "time": 0.0}))
    _refused(saved, "interactions[0].object_id: 99 was never an object's id (ids so far: 1..1)")


def test_interactions_of_removed_objects_are_kept(saved):
    p = Project.load(saved)
    cat = p.add_object("cat")
    from engine.project import Interaction
    p.log(Interaction("click", 0, cat.id, True, [(1.0, 1.0)]))
    p.remove_object(cat.id)
    p.save()
    assert Project.load(saved).interactions[0].object_id == cat.id


def test_video_path_with_nul_byte_or_5000_characters_in_project_json(saved):
    _edit(saved, lambda d: d.update(video="clip\0.avi"))
    _refused(saved, "video: expected a non-empty path string without NUL")
    _edit(saved, lambda d: d.update(video="x" * 5000))
    _refused(saved, "project.json: video 'xxx", "(5000 characters)", "File name too long")


@pytest.mark.parametrize("fault", ["unknown id", "truncated"])
def test_schema_1_masks_are_checked_by_decoding(saved, fault):
    """A schema 1 project has no listing: its masks are decoded on load, so the same faults are found."""
    _to_schema_1(saved)
    f = saved / "masks" / "00003.png"
    if fault == "unknown id":
        cv2.imwrite(str(f), _square(77, 0, 0))
        _refused(saved, f"{f}: frame 3 holds object id(s) 77, which no object in")
    else:
        f.write_bytes(f.read_bytes()[:-30])
        _refused(saved, f"{f}: not a readable PNG image")


def _to_schema_1(folder):
    """Rewrite a saved project the way schema 1 stored it: masks/NNNNN.png, no listing."""
    doc = json.loads((folder / "project.json").read_text())
    for t, entry in doc.pop("mask_files").items():
        os.replace(folder / "masks" / entry["file"], folder / "masks" / f"{int(t):05d}.png")
    doc["schema_version"] = 1
    (folder / "project.json").write_text(json.dumps(doc))


def test_errors_are_engine_errors_and_the_cli_prints_os_errors_as_one_line(tmp_path, capsys, monkeypatch):
    assert issubclass(StorageError, EngineError)
    import engine.formats as formats

    def broken(*a, **k):
        raise PermissionError(13, "Permission denied", str(tmp_path / "x.json"))

    monkeypatch.setattr(formats, "convert", broken)
    _fails_with_one_line(capsys, ["convert", tmp_path, tmp_path / "o", "--to", "coco"],
                         f"{tmp_path / 'x.json'}: Permission denied")


# ---- a full disk


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (the tests run as root in CI); skipped, saying why, where mounting is not allowed."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip() or 'mount failed'}); run as root")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


def _fill(disk, leave):
    """Fill `disk` until only about `leave` bytes are free."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "filler").write_bytes(b"\0" * max(0, free - leave))


def test_full_disk_save_names_the_file_and_keeps_the_last_save(tmp_path, small_disk):
    video = _write_avi(tmp_path / "clip.avi")
    p = Project.create(small_disk / "proj", video, short_side=60)
    p.add_object("dog")
    p.masks.set(0, _square(1, 5, 5))
    p.save()
    saved_state = (_tree(p.folder), (p.folder / "project.json").read_bytes())
    rng = np.random.default_rng(0)
    for t in range(1, 12):  # noisy masks: ~5 kB each, ~55 kB in all
        p.masks.set(t, (rng.random((60, 80)) < 0.5).astype(np.uint8))
    from engine.project import Interaction
    for k in range(3000):  # a long log: project.json grows by ~600 kB
        p.log(Interaction("click", k % 12, 1, True, [(1.0, 2.0)], time=float(k)))

    # no room for the masks; room for the masks but not for project.json
    for leave, culprit in ((4 * 1024, r"masks/\d{5}\.[0-9a-f]{16}\.png"), (300 * 1024, r"project\.json")):
        (small_disk / "filler").unlink(missing_ok=True)
        _fill(small_disk, leave)
        with pytest.raises(StorageError, match=f"/proj/{culprit}: cannot save the project \\(No space left on "
                                               "device\\); the last save on disk is unchanged"):
            p.save()
        assert (_tree(p.folder), (p.folder / "project.json").read_bytes()) == saved_state
        assert p.dirty
    (small_disk / "filler").unlink()
    p.save()
    q = Project.load(p.folder)
    assert len(q.interactions) == 3000 and q.masks.frames() == list(range(12))
