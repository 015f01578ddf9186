"""The Session API on synthetic videos (fast test embedder) and one real DAVIS sequence."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from engine import interaction as edits
from engine.errors import ProjectError
from engine.propagation import PropagationConfig
from engine.session import Session
from tests.test_propagation import ColourEmbedder, jaccard, square_video

SIDE = 32


def write_frames(folder: Path, frames) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for t, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{t:05d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    return folder


def propagated_square(tmp_path, n):
    """(session, object, true masks) of an n-frame video of a 64-pixel red square moving right, its frame-0
    mask set and propagated forward."""
    frames, gt = square_video(n=n, side=64)
    s = Session.create(tmp_path / "project", write_frames(tmp_path / "video", frames), embedder=ColourEmbedder())
    obj = s.add_object()
    s.set_object_mask(0, obj.id, gt[0] == 1)
    for _ in s.propagate(0, "forward"):
        pass
    return s, obj, gt


@pytest.fixture
def square(tmp_path):
    """A session on a 12-frame 160x120 video of a red square moving right, and its true masks."""
    frames, gt = square_video(n=12)
    video = write_frames(tmp_path / "video", frames)
    s = Session.create(tmp_path / "project", video, embedder=ColourEmbedder())
    yield s, gt
    s.close()


def centre(gt_ids, obj=1):
    ys, xs = np.nonzero(gt_ids == obj)
    return float(xs.mean()), float(ys.mean())


def test_click_segments_the_clicked_frame_and_makes_it_a_keyframe(square):
    s, gt = square
    obj = s.add_object("square")
    x, y = centre(gt[0])
    assert not s.is_embedded(0)  # no embedding pass yet: the click embeds frame 0 on demand
    ids = s.click(0, obj.id, x, y)
    assert s.is_embedded(0) and not s.is_embedded(5)
    assert ids.shape == gt[0].shape and ids.dtype == np.uint8
    assert jaccard(ids == obj.id, gt[0] == 1) > 0.9
    assert np.array_equal(s.mask(0), ids)
    assert s.keyframes()[obj.id] == {0}
    last = s.interactions()[-1]
    assert (last.kind, last.frame, last.object_id, last.positive) == ("click", 0, obj.id, True)
    assert last.points == [(x, y)]
    assert s.last_timing["click_ms"] > 0


def test_scribble_and_second_object(square):
    s, gt = square
    a, b = s.add_object(), s.add_object()
    x, y = centre(gt[2])
    ids = s.scribble(2, a.id, [(x - 8, y), (x + 8, y)])
    assert jaccard(ids == a.id, gt[2] == 1) > 0.9
    s.update_object(a.id, locked=True)
    ids = s.scribble(2, b.id, [(x - 8, y), (x + 8, y)])  # a locked object keeps its pixels
    assert jaccard(ids == a.id, gt[2] == 1) > 0.9 and not (ids == b.id).any()
    s.update_object(a.id, locked=False)
    ids = s.scribble(2, b.id, [(x - 8, y), (x + 8, y)])  # an unlocked one gives them up
    assert jaccard(ids == b.id, gt[2] == 1) > 0.9 and not (ids == a.id).any()
    assert [i.kind for i in s.interactions()] == ["scribble"] * 3


def test_negative_click_removes_the_clicked_part(square):
    s, gt = square
    obj = s.add_object()
    wrong = gt[0].copy()
    wrong[5:25, 120:150] = 1  # a false alarm on the grass, away from the square
    s.set_object_mask(0, obj.id, wrong == 1)
    ids = s.click(0, obj.id, 135, 15, positive=False)
    assert not (ids[5:25, 120:150] == obj.id).any()
    assert jaccard(ids == obj.id, gt[0] == 1) > 0.95


def test_negative_click_removes_a_leak_into_the_background(tmp_path):
    """A mask that leaked from the square into a striped fence beside it: one negative click on
    the leak removes most of it, not only the stripe that looks like the clicked spot."""
    frames, gt = square_video(n=2)
    for x in range(42, 106, 16):  # fence x 42..105, y 24..89: blue and grey stripes
        frames[0][24:90, x:x + 8] = (40, 40, 200)
        frames[0][24:90, x + 8:x + 16] = (200, 200, 200)
    s = Session.create(tmp_path / "project", write_frames(tmp_path / "video", frames),
                       embedder=ColourEmbedder())
    obj = s.add_object()
    leak = gt[0].copy()
    leak[40:72, 42:106] = 1  # the square is x 10..41, y 40..71
    s.set_object_mask(0, obj.id, leak == 1)
    ids = s.click(0, obj.id, 92, 56, positive=False)
    assert (ids[40:72, 42:106] == obj.id).mean() < 0.25  # this click removed 2% of it before
    assert (ids[gt[0] == 1] == obj.id).all()
    s.close()


def test_objects_from_an_id_mask(square):
    s, gt = square
    ids = np.zeros(gt[3].shape, np.uint8)
    ids[gt[3] == 1] = 7
    ids[:10, :10] = 9
    made = s.add_objects_from_ids(3, ids)
    assert sorted(made) == [7, 9] and len(set(made.values())) == 2
    for value, obj in made.items():
        assert np.array_equal(s.mask(3) == obj, ids == value)
        assert s.keyframes()[obj] == {3}
    with pytest.raises(ValueError, match="empty"):
        s.add_objects_from_ids(3, np.zeros_like(ids))
    with pytest.raises(ValueError, match="50x40"):
        s.add_objects_from_ids(3, np.ones((40, 50), np.uint8))


def test_brush_eraser_polygon_and_locked_objects(square):
    s, gt = square
    a, b = s.add_object("a"), s.add_object("b")
    ids = s.brush(3, a.id, [(20, 20), (60, 20)], radius=5)
    assert ids[20, 40] == a.id and ids[20, 70] == 0
    ids = s.brush(3, a.id, [(40, 20)], radius=3, erase=True)
    assert ids[20, 40] == 0 and ids[20, 25] == a.id
    ids = s.polygon(3, b.id, [(100, 60), (140, 60), (140, 100), (100, 100)])
    assert ids[80, 120] == b.id
    s.update_object(b.id, locked=True)
    ids = s.brush(3, a.id, [(120, 80)], radius=10)
    assert ids[80, 120] == b.id  # a locked object's pixels are never painted over
    with pytest.raises(ProjectError):
        s.click(3, b.id, 120, 80)
    kinds = [i.kind for i in s.interactions()]
    assert kinds == ["brush", "eraser", "polygon", "brush"]
    assert s.keyframes() == {a.id: {3}, b.id: {3}}


def test_a_clicked_correction_keeps_its_leftover_errors_to_itself(square):
    """A click on a propagated frame makes it a keyframe, but the rest of its mask (unchecked)
    is no propagation reference, so its errors do not spread to the other frames."""
    s, gt = square
    obj = s.add_object()
    s.set_object_mask(0, obj.id, gt[0] == 1)
    for _ in s.propagate(0, "forward"):
        pass
    bad = gt[6].copy()
    bad[70:120, 0:60] = 1  # a propagation error on the grass
    s._annotation.masks.set(6, bad)  # stands in for a propagation mistake
    x, y = centre(gt[6])
    s.click(6, obj.id, x, y)  # the user fixes (here: confirms) the square only
    assert s.keyframes()[obj.id] == {0, 6}
    assert s._annotation.reference_keyframes([obj.id]) == {obj.id: {0}}
    done = [t for t, _ in s.propagate(6, "both")]
    assert sorted(done) == [1, 2, 3, 4, 5, 7, 8, 9, 10, 11]
    for t in done:
        assert jaccard(s.mask(t) == obj.id, gt[t] == 1) > 0.85, t
    s.save()  # the correction survives reopening the project
    again = Session.open(s.folder, embedder=ColourEmbedder())
    assert again._annotation.reference_keyframes([obj.id]) == {obj.id: {0}}
    again.close()
    s.set_object_mask(6, obj.id, gt[6] == 1)  # drawn whole by hand: a full reference again
    assert s._annotation.reference_keyframes([obj.id]) == {obj.id: {0, 6}}


def test_a_scribble_refers_only_with_what_looks_like_its_side_and_a_negative_one_with_background():
    """A stroke's cells that look like the other label, away from the stroke, are no propagation references, nor
    are a negative stroke's cells that the mask still puts in the object."""
    frames, gt = square_video(n=1, side=64)  # red square x 10..73, y 40..103 on grass
    emb = ColourEmbedder().embed(frames[0])
    leak = gt[0].copy()
    leak[40:104, 74:90] = 1  # the mask after a sloppy correction: grass right of the square
    on_grass, on_square = [(82, 48), (82, 96)], [(20, 48), (20, 96)]
    assert len(edits.seed_vectors(emb, on_grass)) > 0
    assert len(edits.scribble_references(emb, on_grass, leak, 1, True, 0.75)) == 0
    assert np.array_equal(edits.scribble_references(emb, on_grass, gt[0], 1, False, 0.75),
                          edits.seed_vectors(emb, on_grass))
    # grass that the mask still calls the object: a negative stroke there says nothing of the background
    assert len(edits.scribble_references(emb, on_grass, leak, 1, False, 0.75)) == 0
    beside = gt[0].copy()
    beside[40:104, 90:98] = 1  # the object's mask also holds a strip of grass a cell beside the stroke
    kept = edits.scribble_references(emb, on_grass, beside, 1, False, 0.75)
    assert 0 < len(kept) < len(edits.seed_vectors(emb, on_grass))  # the look-alike cells of the strip drop out
    assert np.array_equal(edits.scribble_references(emb, on_square, gt[0], 1, True, 0.75),
                          edits.seed_vectors(emb, on_square))
    assert len(edits.scribble_references(emb, on_square, gt[0], 1, False, 0.75)) == 0


