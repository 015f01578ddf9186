"""GUI tests for files: save, reopen, export, autosave and recovery, errors, new projects, the sample."""

from PySide6.QtWidgets import QMessageBox

from tests.test_annotator_support import centre, click, open_window, wait_idle
from tests.test_annotator_support import home, messages, one_torch_thread, project, window  # noqa: F401 (fixtures)


def test_save_reopen_and_export(window, qtbot, project, tmp_path):
    doc = window.doc
    window.propagate("both")
    wait_idle(qtbot, window)
    window.add_object()
    window.change_object(2, "name", "second")
    assert window.windowTitle().split(" ")[0].endswith("*")
    window.actions_by_id["save"].trigger()
    assert not doc.is_dirty() and "*" not in window.windowTitle()
    masks = [doc.mask(t).copy() for t in range(doc.n)]
    assert window.open_path(project)
    wait_idle(qtbot, window)
    doc = window.doc
    from annotator import settings
    assert settings.recent_projects()[0] == str(project.resolve())
    assert doc.objects()[2].name == "second"
    assert all((doc.mask(t) == masks[t]).all() for t in range(doc.n))
    window.export()
    dialog = window.export_dialog
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
    window.add_object()
    answer["question"] = QMessageBox.StandardButton.Cancel
    assert not window.close() and window.isVisible()
    assert log[-1][0] == "question"
    answer["question"] = QMessageBox.StandardButton.Discard
    assert window.close()


def test_failed_save_shows_error_and_keeps_previous_file(window, messages, project, monkeypatch):
    log, _ = messages
    before = (project / "project.json").read_bytes()
    window.add_object()
    monkeypatch.setattr(window.doc.session._project, "save", lambda: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    assert not window.save()
    assert log[-1][0] == "critical" and "No space left" in log[-1][2]
    assert (project / "project.json").read_bytes() == before
    assert window.doc.is_dirty()


def test_corrupt_project_and_bad_video_show_message(qtbot, tmp_path, messages, project):
    log, _ = messages
    from annotator.main_window import MainWindow
    w = MainWindow()
    qtbot.addWidget(w)
    (project / "project.json").write_text("{ not json")
    assert not w.open_path(project)
    assert log[-1][0] == "critical" and "project.json" in log[-1][2] and "Traceback" not in log[-1][2]
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 1000)
    assert not w.open_path(bad)
    assert log[-1][0] == "critical" and "broken.mp4" in log[-1][2]
    assert w.doc is None


def test_autosave_and_recovery_after_crash(window, qtbot, messages, home):
    import pickle
    from annotator import autosave
    log, answer = messages
    doc = window.doc
    window.goto_frame(3)
    click(window.canvas, *centre(3))
    edited = doc.mask(3).copy()
    window.add_object()                          # a metadata-only change is kept too
    assert window.autosave_now()
    qtbot.waitUntil(lambda: window.autosave_job is None, timeout=10_000)
    slot = autosave.slot_for(doc.folder)
    payload = pickle.loads(slot.read_bytes())
    payload["pid"] = 2 ** 22 + 12345           # as if written by a process that died
    slot.write_bytes(pickle.dumps(payload))
    window.interactive = False
    window.detach_document()
    window.doc = None                            # "crash": nothing saved, no clean close
    from annotator.main_window import MainWindow
    w2 = MainWindow()
    qtbot.addWidget(w2)
    answer["question"] = QMessageBox.StandardButton.Yes
    assert w2.offer_recovery()
    assert (w2.doc.mask(3) == edited).all() and w2.doc.is_dirty() and len(w2.doc.objects()) == 2
    assert not slot.exists()
    wait_idle(qtbot, w2)
    w2.interactive = False
    w2.close()


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
