"""Editing state beyond single edits (issue 14 phase 2): prompts, keyframes the user controls, propagating
to a frame, per-object ranking, a COCO export that stands alone."""

import numpy as np
import pytest

from engine.annotation import Snapshot
from engine.session import Prompt, Session
from tests.test_propagation import ColourEmbedder, jaccard, square_video
from tests.test_session import centre, write_frames

@pytest.fixture
def two(tmp_path):
    """A session on 12 frames of a red square moving right, and its true masks."""
    frames, gt = square_video(n=12)
    s = Session.create(tmp_path / "project", write_frames(tmp_path / "video", frames), embedder=ColourEmbedder())
    yield s, gt
    s.close()


def test_deleting_a_click_resegments_the_frame_from_the_others(two):
    s, gt = two
    obj = s.add_object().id
    red = centre(gt[3])
    only_red = s.click(3, obj, *red).copy()
    assert jaccard(only_red == obj, gt[3] == 1) > 0.9
    stroke = [red, (red[0] + 4, red[1])]
    cut = s.scribble(3, obj, stroke, positive=False)
    assert (cut == obj).sum() < (only_red == obj).sum() / 2   # the negative scribble took the square away
    prompts = s.prompts(3)
    assert prompts == [Prompt(0, 3, obj, "click", True, (red,)), Prompt(1, 3, obj, "scribble", False, tuple(stroke))]
    assert s.prompts(4) == [] and s.prompts(3, obj + 1) == []
    ids = s.delete_prompt(prompts[1].id)
    assert np.array_equal(ids, only_red) and np.array_equal(s.mask(3), only_red)   # as if never scribbled
    assert [p.id for p in s.prompts(3)] == [0]
    assert s.keyframes()[obj] == {3}
    assert len(s.interactions()) == 2                       # the log keeps it (marked deleted): ids stay put
    s.click(3, obj, 5, 5)
    assert [p.id for p in s.prompts(3)] == [0, 2]
    with pytest.raises(KeyError):
        s.delete_prompt(1)                                   # already deleted
    with pytest.raises(KeyError):
        s.delete_prompt(99)


def test_deleting_the_correction_of_a_propagated_frame_gives_the_propagation_back(two):
    s, gt = two
    obj = s.add_object().id
    s.set_object_mask(0, obj, gt[0] == 1)
    list(s.propagate(0, "forward"))
    propagated, conf = s.mask(6).copy(), s.confidence(6)[obj]
    assert conf < 1.0
    s.click(6, obj, *centre(gt[6]), positive=False)         # a wrong correction: the square cut away
    assert (s.mask(6) == obj).sum() < (propagated == obj).sum() / 2
    assert s.keyframes()[obj] == {0, 6}
    before = s.snapshot([6])
    s.delete_prompt(s.prompts(6)[0].id)
    assert np.array_equal(s.mask(6), propagated)
    assert s.keyframes()[obj] == {0}                        # no edit left there: no keyframe
    assert obj not in s.confidence(6)                        # not sure, not 1.0
    assert s.propagation_span(0, "forward") == (1, 11)      # propagation may rewrite frame 6 again
    after = s.snapshot([6])
    s.restore(before)                                        # undo
    assert s.keyframes()[obj] == {0, 6} and len(s.prompts(6)) == 1
    assert (s.mask(6) == obj).sum() < (propagated == obj).sum() / 2
    s.restore(after)                                         # redo
    assert s.prompts(6) == [] and np.array_equal(s.mask(6), propagated)


def test_prompts_and_bases_survive_saving_and_snapshots_as_data(two, tmp_path):
    s, gt = two
    obj = s.add_object().id
    s.set_object_mask(0, obj, gt[0] == 1)
    list(s.propagate(0, "forward"))
    propagated = s.mask(5).copy()
    s.click(5, obj, 5, 5)
    s.click(5, obj, *centre(gt[5]), positive=False)
    snap = Snapshot.from_bytes(s.snapshot([5]).to_bytes(), "test")
    assert snap.bases == s.snapshot([5]).bases and snap.bases[obj][5][0] == 1   # its edits start at log index 1
    s.save()
    again = Session.open(s.folder, embedder=ColourEmbedder())
    try:
        assert again.prompts(5) == s.prompts(5) and len(again.prompts(5)) == 2
        again.clear_prompts(5)
        assert again.prompts(5) == [] and np.array_equal(again.mask(5), propagated)
        again.save()
    finally:
        again.close()
    third = Session.open(s.folder, embedder=ColourEmbedder())
    assert third.prompts(5) == [] and 5 not in third.keyframes()[obj]
    third.close()


