"""`vos-engine batch` on a local Ray instance (2 CPUs, started once for this module): the outputs are a plain
`vos-engine propagate`'s, a rerun skips what is done, a task that raises or whose worker dies is retried, a corrupt
video fails alone; the source is checked before anything runs."""

import json
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import ray  # the README's test command installs the [cluster] extra

from engine import cli
from engine.batch import read_source, run_batch
from engine.errors import FormatError
from engine.palette import write_id_png
from engine.session import Session
from tests.test_propagation import ColourEmbedder, square_video


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    """One local Ray instance for the module (starting one takes seconds); run_batch uses it and leaves it running."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
             object_store_memory=100 * 1024 ** 2)
    yield
    ray.shutdown()


def clip(folder: Path, n=8, size=(160, 120), mp4=False, seed=0):
    """A synthetic video of a red square moving right (a frame folder, or an .mp4 file) and its first-frame mask."""
    frames, masks = square_video(n=n, size=size, seed=seed)
    folder.mkdir(parents=True)
    if mp4:
        video = folder / f"{folder.name}.mp4"
        w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, size)
        for f in frames:
            w.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        w.release()
    else:
        video = folder / "frames"
        video.mkdir()
        for t, f in enumerate(frames):
            cv2.imwrite(str(video / f"{t:05d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    mask = folder / "mask.png"
    write_id_png(mask, masks[0])
    return video, mask


def manifest(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_outputs_equal_a_plain_propagate_and_the_projects_open(tmp_path):
    """The real engine, a frame folder and an .mp4: every exported byte equals `vos-engine propagate`'s."""
    a_video, a_mask = clip(tmp_path / "a", n=6)
    b_video, b_mask = clip(tmp_path / "b", n=6, mp4=True, seed=1)
    csv = tmp_path / "videos.csv"
    csv.write_text(f"video,mask,frame,objects\n{a_video},{a_mask},0,\nb/b.mp4,b/mask.png,0,red square\n")
    out = tmp_path / "out"
    assert cli.main(["batch", str(csv), "--out", str(out), "--format", "davis", "coco", "--workers", "2"]) == 0

    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == ["frames", "b"] and summary["failed"] == [] and summary["threads_per_worker"] == 1
    for name, video, mask, fmt in (("frames", a_video, a_mask, "davis"), ("b", b_video, b_mask, "coco")):
        plain = tmp_path / f"plain-{name}"
        assert cli.main(["propagate", str(video), "--mask", str(mask), "--out", str(plain), "--format", fmt]) == 0
        got, want = files_of(out / fmt / name), files_of(plain)
        if name == "b":  # the manifest named its object; nothing else differs
            assert b"red square" in got["coco.json"]
            got["coco.json"] = got["coco.json"].replace(b"red square", b"object 1")
        assert got == want and len(got) == 1 + (2 * 6 if fmt == "davis" else 6)  # meta.json + PNGs + JPEGs; coco.json + JPEGs
        assert files_of(out / ("coco" if fmt == "davis" else "davis") / name)  # the other format is there too
        record = summary["videos"][name]
        assert record["status"] == "done" and record["frames"] == 6 and record["threads"] == 1
        assert record["fps"] > 0 and 0 < record["mean_confidence"] <= 1
        assert 1 <= len(record["least_sure"]) <= 5 and set(record["least_sure"]) <= set(range(1, 6))
        assert json.loads((out / "done" / f"{name}.json").read_text()) == {**record}
        s = Session.open(out / record["project"])
        try:
            assert s.masked_frames() == list(range(6)) and s.frames_most_likely_wrong(5) == record["least_sure"]
            assert [o.name for o in s.objects.values()] == (["red square"] if name == "b" else ["object 1"])
        finally:
            s.close()