def test_a_click_refers_with_what_it_changed_near_it_on_its_side_of_the_frame():
    """A correction click's references are the cells it moved to its side, near it, that look like that side."""
    frames, gt = square_video(n=1, side=64)  # red square x 10..73, y 40..103 on grass
    emb = ColourEmbedder().embed(frames[0])
    square = gt[0] == 1
    red, grass = emb[5, 4], emb[2, 15]
    left = square.copy()
    left[:, 42:] = False  # the propagated mask missed the square's right part
    refs = edits.correction_references(emb, left, square, [([(60, 72)], True)], 0.75, 4)
    assert [positive for positive, _ in refs] == [True]
    gained = refs[0][1]
    assert len(gained) > len(edits.seed_vectors(emb, [(60, 72)]))
    assert (gained @ red > gained @ grass).all()
    near = edits.correction_references(emb, left, square, [([(60, 72)], True)], 0.75, 1)[0][1]
    assert len(near) < len(gained)  # only the cells within reach of the click
    leak = square.copy()
    leak[40:104, 74:100] = True  # a click that took in the grass beside the square too
    assert np.array_equal(edits.correction_references(emb, left, leak, [([(60, 72)], True)], 0.75, 4)[0][1],
                          gained)
    fixed = edits.correction_references(emb, leak, square, [([(86, 72)], False)], 0.75, 4)
    assert [positive for positive, _ in fixed] == [False] and (fixed[0][1] @ grass > fixed[0][1] @ red).all()
    # a negative click that took away part of the object: those cells still look like it, so they say nothing
    assert edits.correction_references(emb, square, left, [([(60, 72)], False)], 0.75, 4) == []
    assert edits.correction_references(emb, square, square, [([(60, 72)], True)], 0.75, 4) == []


