"""GUI tests for files: save, save as, reopen, export, autosave and recovery, errors, new projects, the sample."""

import json
import os
import pickle
import zipfile

import pytest
from PySide6.QtWidgets import QFileDialog, QMessageBox

from tests.test_annotator_support import centre, click, open_window, wait_idle
from tests.test_annotator_support import home, messages, one_torch_thread, project, window  # noqa: F401 (fixtures)


def test_save_reopen_and_export(window, qtbot, project, tmp_path):
    doc = window.doc
    window.jobs.propagate("both")
    wait_idle(qtbot, window)
    window.edits.add_object()
    window.edits.change_object(2, "name", "second")
    assert window.windowTitle().split(" ")[0].endswith("*")
    window.actions_by_id["save"].trigger()
    assert not doc.is_dirty() and "*" not in window.windowTitle()
    masks = [doc.mask(t).copy() for t in range(doc.n)]
    assert window.files.open_path(project)
    wait_idle(qtbot, window)
    doc = window.doc
    from annotator import settings
    assert settings.recent_projects()[0] == str(project.resolve())
    assert doc.objects()[2].name == "second"
    assert all((doc.mask(t) == masks[t]).all() for t in range(doc.n))
    window.files.export()
    dialog = window.files.export_dialog
    dialog.folder.setText(str(tmp_path / "out"))
    dialog.checks["coco"].setChecked(True)
    dialog.export_button.click()
    qtbot.waitUntil(lambda: dialog.job is None, timeout=60_000)
    assert dialog.progress.value() == 100, dialog.status.text()
    pngs = sorted((tmp_path / "out" / "davis").rglob("*.png"))
    assert len(pngs) == doc.n
    import cv2
    assert cv2.imread(str(pngs[3]), cv2.IMREAD_UNCHANGED).shape[:2] == (120, 160)
    assert list((tmp_path / "out" / "coco").rglob("*.json"))
    dialog.reject()


def test_close_with_unsaved_changes_asks(window, messages, qtbot):
    log, answer = messages
    window.edits.add_object()
    answer["question"] = QMessageBox.StandardButton.Cancel
    assert not window.close() and window.isVisible()
    assert log[-1][0] == "question"
    answer["question"] = QMessageBox.StandardButton.Discard
    assert window.close()


def test_failed_save_shows_error_and_keeps_previous_file(window, messages, project, monkeypatch):
    log, _ = messages
    before = (project / "project.json").read_bytes()
    window.edits.add_object()
    def disk_full(*_a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)     # the atomic write's last step fails
    assert not window.files.save()
    assert log[-1][0] == "critical" and "No space left" in log[-1][2]
    assert (project / "project.json").read_bytes() == before
    assert window.doc.is_dirty()


def test_corrupt_project_and_bad_video_show_message(qtbot, tmp_path, messages, project):
    log, _ = messages
    from annotator.main_window import MainWindow
    w = MainWindow()
    qtbot.addWidget(w)
    (project / "project.json").write_text("{ not json")
    assert not w.files.open_path(project)
    assert log[-1][0] == "critical" and "project.json" in log[-1][2] and "Traceback" not in log[-1][2]
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 1000)
    assert not w.files.open_path(bad)
    assert log[-1][0] == "critical" and "broken.mp4" in log[-1][2]
    assert w.doc is None


def _as_if_written_by_a_dead_process(slot, **members):
    """Rewrite an autosave's header with the pid of a process that is gone (the app crashed); `members`
    adds files to it, each counted as one more snapshot."""
    with zipfile.ZipFile(slot) as z:
        parts = {name: z.read(name) for name in z.namelist()}
    header = json.loads(parts["autosave.json"])
    header["pid"] = 2 ** 22 + 12345
    header["snapshots"] += len(members)
    parts["autosave.json"] = json.dumps(header).encode()
    parts.update({name.replace("_", "-") + ".zip": data for name, data in members.items()})
    with zipfile.ZipFile(slot, "w") as z:
        for name, data in parts.items():
            z.writestr(name, data)
    return header


def _crash(window):
    window.interactive = False
    window.detach_document()
    window.doc = None                            # "crash": nothing saved, no clean close


def _new_window(qtbot):
    from annotator.main_window import MainWindow
    w = MainWindow()
    qtbot.addWidget(w)
    return w