def test_a_rerun_skips_what_is_done_and_force_redoes_all_but_a_corrected_project(tmp_path):
    videos = []
    for k in range(3):
        video, mask = clip(tmp_path / f"v{k}", n=5, seed=k)
        videos.append({"video": str(video.rename(tmp_path / f"v{k}" / f"clip{k}")), "mask": str(mask)})
    source = read_source(manifest(tmp_path / "m.jsonl", videos))
    out = tmp_path / "out"
    first = run_batch(source, out, workers=2, embedder=ColourEmbedder())
    assert first["done"] == ["clip0", "clip1", "clip2"]
    markers = {p.name: p.stat().st_mtime_ns for p in (out / "done").iterdir()}

    again = run_batch(source, out, workers=2, embedder=ColourEmbedder())
    assert again["done"] == [] and again["skipped"] == ["clip0", "clip1", "clip2"] and again["frames"] == 0
    assert again["workers"] is None  # nothing to do: Ray is not even asked
    assert again["videos"]["clip1"]["least_sure"] == first["videos"]["clip1"]["least_sure"]
    assert {p.name: p.stat().st_mtime_ns for p in (out / "done").iterdir()} == markers

    # a video whose marker is missing is not done, whatever else of it is on disk
    (out / "done" / "clip1.json").unlink()
    (out / "davis" / "clip1" / "Annotations" / "clip1" / "00003.png").unlink()
    third = run_batch(source, out, workers=2, embedder=ColourEmbedder())
    assert third["done"] == ["clip1"] and third["skipped"] == ["clip0", "clip2"]
    assert (out / "davis" / "clip1" / "Annotations" / "clip1" / "00003.png").is_file()

    s = Session.open(out / "projects" / "clip2.vosproj")  # corrected in the annotator since
    s.update_object(1, name="corrected")
    s.save()
    s.close()
    forced = run_batch(source, out, workers=2, force=True, embedder=ColourEmbedder())
    assert forced["done"] == ["clip0", "clip1"] and forced["failed"] == ["clip2"]
    assert "changed since the batch made it" in forced["videos"]["clip2"]["reason"]
    # a format it lacks redoes a done video too, but never a corrected one
    coco = run_batch(source, out, formats=("davis", "coco"), workers=2, embedder=ColourEmbedder())
    assert coco["done"] == ["clip0", "clip1"] and coco["failed"] == ["clip2"]
    assert (out / "coco" / "clip0" / "coco.json").is_file() and not (out / "coco" / "clip2").exists()
    s = Session.open(out / "projects" / "clip2.vosproj")
    assert s.objects[1].name == "corrected"
    s.close()


class FaultyEmbedder(ColourEmbedder):
    """ColourEmbedder that fails at its first frame of a video of a given width: once by raising ("raise"), once by
    killing its worker process ("exit"), or at every attempt ("always"). Each failure leaves a file in `log`."""

    def __init__(self, log: Path, faults: dict[int, str]):
        self.log, self.faults = log, faults

    def embed(self, frame):
        width = frame.shape[1]
        fault = self.faults.get(width)
        tries = sorted(self.log.glob(f"{width}-*"))
        if fault == "always" or (fault and not tries):
            (self.log / f"{width}-{len(tries) + 1}").touch()
            if fault == "exit":
                os._exit(3)
            raise RuntimeError(f"injected failure {len(tries) + 1}")
        return super().embed(frame)


def test_a_task_that_raises_or_whose_worker_dies_is_retried_once(tmp_path):
    rows = []
    for k, width in enumerate((160, 176, 192, 208)):
        video, mask = clip(tmp_path / f"w{width}", n=4, size=(width, 120), seed=k)
        rows.append({"video": str(video.rename(video.with_name(f"w{width}"))), "mask": str(mask)})
    log = tmp_path / "log"
    log.mkdir()
    embedder = FaultyEmbedder(log, {160: "raise", 176: "exit", 192: "always"})
    out = tmp_path / "out"
    summary = run_batch(read_source(manifest(tmp_path / "m.jsonl", rows)), out, workers=2, embedder=embedder)

    assert summary["done"] == ["w160", "w176", "w208"] and summary["failed"] == ["w192"]
    assert sorted(p.name for p in log.iterdir()) == ["160-1", "176-1", "192-1", "192-2"]  # one retry each
    assert summary["videos"]["w192"]["reason"] == "RuntimeError: injected failure 2"
    assert not (out / "done" / "w192.json").exists() and (out / "done" / "w176.json").is_file()
    for name in summary["done"]:
        assert len(list((out / "davis" / name / "Annotations" / name).glob("*.png"))) == 4


def test_a_corrupt_video_is_reported_and_the_others_finish(tmp_path, capsys):
    good, mask = clip(tmp_path / "good", n=4)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(os.urandom(4096))
    m = manifest(tmp_path / "m.jsonl", [{"video": str(bad), "mask": str(mask)}, {"video": str(good), "mask": str(mask)}])
    out = tmp_path / "out"
    assert cli.main(["batch", str(m), "--out", str(out)]) == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == ["frames"] and summary["failed"] == ["broken"]
    reason = summary["videos"]["broken"]["reason"]
    assert str(bad) in reason and "\n" not in reason
    err = capsys.readouterr().err
    assert f"vos-engine: failed: broken: {reason}" in err
    assert not (out / "projects" / "broken.vosproj" / "project.json").exists()

    # a frame outside the video is found when the video is opened: that video's failure, not the batch's
    m3 = manifest(tmp_path / "m3.jsonl", [{"video": str(good), "mask": str(mask), "frame": 9}])
    assert cli.main(["batch", str(m3), "--out", str(tmp_path / "out3")]) == 2
    reason = json.loads((tmp_path / "out3" / "summary.json").read_text())["videos"]["frames"]["reason"]
    assert reason == f"{mask}: frame 9 is outside the video (0..3)"