def test_a_click_on_a_propagated_frame_refers_with_its_change_and_a_scribble_with_its_cells(tmp_path):
    s, obj, gt = propagated_square(tmp_path, 8)
    half = gt[5].copy()
    half[:, 72:] = 0  # stands in for a propagation that missed the square's right half (x 40..103)
    s._annotation.masks.set(5, half)
    ids = s.click(5, obj.id, 88, 72)
    assert jaccard(ids == obj.id, gt[5] == 1) > 0.95
    refs = s._correction_references([obj.id])
    assert [(t, o, positive) for t, o, positive, _ in refs] == [(5, obj.id, True)]
    cfg = s._propagator.config  # the change against the propagated mask it replaced, as engine.interaction says
    changed = edits.correction_references(s.embedding(5), half == obj.id, ids == obj.id, [([(88, 72)], True)],
                                          cfg.pure_fraction, cfg.correction_reach)
    assert len(changed) == 1 and np.array_equal(refs[0][3], changed[0][1])
    assert [r[:3] for r in s._task([obj.id]).click_refs] == [(5, obj.id, True), (5, obj.id, True)]
    s._annotation.masks.set(3, gt[3] * 0)
    s.scribble(3, obj.id, [(60, 60), (80, 80)])  # a scribble's references are its own cells only
    assert [r[:3] for r in s._correction_references([obj.id])] == [(5, obj.id, True)]
    s.save()
    s.close()
    off = Session.open(s.folder, embedder=ColourEmbedder(), config=PropagationConfig(correction_reach=0))
    assert off._correction_references([obj.id]) == []
    off.close()
    again = Session.open(s.folder, embedder=ColourEmbedder())  # the base and the click come back from disk
    assert [r[:3] for r in again._correction_references([obj.id])] == [(5, obj.id, True)]
    again.delete_prompt(again.prompts(5, obj.id)[0].id)  # the click deleted: its change refers no more
    assert again._correction_references([obj.id]) == []
    again.close()