def test_autosave_and_recovery_after_crash(window, qtbot, messages, home):
    from annotator import autosave
    log, answer = messages
    doc = window.doc
    window.view.goto_frame(3)
    click(window.canvas, *centre(3))
    edited = doc.mask(3).copy()
    window.edits.add_object()                    # a metadata-only change is kept too
    assert window.files.autosave_now()
    qtbot.waitUntil(lambda: window.files.autosave_job is None, timeout=10_000)
    slot = autosave.slot_for(doc.folder)
    header = _as_if_written_by_a_dead_process(slot)   # data: a zip of JSON and PNG masks
    assert header["format"] == "vos-autosave-1" and header["project"] == str(doc.folder)
    _crash(window)
    w2 = _new_window(qtbot)
    answer["question"] = QMessageBox.StandardButton.Yes
    assert w2.files.offer_recovery()
    assert (w2.doc.mask(3) == edited).all() and w2.doc.is_dirty() and len(w2.doc.objects()) == 2
    assert 3 in w2.doc.keyframes()[1]
    assert not slot.exists() and not [m for m in log if m[0] in ("warning", "critical")]
    wait_idle(qtbot, w2)
    w2.interactive = False
    w2.close()


class _RunsCodeWhenUnpickled:
    """Unpickling this creates `marker`: proof that a file was executed."""
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_old_pickle_autosave_is_never_unpickled_and_reported_once(qtbot, messages, home, project, tmp_path):
    from annotator import settings
    log, answer = messages
    marker = tmp_path / "code-ran"
    old = settings.autosave_root() / "0123456789abcdef.autosave"   # as the old version named and wrote them
    old.write_bytes(pickle.dumps({"project": str(project), "saved_at": 0.0, "pid": 2 ** 22 + 12345,
                                  "snapshots": [_RunsCodeWhenUnpickled(marker)]}))
    answer["question"] = QMessageBox.StandardButton.Yes
    w = _new_window(qtbot)
    assert not w.files.offer_recovery() and w.doc is None
    assert not marker.exists() and old.exists()                    # not executed, left in place
    warnings = [m for m in log if m[0] == "warning"]
    assert len(warnings) == 1 and str(old) in warnings[0][2] and "left in place" in warnings[0][2]
    assert not [m for m in log if m[0] == "question"]              # nothing offered
    again = _new_window(qtbot)                                     # the next start: not reported again
    assert not again.files.offer_recovery()
    assert len([m for m in log if m[0] == "warning"]) == 1 and not marker.exists() and old.exists()
    pickle.loads(old.read_bytes())                                 # the planted file does run code when loaded
    assert marker.exists()


def test_garbage_in_the_autosave_folder_is_reported_and_left_alone(qtbot, messages, home, project):
    from annotator import autosave, settings
    log, answer = messages
    garbage = settings.autosave_root() / "garbage.autosave"
    garbage.write_bytes(os.urandom(2048))
    foreign = settings.autosave_root() / "foreign.autosave"          # a zip, but not an autosave
    with zipfile.ZipFile(foreign, "w") as z:
        z.writestr("autosave.json", json.dumps({"format": "something else"}))
    w = _new_window(qtbot)
    assert not w.files.offer_recovery()
    warnings = [m for m in log if m[0] == "warning"]
    assert len(warnings) == 1 and str(garbage) in warnings[0][2] and str(foreign) in warnings[0][2]
    assert garbage.exists() and foreign.exists()
    garbage.write_bytes(os.urandom(4096))                            # changed since: reported again
    assert not _new_window(qtbot).files.offer_recovery()
    warnings = [m for m in log if m[0] == "warning"]
    assert len(warnings) == 2 and str(garbage) in warnings[1][2] and str(foreign) not in warnings[1][2]
    with pytest.raises(Exception, match="garbage.autosave"):
        autosave.read_slot(garbage)


def test_damaged_autosave_is_not_restored_and_left_in_place(window, qtbot, messages, home, project):
    from annotator import autosave
    log, answer = messages
    window.edits.add_object()
    assert window.files.autosave_now()
    qtbot.waitUntil(lambda: window.files.autosave_job is None, timeout=10_000)
    slot = autosave.slot_for(window.doc.folder)
    _as_if_written_by_a_dead_process(slot, snapshot_0001=b"not a snapshot")
    _crash(window)
    w2 = _new_window(qtbot)
    answer["question"] = QMessageBox.StandardButton.Yes
    assert not w2.files.offer_recovery() and w2.doc is None
    errors = [m for m in log if m[0] == "critical"]
    assert errors and "snapshot-0001.zip" in errors[-1][2] and str(slot) in errors[-1][2]
    assert slot.exists()


