"""faiss retrieval: prototypes, per-label scores, probabilities."""

import numpy as np
import pytest

from engine.retrieval import (LabelIndex, gpu_available, l2_normalise, make_prototypes, margin,
                              softmax_scores)


def _clusters(rng, centres, n, noise=0.05):
    pts = np.concatenate([c + noise * rng.standard_normal((n, len(c))) for c in centres])
    return l2_normalise(pts.astype(np.float32))


def test_prototypes_bound_the_pool_and_stay_unit_vectors():
    rng = np.random.default_rng(0)
    pool = l2_normalise(rng.standard_normal((5000, 16)))
    protos = make_prototypes(pool, max_prototypes=64)
    assert protos.shape == (64, 16)
    np.testing.assert_allclose(np.linalg.norm(protos, axis=1), 1.0, atol=1e-4)
    small = pool[:10] * 3.0  # not normalised on input
    out = make_prototypes(small, max_prototypes=64)
    assert out.shape == (10, 16)
    np.testing.assert_allclose(out, l2_normalise(small), atol=1e-6)


def test_label_index_labels_by_nearest_reference():
    rng = np.random.default_rng(1)
    centres = l2_normalise(rng.standard_normal((3, 8)))
    pools = {lab: _clusters(rng, [centres[lab]], 500) for lab in range(3)}
    index = LabelIndex(pools, k=1, max_prototypes=32)
    assert all(len(index.prototypes[lab]) == 32 for lab in range(3))
    queries = _clusters(rng, centres, 50)
    truth = np.repeat(np.arange(3), 50)
    scores = index.scores(queries)
    assert scores.shape == (3, 150)
    assert (np.argmax(scores, axis=0) == truth).mean() > 0.98
    probs = softmax_scores(scores, 0.05)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    assert margin(probs).mean() > 0.5


def test_empty_pool_scores_minus_one_and_k_averages():
    rng = np.random.default_rng(2)
    pools = {0: l2_normalise(rng.standard_normal((20, 4))), 5: np.zeros((0, 4), np.float32)}
    index = LabelIndex(pools, k=3)
    q = l2_normalise(rng.standard_normal((7, 4)))
    s = index.scores(q)
    assert index.labels == [0, 5]
    assert np.all(s[1] == -1.0)
    sims = q @ pools[0].T
    np.testing.assert_allclose(s[0], np.sort(sims, axis=1)[:, -3:].mean(axis=1), atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="faiss sees no GPU (faiss-cpu build or no CUDA device)")
def test_gpu_index_matches_cpu():  # pragma: no cover - needs a GPU
    rng = np.random.default_rng(3)
    pools = {0: l2_normalise(rng.standard_normal((100, 16))), 1: l2_normalise(rng.standard_normal((100, 16)))}
    q = l2_normalise(rng.standard_normal((50, 16)))
    cpu = LabelIndex(pools, use_gpu=False).scores(q)
    gpu = LabelIndex(pools, use_gpu=True).scores(q)
    np.testing.assert_allclose(cpu, gpu, atol=1e-4)


def test_small_chunks_keep_their_vectors_and_large_ones_share_the_rest():
    from engine.retrieval import share_budget

    assert share_budget([5000], 512) == [512]
    assert share_budget([5000, 9], 512) == [503, 9]            # a click leaves its keyframe 503, not 256
    assert share_budget([3000, 4000, 10], 512) == [251, 251, 10]
    assert share_budget([100, 4000], 512) == [100, 412]
    assert share_budget([5000] * 20, 512) == [32] * 20          # the floor
