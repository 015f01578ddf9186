"""Refiners: the registry, the part tracker on a synthetic moving square, the modulation network's output
contract, and both refiners on a few real DAVIS frames."""

import numpy as np
import pytest

from engine.refiners import (
    REFINERS, FrameContext, Reference, Refiner, Run, available_refiners, get_refiner, normalise_probs,
    time_refiner, train_refiner, with_background,
)
from engine.upsample import argmax_ids


def probs_to_ids(probs: dict) -> np.ndarray:
    """The propagation's argmax over background (implicit, 1 - sum) and the objects."""
    labels = [0, *sorted(probs)]
    return argmax_ids(with_background(probs, labels), labels)


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else float(np.logical_and(a, b).sum() / u)


def _square_sequence(n=12, h=120, w=200, size=32, step=(4, 2), seed=0):
    """A textured square moving over a differently textured background: frames, masks, square positions."""
    rng = np.random.default_rng(seed)
    bg = (rng.random((h, w, 3)) * 80 + 40).astype(np.uint8)
    tex = (rng.random((size // 4, size // 4, 3)) * 255).astype(np.uint8)
    tex = np.repeat(np.repeat(tex, 4, 0), 4, 1)
    frames, masks, pos = [], [], []
    for i in range(n):
        x, y = 20 + step[0] * i, 30 + step[1] * i
        f = bg.copy()
        f[y:y + size, x:x + size] = tex
        m = np.zeros((h, w), np.uint8)
        m[y:y + size, x:x + size] = 1
        frames.append(f), masks.append(m), pos.append((x, y))
    return frames, masks, pos


def _unit_embedding(frame: np.ndarray, dim: int = 8) -> np.ndarray:
    """A stand-in embedding: stride-8 mean colour + fixed random projection, L2-normalised."""
    import cv2

    h, w = frame.shape[:2]
    small = cv2.resize(frame, ((w + 7) // 8, (h + 7) // 8), interpolation=cv2.INTER_AREA).astype(np.float32)
    proj = np.random.default_rng(1).standard_normal((3, dim)).astype(np.float32)
    e = (small / 255.0 - 0.5) @ proj
    return e / np.maximum(np.linalg.norm(e, axis=2, keepdims=True), 1e-6)


# ----------------------------------------------------------------------------------------------- registry

def test_registry_lists_both_and_rejects_unknown_names():
    names = available_refiners()
    assert "modulation" in names and "parts" in names
    assert get_refiner(None) is None and get_refiner("none") is None
    with pytest.raises(ValueError, match="unknown refiner 'nope'.*modulation.*parts"):
        get_refiner("nope")
    with pytest.raises(ValueError, match="'parts' has no weights to train"):
        train_refiner("parts", "/nowhere")


def test_a_third_refiner_is_one_class_and_one_registry_entry(monkeypatch):
    """Registered by name, it is driven by the propagation through start, refine and finish."""
    from engine.propagation import PropagationTask, Propagator

    calls = []

    class Halve(Refiner):
        name = "halve"

        def start(self, run):
            calls.append(("start", run.t0, run.step, [r.t for r in run.references]))

        def refine(self, frame):
            calls.append(("refine", frame.t))
            return {o: p * 0.5 for o, p in frame.probs.items()}

        def finish(self):
            calls.append(("finish",))

    monkeypatch.setitem(REFINERS, "halve", (f"{__name__}:Halve", None))
    monkeypatch.setitem(globals(), "Halve", Halve)
    assert "halve" in available_refiners()
    frames, masks, _ = _square_sequence(n=5, h=64, w=96, size=16)
    embs = [_unit_embedding(f) for f in frames]
    store = {2: masks[2]}
    task = PropagationTask(n_frames=5, size_hw=(64, 96), embedding=lambda t: embs[t],
                           read_ids=lambda t: store.get(t, np.zeros((64, 96), np.uint8)),
                           keyframes={1: {2}}, objects=[1], image=lambda t: frames[t])
    results = list(Propagator(refiner=get_refiner("halve")).run(task, 2, "both"))
    assert calls == [("start", 2, 1, [2]), ("refine", 3), ("refine", 4), ("finish",),
                     ("start", 2, -1, [2]), ("refine", 1), ("refine", 0), ("finish",)]
    for r in results:  # an object probability of at most 0.5 never beats the background's
        assert not r.ids.any() and r.probs[1].shape == embs[0].shape[:2]


def test_normalise_and_argmax_keep_background_implicit():
    a = np.full((2, 2), 0.8, np.float32)
    b = np.full((2, 2), 0.6, np.float32)
    b[0, 0] = 0.0
    p = normalise_probs({1: a, 2: b})
    assert np.all(p[1] + p[2] <= 1.0 + 1e-6)
    ids = probs_to_ids({1: np.array([[0.2, 0.7]], np.float32), 2: np.array([[0.1, 0.2]], np.float32)})
    assert ids.tolist() == [[0, 1]]


# ----------------------------------------------------------------------------------------------- parts

@pytest.mark.parametrize("with_embedding", [True, False])
def test_part_tracker_follows_a_moving_textured_square(with_embedding):
    frames, masks, pos = _square_sequence()
    r = get_refiner("parts")
    ref = Reference(t=0, image=frames[0], ids=masks[0],
                    embedding=_unit_embedding(frames[0]) if with_embedding else None)
    r.start(Run(references=[ref]))
    prev = masks[0]
    for t in range(1, len(frames)):
        coarse = masks[t].astype(np.float32) * 0.9
        coarse[80:110, 150:190] = 0.9                       # a look-alike far from the object
        ctx = FrameContext(t=t, image=frames[t], probs={1: coarse}, prev_ids=prev,
                           embedding=_unit_embedding(frames[t]) if with_embedding else None)
        out = r.refine(ctx)
        assert out[1].shape == coarse.shape and out[1].dtype == np.float32
        prev = probs_to_ids(out)
        boxes = [p.box for p in r._objects[1].parts if p.alive]
        assert boxes, f"all parts lost at frame {t}"
        x, y = pos[t]
        for bx, by, bw, bh in boxes:                          # each part box still on the square
            cx, cy = bx + bw / 2, by + bh / 2
            assert x - 2 <= cx <= x + 34 and y - 2 <= cy <= y + 34, (t, (bx, by, bw, bh), (x, y))
    assert _jaccard(prev == 1, masks[-1] == 1) > 0.8          # look-alike suppressed, object kept


def test_parts_leaves_unannotated_objects_alone():
    frames, masks, _ = _square_sequence(n=3)
    r = get_refiner("parts")
    r.start(Run(references=[Reference(t=0, image=frames[0], ids=masks[0])]))
    other = np.full(masks[1].shape, 0.05, np.float32)
    out = r.refine(FrameContext(t=1, image=frames[1], probs={1: masks[1] * 0.9, 7: other}, prev_ids=masks[0]))
    np.testing.assert_allclose(out[7], other)


# ----------------------------------------------------------------------------------------------- modulation

def test_modulation_output_is_a_probability_map_of_the_right_shape():
    frames, masks, _ = _square_sequence(n=4, h=96, w=136)
    r = get_refiner("modulation")
    ref = Reference(t=0, image=frames[0], ids=masks[0] * 3)      # object id 3
    r.start(Run(references=[ref]))
    prev = masks[0] * 3
    for t in range(1, 4):
        coarse = {3: np.clip(masks[t] * 0.8 + 0.05, 0, 1).astype(np.float32),
                  5: np.full(masks[t].shape, 0.1, np.float32)}  # id 5 has no reference
        out = r.refine(FrameContext(t=t, image=frames[t], probs=coarse, prev_ids=prev))
        assert set(out) == {3, 5}
        for v in out.values():
            assert v.shape == (96, 136) and v.dtype == np.float32
            assert np.isfinite(v).all() and v.min() >= 0.0 and v.max() <= 1.0
        assert np.all(out[3] + out[5] <= 1.0 + 1e-5)
        assert np.all(out[5] <= coarse[5] + 1e-6)                    # no reference: unchanged but for
        far = (out[3] + coarse[5]) <= 1.0                              # the rescaling that keeps sums <= 1
        np.testing.assert_allclose(out[5][far], coarse[5][far])
        prev = probs_to_ids(out)


def test_time_refiner_reports_milliseconds():
    for name in ("parts", "modulation"):
        ms = time_refiner(name, n=4, size=(320, 192))
        assert 0.0 < ms < 2000.0
    assert time_refiner("none") == 0.0


# ----------------------------------------------------------------------------------------------- engine hook

@pytest.mark.parametrize("name", ["parts", "modulation"])
def test_refiners_plug_into_the_propagators_hook(name):
    """The Propagator hands every propagated frame to the refiner, in its full-size layout."""
    from engine.propagation import PropagationTask, Propagator

    frames, masks, _ = _square_sequence(n=6, h=96, w=160, size=24)
    embs = [_unit_embedding(f) for f in frames]
    store = {0: masks[0] * 2}                                      # object id 2
    task = PropagationTask(n_frames=6, size_hw=(96, 160), embedding=lambda t: embs[t],
                           read_ids=lambda t: store.get(t, np.zeros((96, 160), np.uint8)),
                           keyframes={2: {0}}, objects=[2], image=lambda t: frames[t])
    seen = []
    refiner = get_refiner(name)
    inner = refiner.refine

    def spy(ctx):
        seen.append(ctx.t)
        assert set(ctx.probs) == {2} and ctx.probs[2].shape == (96, 160)
        return inner(ctx)

    refiner.refine = spy
    for r in Propagator(refiner=refiner).run(task, 0, "forward"):
        store[r.t] = r.ids
        assert r.ids.shape == (96, 160) and r.ids.dtype == np.uint8
        assert set(np.unique(r.ids)) <= {0, 2}
    assert seen == [1, 2, 3, 4, 5]


# ----------------------------------------------------------------------------------------------- real frames

def _real_frames(davis_root, seq="bear", n=4):
    import cv2

    img_dir = davis_root / "JPEGImages" / "480p" / seq
    names = sorted(p.stem for p in img_dir.glob("*.jpg"))[:n]
    frames = [cv2.cvtColor(cv2.imread(str(img_dir / f"{k}.jpg")), cv2.COLOR_BGR2RGB) for k in names]
    masks = [(cv2.imread(str(davis_root / "Annotations" / "480p" / seq / f"{k}.png"), 0) > 127).astype(np.uint8)
             for k in names]
    return frames, masks


def _engine_like_coarse(mask: np.ndarray, blob_at: tuple[int, int]) -> np.ndarray:
    """A blocky stride-8 version of the truth plus a look-alike blob far away, as the engine gets wrong."""
    import cv2

    h, w = mask.shape
    grid = cv2.resize(mask.astype(np.float32), ((w + 7) // 8, (h + 7) // 8), interpolation=cv2.INTER_AREA)
    c = cv2.resize(grid, (w, h), interpolation=cv2.INTER_LINEAR) * 0.9
    y, x = blob_at
    c[y:y + 60, x:x + 80] = 0.8
    return c.astype(np.float32)


@pytest.mark.parametrize("name", ["parts", "modulation"])
def test_refiners_on_real_frames(davis_root, name):
    frames, masks = _real_frames(davis_root)
    embs = [_unit_embedding(f, dim=16) for f in frames]
    ref = Reference(t=0, image=frames[0], ids=masks[0], embedding=embs[0])
    r = get_refiner(name)
    r.start(Run(references=[ref]))
    prev = masks[0]
    for t in range(1, len(frames)):
        coarse = _engine_like_coarse(masks[t], blob_at=(20, 20))
        out = r.refine(FrameContext(t=t, image=frames[t], probs={1: coarse}, embedding=embs[t],
                                    prev_ids=prev))
        p = out[1]
        assert p.shape == masks[t].shape and p.dtype == np.float32 and 0 <= p.min() and p.max() <= 1
        prev = probs_to_ids(out)
        j_coarse, j_refined = _jaccard(coarse > 0.5, masks[t] == 1), _jaccard(prev == 1, masks[t] == 1)
        assert j_refined > j_coarse, (t, j_coarse, j_refined)      # the far look-alike is gone, bear kept
        assert p[20:80, 20:100].mean() < 0.5


def test_the_propagator_starts_the_refiner_once_per_pass_with_the_keyframe_as_reference():
    from engine.propagation import PropagationTask, Propagator

    frames, masks, _ = _square_sequence(n=7, h=64, w=128, size=16)
    embs = [_unit_embedding(f) for f in frames]
    store = {3: masks[3]}
    task = PropagationTask(n_frames=7, size_hw=(64, 128), embedding=lambda t: embs[t],
                           read_ids=lambda t: store.get(t, np.zeros((64, 128), np.uint8)),
                           keyframes={1: {3}}, objects=[1], image=lambda t: frames[t])
    refiner = get_refiner("parts")
    starts = []
    original = refiner.start
    refiner.start = lambda run: (starts.append([r.t for r in run.references]), original(run))
    order = [r.t for r in Propagator(refiner=refiner).run(task, 3, "both")]
    assert order == [4, 5, 6, 2, 1, 0]
    assert starts == [[3], [3]]                     # forward pass, then backward pass, from keyframe 3
