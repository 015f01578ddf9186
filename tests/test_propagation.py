"""Propagation on synthetic videos: tracking, keyframe bounds, locked objects, confidence."""

import threading

import cv2
import faiss
import numpy as np

from engine.propagation import Propagator, PropagationConfig, PropagationTask, object_spans
from engine.retrieval import LabelIndex
from engine.threads import ALL_CORES
from engine.upsample import SURE, EdgeAwareUpsampler, argmax_ids, grid_size, label_fractions, resize_ids, unsure_box


class ColourEmbedder:
    """A test embedder: the mean colour of every 8x8 cell (and its complement), unit length.

    Real enough for flat synthetic scenes and ~free, so tests can run many frames."""
    dim = 6

    def embed(self, frame):
        H, W = frame.shape[:2]
        h, w = grid_size(H, W)
        pad = cv2.copyMakeBorder(frame, 0, h * 8 - H, 0, w * 8 - W, cv2.BORDER_REPLICATE)
        g = cv2.resize(pad.astype(np.float32) / 255.0, (w, h), interpolation=cv2.INTER_AREA)
        f = np.dstack([g, 1.0 - g]).astype(np.float32)
        return f / np.linalg.norm(f, axis=2, keepdims=True)


def square_video(n=12, size=(160, 120), squares=(((220, 40, 40), (10, 40), (6, 0)),), side=32, seed=0):
    """Frames (list of (H, W, 3) RGB) and per-frame id masks of moving squares on noisy grass.

    squares: ((r, g, b), (x0, y0), (dx, dy) per frame) per object; object k has id k + 1."""
    W, H = size
    rng = np.random.default_rng(seed)
    frames, masks = [], []
    for t in range(n):
        img = np.empty((H, W, 3), np.uint8)
        img[:] = (40, 120, 40)
        img = (img + rng.integers(0, 12, img.shape)).astype(np.uint8)
        ids = np.zeros((H, W), np.uint8)
        for k, (color, (x0, y0), (dx, dy)) in enumerate(squares):
            x, y = x0 + dx * t, y0 + dy * t
            img[y:y + side, x:x + side] = color
            ids[y:y + side, x:x + side] = k + 1
        frames.append(img)
        masks.append(ids)
    return frames, masks


def jaccard(a, b):
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else np.logical_and(a, b).sum() / u


def make_task(frames, masks_store, keyframes, objects, locked=()):
    emb = ColourEmbedder()
    embs = [emb.embed(f) for f in frames]
    H, W = frames[0].shape[:2]
    return PropagationTask(
        n_frames=len(frames), size_hw=(H, W), embedding=lambda t: embs[t],
        read_ids=lambda t: masks_store.get(t, np.zeros((H, W), np.uint8)).copy(),
        keyframes=keyframes, objects=objects, locked=set(locked), image=lambda t: frames[t])


def run(prop, task, store, t0, direction):
    done = []
    for r in prop.run(task, t0, direction):
        store[r.t] = r.ids
        done.append(r.t)
    return done


def test_moving_square_is_tracked_forward():
    frames, gt = square_video(n=12)
    store = {0: gt[0]}
    task = make_task(frames, store, {1: {0}}, [1])
    done = run(Propagator(), task, store, 0, "forward")
    assert done == list(range(1, 12))
    for t in done:
        assert jaccard(store[t] == 1, gt[t] == 1) > 0.9, t


def test_spans_stop_at_keyframes_and_keyframes_are_never_rewritten():
    assert object_spans({1: {0, 8}}, [1], 0, 12, "forward") == {1: (1, 7)}
    assert object_spans({1: {0, 8}}, [1], 8, 12, "both") == {1: (1, 11)}
    assert object_spans({1: {3}}, [1], 3, 12, "backward") == {1: (0, 2)}
    assert object_spans({1: {0, 8}}, [1], 4, 12, "both") == {1: (1, 7)}
    assert object_spans({1: set()}, [1], 4, 12, "both") == {}
    frames, gt = square_video(n=12)
    kf8 = gt[8].copy()
    kf8[:4, :4] = 1  # a user edit the propagation must keep
    store = {0: gt[0], 8: kf8}
    task = make_task(frames, store, {1: {0, 8}}, [1])
    done = run(Propagator(), task, store, 0, "both")
    assert done == list(range(1, 8))
    assert np.array_equal(store[8], kf8)


