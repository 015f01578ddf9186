"""interactive-eval --user robot: the davisinteractive robot's scribbles through Session.scribble."""

import importlib.util
import json

import networkx
import numpy as np
import pytest

from engine.davis_robot import INSTALL, install_compat_names, run_robot, strokes
from tests.test_evaluation import _mini_davis2016

needs_robot = pytest.mark.skipif(importlib.util.find_spec("davisinteractive") is None,
                                 reason=f"davisinteractive is not installed ({INSTALL}; .ci/run does)")


def test_compat_names_are_added_only_where_missing():
    bool_before = np.bool
    install_compat_names()
    assert np.int is int and np.float is float
    assert np.bool is bool_before  # numpy 2 has np.bool again: left alone
    assert networkx.from_scipy_sparse_matrix is networkx.from_scipy_sparse_array
    install_compat_names()  # twice is harmless
    assert np.int is int


@needs_robot
def test_the_robot_draws_the_same_scribbles_on_the_same_masks():
    """Its skeleton's ties are broken by a fixed seed (skimage's medial_axis drew them from OS entropy: four calls
    on this mask gave four different scribbles)."""
    import cv2

    from engine.davis_robot import make_robot

    gt = np.zeros((480, 854), np.uint8)
    cv2.ellipse(gt, (400, 240), (200, 120), 15, 0, 360, 1, -1)
    cv2.circle(gt, (600, 300), 60, 1, -1)
    gt = gt[None].astype(int)
    drawn = [make_robot().interact("x", np.zeros_like(gt), gt, nb_objects=1, frame=0)["scribbles"][0]
             for _ in range(3)]
    assert drawn[0] and all([s["path"] for s in d] == [s["path"] for s in drawn[0]] for d in drawn[1:])


def test_strokes_positive_on_misses_negative_on_the_object_under_a_background_scribble():
    pred = np.zeros((10, 20), np.uint8)
    pred[:, 10:] = 2
    scribbles = [
        {"path": [[0.1, 0.5], [0.2, 0.5]], "object_id": 1},  # a miss of object 1
        {"path": [[0.6, 0.2], [0.9, 0.8]], "object_id": 0},  # background over object 2: remove it there
        {"path": [[0.1, 0.1], [0.3, 0.1]], "object_id": 0},  # background over nothing predicted: dropped
        {"path": [], "object_id": 1},
    ]
    out = strokes(scribbles, pred)
    assert [(k, p) for k, p, _ in out] == [(1, True), (2, False)]
    np.testing.assert_allclose(out[0][2], [[2, 5], [4, 5]])  # 0..1 of width/height -> pixels


@needs_robot
@pytest.mark.slow
def test_robot_rounds_on_a_real_sequence(tmp_path, davis_root):
    from engine.embedding.network import Embedder
    from engine.session import Session

    embedder = Embedder.load()
    calls = []

    class Recording(Session):
        def scribble(self, t, obj_id, points, positive=True):
            calls.append((t, obj_id, positive, len(points)))
            return super().scribble(t, obj_id, points, positive)

    def make(project_dir, video_path):
        return Recording.create(project_dir, video_path, short_side=240, embedder=embedder)

    root = _mini_davis2016(tmp_path / "davis", davis_root, {"bear": range(0, 20, 4)})
    out = run_robot(root, "train", None, rounds=2, make_session_fn=make)
    json.dumps(out, allow_nan=False)
    assert [r["round"] for r in out["rounds"]] == [1, 2]
    first = out["sequences"]["bear"][0]
    assert first["frame"] == 0 and first["scribbles"] >= 1  # empty masks: every frame is worst, the first wins
    assert calls[0][:3] == (0, calls[0][1], True) and calls[0][3] > 100  # a positive stroke of many points
    assert out["rounds"][0]["JF_mean"] > 0.5  # one scribble on the bear, propagated, finds most of it
    assert all(r["seconds"] > 0 and r["robot_seconds"] > 0 for r in out["rounds"])
    second = out["sequences"]["bear"][1]
    assert first["corrected_frames"] == [] and out["correction_rounds"] == 1  # round 1 starts from empty masks
    assert [f["frame"] for f in second["corrected_frames"]] == ([second["frame"]] if second["scribbles"] else [])


@needs_robot
@pytest.mark.slow
def test_cli_interactive_eval_user_robot(tmp_path, davis_root, capsys):
    from engine.cli import main

    root = _mini_davis2016(tmp_path / "davis", davis_root, {"bear": range(0, 8, 4)})
    assert main(["interactive-eval", str(root), "--user", "robot", "--rounds", "1",
                 "--json", str(tmp_path / "r.json")]) == 0
    assert "round 1: J&F" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["user"] == "robot"
