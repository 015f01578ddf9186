"""click-eval: RITM-style single-frame clicks through the engine's own Session.click."""

import json

import cv2
import numpy as np
import pytest

from engine.click_eval import click_object, noc, run_click_eval, sample_frames, table
from tests.test_evaluation import _mini_davis2016


def test_sample_frames_spread_evenly():
    assert sample_frames(30, 3) == [5, 15, 25]
    assert sample_frames(2, 3) == [0, 1]  # never more frames than there are
    assert sample_frames(1, 1) == [0]


def test_noc_is_the_first_click_reaching_the_threshold_else_the_maximum():
    ious = [0.5, 0.86, 0.89, 0.91]
    assert noc(ious, 0.85, 20) == 2 and noc(ious, 0.90, 20) == 4
    assert noc([0.5, 0.6], 0.85, 20) == 20


class _DiskSession:
    """The part of Session that click_object uses: a click paints (positive) or erases a disk of radius 10."""

    def __init__(self, shape):
        self.ids, self.next_id, self.clicks = np.zeros(shape, np.uint8), 0, []

    def add_object(self, name=None):
        self.next_id += 1
        return type("Obj", (), {"id": self.next_id})()

    def mask(self, t):
        return self.ids.copy()

    def click(self, t, obj, x, y, positive=True):
        disk = cv2.circle(np.zeros(self.ids.shape, np.uint8), (x, y), 10, 1, -1) > 0
        if positive:
            self.ids[disk] = obj
        else:
            self.ids[disk & (self.ids == obj)] = 0
        self.clicks.append((x, y, positive))
        return self.ids.copy()

    def remove_object(self, obj):
        self.ids[self.ids == obj] = 0


def test_click_object_clicks_the_largest_error_until_the_mask_is_right():
    gt = np.zeros((60, 80), bool)
    gt[10:50, 10:40] = True  # a 40x30 box: one disk covers part of it, more clicks fill it
    session = _DiskSession(gt.shape)
    ious, secs = click_object(session, 0, gt, max_clicks=20)
    assert session.clicks[0] == (24, 24, True)  # the interior-most point first (first in row order on ties)
    assert ious[0] < 0.3 and max(ious) > 0.6 and len(secs) == len(session.clicks) == len(ious)
    assert not all(p for _, _, p in session.clicks)  # a disk spills out of the box: false alarms get negatives
    assert not session.ids.any()  # the object is removed: the next one starts from an empty frame


@pytest.mark.slow
def test_click_eval_on_real_frames_with_the_real_session(tmp_path, davis_root):
    from engine.embedding.network import Embedder
    from engine.session import Session

    embedder = Embedder.load()

    def make(project_dir, video_path):
        return Session.create(project_dir, video_path, short_side=240, embedder=embedder)

    root = _mini_davis2016(tmp_path / "davis", davis_root, {"bear": range(0, 40, 4)})
    out = run_click_eval(root, "train", None, frames_per_sequence=2, max_clicks=6, make_session_fn=make)
    json.dumps(out, allow_nan=False)
    bear = out["sequences"]["bear"]
    assert bear["n_objects"] == 2 and [s["frame"] for s in bear["samples"]] == ["00008", "00028"]
    assert all(len(s["ious"]) >= 5 for s in bear["samples"])
    assert 1 <= out["NoC@85"] <= out["NoC@90"] <= 6
    assert out["mIoU"]["1"] > 0.5  # one click on the bear takes most of it (0.89 at 480p)
    assert 0 < out["click_seconds"] < 5
    assert "mean over objects" in table(out)


@pytest.mark.slow
def test_cli_click_eval_writes_json(tmp_path, davis_root, capsys):
    from engine.cli import main

    root = _mini_davis2016(tmp_path / "davis", davis_root, {"bear": range(0, 8, 4)})
    assert main(["click-eval", str(root), "--frames-per-sequence", "1", "--max-clicks", "5",
                 "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "NoC@85" in out and "click time" in out
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["n_objects"] == 1 and data["max_clicks"] == 5


def test_cli_click_eval_set_reaches_every_session(tmp_path, davis_root, monkeypatch, capsys):
    """`click-eval --set` (how the boundary head was tried on clicks, README) configures the sessions it scores."""
    from engine import evaluation
    from engine.cli import main

    factory, configs = evaluation.default_session_factory, []

    def recording(**kw):
        configs.append(kw["config"])
        return factory(**kw)

    monkeypatch.setattr(evaluation, "default_session_factory", recording)
    root = _mini_davis2016(tmp_path / "davis", davis_root, {"bear": range(0, 8, 4)})
    assert main(["click-eval", str(root), "--frames-per-sequence", "1", "--max-clicks", "2",
                 "--set", "boundary_head=none", "--set", "boundary_band=2"]) == 0
    assert [(c.boundary_head, c.boundary_band) for c in configs] == [("none", 2)]
    assert main(["click-eval", str(root), "--set", "no_such_knob=1"]) == 2
    assert "no_such_knob" in capsys.readouterr().err


def test_cli_click_model_reaches_every_session_and_a_bad_file_is_one_line(tmp_path, davis_root, monkeypatch,
                                                                          capsys):
    """`--click-model FILE` (how the k-fold click models score the sequences they never saw, README)."""
    import shutil

    from engine.cli import main
    from engine.click_model import WEIGHTS
    from engine.session import Session

    used = []
    setter = Session.set_click_model
    monkeypatch.setattr(Session, "set_click_model", lambda self, m: (used.append(m), setter(self, m)))
    other = shutil.copy(WEIGHTS, tmp_path / "fold0.pt")
    root = _mini_davis2016(tmp_path / "davis", davis_root, {"bear": range(0, 8, 4)})
    assert main(["click-eval", str(root), "--frames-per-sequence", "1", "--max-clicks", "2",
                 "--click-model", str(other)]) == 0
    assert len(used) == 1 and used[0].net is not None
    capsys.readouterr()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    for command in ("click-eval", "interactive-eval"):
        assert main([command, str(root), "--click-model", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(bad) in err, err
