"""Objects never vanish without evidence; a vanished object is unsure over its whole gap."""

import numpy as np

from engine.continuity import keep_tracked, present_objects
from engine.propagation import Propagator

from tests.test_propagation import make_task, square_video


def _probs(obj):
    """(2, 6, 6) probabilities: background 1 - obj."""
    return np.stack([1.0 - obj, obj]).astype(np.float32)


def test_a_vanishing_object_is_kept_where_retrieval_still_sees_it():
    prev = np.zeros((2, 6, 6), np.float32)
    prev[1, 1:4, 1:4] = 1.0
    prev[0] = 1.0 - prev[1]
    obj = np.full((6, 6), 0.05, np.float32)
    obj[2, 2], obj[2, 3], obj[5, 5] = 0.4, 0.3, 0.45  # (5, 5) is outside the previous region
    out = keep_tracked(_probs(obj), prev, floor=0.25)
    kept = np.argmax(out, axis=0) == 1
    assert kept.sum() == 2 and kept[2, 2] and kept[2, 3]
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-6)


def test_retrieval_can_still_make_an_object_vanish_and_present_objects_stay_as_they_are():
    prev = np.zeros((2, 6, 6), np.float32)
    prev[1, 1:4, 1:4] = 1.0
    prev[0] = 1.0 - prev[1]
    weak = _probs(np.full((6, 6), 0.1, np.float32))
    assert keep_tracked(weak, prev, floor=0.25) is weak  # below the floor everywhere: it is gone
    obj = np.full((6, 6), 0.3, np.float32)
    obj[0, 0] = 0.9  # still won a cell: nothing to keep
    present = _probs(obj)
    assert keep_tracked(present, prev, floor=0.25) is present


def test_present_objects_counts_pixels():
    ids = np.zeros((4, 5), np.uint8)
    ids[1, 2] = 3
    assert present_objects(ids, [0, 1, 3]) == {3}


def test_confidence_is_zero_on_every_frame_of_a_gap():
    frames, gt = square_video(n=10)
    for t in (4, 5, 6):  # the square is hidden (grass painted over it) on frames 4-6
        hidden = frames[t].copy()
        hidden[gt[t] == 1] = frames[t][0, 0]
        frames[t] = hidden
    store = {0: gt[0]}
    task = make_task(frames, store, {1: {0}}, [1])
    conf = {}
    for r in Propagator().run(task, 0, "forward"):
        store[r.t] = r.ids
        conf[r.t] = r.confidence[1]
    gap = [t for t in conf if not (store[t] == 1).any()]
    assert len(gap) >= 2 and all(conf[t] == 0.0 for t in gap)
    assert all(conf[t] > 0.5 for t in (1, 2))
