"""engine.metrics against hand-made cases and against the official DAVIS code (tests/davis_reference.py)."""

import cv2
import numpy as np
import pytest

from engine import metrics
from engine.metrics import boundary_f, boundary_map, disk_kernel, jaccard, sequence_statistics
from tests import davis_reference as ref

SEQUENCES = ("bear", "soccerball", "dance-jump")  # big object, small object, thin limbs
FRAMES = (0, 17, 41)


def _square(shape, y0, x0, y1, x1):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


# ------------------------------------------------------------------------------------------ hand-made


J_CASES = [
    ("empty/empty", np.zeros((8, 8), bool), np.zeros((8, 8), bool), 1.0),
    ("pred empty", np.zeros((8, 8), bool), _square((8, 8), 2, 2, 4, 4), 0.0),
    ("gt empty", _square((8, 8), 2, 2, 4, 4), np.zeros((8, 8), bool), 0.0),
    ("identical", _square((8, 8), 1, 1, 6, 5), _square((8, 8), 1, 1, 6, 5), 1.0),
    ("half", _square((8, 8), 0, 0, 4, 4), _square((8, 8), 0, 0, 4, 8), 0.5),
    ("shift 1 of 4x4", _square((8, 8), 0, 0, 4, 4), _square((8, 8), 0, 1, 4, 5), 12 / 20),
    ("disjoint", _square((8, 8), 0, 0, 2, 2), _square((8, 8), 5, 5, 7, 7), 0.0),
    ("uint8 ids", np.full((4, 4), 7, np.uint8), np.ones((4, 4), np.uint8), 1.0),
]


@pytest.mark.parametrize("name,pred,gt,expected", J_CASES, ids=[c[0] for c in J_CASES])
def test_jaccard_known_values(name, pred, gt, expected):
    assert jaccard(pred, gt) == pytest.approx(expected, abs=1e-12)


F_CASES = [
    ("empty/empty", np.zeros((50, 50), bool), np.zeros((50, 50), bool), 1.0),
    ("pred empty", np.zeros((50, 50), bool), _square((50, 50), 10, 10, 20, 20), 0.0),
    ("gt empty", _square((50, 50), 10, 10, 20, 20), np.zeros((50, 50), bool), 0.0),
    ("identical", _square((50, 50), 10, 10, 30, 20), _square((50, 50), 10, 10, 30, 20), 1.0),
    # 50x50: tolerance ceil(0.008 * 70.7) = 1 pixel, so a 1-pixel shift still matches everywhere ...
    ("shift within tolerance", _square((50, 50), 10, 10, 30, 30), _square((50, 50), 10, 11, 30, 31), 1.0),
    # ... and 20 pixels apart nothing does
    ("far apart", _square((50, 50), 5, 5, 15, 15), _square((50, 50), 30, 30, 40, 40), 0.0),
    # full frame: the official boundary map of an all-ones mask is empty, as for an empty mask
    ("full vs full", np.ones((30, 40), bool), np.ones((30, 40), bool), 1.0),
    ("full vs empty", np.ones((30, 40), bool), np.zeros((30, 40), bool), 1.0),
]


@pytest.mark.parametrize("name,pred,gt,expected", F_CASES, ids=[c[0] for c in F_CASES])
def test_boundary_f_known_values(name, pred, gt, expected):
    assert boundary_f(pred, gt) == pytest.approx(expected, abs=1e-12)


def test_boundary_f_half_matched():
    # 200x200: tolerance ceil(0.008 * 282.8) = 3 px: a square shifted by 10 px keeps only
    # the parts of its boundary that overlap within 3 px of the other's -> a known fraction, same both ways.
    g = _square((200, 200), 50, 50, 150, 150)
    p = _square((200, 200), 50, 60, 150, 160)
    f = boundary_f(p, g)
    assert 0 < f < 1
    assert f == pytest.approx(boundary_f(g, p), abs=1e-12)
    assert f == pytest.approx(ref.f_measure(p, g), abs=1e-12)


