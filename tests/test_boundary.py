"""The learned boundary head: gate identity, sparse run equal to a whole-frame run, weights, training."""

import json

import cv2
import numpy as np
import pytest
import torch

from engine.boundary import (
    TRAIN_BAND, WEIGHTS, BoundaryHead, changeable, gated, inputs, load_head, no_grown_islands, no_new_holes,
    not_dissolved, quarter, refine,
)
from engine.boundary_train import make_batch, train_head
from engine.errors import FormatError
from engine.propagation import PropagationConfig, Propagator
from engine.upsample import EdgeAwareUpsampler, grid_average


def _scene(seed=0, size=(120, 214)):
    """A frame with a bright ellipse and its soft stride-8 probabilities (background, object)."""
    rng = np.random.default_rng(seed)
    H, W = size
    mask = np.zeros((H, W), np.uint8)
    cv2.ellipse(mask, (W // 2, H // 2), (W // 5, H // 4), 20, 0, 360, 1, -1)
    image = (rng.random((H, W, 3)) * 60 + mask[..., None] * 150).astype(np.uint8)
    fr = grid_average(np.stack([1 - mask, mask]).astype(np.float32), (-(-H // 8), -(-W // 8)))
    return image, mask, fr


def _random_head(seed=1):
    torch.manual_seed(seed)
    head = BoundaryHead()
    torch.nn.init.normal_(head.out.weight, std=0.2)
    return head.eval()


def test_untrained_head_is_the_guided_filter():
    image, _, fr = _scene()
    half, smooth, guide = EdgeAwareUpsampler().half_size(fr, image, image.shape[:2])
    g = np.clip(smooth[0], 0, 1)
    np.testing.assert_allclose(refine(BoundaryHead().eval(), g, half[1], guide, TRAIN_BAND, 1.0), g, atol=1e-4)


def test_a_trained_head_changes_only_unsure_pixels_near_the_contour():
    image, _, fr = _scene()
    fr[1, 2:5, 2:8] = 0.6  # an unsure blob away from the object: not a boundary, left alone
    fr[0] = 1 - fr[1]
    half, smooth, guide = EdgeAwareUpsampler().half_size(fr, image, image.shape[:2])
    g = np.clip(smooth[0], 0, 1)
    out = refine(_random_head(), g, half[1], guide, TRAIN_BAND, 1.0)
    allowed = changeable(g, TRAIN_BAND)
    assert np.abs(out - g)[allowed].max() > 0.05
    np.testing.assert_array_equal(out[~allowed], g[~allowed])
    unsure = 4 * g * (1 - g) >= 0.02
    assert (unsure & ~allowed).any()  # some unsure pixels are too far from the contour


def test_the_band_in_use_is_narrower_than_in_training_and_comes_from_the_config():
    image, _, fr = _scene()
    half, smooth, guide = EdgeAwareUpsampler().half_size(fr, image, image.shape[:2])
    g = np.clip(smooth[0], 0, 1)
    band = PropagationConfig().boundary_band
    assert band < TRAIN_BAND
    narrow, wide = changeable(g, band), changeable(g, TRAIN_BAND)
    assert narrow.any() and (narrow & ~wide).sum() == 0 and (wide & ~narrow).any()
    out = refine(_random_head(), g, half[1], guide, band, 1.0)
    np.testing.assert_array_equal(out[~narrow], g[~narrow])
    step = Propagator(PropagationConfig(boundary_band=7)).upsampler.boundary
    assert step.keywords == {"band": 7, "most_removed": PropagationConfig().boundary_most_removed}
    assert Propagator(PropagationConfig(boundary_head="none")).upsampler.boundary is None


def test_the_box_run_equals_a_whole_frame_run():
    image, _, fr = _scene(size=(240, 427))
    up = EdgeAwareUpsampler()
    half, smooth, guide = up.half_size(fr, image, image.shape[:2])
    g = np.clip(smooth[0], 0, 1)
    head = _random_head()
    boxed = refine(head, g, half[1], guide, TRAIN_BAND, 1.0)
    x = inputs(quarter(g), quarter(half[1]), quarter(guide))
    allowed = changeable(g, TRAIN_BAND)
    a = torch.from_numpy(allowed.astype(np.float32))[None, None]
    with torch.inference_mode():
        whole = torch.sigmoid(gated(torch.from_numpy(g)[None, None], head(torch.from_numpy(x)[None]), a))[0, 0].numpy()
    # the object is far from the frame's edges, so the box is strictly inside the frame
    np.testing.assert_allclose(boxed[allowed], whole[allowed], atol=1e-5)


def test_quarter_is_the_mean_of_each_two_by_two_block():
    a = np.arange(35, dtype=np.float32).reshape(5, 7)
    q = quarter(a)
    assert q.shape == (3, 4)
    assert q[0, 0] == pytest.approx(a[:2, :2].mean())
    assert q[2, 3] == pytest.approx(a[4, 6])


def test_shipped_head_loads_weights_only_and_has_its_record():
    head = load_head(WEIGHTS)
    assert isinstance(head, BoundaryHead)
    assert float(head.out.weight.abs().sum()) > 0  # trained, not the zero initialisation
    blob = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    assert set(blob) == {"config", "state"}
    record = json.loads(WEIGHTS.with_suffix(".json").read_text())
    assert record["made_by"].startswith("vos-engine train --boundary")
    assert len(record["train_sequences"]) == 30 and record["seed"] == 0 and record["seconds"] > 0
    assert record["kfold"]["with head (k-fold)"]["JF_mean"] > record["kfold"]["without head"]["JF_mean"]


def test_a_bad_weights_file_is_one_error_naming_it(tmp_path):
    bad = tmp_path / "head.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(FormatError, match="head.pt"):
        load_head(bad)
    with pytest.raises(FormatError, match="not found"):
        load_head(tmp_path / "missing.pt")


def _synthetic_data(n=4):
    frames = {"guided": [], "plain": [], "rgb": [], "gt": []}
    for i in range(n):
        image, mask, fr = _scene(seed=i, size=(480, 854))
        half, smooth, guide = EdgeAwareUpsampler().half_size(fr, image, image.shape[:2])
        gt = cv2.resize(mask.astype(np.float32), (guide.shape[1], guide.shape[0]), interpolation=cv2.INTER_AREA)
        for k, v in (("guided", np.clip(smooth[0], 0, 1)), ("plain", half[1]), ("rgb", guide), ("gt", gt)):
            frames[k].append(v.astype(np.uint8 if k == "rgb" else np.float16))
    return [{"name": "synthetic", **{k: np.stack(v) for k, v in frames.items()}}]


def test_training_batches_and_repeatable_training():
    data = _synthetic_data()
    x, g, allowed, target = make_batch(data, np.random.default_rng(0), batch=4)
    assert x.shape == (4, 6, 64, 64) and g.shape == allowed.shape == target.shape == (4, 1, 128, 128)
    assert 0 < float(allowed.mean()) < 1
    a, figures = train_head(data, seed=3, iterations=3, log=lambda *_: None)
    b, _ = train_head(data, seed=3, iterations=3, log=lambda *_: None)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    assert figures["iterations"] == 3 and figures["seed"] == 3


def test_shipped_head_sharpens_a_real_frame(davis_root):
    """On a DAVIS frame whose cells are the ground truth blurred, the head's probabilities are closer to the
    truth than the guided filter's (binary cross-entropy at half size)."""
    scores = []
    for seq, t in (("bear", 10), ("dog-agility", 20), ("car-turn", 30)):
        rgb = cv2.cvtColor(cv2.imread(str(davis_root / "JPEGImages/480p" / seq / f"{t:05d}.jpg")), cv2.COLOR_BGR2RGB)
        gt = cv2.imread(str(davis_root / "Annotations/480p" / seq / f"{t:05d}.png"), cv2.IMREAD_GRAYSCALE) > 0
        H, W = gt.shape
        fr = grid_average(np.stack([~gt, gt]).astype(np.float32), (-(-H // 8), -(-W // 8)))
        fr = np.stack([cv2.GaussianBlur(f, (3, 3), 0.8) for f in fr])
        half, smooth, guide = EdgeAwareUpsampler().half_size(fr, rgb, (H, W))
        g = np.clip(smooth[0], 0, 1)
        target = cv2.resize(gt.astype(np.float32), (guide.shape[1], guide.shape[0]), interpolation=cv2.INTER_AREA)
        bce = lambda p: float(torch.nn.functional.binary_cross_entropy(
            torch.from_numpy(np.clip(p, 1e-4, 1 - 1e-4)), torch.from_numpy(target)))
        cfg = PropagationConfig()
        scores.append((bce(refine(load_head(), g, half[1], guide, cfg.boundary_band, cfg.boundary_most_removed)),
                       bce(g)))
    assert sum(s[0] for s in scores) < sum(s[1] for s in scores)


def test_the_head_never_cuts_a_new_hole_into_the_object():
    guided = np.zeros((60, 80), np.float32)
    guided[10:50, 10:70] = 0.7                   # an unsure object
    refined = guided.copy()
    refined[25:35, 30:40] = 0.1                  # the head cut its middle out: a hole
    refined[10:20, 10:20] = 0.1                  # and trimmed a corner of the outline
    out = no_new_holes(guided, refined)
    np.testing.assert_array_equal(out[25:35, 30:40], guided[25:35, 30:40])
    np.testing.assert_array_equal(out[10:20, 10:20], refined[10:20, 10:20])
    kept = guided.copy()
    kept[25:35, 30:40] = 0.0                     # a hole the engine already had stays
    np.testing.assert_array_equal(no_new_holes(kept, kept), kept)


def test_the_head_never_grows_a_speck_into_a_new_part_of_the_object():
    guided = np.full((60, 80), 0.3, np.float32)
    guided[10:40, 10:40] = 0.7                   # the object
    guided[50:52, 60:62] = 0.6                   # a 4-pixel speck of it elsewhere
    refined = guided.copy()
    refined[10:40, 40:44] = 0.8                  # the head extends the object's outline by 4 pixels
    refined[46:56, 56:66] = 0.9                  # and grows the speck into a 100-pixel blob
    out = no_grown_islands(guided, refined)
    assert (out[46:56, 56:66] >= 0.5).sum() == 4  # the blob is the speck again
    added = (refined >= 0.5) & (guided < 0.5)
    np.testing.assert_array_equal(out[46:56, 56:66][added[46:56, 56:66]], guided[46:56, 56:66][added[46:56, 56:66]])
    np.testing.assert_array_equal(out[10:40, 40:44], refined[10:40, 40:44])
    np.testing.assert_array_equal(no_grown_islands(guided, guided), guided)


def test_the_head_trims_an_object_but_never_dissolves_it():
    guided = np.full((60, 80), 0.3, np.float32)
    guided[10:50, 10:50] = 0.7                   # a 1600-pixel unsure object
    trimmed = guided.copy()
    trimmed[10:50, 10:14] = 0.2                  # the head trims 160 pixels (10 %) off one side
    np.testing.assert_array_equal(not_dissolved(guided, trimmed, 0.2), trimmed)
    eaten = trimmed.copy()
    eaten[10:50, 14:30] = 0.2                    # and then eats another 640: half of it is gone
    eaten[5:10, 10:50] = 0.8                     # while growing the top by 200 pixels
    out = not_dissolved(guided, eaten, 0.2)
    np.testing.assert_array_equal(out[10:50, 10:50], guided[10:50, 10:50])  # everything it took is given back
    np.testing.assert_array_equal(out[5:10], eaten[5:10])                   # what it added stays
    np.testing.assert_array_equal(not_dissolved(guided, eaten, 1.0), eaten)  # no limit: the head's map


def test_propagation_applies_the_removal_limit_of_its_config(monkeypatch):
    from engine import boundary

    seen = []
    real = boundary.not_dissolved
    monkeypatch.setattr(boundary, "not_dissolved", lambda g, r, most: seen.append(most) or real(g, r, most))
    image, _, fr = _scene()
    Propagator(PropagationConfig(boundary_most_removed=0.35)).upsampler(fr, image, image.shape[:2])
    assert seen == [0.35]