def test_backward_from_a_later_keyframe():
    frames, gt = square_video(n=10)
    store = {9: gt[9]}
    task = make_task(frames, store, {1: {9}}, [1])
    done = run(Propagator(), task, store, 9, "backward")
    assert done == list(range(8, -1, -1))
    assert min(jaccard(store[t] == 1, gt[t] == 1) for t in done) > 0.85


def test_the_search_a_frame_ahead_reads_embeddings_on_the_callers_thread_and_stops_with_the_generator(monkeypatch):
    """The next frame's faiss search runs beside the current frame (Propagator._pass): the results are those
    of searching frame by frame, embeddings (which may run the network) are read on the caller's thread
    only, the search leaves the caller's core to it without changing the caller's threads, and closing the
    generator early leaves no search thread behind. (The background pool stays as it is here, so that one index
    serves the serial search.)"""
    frames, gt = square_video(n=12)
    store = {0: gt[0]}
    task = make_task(frames, store, {1: {0}}, [1])
    read_on, embedding = [], task.embedding
    task.embedding = lambda t: read_on.append(threading.get_ident()) or embedding(t)
    search, search_threads = Propagator.search, []
    monkeypatch.setattr(Propagator, "search", staticmethod(
        lambda index, emb: search_threads.append(faiss.omp_get_max_threads()) or search(index, emb)))
    prop = Propagator(PropagationConfig(background_every=0))
    index = LabelIndex(prop.reference_pools(task, [1], 0)[0], k=1, max_prototypes=10 ** 9)
    callers = faiss.omp_get_max_threads()
    for r in prop.run(task, 0, "forward"):
        prev = store.get(r.t - 1)
        serial = prop.predict_grid(search(index, embedding(r.t)), [0, 1], index,
                                   label_fractions(prev, [0, 1], embedding(r.t).shape[:2]))
        np.testing.assert_array_equal(np.stack([r.probs[0], r.probs[1]]), serial)
        store[r.t] = r.ids
    assert set(read_on) == {threading.get_ident()}
    assert search_threads and set(search_threads) == {max(1, ALL_CORES - 1)}
    assert faiss.omp_get_max_threads() == callers
    gen = prop.run(task, 0, "forward")
    next(gen)
    gen.close()
    assert not [th for th in threading.enumerate() if th.name.startswith("vos-search")]


def test_the_background_refresh_is_built_on_the_search_thread_and_serves_from_two_frames_on(monkeypatch):
    """Every background_every frames the index takes that frame's sure background (Propagator._pass): built
    beside the caller, and the results are those of refreshing it in order on the caller's thread, the new
    index serving from the frame after next (the next one's search is already under way)."""
    frames, gt = square_video(n=12)
    store = {0: gt[0]}
    task = make_task(frames, store, {1: {0}}, [1])
    built_on, refreshed = [], Propagator._refreshed_index
    monkeypatch.setattr(Propagator, "_refreshed_index",
                        lambda self, *a: built_on.append(threading.get_ident()) or refreshed(self, *a))
    prop = Propagator(PropagationConfig(background_every=2))
    pools = prop.reference_pools(task, [1], 0)[0]
    index = first = prop._index(pools)
    serves_from, grown = {}, []
    for r in prop.run(task, 0, "forward"):
        index = serves_from.pop(r.t, index)
        emb = task.embedding(r.t)
        scores = Propagator.search(index, emb)
        serial = prop.predict_grid(scores, [0, 1], index, label_fractions(store[r.t - 1], [0, 1], emb.shape[:2]))
        # k-means sums in another order on the search thread's cores: equal to float rounding
        np.testing.assert_allclose(np.stack([r.probs[0], r.probs[1]]), serial, rtol=0, atol=1e-5)
        store[r.t] = r.ids
        if r.t % 2 == 1:
            serves_from[r.t + 2] = prop._index(pools, prop._recent_background(emb, r, scores, index))
            grown.append(len(serves_from[r.t + 2].prototypes[0]) > len(first.prototypes[0]))
    assert any(grown)  # the refreshes took background cells, so the comparison above saw them
    assert built_on and threading.get_ident() not in built_on


