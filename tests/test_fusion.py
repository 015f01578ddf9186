"""The learned fusion head: cues, identity when untrained, soft aggregation, training, weights, propagation."""

import numpy as np
import pytest
import torch

from engine.errors import FormatError
from engine.fusion import (
    CHANNELS, LOCAL_RADIUS, FusionHead, _local_best, aggregate, base_logits, cues, fuse, local_similarities,
    load_head,
)
from engine.fusion_train import make_batch, perturbed, save_head, train_head
from engine.propagation import PropagationConfig, Propagator, forward_from_first_mask, rule_probs


def _unit(rng, shape):
    x = rng.standard_normal(shape).astype(np.float32)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _frame(seed=0, grid=(12, 16)):
    """Similarities of two labels and a previous-frame fraction map with a square object."""
    rng = np.random.default_rng(seed)
    prev = np.zeros(grid, np.float32)
    prev[3:8, 4:10] = 1.0
    prev[3, 4:10] = 0.4  # a soft top row
    scores = rng.uniform(0.2, 0.9, (2,) + grid).astype(np.float32)
    return scores, np.stack([1 - prev, prev]), rng


def test_local_similarities_are_the_dot_products_at_each_offset():
    rng = np.random.default_rng(0)
    a, b = _unit(rng, (6, 7, 16)), _unit(rng, (6, 7, 16))
    local = local_similarities(a, b)
    k = 2 * LOCAL_RADIUS + 1
    assert local.shape == (k * k, 6, 7)
    for i in range(k * k):
        dy, dx = divmod(i, k)
        dy, dx = dy - LOCAL_RADIUS, dx - LOCAL_RADIUS
        for y, x in ((0, 0), (3, 4), (5, 6)):
            if 0 <= y + dy < 6 and 0 <= x + dx < 7:
                assert local[i, y, x] == pytest.approx(float(a[y, x] @ b[y + dy, x + dx]), abs=1e-5)


def test_local_best_reads_only_marked_cells_within_the_window():
    rng = np.random.default_rng(1)
    a, b = _unit(rng, (8, 9, 16)), _unit(rng, (8, 9, 16))
    mask = np.zeros((8, 9), bool)
    mask[4, 4] = True
    best = _local_best(local_similarities(a, b), mask)
    assert best[4, 6] == pytest.approx(float(a[4, 6] @ b[4, 4]), abs=1e-5)  # two cells away: in the window
    assert best[4, 7] == -1.0 and best[0, 0] == -1.0                      # three cells away: not


def test_cues_layout_and_a_frame_without_the_object():
    scores, prev_fr, rng = _frame()
    local = local_similarities(_unit(rng, (12, 16, 8)), _unit(rng, (12, 16, 8)))
    c = cues(scores, 1, prev_fr, local)
    assert c.shape == (CHANNELS, 12, 16) and c.dtype == np.float32
    np.testing.assert_array_equal(c[0], scores[1])
    np.testing.assert_array_equal(c[1], scores[0])
    np.testing.assert_array_equal(c[4], prev_fr[1])
    assert c[5][5, 6] == 0 and c[5][0, 0] > 0          # distance to the previous mask
    gone = cues(scores, 1, np.stack([np.ones((12, 16)), np.zeros((12, 16))]), local)
    assert (gone[2] == -1).all() and (gone[5] == 1).all()


def test_an_untrained_head_is_the_hand_made_rule():
    scores, prev_fr, rng = _frame()
    local = local_similarities(_unit(rng, (12, 16, 8)), _unit(rng, (12, 16, 8)))
    rule = rule_probs(scores, prev_fr, PropagationConfig())
    out = fuse(FusionHead().eval(), scores, base_logits(rule), prev_fr, local)
    np.testing.assert_allclose(out, np.clip(rule, 1e-4, 1 - 1e-4), atol=1e-4)


def test_soft_aggregation_sums_to_one_and_is_exact_for_one_object():
    p = np.random.default_rng(2).uniform(0, 1, (3, 5, 6)).astype(np.float32)
    q = aggregate(p)
    assert q.shape == (4, 5, 6)
    np.testing.assert_allclose(q.sum(0), 1, atol=1e-5)
    one = aggregate(p[:1])
    np.testing.assert_allclose(one[1], np.clip(p[0], 1e-4, 1 - 1e-4), atol=1e-5)


