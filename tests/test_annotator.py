"""GUI tests (pytest-qt, offscreen): the main window driven like a user on a tiny synthetic video."""

import time

import numpy as np
import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QMessageBox

from tests.test_annotator_support import OBJECT_COLOR, centre, click, drag, iou, square_mask, wait_idle
from tests.test_annotator_support import home, messages, one_torch_thread, project, window  # noqa: F401 (fixtures)


def test_click_shows_mask_at_once_and_undo_redo(window):
    doc = window.doc
    window.view.goto_frame(4)
    cx, cy = centre(4)
    assert not doc.mask(4).any()
    click(window.canvas, cx, cy)
    ids = doc.mask(4)
    assert ids[cy, cx] == 1
    assert iou(ids == 1, square_mask(4)) > 0.5
    overlay = window.canvas._overlay.pixmap().toImage()
    px = overlay.pixelColor(cx, cy)
    assert px.alpha() > 0 and (px.red(), px.green(), px.blue()) == OBJECT_COLOR
    assert 4 in doc.keyframes()[1]
    assert "click" in window.timing_label.text()
    window.actions_by_id["undo"].trigger()
    assert not doc.mask(4).any() and 4 not in doc.keyframes().get(1, set())
    window.actions_by_id["redo"].trigger()
    assert doc.mask(4)[cy, cx] == 1


def test_click_on_frame_not_embedded_yet_runs_in_background(window, qtbot, monkeypatch):
    doc = window.doc
    monkeypatch.setattr(doc.session, "is_embedded", lambda t: False)
    window.view.goto_frame(7)
    cx, cy = centre(7)
    click(window.canvas, cx, cy)
    assert window.edits.working() and not window.canvas.editable
    qtbot.waitUntil(lambda: not window.edits.working(), timeout=30_000)
    assert doc.mask(7)[cy, cx] == 1 and window.canvas.editable
    window.edits.undo()
    assert not doc.mask(7).any()


def test_propagate_is_one_undo_step(window, qtbot):
    doc = window.doc
    window.view.goto_frame(0)
    window.actions_by_id["propagate_both"].trigger()
    assert window.jobs.running is not None and not window.canvas.editable   # edits are off while it runs
    wait_idle(qtbot, window)
    scores = [iou(doc.mask(t) == 1, square_mask(t)) for t in range(doc.n)]
    assert min(scores) > 0.5, scores
    assert doc.coverage()[1].all()
    assert doc.undo_stack.count() == 1 and doc.undo_stack.undoText().startswith("Propagate")
    window.edits.undo()
    assert all(not doc.mask(t).any() for t in range(1, doc.n)) and doc.mask(0).any()
    window.edits.redo()
    assert min(iou(doc.mask(t) == 1, square_mask(t)) for t in range(doc.n)) > 0.5


def test_big_undo_restores_on_a_worker(window, qtbot, monkeypatch):
    import annotator.document
    monkeypatch.setattr(annotator.document, "ASYNC_RESTORE_FRAMES", 3)
    doc = window.doc
    window.jobs.propagate("both")
    wait_idle(qtbot, window)
    window.edits.undo()
    assert window.edits.working() and not window.actions_by_id["redo"].isEnabled()
    qtbot.waitUntil(lambda: not window.edits.working(), timeout=30_000)
    assert all(not doc.mask(t).any() for t in range(1, doc.n)) and not doc.coverage()[1][1:].any()
    window.edits.redo()
    qtbot.waitUntil(lambda: not window.edits.working(), timeout=30_000)
    assert all(doc.mask(t).any() for t in range(doc.n))


def test_propagate_selected_object_only(window, qtbot):
    doc = window.doc
    window.edits.add_object()
    window.view.goto_frame(0)
    window.view.set_tool("brush")
    window.brush_spin.setValue(8)
    drag(window.canvas, [(110, 95), (140, 95), (140, 110)])
    assert (doc.mask(0) == 2).any()
    window.actions_by_id["propagate_selected"].trigger()
    wait_idle(qtbot, window)
    later = [doc.mask(t) for t in range(1, doc.n)]
    assert not any((m == 1).any() for m in later) and any((m == 2).any() for m in later)
    assert "only" in doc.undo_stack.undoText()