def test_clear_prompts_of_one_object_leaves_the_others(two):
    s, gt = two
    a, b = s.add_object().id, s.add_object().id
    s.click(2, a, *centre(gt[2]))
    s.update_object(a, locked=True)
    s.click(2, b, *centre(gt[2]))                            # a keeps its (locked) pixels
    s.update_object(a, locked=False)
    ids = s.clear_prompts(2, b)
    assert not (ids == b).any() and jaccard(ids == a, gt[2] == 1) > 0.9
    assert [p.object_id for p in s.prompts(2)] == [a]
    assert s.keyframes()[a] == {2} and s.keyframes()[b] == set()
    s.click(2, b, 5, 5)
    s.update_object(a, locked=True)
    s.clear_prompts(2)                                       # a locked object keeps its prompts
    assert [p.object_id for p in s.prompts(2)] == [a] and jaccard(s.mask(2) == a, gt[2] == 1) > 0.9


def test_propagate_until_a_chosen_frame_crosses_keyframes_and_stops_there(two):
    from engine.propagation import object_spans
    assert object_spans({1: {0, 8}}, [1], 0, 12, "forward", until=5) == {1: (1, 5)}
    assert object_spans({1: {0, 8}}, [1], 0, 12, "forward", until=11) == {1: (1, 11)}
    assert object_spans({1: {0, 8}}, [1], 8, 12, "backward", until=3) == {1: (3, 7)}
    s, gt = two
    obj = s.add_object().id
    s.set_object_mask(0, obj, gt[0] == 1)
    s.set_object_mask(8, obj, gt[8] == 1)
    assert s.propagation_span(0, until=5) == (1, 5)
    assert [t for t, _ in s.propagate(0, until=5)] == [1, 2, 3, 4, 5]
    assert s.masked_frames() == [0, 1, 2, 3, 4, 5, 8]
    key8 = s.mask(8).copy()
    assert [t for t, _ in s.propagate(5, "forward", until=11)] == [5, 6, 7, 9, 10, 11]   # keyframe 8 skipped
    assert np.array_equal(s.mask(8), key8)
    for t in range(12):
        assert jaccard(s.mask(t) == obj, gt[t] == 1) > 0.85, t
    assert [t for t, _ in s.propagate(11, "backward", until=10)] == [11, 10]
    with pytest.raises(ValueError):
        s.propagation_span(5, "forward", until=2)
    with pytest.raises(IndexError):
        list(s.propagate(5, until=12))


def test_least_sure_frames_of_one_object(two):
    s, gt = two
    a, b = s.add_object().id, s.add_object().id
    s.set_object_mask(0, a, gt[0] == 1)
    corner = np.zeros_like(gt[0], bool)
    corner[:10, :10] = True
    s.set_object_mask(0, b, corner)
    list(s.propagate(0, "forward"))
    s.set_object_mask(6, a, gt[6] == 1)                     # a is sure on 6 now, b is not
    conf = {t: s.confidence(t) for t in range(1, 12)}
    for objects, oid in (([a], a), ([b], b)):
        ranked = s.frames_most_likely_wrong(20, objects)
        expected = sorted((t for t in conf if not (oid == a and t == 6)), key=lambda t: (conf[t][oid], t))
        assert ranked == expected
    assert 6 in s.frames_most_likely_wrong(20, [b]) and 6 not in s.frames_most_likely_wrong(20, [a])
    assert s.frames_most_likely_wrong(20) == sorted(
        conf, key=lambda t: (min(v for o, v in conf[t].items() if not (o == a and t == 6)), t))