def test_a_sloppy_scribble_does_not_spread_the_background_to_other_frames(tmp_path):
    """A positive stroke from the square out over the grass: its own frame takes what it says, and the
    re-propagated frames stay as good as they were (with the stroke's grass cells as object references, the
    grass beside the square became the object on frames 4-11, J 0.999 -> 0.965)."""
    s, obj, gt = propagated_square(tmp_path, 12)
    before = [jaccard(s.mask(t) == obj.id, gt[t] == 1) for t in range(12)]
    ids = s.scribble(6, obj.id, [(80, 70), (150, 70)], positive=True)
    assert (ids[70, 110:150] == obj.id).all()
    assert sorted(t for t, _ in s.propagate(6, "both")) == [1, 2, 3, 4, 5, 7, 8, 9, 10, 11]
    for t in [1, 2, 3, 4, 5, 7, 8, 9, 10, 11]:
        assert jaccard(s.mask(t) == obj.id, gt[t] == 1) >= before[t] - 0.005, t
    s.close()


def test_propagate_tracks_and_stops_at_keyframes(square):
    s, gt = square
    obj = s.add_object()
    s.set_object_mask(0, obj.id, gt[0] == 1)
    edited = gt[8] == 1
    edited[:6, :6] = True
    s.set_object_mask(8, obj.id, edited)
    assert s.propagation_span(0, "forward") == (1, 7)
    done = [t for t, _ in s.propagate(0, "both")]
    assert done == list(range(1, 8))
    assert np.array_equal(s.mask(8) == obj.id, edited)
    for t in done:
        assert jaccard(s.mask(t) == obj.id, gt[t] == 1) > 0.9
    done = [t for t, _ in s.propagate(8, "forward")]
    assert done == [9, 10, 11]
    probs = s.probabilities(5)
    assert set(probs) == {obj.id} and probs[obj.id].shape == gt[0].shape
    x, y = centre(gt[5])
    assert probs[obj.id][int(y), int(x)] > 0.8 and probs[obj.id][5, 5] < 0.1