def test_boundary_map_is_the_official_seg2bmap():
    m = np.zeros((6, 7), bool)
    m[1:4, 2:5] = True
    expected = np.array([
        [0, 1, 1, 1, 1, 0, 0],
        [0, 1, 0, 0, 1, 0, 0],
        [0, 1, 0, 0, 1, 0, 0],
        [0, 1, 1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0],
    ], bool)
    assert np.array_equal(boundary_map(m), expected)
    assert np.array_equal(boundary_map(m), ref._seg2bmap(m))


def test_disk_kernel_literal():
    assert np.array_equal(disk_kernel(2), np.array([
        [0, 0, 1, 0, 0],
        [0, 1, 1, 1, 0],
        [1, 1, 1, 1, 1],
        [0, 1, 1, 1, 0],
        [0, 0, 1, 0, 0],
    ], np.uint8))


def test_disk_kernel_equals_skimage_disk():
    disk = pytest.importorskip("skimage.morphology", reason="scikit-image (test extra) gives the official disk").disk
    for r in range(0, 16):
        assert np.array_equal(disk_kernel(r), disk(r).astype(np.uint8)), r
        assert np.array_equal(disk_kernel(r), disk(float(r)).astype(np.uint8)), r


def test_boundary_tolerance_davis_480p():
    assert metrics.boundary_tolerance((480, 854)) == 8
    assert metrics.boundary_tolerance((50, 50)) == 1
    assert metrics.boundary_tolerance((480, 854), bound_th=3) == 3


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        jaccard(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError):
        boundary_f(np.zeros((4, 4)), np.zeros((5, 4)))


# ----------------------------------------------------------------------------- statistics vs official


def test_statistics_known_values():
    s = sequence_statistics([1.0, 1.0, 0.5, 0.0])
    assert s.mean == pytest.approx(0.625)
    assert s.recall == pytest.approx(0.5)  # 0.5 itself is not a success: strictly greater
    # quarters of 4 frames: bounds round(linspace(1, 4, 5)) - 1 = [0, 1, 2, 2, 3] -> first [1, 1], last [0.5, 0]
    assert s.decay == pytest.approx(1.0 - 0.25)
    assert np.isnan(sequence_statistics([]).mean)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 10, 23, 58, 89, 104, 200, 255])
def test_statistics_match_official(n):
    rng = np.random.default_rng(n)
    for values in (rng.random(n), np.linspace(1, 0, n), np.where(rng.random(n) < 0.5, 0.5, 0.50001)):
        mine = sequence_statistics(values)
        m, o, d = ref.db_statistics(values)
        assert mine.mean == pytest.approx(m, abs=1e-12)
        assert mine.recall == pytest.approx(o, abs=1e-12)
        assert mine.decay == pytest.approx(d, abs=1e-12)


# --------------------------------------------------------------------------- real data vs official


def _perturbations(gt: np.ndarray, rng) -> dict[str, np.ndarray]:
    g8 = gt.astype(np.uint8)
    ell = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
    h, w = gt.shape
    shifted = np.zeros_like(gt)
    shifted[6:, : w - 13] = gt[: h - 6, 13:]
    blobs = np.zeros((h, w), np.uint8)
    for _ in range(6):
        cv2.circle(blobs, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(3, 60)), 1, -1)
    noisy = gt ^ (rng.random(gt.shape) < 0.01)
    return {
        "identical": gt,
        "eroded": cv2.erode(g8, ell) > 0,
        "eroded_x3": cv2.erode(g8, ell, iterations=3) > 0,
        "dilated": cv2.dilate(g8, ell) > 0,
        "shifted": shifted,
        "shifted_1px": np.roll(gt, 1, axis=1),
        "emptied": np.zeros_like(gt),
        "full": np.ones_like(gt),
        "blobs": blobs > 0,
        "blobs_or_gt": (blobs > 0) | gt,
        "noisy": noisy,
        "border_band": _square(gt.shape, 0, 0, h, 5) | _square(gt.shape, h - 3, 0, h, w),
    }


