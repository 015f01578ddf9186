"""engine.evaluation (DAVIS roots, scoring predictions, driving a session) and engine.simulated_user."""

import json
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from engine import simulated_user as su
from engine.errors import FormatError
from engine.evaluation import (
    list_sequences,
    load_sequences,
    corrected_frame_changes,
    default_session_factory,
    kfold_models,
    kfold_session_factory,
    regressions,
    run_interactive,
    run_semi_supervised,
    score_predictions,
    split_file,
)
from engine.palette import PALETTE, write_id_png
from tests import davis_reference as ref

MINI = {"bear": range(0, 82, 10), "soccerball": range(0, 48, 7), "dance-jump": range(3, 60, 8)}


# ------------------------------------------------------------------------------------------ helpers


def _official_scores(gt_ids: np.ndarray, pred_ids: np.ndarray, object_ids):
    """The official semi-supervised flow on (T, H, W) id stacks: crop 1:-1, 3-D J/F calls, db_statistics."""
    out = []
    for k in object_ids:
        g = (gt_ids == k)[1:-1]
        p = (pred_ids == k)[1:-1]
        j = ref.db_eval_iou(g, p)
        f = ref.db_eval_boundary(g, p)
        out.append((j, f, ref.db_statistics(j), ref.db_statistics(f)))
    return out


def _write_grey(path, mask_bool):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), mask_bool.astype(np.uint8) * 255)


def _mini_davis2016(root, davis_root, sequences=MINI):
    """A DAVIS 2016 root with a few subsampled real sequences: ground truth copied, frames symlinked."""
    lines = []
    for seq, frames in sequences.items():
        (root / "JPEGImages" / "480p" / seq).mkdir(parents=True)
        (root / "Annotations" / "480p" / seq).mkdir(parents=True)
        for t in frames:
            name = f"{t:05d}"
            os.symlink(davis_root / "JPEGImages" / "480p" / seq / f"{name}.jpg", root / "JPEGImages" / "480p" / seq / f"{name}.jpg")
            data = (davis_root / "Annotations" / "480p" / seq / f"{name}.png").read_bytes()
            (root / "Annotations" / "480p" / seq / f"{name}.png").write_bytes(data)
            lines.append(f"/JPEGImages/480p/{seq}/{name}.jpg /Annotations/480p/{seq}/{name}.png")
    (root / "ImageSets" / "480p").mkdir(parents=True)
    (root / "ImageSets" / "480p" / "train.txt").write_text("\n".join(lines) + "\n")
    return root


def _save_palette(path, ids):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(ids.astype(np.uint8), mode="P")
    im.putpalette(PALETTE.tobytes())
    im.save(path)


def _mini_davis2017(root, n=6, shape=(60, 80)):
    """A synthetic DAVIS 2017 root: one sequence, two moving objects, a void band; returns the gt stack."""
    gts = []
    for t in range(n):
        ids = np.zeros(shape, np.uint8)
        cv2.circle(ids, (15 + 3 * t, 20), 9, 1, -1)
        cv2.rectangle(ids, (45, 30 + t), (70, 50 + t), 2, -1)
        ids[0:2, :] = 255  # void
        gts.append(ids)
        _save_palette(root / "Annotations" / "480p" / "two" / f"{t:05d}.png", ids)
        (root / "JPEGImages" / "480p" / "two").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "JPEGImages" / "480p" / "two" / f"{t:05d}.jpg"), np.zeros((*shape, 3), np.uint8))
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("two\n")
    return np.stack(gts)


@pytest.fixture()
def mini2016(tmp_path, davis_root):
    return _mini_davis2016(tmp_path / "davis", davis_root)


def _gt_stack(root, seq):
    files = sorted((root / "Annotations" / "480p" / seq).glob("*.png"))
    return np.stack([(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) > 0).astype(np.uint8) for f in files]), [f.stem for f in files]


# ------------------------------------------------------------------------------------- DAVIS layout


def test_list_sequences_reads_davis2016_split(davis_root):
    names = list_sequences(davis_root, "train")
    assert len(names) == 30 and names[0] == "bear" and len(set(names)) == 30


def test_split_2017_one_name_per_line(tmp_path):
    _mini_davis2017(tmp_path)
    assert split_file(tmp_path, "val") == tmp_path / "ImageSets" / "2017" / "val.txt"
    assert list_sequences(tmp_path, "val") == ["two"]