def test_the_same_propagation_again_changes_nothing(tmp_path):
    """Re-propagation blends with the earlier result's soft probabilities: the same run again gives
    back what it had (blending with the earlier hard mask moved the boundaries each time)."""
    frames, _ = square_video(n=12, squares=(((220, 40, 40), (10, 40), (6, 0)), ((40, 40, 220), (110, 30), (-5, 3))))
    s = Session.create(tmp_path / "project", write_frames(tmp_path / "video", frames), embedder=ColourEmbedder())
    a, b = s.add_object(), s.add_object()
    first = s.mask(0).copy()
    first[36:76, 6:46] = a.id  # loose hand-drawn boxes, so boundaries are soft
    first[26:66, 106:146] = b.id
    s.set_object_mask(0, a.id, first == a.id)
    s.set_object_mask(0, b.id, first == b.id)
    list(s.propagate(0, "forward"))
    before = [s.mask(t).copy() for t in range(12)]
    # the same run from frame 5 on, blended with the first run by the distance to keyframe 0
    assert [t for t, _ in s.propagate(5, "forward")] == list(range(5, 12))
    changed = [int((s.mask(t) != before[t]).sum()) for t in range(12)]
    assert changed == [0] * 12, changed
    s.close()


def test_cancel_midway_leaves_a_consistent_project(square):
    s, gt = square
    obj = s.add_object()
    s.set_object_mask(0, obj.id, gt[0] == 1)
    gen = s.propagate(0, "forward")
    got = [next(gen) for _ in range(3)]
    gen.close()
    assert [t for t, _ in got] == [1, 2, 3]
    assert s.masked_frames() == [0, 1, 2, 3]
    for t, ids in got:
        assert np.array_equal(s.mask(t), ids)
    s.save()
    s2 = Session.open(s.folder, embedder=ColourEmbedder())
    assert s2.masked_frames() == [0, 1, 2, 3]
    # the rest can be propagated later from where it stopped
    assert [t for t, _ in s2.propagate(3, "forward")] == list(range(3, 12))  # 3 is no keyframe
    s2.close()


def test_snapshot_restore_round_trip(square):
    s, gt = square
    obj = s.add_object()
    s.set_object_mask(0, obj.id, gt[0] == 1)
    before = s.snapshot(range(12))
    list(s.propagate(0, "forward"))
    s.click(5, obj.id, 5, 5)
    after = s.snapshot(range(12))
    assert s._annotation.reference_keyframes([obj.id]) == {obj.id: {0}}  # 5 is a clicked correction
    s.restore(before)
    assert s.masked_frames() == [0]
    assert s.keyframes() == {obj.id: {0}}
    assert len(s.interactions()) == 1
    s.set_object_mask(5, obj.id, gt[5] == 1)  # after the undo, 5 is drawn whole: a full reference
    assert s._annotation.reference_keyframes([obj.id]) == {obj.id: {0, 5}}
    s.restore(after)
    assert s.masked_frames() == list(range(12))
    assert s.keyframes() == {obj.id: {0, 5}}
    assert s._annotation.reference_keyframes([obj.id]) == {obj.id: {0}}
    assert s.confidence(5)[obj.id] == 1.0
    assert jaccard(s.mask(3) == obj.id, gt[3] == 1) > 0.9


def test_save_open_round_trip_and_objects(square, tmp_path):
    s, gt = square
    a, b = s.add_object("cat", category="animal"), s.add_object("tmp")
    s.set_object_mask(0, a.id, gt[0] == 1)
    list(s.propagate(0))
    s.update_object(a.id, name="dog", color=(1, 2, 3))
    s.remove_object(b.id)
    s.save()
    s2 = Session.open(s.folder, embedder=ColourEmbedder())
    assert list(s2.objects) == [a.id]
    assert (s2.objects[a.id].name, s2.objects[a.id].color) == ("dog", (1, 2, 3))
    for t in range(12):
        assert np.array_equal(s2.mask(t), s.mask(t))
    assert s2.confidence(4) == s.confidence(4)
    assert s2.add_object().id == b.id + 1  # ids are never reused
    s2.close()