@pytest.fixture(scope="module")
def real_masks(davis_root):
    out = {}
    for seq in SEQUENCES:
        for t in FRAMES:
            path = davis_root / "Annotations" / "480p" / seq / f"{t:05d}.png"
            out[(seq, t)] = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 0
    return out


def test_real_masks_match_official_to_1e9(real_masks):
    rng = np.random.default_rng(0)
    checked = 0
    for (seq, t), gt in real_masks.items():
        for name, pred in _perturbations(gt, rng).items():
            j_ref = float(ref.db_eval_iou(gt, pred))
            f_ref = float(ref.f_measure(pred, gt))
            assert jaccard(pred, gt) == pytest.approx(j_ref, abs=1e-9), (seq, t, name)
            assert boundary_f(pred, gt) == pytest.approx(f_ref, abs=1e-9), (seq, t, name)
            checked += 1
    assert checked == len(real_masks) * 12


def test_real_sequence_statistics_match_official(davis_root):
    """One object over a subsampled sequence with a missing (empty) frame: 3-D official calls vs ours."""
    seq_dir = davis_root / "Annotations" / "480p" / "bear"
    gts = np.stack([cv2.imread(str(seq_dir / f"{t:05d}.png"), cv2.IMREAD_GRAYSCALE) > 0 for t in range(0, 82, 9)])
    ell = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15))
    preds = np.stack([cv2.dilate(g.astype(np.uint8), ell, iterations=i % 4) > 0 for i, g in enumerate(gts)])
    preds[3] = False  # a frame without a prediction
    j_ref = ref.db_eval_iou(gts, preds)
    f_ref = ref.db_eval_boundary(gts, preds)
    j = np.array([jaccard(p, g) for p, g in zip(preds, gts)])
    f = np.array([boundary_f(p, g) for p, g in zip(preds, gts)])
    np.testing.assert_allclose(j, j_ref, rtol=0, atol=1e-9)
    np.testing.assert_allclose(f, f_ref, rtol=0, atol=1e-9)
    for mine, official in ((sequence_statistics(j), ref.db_statistics(j_ref)), (sequence_statistics(f), ref.db_statistics(f_ref))):
        np.testing.assert_allclose([mine.mean, mine.recall, mine.decay], official, rtol=0, atol=1e-9)


@pytest.mark.parametrize("shape", [(37, 91), (120, 64), (481, 855), (3, 200), (1080 // 4, 1920 // 4)])
def test_odd_sizes_match_official(shape):
    """Other diagonals give other tolerances; random blobs and noise on odd sizes, both orders."""
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    for _ in range(4):
        a = np.zeros(shape, np.uint8)
        b = np.zeros(shape, np.uint8)
        for m in (a, b):
            for _ in range(int(rng.integers(1, 5))):
                r = int(rng.integers(1, max(2, min(shape) // 2)))
                cv2.circle(m, (int(rng.integers(0, shape[1])), int(rng.integers(0, shape[0]))), r, 1, -1)
        b = b.astype(bool) ^ (rng.random(shape) < 0.02)
        a = a.astype(bool)
        assert jaccard(a, b) == pytest.approx(float(ref.db_eval_iou(b, a)), abs=1e-9)
        assert boundary_f(a, b) == pytest.approx(ref.f_measure(a, b), abs=1e-9)
        assert boundary_f(b, a) == pytest.approx(ref.f_measure(b, a), abs=1e-9)


@pytest.mark.parametrize("corner", ["top-left", "bottom-right", "bottom-left", "top-right"])
def test_masks_touching_the_image_border_match_official(corner):
    h, w = 90, 130
    ys = slice(0, 40) if "top" in corner else slice(h - 40, h)
    xs = slice(0, 50) if "left" in corner else slice(w - 50, w)
    g = np.zeros((h, w), bool)
    g[ys, xs] = True
    for p in (np.roll(g, 3, axis=0), np.roll(g, -4, axis=1), g & (np.arange(w) % 7 > 0), ~g):
        assert boundary_f(p, g) == pytest.approx(ref.f_measure(p, g), abs=1e-12), corner
        assert boundary_f(g, p) == pytest.approx(ref.f_measure(g, p), abs=1e-12), corner
