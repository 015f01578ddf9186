import json
import os
import shutil

import cv2
import numpy as np
import pytest

from engine.errors import ProjectError, StorageError, VideoError
from engine.palette import PALETTE, read_id_png
from engine.project import CORRECTED, FULL, SAMPLE_PROJECT, Interaction, Project, open_sample_copy

N = 12


def _write_avi(path, n=N, size=(160, 120)):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    for i in range(n):
        w.write(np.full((size[1], size[0], 3), i * 20, np.uint8))
    w.release()
    return path


@pytest.fixture
def video(tmp_path):
    return _write_avi(tmp_path / "clip.avi")


@pytest.fixture
def project(tmp_path, video):
    return Project.create(tmp_path / "proj", video, short_side=60)


def _square(value, x0, y0, size=(80, 60)):
    ids = np.zeros((size[1], size[0]), np.uint8)
    ids[y0:y0 + 10, x0:x0 + 10] = value
    return ids


def test_create_save_load_round_trip(project):
    assert project.video.working_size == (80, 60) and len(project.video) == N
    dog = project.add_object("dog", "animal")
    car = project.add_object(color=(1, 2, 3))
    assert (dog.id, car.id) == (1, 2) and car.name == "object 2"
    assert dog.color == tuple(int(c) for c in PALETTE[1])
    project.masks.set(0, _square(1, 5, 5) | _square(2, 40, 30))
    project.masks.set(7, _square(1, 10, 10))
    project.add_keyframe(dog.id, 0)
    project.add_keyframe(dog.id, 7, CORRECTED)
    project.log(Interaction("click", 0, dog.id, True, [(7.5, 8.0)]))
    project.log(Interaction("brush", 7, dog.id, False, [(1, 2), (3, 4)], radius=4))
    project.settings["refiner"] = "parts"
    assert project.dirty
    project.save()
    assert not project.dirty

    p = Project.load(project.folder)
    assert p.objects == project.objects
    assert p.keyframes == {1: {0: FULL, 7: CORRECTED}} and p.next_object_id == 3
    assert p.interactions == project.interactions
    assert p.settings == {"refiner": "parts"}
    assert p.masks.frames() == [0, 7] and p.masks.has(7) and not p.masks.has(3)
    assert np.array_equal(p.masks.get(0), project.masks.get(0))
    assert not p.masks.get(3).any() and p.masks.get(3).shape == (60, 80)
    doc = json.loads((project.folder / "project.json").read_text())
    assert doc["mask_files"]["7"]["ids"] == [1] and doc["mask_files"]["0"]["ids"] == [1, 2]
    assert np.array_equal(read_id_png(project.folder / "masks" / doc["mask_files"]["7"]["file"]), _square(1, 10, 10))
    assert sorted(os.listdir(project.folder / "masks")) == sorted(e["file"] for e in doc["mask_files"].values())
    assert doc["schema_version"] == 2 and doc["video"] == "../clip.avi"
    assert doc["keyframes"] == {"1": {"full": [0], "corrected": [7]}}
    assert doc["native_size"] == [160, 120] and doc["working_size"] == [80, 60] and doc["num_frames"] == N


def test_only_dirty_masks_are_rewritten_and_deleted_masks_removed(project, monkeypatch):
    project.add_object()
    project.masks.set(1, _square(1, 0, 0))
    project.masks.set(2, _square(1, 0, 0))
    project.save()
    written = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (written.append(os.path.basename(b)), real(a, b)))
    project.masks.set(2, _square(1, 20, 20))
    project.masks.delete(1)
    project.save()
    new_file = json.loads((project.folder / "project.json").read_text())["mask_files"]["2"]["file"]
    assert written == [new_file, "project.json"] and new_file.startswith("00002.")
    assert os.listdir(project.folder / "masks") == [new_file]  # frame 1's file and frame 2's old file are gone
    assert Project.load(project.folder).masks.frames() == [2]


def test_crash_during_save_leaves_previous_project_loadable(project, monkeypatch):
    obj = project.add_object("before")
    project.masks.set(0, _square(obj.id, 0, 0))
    project.save()
    project.update_object(obj.id, name="after")
    project.add_object("new")
    project.masks.set(3, _square(obj.id, 5, 5))
    real = os.replace

    def crash_on_project_json(a, b):
        if str(b).endswith("project.json"):
            raise OSError("simulated crash")
        real(a, b)

    masks_before = sorted(os.listdir(project.folder / "masks"))
    monkeypatch.setattr(os, "replace", crash_on_project_json)
    with pytest.raises(StorageError, match="project.json: cannot save the project .simulated crash.; the last save"):
        project.save()
    monkeypatch.setattr(os, "replace", real)
    assert sorted(os.listdir(project.folder / "masks")) == masks_before  # frame 3's new file was removed
    p = Project.load(project.folder)
    assert [o.name for o in p.objects.values()] == ["before"] and p.masks.frames() == [0]
    assert not any(n.endswith(".tmp") for n in os.listdir(project.folder))
    assert project.dirty  # nothing claims to be saved


