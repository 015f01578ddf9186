"""What `vos-engine` and `vos-annotator` print: progress on stderr (plain lines off a terminal), --quiet,
--verbose, --version, and one-line errors with exit code 2."""

import os
import subprocess
import sys
from importlib.metadata import version

import numpy as np
import pytest

from engine import progress
from engine.cli import main
from engine.palette import write_id_png
from tests.test_pipeline import clip  # noqa: F401 (fixture)

VERSION = version("vos-annotator")


def _cli(*args, cwd=None) -> subprocess.CompletedProcess:
    """The real command in a child process whose stderr is a pipe, not a terminal."""
    return subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


@pytest.fixture(autouse=True)
def _loud():
    yield
    progress.configure(quiet=False)


def test_propagate_prints_a_final_line_per_stage_off_a_terminal(clip, tmp_path):  # noqa: F811
    video, mask, _ = clip
    run = _cli("propagate", video, "--mask", mask, "--out", tmp_path / "out")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"wrote 1 file(s) to {tmp_path / 'out'}"  # the DAVIS sequence folder
    lines = run.stderr.splitlines()
    for stage, n in (("embedding", 4), ("propagating", 3), ("exporting", 4)):
        (line,) = [x for x in lines if x.startswith(f"{stage}: ")]
        assert line.startswith(f"{stage}: {n}/{n} frames (100%), ") and "frames/s, done in" in line
    assert "\r" not in run.stderr and "\x1b" not in run.stderr


def test_quiet_silences_progress_before_or_after_the_command(clip, tmp_path):  # noqa: F811
    video, mask, _ = clip
    for i, args in enumerate((("--quiet", "propagate", video), ("propagate", video, "-q"))):
        run = _cli(*args, "--mask", mask, "--out", tmp_path / f"out{i}")
        assert run.returncode == 0, run.stderr
        assert run.stderr == "" and run.stdout.startswith("wrote 1 file(s)")


def test_errors_stay_one_line_with_exit_code_2(tmp_path):
    for quiet in ((), ("--quiet",)):
        run = _cli(*quiet, "propagate", tmp_path / "missing.mp4", "--mask", tmp_path / "m.png", "--out", tmp_path)
        assert run.returncode == 2
        assert len(run.stderr.splitlines()) == 1 and run.stderr.startswith("vos-engine: error: ")


def test_convert_reports_frames_in_process(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    ids = np.zeros((12, 16), np.uint8)
    ids[2:6, 3:9] = 1
    for t in range(3):
        write_id_png(tmp_path / "src" / "Annotations" / "480p" / "clip" / f"{t:05d}.png", ids)
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "coco.json"), "--to", "coco"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"wrote {tmp_path / 'coco.json'}"
    assert captured.err.splitlines()[-1].startswith("converting: 3/3 frames (100%)")
    assert main(["--quiet", "convert", str(tmp_path / "src"), str(tmp_path / "c2.json"), "--to", "coco"]) == 0
    assert capsys.readouterr().err == ""