def test_missing_split_names_the_file(tmp_path):
    _mini_davis2017(tmp_path)
    with pytest.raises(FormatError) as e:
        load_sequences(tmp_path, "nope")
    assert "nope.txt" in str(e.value) and "ImageSets" in str(e.value)


def test_missing_annotations_folder(tmp_path):
    (tmp_path / "JPEGImages" / "480p").mkdir(parents=True)
    with pytest.raises(FormatError) as e:
        load_sequences(tmp_path, "train")
    assert e.value.path == tmp_path / "Annotations" / "480p"


def test_missing_ground_truth_frame_and_prediction_folder(tmp_path):
    _mini_davis2017(tmp_path)
    (tmp_path / "preds").mkdir()
    with pytest.raises(FormatError) as e:
        score_predictions(tmp_path, tmp_path / "preds", "val")
    assert e.value.path == tmp_path / "preds" / "two"
    (tmp_path / "Annotations" / "480p" / "two" / "00003.png").unlink()
    with pytest.raises(FormatError) as e:
        load_sequences(tmp_path, "val")
    assert e.value.path.name == "00003.png"


def test_predictions_named_unlike_the_ground_truth(tmp_path):
    _mini_davis2017(tmp_path)
    write_id_png(tmp_path / "preds" / "two" / "frame1.png", np.zeros((60, 80), np.uint8))
    with pytest.raises(FormatError) as e:
        score_predictions(tmp_path, tmp_path / "preds", "val")
    assert e.value.path == tmp_path / "preds" / "two" and "00000.png" in str(e.value)


def test_prediction_of_wrong_size_is_a_format_error(tmp_path):
    _mini_davis2017(tmp_path)
    write_id_png(tmp_path / "preds" / "two" / "00001.png", np.zeros((30, 40), np.uint8))
    with pytest.raises(FormatError) as e:
        score_predictions(tmp_path, tmp_path / "preds", "val")
    assert e.value.path.name == "00001.png" and "40x30" in str(e.value)


# ---------------------------------------------------------------------------- scores vs the official


def test_score_predictions_matches_official_on_real_data(mini2016, tmp_path):
    """Eroded, dilated, shifted, emptied, random-blob and missing frames, 0/255 and indexed PNGs."""
    rng = np.random.default_rng(1)
    pred_root = tmp_path / "preds"
    ell = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (11, 11))
    expected = {}
    for s, seq in enumerate(MINI):
        gts, names = _gt_stack(mini2016, seq)
        preds = np.zeros_like(gts)
        for i, g in enumerate(gts):
            kind = (i + s) % 6
            if kind == 0:
                p = cv2.erode(g, ell)
            elif kind == 1:
                p = cv2.dilate(g, ell)
            elif kind == 2:
                p = np.zeros_like(g)
                p[9:, 20:] = g[:-9, :-20]
            elif kind == 3:
                p = np.zeros_like(g)  # emptied
            elif kind == 4:
                p = np.zeros_like(g)
                for _ in range(5):
                    cv2.circle(p, (int(rng.integers(0, 854)), int(rng.integers(0, 480))), int(rng.integers(5, 80)), 1, -1)
            else:
                p = g.copy()
            preds[i] = p
            if i == 4:
                preds[i] = 0  # missing prediction file: scored as empty
                continue
            path = pred_root / seq / f"{names[i]}.png"
            if seq == "bear":
                _write_grey(path, p > 0)  # DAVIS 2016 binary 0/255
            elif seq == "soccerball":
                write_id_png(path, p)  # indexed, id 1
            else:
                write_id_png(path, p * 3)  # indexed, id 3: against 2016 ground truth every non-zero is the object
        expected[seq] = _official_scores(gts, preds, [1])

    result = score_predictions(mini2016, pred_root, "train")
    assert result.sequences() == list(MINI)
    for o in result.objects:
        j, f, (jm, jr, jd), (fm, fr, fd) = expected[o.sequence][0]
        np.testing.assert_allclose(o.J, j, rtol=0, atol=1e-9)
        np.testing.assert_allclose(o.F, f, rtol=0, atol=1e-9)
        np.testing.assert_allclose([o.J_stats.mean, o.J_stats.recall, o.J_stats.decay], [jm, jr, jd], rtol=0, atol=1e-9)
        np.testing.assert_allclose([o.F_stats.mean, o.F_stats.recall, o.F_stats.decay], [fm, fr, fd], rtol=0, atol=1e-9)
        assert len(o.frames) == len(MINI[o.sequence]) - 2  # first and last frame left out

    # global figures as the official tool: means over objects of per-object means
    j_global = np.mean([expected[s][0][2][0] for s in MINI])
    f_global = np.mean([expected[s][0][3][0] for s in MINI])
    data = result.to_json()
    assert data["J_mean"] == pytest.approx(j_global, abs=1e-9)
    assert data["F_mean"] == pytest.approx(f_global, abs=1e-9)
    assert data["JF_mean"] == pytest.approx((j_global + f_global) / 2, abs=1e-9)
    assert data["sequences"]["bear"]["J"] == pytest.approx(expected["bear"][0][2][0], abs=1e-9)
    assert data["sequences"]["bear"]["F"] == pytest.approx(expected["bear"][0][3][0], abs=1e-9)
    for key in ("JF", "J_recall", "J_decay", "F_recall", "F_decay"):
        assert key in data["sequences"]["soccerball"]
    json.dumps(data, allow_nan=False)
    table = result.table()
    assert all(seq in table for seq in MINI) and "mean over objects" in table


