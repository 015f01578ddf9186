"""`vos-annotator --screenshot`: the real command, offscreen, and a look at the picture it makes."""

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from tests.test_annotator_support import OBJECT_COLOR, make_project

ROOT = Path(__file__).resolve().parents[1]


def test_screenshot_shows_window_frame_and_overlay(tmp_path):
    project = make_project(tmp_path)
    out = tmp_path / "shot.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", VOS_ANNOTATOR_HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-m", "annotator.app", "--screenshot", str(out), "--size", "1200x760",
                          str(project)], env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    rgb = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB).astype(int)
    assert rgb.shape == (760, 1200, 3)
    # the canvas (middle of the window) shows the frame: many different colours, not a flat fill
    mid = rgb[200:560, 200:900]
    assert mid.std() > 20 and len(np.unique(mid.reshape(-1, 3), axis=0)) > 500
    # the object's overlay colour is there (its outline is drawn opaque)
    near = (np.abs(rgb - np.array(OBJECT_COLOR)).sum(-1) < 30).sum()
    assert near > 100, near
    # the timeline gives the object its own confidence band, right under its coverage lane (red..green)
    bottom = rgb[-160:]
    lane_rows = np.flatnonzero((np.abs(bottom - np.array(OBJECT_COLOR)).sum(-1) < 30).sum(1) > 200)
    assert len(lane_rows), "no coverage lane of the object on the timeline"
    band = cv2.cvtColor(bottom[lane_rows[-1] + 2:lane_rows[-1] + 5].astype(np.uint8), cv2.COLOR_RGB2HSV)
    confident = ((band[..., 0] <= 60) & (band[..., 1] > 120) & (band[..., 2] > 150)).sum(1)
    assert confident.max() > 200, confident
    # propagation happened: the saved project on disk is untouched, but the window showed a propagated frame
    assert "screenshot written" in run.stderr