def test_a_trained_head_leaves_cells_the_rule_is_sure_of():
    scores, prev_fr, rng = _frame()
    scores[1, 0, :] = 0.95
    scores[0, 0, :] = 0.2      # the rule is sure these are the object
    local = local_similarities(_unit(rng, (12, 16, 8)), _unit(rng, (12, 16, 8)))
    head = FusionHead()
    torch.manual_seed(0)
    torch.nn.init.normal_(head.out.weight, std=0.5)
    rule = rule_probs(scores, prev_fr, PropagationConfig())
    out = fuse(head.eval(), scores, base_logits(rule), prev_fr, local)
    unsure = np.abs(rule[1] - 0.5) < 0.3
    assert np.abs(out[1] - rule[1])[unsure].max() > 0.01
    np.testing.assert_allclose(out[1, 0], rule[1, 0], atol=1e-3)


def test_perturbed_changes_only_the_mask_and_keeps_fractions_elsewhere():
    _, prev_fr, _ = _frame()
    prev = prev_fr[1]
    changed = 0
    for seed in range(20):
        out = perturbed(prev, np.random.default_rng(seed))
        same = (out >= 0.5) == (prev >= 0.5)
        np.testing.assert_array_equal(out[same], prev[same])
        assert set(np.unique(out[~same])) <= {0.0, 1.0}
        changed += int((~same).any())
    assert changed >= 10
    empty = np.zeros_like(prev)
    np.testing.assert_array_equal(perturbed(empty, np.random.default_rng(0)), empty)


def _data(n=3):
    rng = np.random.default_rng(3)
    scores, prev_fr, _ = _frame()
    seqs = []
    for s in range(n):
        local = np.stack([local_similarities(_unit(rng, (12, 16, 8)), _unit(rng, (12, 16, 8))) for _ in range(4)])
        gt = np.zeros((4, 12, 16), np.float32)
        gt[:, 3:8, 4:10] = 1
        seqs.append({"name": f"s{s}", "scores": np.stack([scores] * 4).astype(np.float16),
                     "prev": np.stack([prev_fr[1]] * 4).astype(np.float16), "local": local.astype(np.float16),
                     "gt": gt.astype(np.float16)})
    return seqs


def test_training_batches_and_repeatable_training(tmp_path):
    data = _data()
    x, b, t = make_batch(data, np.random.default_rng(0), batch=4)
    assert x.shape == (4, CHANNELS, 12, 16) and b.shape == t.shape == (4, 1, 12, 16)
    h1, fig = train_head(data, seed=0, iterations=30, log=lambda s: None)
    h2, _ = train_head(data, seed=0, iterations=30, log=lambda s: None)
    for p1, p2 in zip(h1.parameters(), h2.parameters()):
        torch.testing.assert_close(p1, p2)
    assert fig["final_running_bce"] < fig["hand_made_running_bce"]
    path = tmp_path / "head.pt"
    save_head(h1, path, fig)
    loaded = load_head(path)
    for p1, p2 in zip(h1.parameters(), loaded.parameters()):
        torch.testing.assert_close(p1, p2)
    assert (tmp_path / "head.json").is_file()


def test_a_bad_weights_file_is_one_error_naming_it(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not torch")
    with pytest.raises(FormatError, match="bad.pt.*not fusion head weights"):
        load_head(bad)
    with pytest.raises(FormatError, match="not found"):
        load_head(tmp_path / "missing.pt")


def test_propagation_with_a_fusion_head_tracks_a_moving_square(tmp_path):
    """A square moving one cell a frame over noise: the engine with a (trained) head follows it."""
    rng = np.random.default_rng(4)
    h, w, D, n = 12, 16, 16, 6
    obj, bg = _unit(rng, (D,)), _unit(rng, (D,))
    masks, embs = [], []
    for t in range(n):
        m = np.zeros((h * 8, w * 8), np.uint8)
        m[24:56, 16 + 8 * t:48 + 8 * t] = 1
        cells = np.zeros((h, w), bool)
        cells[3:7, 2 + t:6 + t] = True
        e = np.where(cells[..., None], obj, bg) + 0.3 * rng.standard_normal((h, w, D))
        masks.append(m)
        embs.append((e / np.linalg.norm(e, axis=-1, keepdims=True)).astype(np.float32))
    head = FusionHead()
    torch.manual_seed(0)
    torch.nn.init.normal_(head.out.weight, std=0.1)
    path = tmp_path / "head.pt"
    save_head(head, path, {})
    config = PropagationConfig(fusion_head=str(path), boundary_head="none")
    prop = Propagator(config)
    assert prop.fusion is not None
    out = list(forward_from_first_mask(prop, n, masks[0].shape, embs.__getitem__, None, masks[0]))
    for r in out:
        inter = ((r.ids == 1) & (masks[r.t] == 1)).sum()
        assert inter / ((r.ids == 1) | (masks[r.t] == 1)).sum() > 0.8