def test_score_predictions_multi_object_davis2017(tmp_path):
    """Indexed multi-object ground truth with void: objects 1..max of frame 0, void counts as background."""
    gts = _mini_davis2017(tmp_path)
    preds = np.zeros_like(gts)
    for t, g in enumerate(gts):
        p = np.where(g == 255, 0, g).astype(np.uint8)
        p = np.roll(p, t - 2, axis=1)
        if t == 3:
            p[p == 2] = 0  # object 2 missed on one frame
        preds[t] = p
        write_id_png(tmp_path / "preds" / "two" / f"{t:05d}.png", p)
    result = score_predictions(tmp_path, tmp_path / "preds", "val")
    gt_official = np.where(gts == 255, 0, gts)  # official reader: void -> 0
    expected = _official_scores(gt_official, preds, [1, 2])
    assert [o.object_id for o in result.objects] == [1, 2]
    for o, (j, f, js, fs) in zip(result.objects, expected):
        np.testing.assert_allclose(o.J, j, rtol=0, atol=1e-9)
        np.testing.assert_allclose(o.F, f, rtol=0, atol=1e-9)
        np.testing.assert_allclose([o.J_stats.mean, o.J_stats.recall, o.J_stats.decay], js, rtol=0, atol=1e-9)
    data = result.to_json()
    assert set(data["sequences"]["two"]["objects"]) == {"1", "2"}
    assert data["J_mean"] == pytest.approx(np.mean([e[2][0] for e in expected]), abs=1e-12)


def test_score_predictions_sequences_subset_without_split(tmp_path):
    gts = _mini_davis2017(tmp_path)
    for t, g in enumerate(gts):
        write_id_png(tmp_path / "preds" / "two" / f"{t:05d}.png", np.where(g == 255, 0, g).astype(np.uint8))
    result = score_predictions(tmp_path, tmp_path / "preds", split=None, sequences=["two"])
    assert result.JF_mean == pytest.approx(1.0)


def test_cli_evaluate_predictions(tmp_path, capsys):
    from engine.cli import main

    gts = _mini_davis2017(tmp_path)
    for t, g in enumerate(gts):
        write_id_png(tmp_path / "preds" / "two" / f"{t:05d}.png", np.where(g == 255, 0, g).astype(np.uint8))
    out = tmp_path / "scores.json"
    assert main(["evaluate", str(tmp_path), "--predictions", str(tmp_path / "preds"), "--split", "val", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["JF_mean"] == 1.0 and data["sequences"]["two"]["J"] == 1.0
    assert "two" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path), "--predictions", str(tmp_path / "preds"), "--split", "nope"]) == 2
    assert "nope.txt" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ simulated user


def test_interior_point_of_rectangle_and_l_shape():
    m = np.zeros((40, 60), bool)
    m[10:31, 5:56] = True  # 21 rows x 51 cols: centre row 20
    x, y = su.interior_point(m)
    assert y == 20 and 15 <= x <= 45
    l_shape = np.zeros((50, 50), bool)
    l_shape[5:45, 5:15] = True
    l_shape[35:45, 5:45] = True
    x, y = su.interior_point(l_shape)
    assert l_shape[y, x]
    assert su.interior_point(np.zeros((5, 5), bool)) is None