def test_tools_brush_eraser_polygon_scribble(window):
    doc, canvas = window.doc, window.canvas
    window.view.goto_frame(6)
    window.view.set_tool("brush")
    window.brush_spin.setValue(5)
    drag(canvas, [(10, 100), (40, 100), (70, 100)])
    ids = doc.mask(6)
    assert ids[100, 40] == 1 and ids[100, 10] == 1 and ids[60, 40] == 0
    window.view.set_tool("eraser")
    drag(canvas, [(40, 90), (40, 110)])
    assert doc.mask(6)[100, 40] == 0 and doc.mask(6)[100, 10] == 1
    window.view.set_tool("polygon")
    for x, y in [(120, 5), (150, 5), (150, 25)]:
        click(canvas, x, y)
    click(canvas, 120, 25, double=True)
    ids = doc.mask(6)
    assert ids[15, 135] == 1 and ids[40, 135] != 1
    window.view.set_tool("scribble+")
    cx, cy = centre(6)
    drag(canvas, [(cx - 8, cy), (cx, cy + 4), (cx + 8, cy)])
    assert doc.mask(6)[cy, cx] == 1
    assert doc.undo_stack.count() == 4


def test_objects_panel_add_rename_recolour_hide_lock(window, qtbot, messages):
    doc = window.doc
    window.actions_by_id["add_object"].trigger()
    assert len(doc.objects()) == 2 and doc.selected == 2
    new = doc.objects()[2]
    window.objects_panel.table.item(1, 1).setText("ball")
    window.objects_panel.table.item(1, 2).setText("sports")
    window.edits.change_object(2, "color", (0, 255, 0))
    info = doc.objects()[2]
    assert (info.name, info.category, info.color) == ("ball", "sports", (0, 255, 0))
    assert new.id == 2
    window.view.goto_frame(2)
    click(window.canvas, 5, 5)
    assert doc.mask(2)[5, 5] == 2
    window.edits.toggle_object_flag("hidden")
    assert doc.objects()[2].hidden
    assert window.canvas._overlay.pixmap().toImage().pixelColor(5, 5).alpha() == 0
    window.edits.toggle_object_flag("locked")
    before = doc.mask(2).copy()
    click(window.canvas, 100, 100)
    assert (doc.mask(2) == before).all() and "locked" in window.statusBar().currentMessage()
    assert doc.undo_stack.count() == 7
    while doc.undo_stack.canUndo():     # back to one object; ids are never reused
        window.edits.undo()
    assert list(doc.objects()) == [1]
    window.actions_by_id["add_object"].trigger()
    assert list(doc.objects()) == [1, 3]
    log, answer = messages
    answer["question"] = QMessageBox.StandardButton.Yes      # "Remove square? It has masks on ..."
    window.edits.remove_object(1)
    assert log[-1][0] == "question"
    qtbot.waitUntil(lambda: not window.edits.working(), timeout=30_000)   # many frames: on a worker
    assert 1 not in doc.objects() and not (doc.mask(0) == 1).any()
    window.edits.undo()
    assert 1 in doc.objects() and (doc.mask(0) == 1).any()