def test_create_refuses_existing_project_and_bad_video_writes_nothing(tmp_path, project):
    with pytest.raises(ProjectError, match="project.json: already exists"):
        Project.create(project.folder, project.video.path)
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    with pytest.raises(VideoError, match="bad.mp4"):
        Project.create(tmp_path / "new", bad)
    assert not (tmp_path / "new" / "project.json").exists()


def test_objects_rename_recolour_hide_lock_remove(project):
    a = project.add_object("a")
    b = project.add_object("b")
    project.update_object(a.id, name="cat", color=(10, 20, 30), category="animal", hidden=True, locked=True)
    assert project.objects[a.id] == type(a)(a.id, "cat", "animal", (10, 20, 30), True, True)
    with pytest.raises(ValueError):
        project.update_object(a.id, color=(0, 0, 300))
    for t in (0, 5):
        project.masks.set(t, _square(a.id, 0, 0) | _square(b.id, 30, 30))
    project.add_keyframe(a.id, 5)
    project.remove_object(a.id)
    assert a.id not in project.objects and a.id not in project.keyframes
    for t in (0, 5):
        assert not (project.masks.get(t) == a.id).any()
        assert (project.masks.get(t) == b.id).sum() == 100
    c = project.add_object()
    assert c.id == 3  # ids are never reused
    project.save()
    p = Project.load(project.folder)
    assert sorted(p.objects) == [2, 3] and not (p.masks.get(5) == 1).any()
    with pytest.raises(KeyError):
        project.remove_object(a.id)


def test_mask_shape_is_checked(project):
    with pytest.raises(ValueError):
        project.masks.set(0, np.zeros((10, 10), np.uint8))
    with pytest.raises(IndexError):
        project.masks.set(N, np.zeros((60, 80), np.uint8))


def test_project_moved_with_its_video_still_loads(tmp_path):
    video = _write_avi((tmp_path / "a").mkdir() or tmp_path / "a" / "clip.avi")
    Project.create(tmp_path / "a" / "proj", video, short_side=60)
    shutil.move(tmp_path / "a", tmp_path / "b")
    p = Project.load(tmp_path / "b" / "proj")
    assert p.video.path.resolve() == (tmp_path / "b" / "clip.avi").resolve()


def test_project_moved_alone_finds_video_by_absolute_path(tmp_path, project):
    project.save()
    p = Project.load(shutil.move(project.folder, tmp_path / "elsewhere" / "proj2"))
    assert len(p.video) == N and p.video_ref == "../../clip.avi"  # healed for the next save


def test_missing_video_says_where_it_looked(tmp_path, project):
    project.video.path.unlink()
    with pytest.raises(ProjectError, match=r"project.json: video '../clip.avi' not found; looked at .*clip.avi"):
        Project.load(project.folder)


def test_changed_video_is_reported(project):
    _write_avi(project.video.path, n=N - 2)
    with pytest.raises(ProjectError, match="num_frames is 12 but the video .* has 10"):
        Project.load(project.folder)


def _edit(folder, change):
    doc = json.loads((folder / "project.json").read_text())
    change(doc)
    (folder / "project.json").write_text(json.dumps(doc))


@pytest.mark.parametrize("change, pattern", [
    (lambda d: d.update(schema_version=3), "schema_version 3 is newer"),
    (lambda d: d.update(schema_version=0), "unknown schema_version 0"),
    (lambda d: d.pop("schema_version"), "missing or invalid schema_version"),
    (lambda d: d.pop("objects"), "top level: missing key 'objects'"),
    (lambda d: d.update(num_frames="12"), "num_frames: expected a positive int"),
    (lambda d: d["objects"][0].update(color=[1, 2]), r"objects\[0\].color: expected \[r, g, b\]"),
    (lambda d: d["objects"][0].pop("locked"), r"objects\[0\]: missing key 'locked'"),
    (lambda d: d["objects"].append(dict(d["objects"][0])), r"objects\[1\].id: id 1 used twice"),
    (lambda d: d.update(keyframes={"9": {"full": [0]}}), "keyframes: key '9' is not the id of an object"),
    (lambda d: d.update(keyframes={"1": {"full": [99]}}), "keyframes.1.full: expected a list of frame indices"),
    (lambda d: d.update(keyframes={"1": [0]}), "keyframes.1: expected an object with keys among full, corrected, marked, absent"),
    (lambda d: d.update(keyframes={"1": {"main": [0]}}), "keyframes.1: expected an object with keys among"),
    (lambda d: d.update(schema_version=1, keyframes={"1": [99]}), "keyframes.1: expected a list of frame indices"),
    (lambda d: d.update(schema_version=1, keyframes={"1": [0]}, settings={"corrected_keyframes": [0]}),
     "settings.corrected_keyframes: expected an object"),
    (lambda d: d.update(schema_version=1, keyframes={"1": [0]}, settings={"corrected_keyframes": {"1": ["x"]}}),
     "settings.corrected_keyframes.1: expected a list of frame indices"),
    (lambda d: d["interactions"].append({"kind": "poke"}), r"interactions\[0\].kind: expected one of"),
])
def test_schema_errors_name_the_problem(project, change, pattern):
    project.add_object()
    project.save()
    _edit(project.folder, change)
    with pytest.raises(ProjectError, match="project.json: " + pattern):
        Project.load(project.folder)