def test_marked_absent_and_cleared_keyframes(two):
    import json
    s, gt = two
    obj = s.add_object().id
    s.set_object_mask(0, obj, gt[0] == 1)
    list(s.propagate(0, "forward"))
    s.set_keyframe(6, obj, True)                             # the user checked frame 6: right as it is
    six = s.mask(6).copy()
    s.set_absent(9, obj)                                     # occluded on 9
    assert not (s.mask(9) == obj).any()
    assert s.keyframe_info() == {obj: {0: "annotated", 6: "marked", 9: "absent"}}
    assert s._annotation.reference_keyframes([obj]) == {obj: {0, 6}}   # absent is no reference
    assert s.propagation_span(6, "forward") == (7, 8)       # propagation does not cross the absent frame
    list(s.propagate(6, "both"))
    assert np.array_equal(s.mask(6), six) and not (s.mask(9) == obj).any()
    s.save()
    doc = json.loads((s.folder / "project.json").read_text())
    assert doc["keyframes"][str(obj)] == {"full": [0], "corrected": [], "marked": [6], "absent": [9]}
    again = Session.open(s.folder, embedder=ColourEmbedder())
    assert again.keyframe_info() == s.keyframe_info()
    again.close()
    before = s.snapshot(range(12))
    assert s.clear_mask(obj, 4) == [4] and not (s.mask(4) == obj).any()
    assert s.clear_mask(obj, 7, len(s) - 1) == [7, 8, 9, 10, 11]      # to the end: the absent one goes too
    assert s.keyframe_info() == {obj: {0: "annotated", 6: "marked"}}
    assert all(not (s.mask(t) == obj).any() for t in range(7, 12)) and (s.mask(5) == obj).any()
    s.click(6, obj, 5, 5)                                    # a marked frame stays marked through its prompts
    s.clear_prompts(6)
    assert s.keyframe_info()[obj][6] == "marked" and np.array_equal(s.mask(6), six)
    s.set_keyframe(6, obj, False)
    assert s.propagation_span(0, "forward") == (1, 11)
    s.restore(before)                                        # all of it is one undo step away
    assert s.keyframe_info() == {obj: {0: "annotated", 6: "marked", 9: "absent"}}
    assert (s.mask(4) == obj).any()
    s.click(9, obj, *centre(gt[9]))                          # drawn on an absent frame: it is there after all
    assert s.keyframe_info()[obj][9] == "annotated" and (s.mask(9) == obj).any()
    assert s.set_absent(9, obj, False) is not None and s.keyframe_info()[obj][9] == "annotated"
    s.set_absent(9, obj)
    s.set_absent(9, obj, False)
    assert 9 not in s.keyframe_info()[obj]
    s.set_keyframe(6, obj, False)
    s.set_keyframe(9, obj, False)
    s.save()
    doc = json.loads((s.folder / "project.json").read_text())
    assert set(doc["keyframes"][str(obj)]) == {"full", "corrected"}    # unused roles are not written
    with pytest.raises(ValueError):
        s.clear_mask(obj, 5, 3)


def test_a_coco_export_stands_alone(two, tmp_path):
    import shutil
    import warnings

    import cv2
    from pycocotools.coco import COCO
    s, gt = two
    obj = s.add_object("square").id
    s.set_object_mask(0, obj, gt[0] == 1)
    list(s.propagate(0, "forward"))
    [path] = s.export(tmp_path / "export", "coco")
    moved = shutil.move(str(tmp_path / "export"), str(tmp_path / "elsewhere"))   # nothing else is needed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        coco = COCO(str(tmp_path / "elsewhere" / path.name))
        images = coco.dataset["images"]
        assert len(images) == 12 and len(coco.dataset["annotations"]) == 12
        for im in images:
            assert not im["file_name"].startswith("/")
            frame = cv2.imread(str(tmp_path / "elsewhere" / im["file_name"]))
            assert frame is not None and frame.shape[:2] == (im["height"], im["width"]), im["file_name"]
            t = im["frame_id"]
            assert np.abs(frame[..., ::-1].astype(int) - s.video.native_frame(t).astype(int)).mean() < 4
            [ann] = coco.loadAnns(coco.getAnnIds(imgIds=[im["id"]]))
            assert jaccard(coco.annToMask(ann) > 0, s.native_mask(t) == obj) > 0.99
    assert moved


def test_a_snapshot_of_the_version_before_still_reads(two):
    """Autosaves written before prompt bases existed (vos-snapshot-2) open: nothing deleted, no bases."""
    import io
    import json
    import zipfile
    s, gt = two
    obj = s.add_object().id
    s.click(2, obj, *centre(gt[2]))
    new = s.snapshot([2]).to_bytes()
    old = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(new)) as src, zipfile.ZipFile(old, "w") as dst:
        for name in src.namelist():
            if name == "snapshot.json":
                doc = json.loads(src.read(name))
                doc["format"] = "vos-snapshot-2"
                del doc["bases"]
                for i in doc["interactions"]:
                    del i["deleted"]
                dst.writestr(name, json.dumps(doc))
            elif not name.startswith("bases/"):
                dst.writestr(name, src.read(name))
    snap = Snapshot.from_bytes(old.getvalue(), "old autosave")
    assert snap.bases == {} and [i.deleted for i in snap.interactions] == [False]
    s.restore(snap)
    assert len(s.prompts(2)) == 1 and np.array_equal(s.delete_prompt(0) == obj, np.zeros_like(gt[2], bool))