def test_save_as_takes_confidence_and_embeddings_along(window, qtbot, project, tmp_path, monkeypatch):
    from annotator import settings
    from engine import Session
    doc = window.doc
    s = doc.session
    window.jobs.propagate("both")
    wait_idle(qtbot, window)
    assert all(s.is_embedded(t) for t in range(doc.n))     # the window embedded every frame on opening
    ranking = s.frames_most_likely_wrong(50)
    assert ranking
    target = tmp_path / "renamed.vosproj"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(target), "")))
    window.actions_by_id["save_as"].trigger()
    assert doc.folder == target and not doc.is_dirty()
    assert window.windowTitle().startswith("renamed.vosproj —")
    assert settings.recent_projects()[0] == str(target.resolve())
    moved = Session.open(target)
    try:
        assert moved.frames_most_likely_wrong(50) == ranking
        assert all(moved.confidence(t) == pytest.approx(s.confidence(t)) for t in range(doc.n))
        assert all(moved.is_embedded(t) for t in range(doc.n))   # nothing to recompute in the new folder
    finally:
        moved.close()
    before = (project / "project.json").read_bytes()
    window.edits.add_object()                              # the window now works in the new folder
    assert window.files.save()
    assert (project / "project.json").read_bytes() == before
    again = Session.open(target)
    assert len(again.objects) == 2
    again.close()


def test_new_project_from_frame_folder(tmp_path):
    from annotator import opening
    from tests.test_annotator_support import make_frames
    frames = make_frames(tmp_path / "clip", 4)
    s = opening.open_any(frames)
    assert s.folder == tmp_path / "clip.vosproj" and len(s.video) == 4
    s.close()
    s2 = opening.open_any(frames)          # second time: the same project is continued
    assert s2.folder == tmp_path / "clip.vosproj"
    s2.close()


def test_new_project_dialog_flow(window, qtbot, messages, tmp_path, monkeypatch):
    """File > New Project: choose "Folder of frames", the frames, then the project folder."""
    from PySide6.QtWidgets import QFileDialog
    from tests.test_annotator_support import make_frames
    frames = make_frames(tmp_path / "clip", 5)
    asked = []
    monkeypatch.setattr(QMessageBox, "exec", lambda box: asked.append([b.text() for b in box.buttons()]))
    monkeypatch.setattr(QMessageBox, "clickedButton",
                        lambda box: next(b for b in box.buttons() if b.text().startswith("Folder")))
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(frames)))
    target = {"path": str(tmp_path / "mine.vosproj")}
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (target["path"], "")))
    window.actions_by_id["new"].trigger()
    wait_idle(qtbot, window)
    assert "Video file…" in asked[0] and "Folder of frames…" in asked[0]
    assert window.doc.folder == tmp_path / "mine.vosproj" and window.doc.n == 5
    assert (tmp_path / "mine.vosproj" / "project.json").is_file()
    # a project folder that cannot be made: an error naming it, and the open project stays
    (tmp_path / "taken").write_text("a file, not a folder")
    target["path"] = str(tmp_path / "taken")
    window.actions_by_id["new"].trigger()
    log, _ = messages
    assert log[-1][0] == "critical" and "taken" in log[-1][2]
    assert window.doc.folder == tmp_path / "mine.vosproj"


def test_no_argument_opens_a_writable_copy_of_the_sample(home):
    from annotator import opening
    s = opening.open_sample()
    folder = s.folder
    assert folder.is_relative_to(home) and len(s.objects) >= 1 and len(s.video) > 0
    s.add_object(name="mine")
    s.save()
    s.close()
    again = opening.open_sample()             # the same copy is continued next time
    assert again.folder == folder and any(o.name == "mine" for o in again.objects.values())
    again.close()


def test_first_click_in_a_new_project_creates_object_1(qtbot, tmp_path, messages):
    from tests.test_annotator_support import make_frames
    frames = make_frames(tmp_path / "clip", 3)
    w = open_window(qtbot, frames)
    assert w.doc.folder == tmp_path / "clip.vosproj" and not w.doc.objects()
    click(w.canvas, *centre(0))
    assert list(w.doc.objects()) == [1] and w.doc.mask(0)[centre(0)[1], centre(0)[0]] == 1
    w.interactive = False
    w.close()