def test_verbose_lets_opencv_log_before_cv2_loads(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENCV_LOG_LEVEL", raising=False)
    monkeypatch.delenv("OPENCV_FFMPEG_LOGLEVEL", raising=False)
    assert main(["--verbose", "convert", str(tmp_path / "nothing"), str(tmp_path / "x.json"), "--to", "coco"]) == 2
    assert os.environ["OPENCV_LOG_LEVEL"] == "INFO" and os.environ["OPENCV_FFMPEG_LOGLEVEL"] == "32"


def test_version_of_both_commands(tmp_path):
    run = _cli("--version", cwd=tmp_path)
    assert run.returncode == 0 and run.stdout.strip() == f"vos-engine {VERSION}"
    run = subprocess.run([sys.executable, "-m", "annotator", "--version"], capture_output=True, text=True,
                         cwd=tmp_path)
    assert run.returncode == 0 and run.stdout.strip() == f"vos-annotator {VERSION}"


def test_gpu_check_skips_with_a_reason_on_a_machine_without_cuda():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device: `vos-engine gpu-check` runs the real check here")
    run = _cli("gpu-check")
    assert run.returncode == 0
    assert run.stdout.startswith("gpu-check: skipped: torch ") and "sees no CUDA device" in run.stdout


def test_evaluation_runs_report_each_sequence(tmp_path):
    from engine.evaluation import run_interactive, run_semi_supervised, score_predictions
    from tests.test_evaluation import FakeSession, _mini_davis2017

    _mini_davis2017(tmp_path, n=4, shape=(60, 80))
    calls = []
    run_semi_supervised(tmp_path, "val", None, FakeSession, save_predictions=tmp_path / "saved",
                        progress=lambda *a: calls.append(("semi",) + a))
    score_predictions(tmp_path, tmp_path / "saved", "val", progress=lambda *a: calls.append(("score",) + a))
    run_interactive(tmp_path, "val", None, rounds=1, make_session_fn=FakeSession,
                    progress=lambda *a: calls.append(("interactive",) + a))
    assert calls == [("semi", 1, 1), ("score", 1, 1), ("interactive", 1, 1)]


def test_propagating_from_a_middle_keyframe_ends_at_its_true_count(clip, tmp_path, capsys):  # noqa: F811
    video, mask, _ = clip
    assert main(["propagate", str(video), "--mask", str(mask), "--frame", "2", "--out", str(tmp_path / "o")]) == 0
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("propagating: ")]
    assert line.startswith("propagating: 3/3 frames (100%)")  # frames 0, 1 and 3; the keyframe 2 stays


def test_training_reports_feature_caching_and_iterations(tmp_path):
    """The embedding head's training hooks on a tiny DAVIS-like root: cached frames count too on a rerun."""
    import cv2

    from engine.embedding.train import cache_features, train_head

    rng = np.random.default_rng(0)
    for seq in ("a", "b"):
        (tmp_path / "JPEGImages" / "480p" / seq).mkdir(parents=True)
        (tmp_path / "Annotations" / "480p" / seq).mkdir(parents=True)
        for t in range(3):
            cv2.imwrite(str(tmp_path / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg"),
                        rng.integers(0, 255, (64, 96, 3), dtype=np.uint8))
            mask = np.zeros((64, 96), np.uint8)
            mask[16:48, 24 + 4 * t:56 + 4 * t] = 255
            cv2.imwrite(str(tmp_path / "Annotations" / "480p" / seq / f"{t:05d}.png"), mask)
    for _ in range(2):
        calls = []
        cache_features(tmp_path, tmp_path / "cache", ["a", "b"], log=lambda *a, **k: None,
                       progress=lambda *a: calls.append(a))
        assert calls[-1] == (6, 6) and [c[0] for c in calls] == sorted(c[0] for c in calls)
    calls = []
    train_head(tmp_path / "cache", ["a", "b"], dim=8, hidden=16, iters=3, anchors=16, ref_cells=64,
               log=lambda *a, **k: None, progress=lambda *a: calls.append(a))
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_interactive_eval_prints_what_got_worse():
    from engine.cli import regressions_text

    result = {"correction_rounds": 90, "corrected_frames_worse": [],
              "harmful_rounds": [{"sequence": "bmx-bumps", "round": 2, "JF_change": -0.037}]}
    assert regressions_text(result) == ("rounds lowering their sequence by more than 0.01: 1 of 90 (bmx-bumps round 2 "
                                        "-0.037)\ncorrections that lowered their own frame by more than 0.005: 0")
    result["corrected_frames_worse"] = [{"sequence": "dance-jump", "round": 1, "frame": 37, "JF_change": -0.384}]
    assert regressions_text(result).endswith("own frame by more than 0.005: 1 (dance-jump round 1 frame 37 -0.384)")


def test_kfold_refuses_a_click_model_or_head_of_its_own(tmp_path, capsys):
    for extra in (["--click-model", "m.pt"], ["--set", "boundary_head=h.pt"]):
        assert main(["interactive-eval", str(tmp_path), "--kfold", "c", "b", *extra]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert "--kfold chooses the click model and the boundary head" in line