def test_davis_sequences_match_evaluate(davis_root, tmp_path):
    """Two real DAVIS training sequences (first 5 frames): --evaluate scores as `vos-engine evaluate` does."""
    root = tmp_path / "davis"
    for seq in ("bear", "boat"):
        for kind, ext in (("JPEGImages", "jpg"), ("Annotations", "png")):
            folder = root / kind / "480p" / seq
            folder.mkdir(parents=True)
            for t in range(5):
                (folder / f"{t:05d}.{ext}").symlink_to(davis_root / kind / "480p" / seq / f"{t:05d}.{ext}")
    out = tmp_path / "out"
    assert cli.main(["batch", str(root), "--out", str(out), "--evaluate", "--workers", "2"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["done"] == ["bear", "boat"]
    for seq in ("bear", "boat"):
        record = summary["videos"][seq]
        assert record["frames"] == 5 and record["JF"] > 0.6
        scores = tmp_path / f"{seq}.json"
        assert cli.main(["evaluate", str(root), "--sequences", seq, "--json", str(scores),
                         "--predictions", str(out / "davis" / seq / "Annotations")]) == 0
        expected = json.loads(scores.read_text())
        assert (record["J"], record["F"]) == pytest.approx((expected["J_mean"], expected["F_mean"]), abs=1e-12)
    # done before and scored: a rerun with --evaluate skips both
    assert cli.main(["batch", str(root), "--out", str(out), "--evaluate"]) == 0
    assert json.loads((out / "summary.json").read_text())["skipped"] == ["bear", "boat"]


@pytest.mark.parametrize("text, problem", [
    ("video,mask\n", "the manifest lists no video"),
    ("video,frame\nx,0\n", "line 1: the header must name the columns video, mask"),
    ("video,mask\nmissing.mp4,mask.png\n", "line 2: video {dir}/missing.mp4 not found"),
    ("video,mask,frame\nclip,mask.png,-1\n", "line 2: frame must be a frame index (0, 1, ...), not '-1'"),
    ("video,mask\nclip,mask.png\nclip,mask.png\n", "line 3: a second video named 'clip' (first on line 2)"),
    ("video,mask\nclip,mask.png,extra\n", "line 2: more values than columns"),
])
def test_a_bad_csv_manifest_is_one_line_naming_it_before_anything_runs(tmp_path, capsys, text, problem):
    (tmp_path / "clip").mkdir()
    (tmp_path / "mask.png").write_bytes(b"")
    m = tmp_path / "videos.csv"
    m.write_text(text)
    assert cli.main(["batch", str(m), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vos-engine: error: {m}: {problem.format(dir=tmp_path)}") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_source_checks(tmp_path):
    (tmp_path / "clip").mkdir()
    mask = tmp_path / "mask.png"
    mask.write_bytes(b"")
    (tmp_path / "a.jsonl").write_text('{"video": "clip", "mask": "mask.png"}\n\n{oops\n')
    with pytest.raises(FormatError, match=r"line 3: not JSON"):
        read_source(tmp_path / "a.jsonl")
    with pytest.raises(FormatError, match=r"line 1: unknown field\(s\) fps"):
        read_source(manifest(tmp_path / "b.jsonl", [{"video": "clip", "mask": "mask.png", "fps": 3}]))
    with pytest.raises(FormatError, match="--evaluate needs a DAVIS root"):
        read_source(manifest(tmp_path / "c.jsonl", [{"video": "clip", "mask": "mask.png"}]), evaluate=True)
    with pytest.raises(FormatError, match="not a DAVIS root"):
        read_source(tmp_path)
    with pytest.raises(FormatError, match="give a DAVIS root folder or a .csv or .jsonl manifest"):
        read_source(tmp_path / "nothing.txt")
    [video] = read_source(manifest(tmp_path / "d.jsonl", [{"video": "clip", "mask": "mask.png", "frame": 2,
                                                           "objects": ["cat", "dog"]}]))
    assert (video.name, video.video, video.mask, video.frame, video.objects) == (
        "clip", tmp_path / "clip", mask, 2, ("cat", "dog"))


def test_an_address_where_no_cluster_answers_is_one_line(tmp_path):
    """In a fresh process (this one holds a Ray instance, which run_batch would use): exit 2 in seconds."""
    import subprocess
    import sys

    video, mask = clip(tmp_path / "v", n=2)
    m = manifest(tmp_path / "m.jsonl", [{"video": str(video), "mask": str(mask)}])
    run = subprocess.run([sys.executable, "-m", "engine.cli", "batch", str(m), "--out", str(tmp_path / "out"),
                          "--address", "127.0.0.1:1"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.splitlines()[-1].startswith("vos-engine: error: cannot join the Ray cluster at 127.0.0.1:1: ")