def test_refiner_choice_is_kept_per_project(square):
    s, gt = square
    assert s._refiner is None and s.refiner_name == "none"
    s.set_refiner("parts")
    assert s.refiner_name == "parts" and s.dirty
    obj = s.add_object()
    s.set_object_mask(0, obj.id, gt[0] == 1)
    assert len(list(s.propagate(0))) == 11  # the refiner runs on every propagated frame
    s.save()
    s2 = Session.open(s.folder, embedder=ColourEmbedder())
    assert s2.refiner_name == "parts" and s2._refiner is not None
    s2.set_refiner(None)
    assert s2._refiner is None and s2.refiner_name == "none"
    with pytest.raises(ValueError, match="parts"):
        s2.set_refiner("no-such-refiner")
    s2.close()


def test_frames_most_likely_wrong_finds_the_broken_frame(tmp_path):
    frames, gt = square_video(n=10)
    frames[6] = np.random.default_rng(5).integers(0, 255, frames[6].shape).astype(np.uint8)
    s = Session.create(tmp_path / "p", write_frames(tmp_path / "v", frames), embedder=ColourEmbedder())
    obj = s.add_object()
    s.set_object_mask(0, obj.id, gt[0] == 1)
    list(s.propagate(0, "forward"))
    assert s.frames_most_likely_wrong(3)[0] == 6
    assert 0 not in s.frames_most_likely_wrong(20)  # keyframes are not candidates
    s.close()


def test_export_is_at_native_size(tmp_path):
    frames, gt = square_video(n=4, size=(320, 240), squares=(((220, 40, 40), (20, 80), (12, 0)),), side=64)
    s = Session.create(tmp_path / "p", write_frames(tmp_path / "v", frames), short_side=120,
                       embedder=ColourEmbedder())
    assert s.mask(0).shape == (120, 160)
    obj = s.add_object()
    s.set_object_mask(0, obj.id, cv2.resize(gt[0], (160, 120), interpolation=cv2.INTER_NEAREST) == 1)
    list(s.propagate(0))
    from engine.formats import load_davis
    s.export(tmp_path / "out", "davis")
    back = load_davis(tmp_path / "out")[0]
    assert back.size == (320, 240)
    assert jaccard(back.mask(2) == obj.id, gt[2] == 1) > 0.85
    s.close()


@pytest.mark.slow
def test_real_davis_sequence(davis_root, tmp_path):
    """Semi-supervised on a hold-out sequence, 15 frames, shipped embedder: a sane J floor."""
    from engine.embedding import Embedder

    embedder = Embedder.load()
    seq = "soccerball"
    jpgs = sorted((davis_root / "JPEGImages" / "480p" / seq).glob("*.jpg"))[:45:3]
    frames = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in jpgs]
    gts = [cv2.imread(str(davis_root / "Annotations" / "480p" / seq / (p.stem + ".png")), 0) > 127 for p in jpgs]
    s = Session.create(tmp_path / "p", write_frames(tmp_path / "v", frames), embedder=embedder)
    obj = s.add_object()
    s.set_object_mask(0, obj.id, gts[0])
    list(s.propagate(0, "forward"))
    js = [jaccard(s.mask(t) == obj.id, gts[t]) for t in range(1, len(frames))]
    assert np.mean(js) > 0.6, js
    # probabilities are upsampled as the propagation upsampled them: they agree with the stored mask
    for t in (3, 9):
        disagree = (s.probabilities(t)[obj.id] > 0.5) != (s.mask(t) == obj.id)
        assert disagree.mean() < 1e-4, disagree.mean()
    s.close()