def test_load_errors_for_missing_folder_file_and_bad_json(tmp_path, project):
    with pytest.raises(ProjectError, match="nowhere: no such project folder"):
        Project.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProjectError, match="project.json: missing"):
        Project.load(tmp_path / "empty")
    (project.folder / "project.json").write_text('{"schema_version": 1,')
    with pytest.raises(ProjectError, match="project.json: invalid JSON at line 1"):
        Project.load(project.folder)


def test_bad_mask_file_is_named(project):
    project.add_object()
    project.masks.set(4, _square(1, 0, 0))
    project.save()
    (listed,) = (project.folder / "masks").iterdir()
    cv2.imwrite(str(listed), np.zeros((10, 10), np.uint8))
    with pytest.raises(ProjectError, match=f"{listed}: mask is 10x10, expected the working size 80x60"):
        Project.load(project.folder)


def test_save_as_moves_project_to_new_folder(tmp_path, project):
    project.add_object("x")
    project.masks.set(2, _square(1, 0, 0))
    project.save()
    project.save_as(tmp_path / "deep" / "copy")
    assert project.folder == tmp_path / "deep" / "copy" and not project.dirty
    p = Project.load(tmp_path / "deep" / "copy")
    assert p.video_ref == "../../clip.avi" and p.masks.frames() == [2] and p.objects[1].name == "x"
    with pytest.raises(ProjectError, match="already exists"):
        project.save_as(tmp_path / "deep" / "copy")


def test_object_ids_are_bounded_by_8_bit_masks(project):
    project.next_object_id = 255
    project.add_object()
    with pytest.raises(ProjectError, match="no object id left"):
        project.add_object()


def test_a_schema_1_project_opens_with_its_keyframe_roles_and_saves_as_schema_2(project):
    """Schema 1 kept keyframes as lists and the corrected ones in settings["corrected_keyframes"]."""
    project.add_object()
    project.save()
    _edit(project.folder, lambda d: d.update(schema_version=1, keyframes={"1": [0, 4, 9]},
                                             settings={"refiner": "parts", "corrected_keyframes": {"1": [4]}}))
    p = Project.load(project.folder)
    assert p.keyframes == {1: {0: FULL, 4: CORRECTED, 9: FULL}}
    assert p.settings == {"refiner": "parts"}  # the hidden list is gone from the settings
    p.save()
    doc = json.loads((project.folder / "project.json").read_text())
    assert doc["schema_version"] == 2 and doc["settings"] == {"refiner": "parts"}
    assert doc["keyframes"] == {"1": {"full": [0, 9], "corrected": [4]}}
    assert Project.load(project.folder).keyframes == p.keyframes


def test_sample_project_copy_has_the_bunny_on_frame_0(tmp_path):
    before = sorted(p.name for p in SAMPLE_PROJECT.rglob("*"))
    p = open_sample_copy(tmp_path / "sample")
    assert sorted(q.name for q in SAMPLE_PROJECT.rglob("*")) == before
    assert p.folder == tmp_path / "sample" and p.video.path.parent == tmp_path / "sample"
    assert len(p.video) == 132 and p.video.native_size == (1280, 720) and p.video.working_size == (854, 480)
    (bunny,) = p.objects.values()
    assert (bunny.name, bunny.category) == ("bunny", "animal")
    assert 0 in p.keyframes[bunny.id]
    mask = p.masks.get(0) == bunny.id
    assert 0.02 < mask.mean() < 0.10  # the bunny covers a few percent of the frame
    ys, xs = np.nonzero(mask)
    assert 120 < xs.mean() < 330 and 180 < ys.mean() < 360  # left of centre, by the burrow
    with pytest.raises(ProjectError):
        open_sample_copy(tmp_path / "sample")