def test_interior_point_treats_image_border_as_outside():
    assert su.interior_point(np.ones((21, 21), bool)) == (10, 10)
    x, y = su.interior_point(np.ones((21, 31), bool))  # a plateau along the middle row: first one wins
    assert (x, y) == (10, 10)


def test_largest_error_region_miss_and_false_alarm():
    gt = np.zeros((60, 60), bool)
    gt[10:30, 10:30] = True
    pred = gt.copy()
    pred[10:30, 10:18] = False  # miss of 160 px
    pred[40:50, 40:50] = True  # false alarm of 100 px
    region, positive = su.largest_error_region(pred, gt)
    assert positive and region.sum() == 160
    pred[40:58, 40:58] = True  # false alarm grows to 324 px
    region, positive = su.largest_error_region(pred, gt)
    assert not positive and region.sum() == 324
    assert su.largest_error_region(gt, gt) is None


def test_correction_click_on_worst_frame():
    gts = [np.zeros((40, 40), np.uint8) for _ in range(3)]
    for g in gts:
        g[5:25, 5:25] = 1
        g[28:38, 28:38] = 2
    preds = [g.copy() for g in gts]
    preds[2][5:25, 5:25] = 0  # object 1 entirely missed on frame 2
    preds[1][0:3, 30:40] = 2  # a small false alarm of object 2 on frame 1
    click = su.next_click(preds, gts, [1, 2])
    assert click == su.Click(2, 1, click.x, click.y, True)
    assert 12 <= click.x <= 17 and 12 <= click.y <= 17
    preds[2] = gts[2].copy()
    click = su.next_click(preds, gts, [1, 2])
    assert click.frame == 1 and click.object_id == 2 and not click.positive and click.y in (0, 1, 2)
    assert su.next_click(gts, gts, [1, 2]) is None


def test_first_click_inside_object():
    g = np.zeros((30, 30), np.uint8)
    g[3:13, 4:20] = 2
    c = su.first_click(g, 2)
    assert c.positive and c.frame == 0 and c.object_id == 2 and g[c.y, c.x] == 2
    assert su.first_click(g, 1) is None


# ------------------------------------------------------------------- driving a session (fake engine)


class _FakeObject:
    def __init__(self, id):
        self.id = id