def test_save_as_takes_confidence_and_embeddings_to_the_new_folder(square, tmp_path):
    s, gt = square
    obj = s.add_object("square")
    s.click(0, obj.id, *centre(gt[0]))
    for _ in s.propagate(0, "forward"):
        pass
    conf = {t: s.confidence(t) for t in range(len(s))}
    embedded = [t for t in range(len(s)) if s.is_embedded(t)]
    old = s.folder
    s.save_as(tmp_path / "copy")
    assert s.folder == tmp_path / "copy" and not s.dirty
    assert s.masked_frames() == list(range(12)) and s.keyframes() == {obj.id: {0}}
    reopened = Session.open(tmp_path / "copy", embedder=ColourEmbedder())
    try:
        assert {t: reopened.confidence(t) for t in range(len(s))} == conf
        assert [t for t in range(len(s)) if reopened.is_embedded(t)] == embedded
        assert np.array_equal(reopened.embedding(3), s.embedding(3))
    finally:
        reopened.close()
    s.click(5, obj.id, *centre(gt[5]), positive=False)  # later edits and saves go to the new folder
    s.save()
    assert Session.open(tmp_path / "copy", embedder=ColourEmbedder()).keyframes() == {obj.id: {0, 5}}
    assert Session.open(old, embedder=ColourEmbedder()).keyframes() == {}  # the old folder keeps its last save


def test_snapshot_is_stored_as_validated_data(square, tmp_path):
    from engine import Snapshot
    s, gt = square
    obj = s.add_object("square")
    s.click(0, obj.id, *centre(gt[0]))
    for _ in s.propagate(0, "forward"):
        pass
    snap, before = s.snapshot(), s.mask(4)
    back = Snapshot.from_bytes(snap.to_bytes(), "autosave")
    assert back == snap
    s.set_object_mask(4, obj.id, np.zeros(gt[4].shape, bool))
    s.restore(back)
    assert np.array_equal(s.mask(4), before) and before.any()
    for bad in (b"", b"garbage", snap.to_bytes()[:200], snap.to_bytes().replace(b'"hidden": false', b'"hidden": 7')):
        with pytest.raises(ProjectError, match="^autosave: "):
            Snapshot.from_bytes(bad, "autosave")


def test_the_shipped_schema_1_sample_opens_works_and_saves_as_schema_2(tmp_path):
    import json
    sample = json.loads((Path(__file__).resolve().parents[1] / "sample_projects" / Session.SAMPLE_NAME
                         / "project.json").read_text())
    assert sample["schema_version"] == 1  # what this test is about: the shipped file is the old schema
    s = Session.open_sample_copy(tmp_path / "sample", embedder=ColourEmbedder())
    try:
        (bunny,) = s.objects
        assert s.keyframes() == {bunny: {0}} and not s.dirty
        x, y = centre(s.mask(0), bunny)
        gen = s.propagate(0, "forward")
        assert [next(gen)[0] for _ in range(2)] == [1, 2]
        gen.close()
        s.click(2, bunny, x, y)  # a click on a propagated frame: a corrected keyframe
        assert s._annotation.reference_keyframes([bunny]) == {bunny: {0}}
        s.save()
        doc = json.loads((s.folder / "project.json").read_text())
        assert doc["schema_version"] == 2
        assert doc["keyframes"] == {str(bunny): {"full": [0], "corrected": [2]}}
        again = Session.open(s.folder, embedder=ColourEmbedder())
        assert again.keyframes() == {bunny: {0, 2}}
        assert again._annotation.reference_keyframes([bunny]) == {bunny: {0}}
        again.close()
    finally:
        s.close()


def test_the_session_hands_out_no_internals(square):
    s, _ = square
    for name in ("project", "cache", "embedder", "config", "lock", "refiner", "tracked_masks"):
        assert not hasattr(s, name), name
    objects = s.objects
    obj = s.add_object("a")
    objects[obj.id] = None  # a copy: changing it changes nothing in the session
    s.objects[obj.id].name = "b"
    assert s.objects[obj.id].name == "a"
