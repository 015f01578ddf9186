"""The click model (engine/click_model.py): shipped weights, what a click on a real frame gives, the edit rules."""

import cv2
import numpy as np
import pytest
import torch

from engine import interaction as edits
from engine.click_model import N_AUX, WEIGHTS, ClickModel, ClickNet, features
from engine.errors import FormatError
from engine.evaluation import load_sequences
from engine.metrics import jaccard
from engine.simulated_user import interior_point


def test_shipped_weights_load_with_weights_only():
    blob = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    assert set(blob) == {"config", "state_dict", "embedding_weights"}
    model = ClickModel.load()
    assert model.embedding_weights == blob["embedding_weights"]
    assert not model.net.training


def test_missing_or_foreign_weights_name_the_file(tmp_path):
    with pytest.raises(FormatError, match="nothere.pt"):
        ClickModel.load(tmp_path / "nothere.pt")
    other = tmp_path / "other.pt"
    torch.save({"something": torch.zeros(2)}, other)
    with pytest.raises(FormatError, match="other.pt"):
        ClickModel.load(other)


def test_features_put_the_clicks_where_they_were_made():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(12, 16, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=2, keepdims=True)
    pos = np.zeros((12, 16), bool)
    pos[3, 4] = True
    x = features(emb, pos, np.zeros_like(pos), np.zeros((12, 16)), np.zeros((3, 12, 16), np.float32))
    assert x.shape == (8 + N_AUX, 12, 16)
    p_sim, n_sim, p_disk, n_disk, p_dist, n_dist = x[8:14]
    assert p_sim[3, 4] == pytest.approx(1.0, abs=1e-5) and p_sim.argmax() == 3 * 16 + 4
    assert p_disk[3, 4] == 1 and p_disk[3, 6] == 0 and p_dist[3, 4] == 1 and p_dist[3, 5] < 1
    assert not (n_sim.any() or n_disk.any() or n_dist.any())  # no negative click: empty planes
    assert ClickNet(dim=8)(torch.from_numpy(x)[None]).shape == (1, 1, 12, 16)


@pytest.fixture(scope="module")
def bear_frame(davis_root):
    """(frame RGB, ground truth bool, embedding) of bear frame 40 at 480p, embedded by the shipped head."""
    from engine.embedding import Embedder

    seq = load_sequences(davis_root, None, ["bear"])[0]
    from PIL import Image

    image = np.array(Image.open(seq.image_dir / "00040.jpg").convert("RGB"))
    return image, seq.ground_truth(40) > 0, Embedder.load(device="cpu").embed(image)


def test_one_click_on_a_real_frame_takes_the_whole_object(bear_frame):
    image, gt, emb = bear_frame
    x, y = interior_point(gt)
    ids = edits.model_edit(np.zeros(gt.shape, np.uint8), emb, 1, [([(x, y)], True)], image, ClickModel.load())
    assert jaccard(ids == 1, gt) > 0.85  # 0.90 (the retrieval heuristics: 0.89)
    assert set(np.unique(ids)) == {0, 1}