class FakeSession:
    """The Session contract, at half resolution; 'propagation' copies the annotated frame's mask everywhere."""

    def __init__(self, project_dir, video_path):
        self.frames = sorted(p.name for p in video_path.iterdir())
        h, w = cv2.imread(str(video_path / self.frames[0])).shape[:2]
        self.shape = (h // 2, w // 2)
        self.masks = {}
        self.next_id = 5  # ids need not match the ground truth's
        self.calls = []

    def embed(self):
        yield from range(len(self.frames))

    def add_object(self, name=None):
        self.next_id += 1
        return _FakeObject(self.next_id)

    def mask(self, t):
        return self.masks.get(t, np.zeros(self.shape, np.uint8)).copy()

    def add_objects_from_ids(self, t, ids):
        ids = cv2.resize(ids, self.shape[::-1], interpolation=cv2.INTER_NEAREST)
        out = {}
        for value in [int(v) for v in np.unique(ids) if v]:
            out[value] = self.add_object().id
            self.set_object_mask(t, out[value], ids == value)
        return out

    def frames_most_likely_wrong(self, n=10):
        return list(range(len(self.frames) - 1, 0, -1))[:n]  # "least sure": the last frames first

    def set_object_mask(self, t, obj_id, mask):
        assert mask.shape == self.shape and mask.dtype == bool
        m = self.mask(t)
        m[m == obj_id] = 0
        m[mask] = obj_id
        self.masks[t] = m
        self.calls.append(("mask", t, obj_id))

    def click(self, t, obj_id, x, y, positive=True):
        assert 0 <= x < self.shape[1] and 0 <= y < self.shape[0]
        m = self.mask(t)
        disk = np.zeros(self.shape, np.uint8)
        cv2.circle(disk, (x, y), 12, 1, -1)
        if positive:
            m[disk > 0] = obj_id
        else:
            m[(disk > 0) & (m == obj_id)] = 0
        self.masks[t] = m
        self.calls.append(("click", t, obj_id, positive))
        return m

    def propagate(self, t0, direction="both"):
        self.calls.append(("propagate", t0, direction))
        for t in range(len(self.frames)):
            if t != t0:
                self.masks[t] = self.masks[t0].copy()
                yield t, self.masks[t]


def test_run_semi_supervised_with_a_session(tmp_path):
    gts = _mini_davis2017(tmp_path, n=5, shape=(60, 80))
    sessions = []

    def make(project_dir, video_path):
        sessions.append(FakeSession(project_dir, video_path))
        return sessions[-1]

    result = run_semi_supervised(tmp_path, "val", None, make, save_predictions=tmp_path / "saved")
    s = sessions[0]
    assert [c[0] for c in s.calls] == ["mask", "mask", "propagate"]
    saved = sorted((tmp_path / "saved" / "two").glob("*.png"))
    assert [p.name for p in saved] == [f"{t:05d}.png" for t in range(5)]
    # what was saved scores exactly as what was scored in memory, ground-truth ids restored
    again = score_predictions(tmp_path, tmp_path / "saved", "val")
    assert again.to_json()["sequences"] == result.to_json()["sequences"]
    first = np.array(Image.open(saved[0]))
    assert set(np.unique(first)) <= {0, 1, 2}
    data = result.to_json()
    assert data["seconds_per_frame"] > 0 and 0 < data["JF_mean"] < 1
    assert data["timing"]["frames"] == 5
    # scored frames are 1..3 (first and last left out); the fake ranks 4, 3, 2, 1: picks 3, 2, 1
    ls = data["least_sure"]
    assert ls["picks"] == 5 and ls["sequences"]["two"]["picked"] == ["00003", "00002", "00001"]
    assert ls["picked_JF"] == pytest.approx(ls["JF"])  # every scored frame was picked
    assert "least-sure ranking" in result.table()
    assert gts.shape[0] == 5


def test_least_sure_check_scores_the_ranking_against_the_worst_frames():
    from engine.evaluation import ObjectScores, least_sure_check
    frames = [f"{t:05d}" for t in range(1, 7)]
    J = np.array([0.9, 0.2, 0.8, 0.1, 0.7, 0.6])
    scores = [ObjectScores("s", 1, frames, J, J.copy())]
    good = least_sure_check(scores, ["00004", "00002", "00099"], n=2)  # an unscored frame is skipped
    assert good["picked"] == ["00004", "00002"] and good["picked_JF"] == pytest.approx(0.15)
    assert good["worst_JF"] == pytest.approx(0.15) and good["JF"] == pytest.approx(J.mean())
    bad = least_sure_check(scores, ["00001", "00003"], n=2)
    assert bad["picked_JF"] == pytest.approx(0.85) and bad["worst_JF"] == pytest.approx(0.15)


def test_run_interactive_with_a_session(tmp_path):
    _mini_davis2017(tmp_path, n=4, shape=(60, 80))
    sessions = []

    def make(project_dir, video_path):
        sessions.append(FakeSession(project_dir, video_path))
        return sessions[-1]

    out = run_interactive(tmp_path, "val", None, rounds=2, make_session_fn=make)
    assert [r["round"] for r in out["rounds"]] == [0, 1, 2]
    for r in out["rounds"]:
        assert set(r) >= {"round", "JF_mean", "J_mean", "F_mean", "seconds"}
        assert 0 <= r["JF_mean"] <= 1
    calls = sessions[0].calls
    assert calls[:3] == [("click", 0, 6, True), ("click", 0, 7, True), ("propagate", 0, "forward")]
    assert calls[3][0] == "click" and calls[4] == ("propagate", calls[3][1], "both")
    per_seq = out["sequences"]["two"]
    assert len(per_seq) == 3 and len(per_seq[0]["clicks"]) == 2
    assert per_seq[0]["corrected_frames"] == []  # the first clicks correct nothing
    for r in per_seq[1:]:
        assert [f["frame"] for f in r["corrected_frames"]] == [c["frame"] for c in r["clicks"]]
    assert out["correction_rounds"] == 2
    assert out == {**out, **regressions(out["sequences"])}
    json.dumps(out, allow_nan=False)


def test_regressions_name_the_rounds_and_frames_that_got_worse():
    """Issue 13's checks: a round lowering its sequence by more than 0.01, and a corrected frame that fell by more
    than 0.005."""
    jf_before, jf_after = np.array([0.5, 0.9, 0.7]), np.array([0.6, 0.8, 0.7])
    assert corrected_frame_changes([2, 0, 2], None, jf_after) == []
    assert corrected_frame_changes([2, 0, 2], jf_before, jf_after) == [{"frame": 0, "JF_change": 0.1},
                                                                      {"frame": 2, "JF_change": 0.0}]
    per_seq = {
        "a": [{"round": 0, "JF_mean": 0.70, "corrected_frames": []},
              {"round": 1, "JF_mean": 0.689, "corrected_frames": [{"frame": 4, "JF_change": 0.05}]},
              {"round": 2, "JF_mean": 0.69, "corrected_frames": [{"frame": 9, "JF_change": -0.2},
                                                                   {"frame": 5, "JF_change": -0.004}]}],
        "b": [{"round": 0, "JF_mean": 0.80, "corrected_frames": []},
              {"round": 1, "JF_mean": 0.791, "corrected_frames": [{"frame": 3, "JF_change": 0.0}]}],
    }
    out = regressions(per_seq)
    assert out["correction_rounds"] == 3
    assert out["harmful_rounds"] == [{"sequence": "a", "round": 1, "JF_change": -0.011}]  # b's -0.009 is allowed
    assert out["corrected_frames_worse"] == [{"sequence": "a", "round": 2, "frame": 9, "JF_change": -0.2}]


# ------------------------------------------------------------------------------- the real engine


@pytest.mark.slow
def test_engine_end_to_end_on_real_frames(tmp_path, davis_root):
    """Semi-supervised and interactive runs of the real Session (shipped weights) on 3 frames of one sequence.

    The session works at short side 240 against 480p ground truth, so masks and clicks are rescaled both ways.
    """
    from engine.embedding.network import Embedder
    from engine.session import Session

    embedder = Embedder.load()  # one network for both runs

    def make(project_dir, video_path):
        return Session.create(project_dir, video_path, short_side=240, embedder=embedder)

    root = _mini_davis2016(tmp_path / "davis", davis_root, {"bear": range(3)})
    result = run_semi_supervised(root, "train", None, make, save_predictions=tmp_path / "saved")
    data = result.to_json()
    assert sorted(p.name for p in (tmp_path / "saved" / "bear").glob("*.png")) == [f"{t:05d}.png" for t in range(3)]
    assert data["J_mean"] > 0.5 and data["seconds_per_frame"] > 0
    assert score_predictions(root, tmp_path / "saved", "train").to_json()["sequences"] == data["sequences"]
    out = run_interactive(root, "train", None, rounds=1, make_session_fn=make)
    assert [r["round"] for r in out["rounds"]] == [0, 1]
    assert all(0 <= r["JF_mean"] <= 1 and r["seconds"] > 0 for r in out["rounds"])


@pytest.mark.slow
def test_embedding_cache_is_reused_across_evaluation_runs(tmp_path, davis_root):
    """--embedding-cache: the second run reads every embedding back (no network pass) and scores the same."""
    root = _mini_davis2016(tmp_path / "davis", davis_root, {"bear": range(4)})
    cache = tmp_path / "embeddings"
    first = run_semi_supervised(root, "train", embedding_cache=cache)
    (folder,) = cache.iterdir()
    assert folder.name.startswith("bear-lite0-")
    assert (folder / "embeddings.ready").read_bytes() == bytes([1] * 4)
    stamp = (folder / "embeddings.f16").stat().st_mtime_ns
    second = run_semi_supervised(root, "train", embedding_cache=cache)
    assert (folder / "embeddings.f16").stat().st_mtime_ns == stamp  # nothing re-embedded
    assert second.timing["embed_seconds"] < first.timing["embed_seconds"] / 3
    assert second.to_json()["sequences"] == first.to_json()["sequences"]


def test_cli_set_changes_propagation_settings_and_rejects_unknown_ones(tmp_path, capsys):
    from engine.cli import _config, main

    cfg = _config(["prior_strength=0.05", "max_keyframes=2"])
    assert cfg.prior_strength == 0.05 and cfg.max_keyframes == 2 and cfg.refine_radius == 8
    _mini_davis2017(tmp_path, n=3, shape=(40, 50))
    assert main(["evaluate", str(tmp_path), "--split", "val", "--set", "no_such_knob=1"]) == 2
    assert "no_such_knob" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path), "--split", "val", "--set", "k=two"]) == 2
    assert "'two' cannot be read as int" in capsys.readouterr().err