def test_two_objects_and_a_locked_one_stays_as_it_was():
    sq = (((220, 40, 40), (10, 20), (6, 0)), ((40, 40, 220), (100, 70), (-5, 0)))
    frames, gt = square_video(n=10, squares=sq)
    locked_ids = [m.copy() for m in gt]
    store = {t: np.where(locked_ids[t] == 2, 2, 0).astype(np.uint8) for t in range(10)}
    store[0] = gt[0].copy()
    before = {t: (store[t] == 2).copy() for t in range(10)}
    task = make_task(frames, store, {1: {0}, 2: {0}}, [1, 2], locked={2})
    run(Propagator(), task, store, 0, "forward")
    for t in range(10):
        assert np.array_equal(store[t] == 2, before[t]), t
    assert min(jaccard(store[t] == 1, gt[t] == 1) for t in range(1, 10)) > 0.85


def test_confidence_of_a_clear_object_does_not_drop_when_it_grows():
    """An object that doubles its area between frames but is clearly told apart keeps its confidence
    (the area-stability factor that halved it here ranked DAVIS frames worse)."""
    probs = np.zeros((2, 10, 10), np.float32)
    probs[0] = 0.95
    probs[1, 2:8, 2:8] = 0.95
    probs[0, 2:8, 2:8] = 0.05
    prev = np.zeros((2, 10, 10), np.float32)
    prev[1, 3:6, 3:9] = 1.0  # 18 cells before, 36 now
    conf = Propagator.confidence(probs, [0, 1], prev)
    assert conf[1] > 0.85  # the mean margin over the object and its band; it was halved before
    gone = np.stack([np.ones((10, 10)), np.zeros((10, 10))]).astype(np.float32)
    assert Propagator.confidence(gone, [0, 1], prev)[1] == 0.0  # it was there: vanishing is suspect


def test_confidence_is_lowest_on_a_broken_frame():
    frames, gt = square_video(n=10)
    rng = np.random.default_rng(5)
    frames[6] = rng.integers(0, 255, frames[6].shape).astype(np.uint8)  # a corrupt frame
    store = {0: gt[0]}
    task = make_task(frames, store, {1: {0}}, [1])
    conf = {}
    for r in Propagator().run(task, 0, "forward"):
        store[r.t] = r.ids
        conf[r.t] = r.confidence[1]
        assert set(r.probs) == {0, 1} and r.probs[1].shape == grid_size(120, 160)
    assert min(conf, key=conf.get) == 6


def test_grid_conversions_are_aligned():
    ids = np.zeros((20, 30), np.uint8)
    ids[8:16, 8:16] = 3
    fr = label_fractions(ids, [0, 3], grid_size(20, 30))
    assert fr.shape == (2, 3, 4)
    assert fr[1, 1, 1] == 1.0 and fr[1].sum() == 1.0
    up = EdgeAwareUpsampler(radius=0)(fr, None, (20, 30))
    assert argmax_ids(up, [0, 3])[12, 12] == 3 and argmax_ids(up, [0, 3])[2, 2] == 0
    big = resize_ids(ids, (60, 40))
    assert big.shape == (40, 60) and set(np.unique(big)) == {0, 3}
    assert jaccard(big == 3, cv2.resize(ids, (60, 40), interpolation=cv2.INTER_NEAREST) == 3) > 0.8