def test_a_negative_click_removes_what_it_is_on_and_a_locked_object_never_changes(bear_frame):
    image, gt, emb = bear_frame
    model = ClickModel.load()
    H, W = gt.shape
    ids = np.zeros((H, W), np.uint8)
    ids[:, : W // 3] = 2  # another object on the left third (over part of the bear), locked
    x, y = interior_point(gt)
    out = edits.model_edit(ids, emb, 1, [([(x, y)], True)], image, model, locked={2})
    assert np.array_equal(out == 2, ids == 2)
    assert jaccard(out == 1, gt & (ids != 2)) > 0.7
    # unlocked, it keeps its pixels unless the click lands on it
    out = edits.model_edit(ids, emb, 1, [([(x, y)], True)], image, model)
    assert np.array_equal(out == 2, ids == 2)
    # a negative click on the bear's mask: the clicked spot goes
    ids = edits.model_edit(np.zeros((H, W), np.uint8), emb, 1, [([(x, y)], True)], image, model)
    neg = (x, y + 30)
    after = edits.model_edit(ids, emb, 1, [([(x, y)], True), ([neg], False)], image, model)
    assert after[neg[1], neg[0]] == 0 and ids[neg[1], neg[0]] == 1
    assert ((after == 1) & ~(ids == 1)).sum() < 0.05 * (ids == 1).sum()  # it does not grow elsewhere


def test_session_uses_the_model_only_with_the_embedding_it_was_trained_on(tmp_path, davis_root):
    """The shipped model knows the shipped head's embeddings; any other embedder gets the retrieval heuristics."""
    from engine.embedding import Embedder
    from engine.session import Session
    from tests.test_propagation import ColourEmbedder

    video = davis_root / "JPEGImages" / "480p" / "bear"
    s = Session.create(tmp_path / "p", video, embedder=Embedder.load(device="cpu"))
    other = Session.create(tmp_path / "q", video, embedder=ColourEmbedder())
    try:
        assert isinstance(s._clicker(), ClickModel)
        assert other._clicker() is None
    finally:
        s.close()
        other.close()


def test_training_repeats_exactly_with_its_seed():
    """`vos-engine train --click-model` reproduces the shipped weights: the same frames at other places in memory
    (as a second process loads them) give the same weights. BLAS and OpenCV's distance transform used to round
    their last bit by where an array starts, and training amplified it."""
    from engine.click_model_train import train_click_model

    rng = np.random.default_rng(3)
    frames = []
    for k in range(3):
        emb = rng.standard_normal((48, 72, 16)).astype(np.float32)
        gt = np.zeros((48, 72), np.float32)
        gt[10 + k:30, 20:50 - k] = 1.0
        emb[gt > 0] += 1.5
        emb /= np.linalg.norm(emb, axis=2, keepdims=True)
        frames.append({"seq": f"s{k}", "emb": emb.astype(np.float16), "gt": gt,
                       "rgb": rng.random((3, 48, 72), dtype=np.float32), "embedding_weights": "test"})

    def moved(a: np.ndarray, by: int) -> np.ndarray:
        """A copy of ``a`` that starts ``by`` elements into a fresh buffer."""
        buf = np.empty(a.size + by, a.dtype)[by:]
        buf[:] = a.ravel()
        return buf.reshape(a.shape)

    runs = []
    for by in (0, 3):
        copies = [{**f, **{k: moved(f[k], by) for k in ("emb", "gt", "rgb")}} for f in frames]
        runs.append(train_click_model(copies, seed=0, steps=6, log=lambda *a: None)[0].net.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


class _SaysEverything:
    """A click model (at the edge of the test) that calls the whole frame the object, or none of it."""

    def __init__(self, p: float):
        self.p = p

    def grid_probability(self, emb, pos_cells, neg_cells, prev, image):
        return np.full(emb.shape[:2], self.p, np.float32)


def test_a_correction_scribble_changes_only_what_is_near_its_stroke():
    """Scribbles that stay near their stroke: on a frame that shows the object, the model's change of a scribble
    reaches STROKE_REACH_PX from it and no farther, a short one half its length; a click, or the object's first
    stroke, takes the whole region."""
    from engine.distance import distance_to_zero

    H, W = 120, 200
    image = np.full((H, W, 3), 128, np.uint8)
    emb = np.ones((H // 8, W // 8, 4), np.float32) / 2
    square = np.zeros((H, W), np.uint8)
    square[40:80, 20:60] = 1
    stroke = [(100, 60), (170, 60)]
    line = np.zeros((H, W), np.uint8)
    cv2.line(line, stroke[0], stroke[1], 1)
    reach = distance_to_zero(1 - line)

    grown = edits.model_edit(square, emb, 1, [(stroke, True)], image, _SaysEverything(1.0))
    added = (grown == 1) & (square == 0)
    assert added.any() and reach[added].max() <= edits.STROKE_REACH_PX + 4  # + the stroke's own 3-pixel radius
    assert reach[added].max() > edits.STROKE_REACH_PX - 4
    assert (grown[square == 1] == 1).all()
    short = [(100, 60), (130, 60)]            # 30 pixels long: its change reaches 15 pixels
    line = np.zeros((H, W), np.uint8)
    cv2.line(line, short[0], short[1], 1)
    added = (edits.model_edit(square, emb, 1, [(short, True)], image, _SaysEverything(1.0)) == 1) & (square == 0)
    assert added.any() and 12 < distance_to_zero(1 - line)[added].max() <= 15 + 4
    assert (edits.model_edit(square, emb, 1, [([(100, 60)], True)], image, _SaysEverything(1.0)) == 1).all()
    assert (edits.model_edit(square * 0, emb, 1, [(stroke, True)], image, _SaysEverything(1.0)) == 1).all()

    everything = np.ones((H, W), np.uint8)
    cut = edits.model_edit(everything, emb, 1, [(stroke, False)], image, _SaysEverything(0.0))
    removed = cut == 0
    assert removed.any() and reach[removed].max() <= edits.STROKE_REACH_PX + 4
    assert (edits.model_edit(everything, emb, 1, [([(100, 60)], False)], image, _SaysEverything(0.0)) == 0).all()


def test_pixels_under_earlier_strokes_keep_their_sign():
    """Strokes that stay marked: a later stroke of the other sign may change the model's region around it, but not
    the pixels under the frame's earlier strokes, unless it goes over them itself."""
    H, W = 120, 200
    image = np.full((H, W, 3), 128, np.uint8)
    emb = np.ones((H // 8, W // 8, 4), np.float32) / 2
    square = np.zeros((H, W), np.uint8)
    square[40:80, 20:100] = 1
    kept = [(30, 60), (50, 60)]                # an earlier positive scribble inside the square
    cut = edits.model_edit(square, emb, 1, [(kept, True), ([(60, 60), (90, 60)], False)], image,
                           _SaysEverything(0.0))
    assert (cut[57:64, 30:51] == 1).all()      # its 7-pixel-wide band stays the object
    assert (cut[50:70, 55:95] == 0).all()      # what the new stroke's region reaches goes
    over = edits.model_edit(square, emb, 1, [(kept, True), ([(25, 60), (90, 60)], False)], image,
                            _SaysEverything(0.0))
    assert (over[57:64, 30:51] == 0).all()     # a newer stroke over the old one wins

    empty = np.zeros((H, W), np.uint8)
    grown = edits.model_edit(square, emb, 1, [([(105, 60), (125, 60)], False), ([(40, 60), (100, 60)], True)],
                             image, _SaysEverything(1.0))
    assert (grown[57:64, 105:126] == 0).all()  # background marked by the earlier negative scribble stays out
    assert (grown[50:56, 101:126] == 1).all()  # beside it, within the new stroke's reach, the object grows
    assert (edits.model_edit(empty, emb, 1, [([(120, 60), (140, 60)], False), ([(90, 60)], True)], image,
                             _SaysEverything(1.0))[57:64, 120:141] == 0).all()