def test_compare_tabulates_variants_against_the_first(tmp_path, capsys):
    from engine.cli import main

    def result(jf, seqs):
        return {"JF_mean": jf, "J_mean": jf + 0.01, "F_mean": jf - 0.01,
                "sequences": {s: {"JF": v} for s, v in seqs.items()}}

    (tmp_path / "a.json").write_text(json.dumps(result(0.80, {"x": 0.9, "y": 0.5, "z": 0.7})))
    (tmp_path / "b.json").write_text(json.dumps(result(0.83, {"x": 0.9, "y": 0.6, "z": 0.8})))
    (tmp_path / "bad.json").write_text("{}")
    assert main(["compare", f"base={tmp_path / 'a.json'}", str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2] == "| base | 0.800 | 0.810 | 0.790 | y 0.500, z 0.700, x 0.900 |"
    assert out[3].startswith("| b | 0.830 (+0.030) |")
    assert main(["compare", str(tmp_path / "bad.json")]) == 2
    assert "not an evaluate --json result" in capsys.readouterr().err


def _fold_files(click_dir, head_dir, clicks, heads, click_src=None, head_src=None):
    """Fold weight files as the k-fold trainings name them: copies of the given weights, or empty files."""
    click_dir.mkdir(parents=True, exist_ok=True)
    (head_dir / "kfold").mkdir(parents=True, exist_ok=True)
    for i in clicks:
        (click_dir / f"click_model_fold{i}.pt").write_bytes(click_src.read_bytes() if click_src else b"")
    for k in heads:
        (head_dir / "kfold" / f"fold{k}.pt").write_bytes(head_src.read_bytes() if head_src else b"")


def test_kfold_models_give_each_sequence_the_weights_trained_without_it(tmp_path):
    """The click folds are runs of consecutive sorted names, the boundary folds deal the names out (name i to fold i
    mod K): each sequence gets the fold files of the folds that held it out."""
    names = [f"s{i}" for i in range(9, -1, -1)]
    _fold_files(tmp_path / "c", tmp_path / "b", range(5), range(1, 6))
    models = kfold_models(names, tmp_path / "c", tmp_path / "b")
    assert list(models) == sorted(names)
    assert models["s0"] == (tmp_path / "c" / "click_model_fold0.pt", tmp_path / "b" / "kfold" / "fold1.pt")
    assert models["s1"] == (tmp_path / "c" / "click_model_fold0.pt", tmp_path / "b" / "kfold" / "fold2.pt")
    assert models["s7"] == (tmp_path / "c" / "click_model_fold3.pt", tmp_path / "b" / "kfold" / "fold3.pt")
    (tmp_path / "b" / "kfold" / "fold5.pt").rename(tmp_path / "b" / "kfold" / "fold0.pt")  # numbered from 0: wrong
    with pytest.raises(FormatError, match="fold5.pt: missing"):
        kfold_models(names, tmp_path / "c", tmp_path / "b")
    with pytest.raises(FormatError, match="no click_model_fold"):
        kfold_models(names, tmp_path / "b", tmp_path / "b")


@pytest.mark.slow
def test_the_kfold_session_factory_runs_the_folds_weights(tmp_path, davis_root):
    """One fold of each (the shipped weights copied in): the k-fold run is the run with those weights given by hand;
    a sequence outside the training split is refused."""
    from engine.boundary import WEIGHTS as HEAD
    from engine.click_model import WEIGHTS as CLICKS
    from engine.propagation import PropagationConfig

    root = _mini_davis2016(tmp_path / "davis", davis_root, {"bear": range(0, 12, 4)})
    _fold_files(tmp_path / "c", tmp_path / "b", [0], [1], CLICKS, HEAD)
    cache = tmp_path / "emb"
    kfold = run_interactive(root, "train", None, rounds=1,
                            make_session_fn=kfold_session_factory(root, tmp_path / "c", tmp_path / "b", cache))
    by_hand = run_interactive(root, "train", None, rounds=1, make_session_fn=default_session_factory(
        embedding_cache=cache, click_model=tmp_path / "c" / "click_model_fold0.pt",
        config=PropagationConfig(boundary_head=str(tmp_path / "b" / "kfold" / "fold1.pt"))))
    for a, b in zip(kfold["sequences"]["bear"], by_hand["sequences"]["bear"]):
        assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    make = kfold_session_factory(root, tmp_path / "c", tmp_path / "b", cache)
    with pytest.raises(FormatError, match="not one of the training sequences"):
        make(tmp_path / "p", tmp_path / "elsewhere" / "dog")