def test_keyboard_shortcuts_and_help(window, qtbot):
    window.activateWindow()
    qtbot.waitUntil(lambda: window.isActiveWindow(), timeout=3000)
    window.canvas.setFocus()
    doc = window.doc
    key = lambda k, mod=Qt.KeyboardModifier.NoModifier: QTest.keyClick(window.canvas, k, mod)  # noqa: E731
    key(Qt.Key.Key_Right)
    assert doc.frame == 1
    key(Qt.Key.Key_Right, Qt.KeyboardModifier.ShiftModifier)
    assert doc.frame == 9
    key(Qt.Key.Key_Home)
    assert doc.frame == 0
    key(Qt.Key.Key_End)
    assert doc.frame == doc.n - 1
    key(Qt.Key.Key_Left)
    assert doc.frame == doc.n - 2
    key(Qt.Key.Key_B)
    assert window.view.tool == "brush" and window.canvas.tool == "brush"
    size = window.brush_spin.value()
    key(Qt.Key.Key_BracketRight)
    assert window.brush_spin.value() > size
    key(Qt.Key.Key_N)
    assert len(doc.objects()) == 2 and doc.selected == 2
    key(Qt.Key.Key_1)
    assert doc.selected == 1
    key(Qt.Key.Key_O)
    assert window.view.overlay_mode == "outline"
    key(Qt.Key.Key_Home)
    key(Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert window.jobs.propagating()
    wait_idle(qtbot, window)
    key(Qt.Key.Key_G)
    assert doc.frame in doc.session.frames_most_likely_wrong(50)
    key(Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert not doc.mask(5).any()
    key(Qt.Key.Key_F1)
    from annotator.actions import ACTIONS
    assert window.view.help_dialog.isVisible()
    table = window.view.help_dialog.table
    listed = {table.item(r, 1).text() for r in range(table.rowCount())}
    assert {a.text.replace("&", "").rstrip("…") for a in ACTIONS
            if a.shortcut and a.handler != "edits.select_object_number"} <= listed
    window.view.help_dialog.close()
    key(Qt.Key.Key_Space)   # a tap on space plays, a second one pauses
    assert window.view.playing()
    key(Qt.Key.Key_Space)
    assert not window.view.playing()


def _slow(gen, delay=0.08):
    """Wrap an engine generator so a propagation lasts long enough to cancel midway."""
    try:
        for item in gen:
            time.sleep(delay)
            yield item
    finally:
        gen.close()


def test_cancel_propagation_midway_keeps_project_consistent(window, qtbot, project):
    doc = window.doc
    s = doc.session
    real = s.propagate
    s.propagate = lambda *a, **k: _slow(real(*a, **k))
    window.view.goto_frame(0)
    window.jobs.propagate("forward")
    qtbot.waitUntil(lambda: window.jobs.running is not None and window.jobs.running.thread.done >= 2, timeout=30_000)
    window.actions_by_id["cancel_job"].trigger()
    wait_idle(qtbot, window)
    done = [t for t in range(1, doc.n) if doc.mask(t).any()]
    assert 2 <= len(done) < doc.n - 1
    assert done == list(range(1, len(done) + 1))            # a prefix, no holes
    assert doc.undo_stack.count() == 1 and "cancelled" in doc.undo_stack.undoText()
    assert window.canvas.editable
    window.edits.undo()
    assert all(not doc.mask(t).any() for t in range(1, doc.n))
    window.edits.redo()
    assert window.files.save()
    from engine import Session
    again = Session.open(project)
    assert [t for t in range(1, doc.n) if again.mask(t).any()] == done
    again.close()


def test_opening_another_project_mid_propagation_stops_it_cleanly(window, qtbot, tmp_path, monkeypatch):
    from engine.session import Session
    from tests.test_annotator_support import make_project
    s = window.doc.session
    real = s.propagate
    s.propagate = lambda *a, **k: _slow(real(*a, **k))
    window.view.goto_frame(0)
    window.jobs.propagate("forward")
    qtbot.waitUntil(lambda: window.jobs.propagating() and window.jobs.running.thread.done >= 1, timeout=30_000)
    other = make_project(tmp_path / "other")
    embed = Session.embed  # the new project's embedding pass outlasts the wait below (10 frames embed in < 0.3 s)
    monkeypatch.setattr(Session, "embed", lambda self, *a, **k: _slow(embed(self, *a, **k)))
    assert window.files.open_path(other)                   # unsaved changes: the test answers "discard"
    embedding = window.jobs.running                        # the new project's embedding pass
    assert embedding is not None and not window.jobs.propagating()
    qtbot.wait(300)                                        # the stopped run's last signals arrive now
    assert window.jobs.running is embedding and window.job_bar.isVisible()
    wait_idle(qtbot, window)
    assert window.doc.folder == other and window.doc.undo_stack.count() == 0


def test_event_loop_stays_responsive_while_propagating(window, qtbot):
    gaps, last = [], [time.perf_counter()]

    def tick():
        now = time.perf_counter()
        gaps.append(now - last[0])
        last[0] = now

    timer = QTimer()
    timer.timeout.connect(tick)
    doc = window.doc
    s = doc.session
    real = s.propagate
    s.propagate = lambda *a, **k: _slow(real(*a, **k), 0.02)   # at least ~0.2 s of propagation
    window.view.goto_frame(0)
    timer.start(10)
    last[0] = time.perf_counter()
    window.jobs.propagate("both")
    wait_idle(qtbot, window)
    timer.stop()
    assert len(gaps) > 5
    assert max(gaps) < 0.1, f"event loop blocked for {max(gaps) * 1000:.0f} ms"


def test_every_action_in_the_table_runs(window, qtbot, monkeypatch):
    """Smoke: each menu/shortcut action works on an open project (file dialogs answered 'cancel')."""
    from PySide6.QtGui import QColor
    from PySide6.QtWidgets import QColorDialog, QFileDialog, QInputDialog
    from annotator.actions import ACTIONS
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: ""))
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: ("", "")))
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: ("", "")))
    monkeypatch.setattr(QColorDialog, "getColor", staticmethod(lambda *a, **k: QColor()))
    monkeypatch.setattr(QInputDialog, "getInt", staticmethod(lambda *a, **k: (1, False)))   # frame asked: cancel
    skip = {"quit", "new", "about"}          # close the window / modal boxes
    for spec in ACTIONS:
        if spec.id in skip:
            continue
        window.actions_by_id[spec.id].trigger()
        if spec.id == "export":
            window.files.export_dialog.reject()
        if spec.id == "help":
            window.view.help_dialog.close()
        wait_idle(qtbot, window)
        qtbot.waitUntil(lambda: not window.edits.working(), timeout=30_000)
    assert window.doc is not None and window.isVisible()