def test_the_guided_filter_on_the_unsure_box_is_the_whole_frames():
    """EdgeAwareUpsampler filters only the box around unsure pixels (upsample.unsure_box): the same as filtering
    the whole frame at those pixels, within SURE elsewhere, and the box is a small part of a frame with a
    small object."""
    frames, gt = square_video(n=1, size=(320, 240))
    image = frames[0]
    fr = label_fractions(gt[0], [0, 1], grid_size(240, 320))
    fr[1] = np.clip(fr[1], 0.0, 1.0) * 0.9998 + 0.0001  # softmax-like: never exactly 0 or 1
    fr[0] = 1 - fr[1]
    up = EdgeAwareUpsampler()
    half, smooth, guide = up.half_size(fr, image, (240, 320))
    whole = cv2.ximgproc.createGuidedFilter(guide, up.radius, up.eps).filter(half[1])
    unsure = (half[1] > SURE) & (half[1] < 1 - SURE)
    assert unsure.any() and not unsure.all()
    np.testing.assert_allclose(smooth[0][unsure], whole[unsure], atol=1e-5)
    np.testing.assert_allclose(smooth[0], whole, atol=2 * SURE)
    y0, y1, x0, x1 = unsure_box(half[1:], 2 * up.radius)
    assert (y1 - y0) * (x1 - x0) < 0.5 * unsure.size
    gone = np.stack([np.ones_like(fr[0]), np.zeros_like(fr[1])])  # an object with no pixel: nothing to filter
    assert unsure_box(gone[1:], 2 * up.radius) is None
    np.testing.assert_array_equal(up.half_size(gone, image, (240, 320))[1], 0.0)


def test_a_reference_subset_and_blending_with_the_previous_result():
    """Keyframes outside reference_keyframes only bound the spans; frames holding an earlier
    propagation are fused with it by distance, so a poor keyframe does not overwrite them."""
    frames, gt = square_video(n=12)
    bad = gt[8].copy()
    bad[80:120, 0:70] = 1  # a keyframe whose mask kept a mistake on the grass
    store = {0: gt[0], 8: bad}
    store.update({t: gt[t] for t in range(1, 8)})  # the earlier propagation from frame 0
    task = make_task(frames, store, {1: {0, 8}}, [1])
    task.reference_keyframes = {1: {0}}
    task.previous = lambda t: True
    done = run(Propagator(), task, store, 8, "both")
    assert sorted(done) == [1, 2, 3, 4, 5, 6, 7, 9, 10, 11]
    for t in range(1, 8):
        assert jaccard(store[t] == 1, gt[t] == 1) > 0.9, t
    assert np.array_equal(store[8], bad)


def look_alike_video(n=19):
    """A red square standing still, and a look-alike bar that enters from the right on frame 2 and ends 4
    pixels from it: its left half (colour (150, 72, 40)) is nearer the square than the grass by the colour
    embedder's similarity, its right half (120, 84, 40) is nearer the grass, and the two halves are nearer
    each other than either is to the square or the grass."""
    rng = np.random.default_rng(0)
    frames, masks = [], []
    for t in range(n):
        img = (np.full((160, 320, 3), (40, 120, 40)) + rng.integers(0, 12, (160, 320, 3))).astype(np.uint8)
        ids = np.zeros((160, 320), np.uint8)
        img[64:96, 16:48] = (220, 40, 40)
        ids[64:96, 16:48] = 1
        x = 340 - 16 * t
        img[64:96, max(x, 0):max(x + 24, 0)] = (150, 72, 40)
        img[64:96, max(x + 24, 0):max(x + 48, 0)] = (120, 84, 40)
        frames.append(img)
        masks.append(ids)
    return frames, masks


def test_a_look_alike_seen_far_from_the_object_stays_background_when_it_comes_close():
    """Background as it is seen (PropagationConfig.background_every): the bar's grass-like half, seen far from
    the square, joins the background pool, so its square-like half stays background when it reaches the
    square; with frame 0's background alone, the square takes it in."""
    frames, gt = look_alike_video()
    last = {}
    for every in (0, 5):
        store = {0: gt[0]}
        task = make_task(frames, store, {1: {0}}, [1])
        run(Propagator(PropagationConfig(background_every=every)), task, store, 0, "forward")
        last[every] = jaccard(store[18] == 1, gt[18] == 1)
        assert min(jaccard(store[t] == 1, gt[t] == 1) for t in range(1, 17)) > 0.9, every
    assert last[0] < 0.7 < 0.9 < last[5]