def test_annotator_uses_only_the_engines_public_face():
    """annotator/ imports `engine` and `engine.errors` only, never reaches into a Session, never pickles."""
    import ast
    from pathlib import Path
    internals = {"project", "cache", "embedder", "config", "lock", "_project", "_cache"}
    for path in sorted((Path(__file__).resolve().parents[1] / "annotator").glob("*.py")):
        source = path.read_text()
        assert "pickle" not in source, path.name
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom):
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                names = []
            for name in names:
                if name == "engine" or name.startswith("engine."):
                    assert name in ("engine", "engine.errors"), f"{path.name}:{node.lineno} imports {name}"
            if isinstance(node, ast.Attribute) and node.attr in internals:
                owner = node.value
                owner = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", None)
                assert owner not in ("session", "s"), f"{path.name}:{node.lineno} uses session.{node.attr}"


def test_overlay_modes(qapp):
    from annotator import overlay
    ids = np.zeros((20, 30), np.uint8)
    ids[5:15, 5:15] = 1
    ids[5:15, 20:25] = 2
    colors = {1: (255, 0, 0), 2: (0, 0, 255)}
    filled = overlay.render(ids, colors, set(), "filled", 0.4)
    assert filled.pixelColor(10, 10).getRgb() == (255, 0, 0, 102)       # inside: colour at 40 %
    assert filled.pixelColor(5, 10).alpha() == 255                       # edge: opaque outline
    assert filled.pixelColor(0, 0).alpha() == 0
    outline = overlay.render(ids, colors, set(), "outline", 0.4)
    assert outline.pixelColor(10, 10).alpha() == 0 and outline.pixelColor(5, 10).alpha() == 255
    mask = overlay.render(ids, colors, {2}, "mask", 0.4)
    assert mask.pixelColor(0, 0).getRgb() == (0, 0, 0, 255) and mask.pixelColor(22, 10).getRgb() == (0, 0, 0, 255)
    assert overlay.render(ids, colors, set(), "off", 0.4) is None


def test_refiner_choice_follows_the_session(window):
    """The choice sits in the Propagation group, named in plain words, each with its measured effect."""
    from PySide6.QtWidgets import QGroupBox
    session = window.doc.session
    combo = window.propagation.refiner
    assert window.propagation.isVisible() and isinstance(combo.parent(), QGroupBox)
    assert combo.parent().title() == "Propagation"
    names = [combo.itemData(i) for i in range(combo.count())]
    assert names == session.refiner_names() and names[0] == "none" and len(names) >= 2
    labels = [combo.itemText(i) for i in range(combo.count())]
    assert not set(labels) & set(names)                         # words, not the engine's names
    tips = [combo.itemData(i, Qt.ItemDataRole.ToolTipRole) for i in range(combo.count())]
    assert all("J&F" in tip and "frames/s" in tip for tip in tips)
    assert "no gain on average" in labels[names.index("parts")]
    assert combo.currentData() == session.refiner_name == "none"
    combo.setCurrentIndex(1)
    combo.activated.emit(1)                    # as when the user picks it
    assert session.refiner_name == names[1] and window.doc.is_dirty()   # kept in the project
    assert combo.toolTip() == tips[1]
    window.set_refiner("none")
    assert session.refiner_name == "none"


def test_canvas_zoom_pan_fit(window, qtbot):
    from PySide6.QtCore import QPoint, QPointF
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication
    canvas = window.canvas
    window.view.actual_size()
    assert canvas.zoom() == 1.0
    vp = canvas.viewport()
    centre_pt = QPointF(vp.width() / 2, vp.height() / 2)
    wheel = QWheelEvent(centre_pt, QPointF(vp.mapToGlobal(centre_pt.toPoint())), QPoint(0, 0), QPoint(0, 240),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(vp, wheel)
    assert canvas.zoom() == pytest.approx(1.15 ** 2)
    window.view.zoom(8)
    h = canvas.horizontalScrollBar()
    before = h.value()
    drag(canvas, [(80, 60), (60, 60), (40, 60)], button=Qt.MouseButton.MiddleButton)
    assert h.value() != before and not window.doc.undo_stack.count()   # panning is no edit
    window.view.fit_view()
    rect = canvas.mapFromScene(canvas.sceneRect()).boundingRect()
    assert rect.width() <= vp.width() + 2 and rect.height() <= vp.height() + 2
    assert max(rect.width() / vp.width(), rect.height() / vp.height()) > 0.95
