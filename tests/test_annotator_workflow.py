"""GUI tests for the annotation workflow (issue 14): least-sure walk, focus, view after propagating, per-object
confidence rows, undo history, asking before removing, and the small things that read wrong."""

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QFrame, QMessageBox

from tests.test_annotator_support import centre, click, drag, wait_idle
from tests.test_annotator_support import home, messages, one_torch_thread, project, window  # noqa: F401 (fixtures)


def _focus(window, qtbot):
    window.activateWindow()
    qtbot.waitUntil(lambda: window.isActiveWindow(), timeout=3000)
    window.canvas.setFocus()


def _propagate(window, qtbot, t=0, direction="both"):
    window.view.goto_frame(t)
    window.jobs.propagate(direction)
    wait_idle(qtbot, window)


def test_g_starts_at_the_least_sure_frame_not_visited_and_wraps(window, qtbot):
    doc = window.doc
    _propagate(window, qtbot)
    ranking = doc.session.frames_most_likely_wrong(50)
    assert len(ranking) == doc.n - 1
    window.view.goto_frame(ranking[2])             # the user is on rank 3: G still starts at rank 1
    g = window.actions_by_id["next_wrong"].trigger
    g()
    assert doc.frame == ranking[0]
    assert window.statusBar().currentMessage().startswith(f"Least sure: rank 1 of {len(ranking)}, "
                                                          f"frame {ranking[0] + 1}")
    g()
    assert doc.frame == ranking[1]
    g()
    assert doc.frame == ranking[3]                  # rank 3 was visited (the user was there)
    for _ in range(len(ranking) - 4):
        g()
    assert doc.frame == ranking[-1]
    g()                                            # every frame visited: from rank 1 again, and it says so
    assert doc.frame == ranking[0] and "from rank 1 again" in window.statusBar().currentMessage()
    # a corrected frame leaves the walk; a new propagation's results are unvisited again
    window.view.goto_frame(ranking[1])
    cx, cy = centre(ranking[1])
    click(window.canvas, cx, cy)
    assert ranking[1] not in doc.least_sure()
    _propagate(window, qtbot, ranking[1])
    window.view.goto_frame(0)
    g()
    assert doc.frame == doc.least_sure()[0]


def test_frame_box_gives_focus_back_and_the_timeline_takes_it(window, qtbot):
    doc, timeline = window.doc, window.timeline
    _focus(window, qtbot)
    assert timeline.spin.value() == 1 and timeline.total.text() == "/ 10"   # counted from 1, like the status
    assert window.frame_label.text().startswith("Frame 1 / 10")
    timeline.spin.setFocus()
    timeline.spin.selectAll()
    QTest.keyClicks(timeline.spin, "6")
    QTest.keyClick(timeline.spin, Qt.Key.Key_Return)
    assert doc.frame == 5 and timeline.spin.value() == 6 and window.frame_label.text().startswith("Frame 6 / 10")
    assert window.canvas.hasFocus()
    QTest.keyClick(window.focusWidget(), Qt.Key.Key_Home)   # shortcuts work again
    assert doc.frame == 0
    timeline.spin.setFocus()
    strip = timeline.strip
    QTest.mouseClick(strip, Qt.MouseButton.LeftButton, pos=QPoint(int(strip._x(7.5)), strip.row_top(0) + 3))
    assert doc.frame == 7 and strip.hasFocus()
    QTest.keyClick(window.focusWidget(), Qt.Key.Key_Home)
    assert doc.frame == 0


def test_view_stays_on_the_users_frame_while_propagating_unless_following(window, qtbot, tmp_path):
    from annotator import propagation_panel, settings
    doc = window.doc
    window.view.goto_frame(5)
    cx, cy = centre(5)
    click(window.canvas, cx, cy)
    seen = []
    doc.frameChanged.connect(seen.append)
    _propagate(window, qtbot, 5)
    assert doc.frame == 5 and seen == [] and doc.mask(9).any() and doc.mask(1).any()
    assert not window.propagation.follow_front()                  # off by default
    window.propagation.follow.setChecked(True)                    # a preference, kept in the settings
    assert settings.get(propagation_panel.FOLLOW_KEY, False, bool)
    window.edits.undo()
    _propagate(window, qtbot, 5)
    assert seen and seen[0] != 5                                  # the view went with the front


def test_tooltips_status_bar_and_undo_messages_read_right(window, qtbot):
    for aid, action in window.actions_by_id.items():
        assert "&" not in action.toolTip(), (aid, action.toolTip())
    assert window.actions_by_id["tool_click+"].toolTip() == "Positive Click on the selected object (C)"
    # a line between every two status texts, so "9 frames/s" and "x 444, y 237" never run together
    window._on_timing("propagated 9 frames, 9 frames/s")
    window._on_cursor(444, 237)
    labels = [window.frame_label, window.object_label, window.tool_label, window.timing_label,
              window.pixel_label, window.zoom_label]
    lines = [w for w in window.statusBar().findChildren(QFrame)
             if w.frameShape() == QFrame.Shape.VLine and w.isVisible()]
    for a, b in zip(labels, labels[1:]):
        assert b.x() > a.x() + a.width()
        assert any(a.x() + a.width() <= line.x() and line.x() + line.width() <= b.x() for line in lines), \
            (a.text(), b.text())
    # undo and redo say what they did
    window.view.goto_frame(4)
    cx, cy = centre(4)
    click(window.canvas, cx, cy)
    window.actions_by_id["undo"].trigger()
    assert window.statusBar().currentMessage() == "Undone: Click + on square, frame 5"
    window.actions_by_id["redo"].trigger()
    assert window.statusBar().currentMessage() == "Redone: Click + on square, frame 5"


@pytest.fixture
def dark_theme(qapp):
    """The app's own style and dark palette (annotator.app.apply_theme), put back afterwards."""
    from annotator.app import apply_theme
    palette, style = qapp.palette(), qapp.style().name()
    apply_theme(qapp)
    yield
    qapp.setStyle(style)
    qapp.setPalette(palette)


def test_show_and_lock_boxes_draw_a_check_mark(window, qtbot, dark_theme):
    """On the app's dark theme, checked and unchecked boxes of one column differ by a mark, not by a
    filled square, and an unchecked box shows."""
    window.edits.add_object()
    window.edits.toggle_object_flag("hidden")      # object 2: Show unchecked; object 1: Show checked
    table = window.objects_panel.table
    table.clearSelection()
    table.setCurrentItem(None)
    qtbot.wait(50)
    from annotator.objects_panel import COL_VISIBLE
    shots = []
    for row in (0, 1):
        rect = table.visualItemRect(table.item(row, COL_VISIBLE))
        img = table.viewport().grab(rect).toImage()
        shots.append(np.array([[img.pixelColor(x, y).getRgb()[:3] for x in range(img.width())]
                               for y in range(img.height())], int))
    checked, unchecked = shots
    assert checked.shape == unchecked.shape
    background = np.median(unchecked.reshape(-1, 3), 0)
    assert (np.abs(unchecked - background).sum(-1) > 90).sum() >= 12, "the unchecked box does not show"
    diff = np.abs(checked - unchecked).sum(-1) > 60
    ys, xs = np.nonzero(diff)
    assert len(ys) >= 6, "checked and unchecked look the same"
    inside = diff[ys.min() + 2:ys.max() - 1, xs.min() + 2:xs.max() - 1]   # the box without its border
    assert inside.mean() < 0.9, f"the checked box is a filled square ({inside.mean():.2f} of it changed), not a mark"


def test_undo_history_panel_names_steps_and_jumps_in_order(window, qtbot, monkeypatch):
    import annotator.document
    monkeypatch.setattr(annotator.document, "ASYNC_RESTORE_FRAMES", 3)   # the propagation restores on a worker
    doc, history = window.doc, window.history
    assert history.stack() is doc.undo_stack and window.history_dock.isVisible()
    window.view.goto_frame(4)
    cx, cy = centre(4)
    click(window.canvas, cx, cy)
    window.view.goto_frame(4)
    window.jobs.propagate("both")
    assert not history.isEnabled()                 # its clicks undo: not while a job owns the session
    wait_idle(qtbot, window)
    assert history.isEnabled()
    window.view.goto_frame(8)
    window.view.set_tool("click-")
    click(window.canvas, 2, 2)                     # a small step after the big one
    model = history.model()
    names = [model.index(r, 0).data() for r in range(model.rowCount())]
    assert names == ["Opened", "Click + on square, frame 5", "Propagate 2-10", "Click − on square, frame 9"]
    # one click on "Opened" undoes all three, the big one on a worker, and they land in order
    QTest.mouseClick(history.viewport(), Qt.MouseButton.LeftButton,
                     pos=history.visualRect(model.index(0, 0)).center())
    qtbot.waitUntil(lambda: not window.edits.working(), timeout=30_000)
    assert doc.undo_stack.index() == 0
    assert not doc.mask(4).any() and all(not doc.mask(t).any() for t in range(1, doc.n))
    assert doc.keyframes() == {1: {0}}
    QTest.mouseClick(history.viewport(), Qt.MouseButton.LeftButton,
                     pos=history.visualRect(model.index(3, 0)).center())
    qtbot.waitUntil(lambda: not window.edits.working(), timeout=30_000)
    assert doc.undo_stack.index() == 3 and all(doc.mask(t).any() for t in range(doc.n))
    assert doc.keyframes()[1] == {0, 4, 8}
    window.actions_by_id["history"].trigger()
    assert not window.history_dock.isVisible()


def test_removing_an_object_with_masks_asks_first(window, messages):
    log, answer = messages
    doc = window.doc
    window.edits.add_object()                      # object 2 has no mask: removed without a question
    window.edits.remove_selected_object()
    assert 2 not in doc.objects() and not log
    doc.select(1)
    answer["question"] = QMessageBox.StandardButton.Cancel
    window.actions_by_id["remove_object"].trigger()
    assert log[-1][0] == "question" and "It has masks on 1 frame" in log[-1][2]
    assert 1 in doc.objects() and doc.mask(0).any()
    answer["question"] = QMessageBox.StandardButton.Yes
    window.actions_by_id["remove_object"].trigger()
    assert 1 not in doc.objects() and not doc.mask(0).any()
    window.edits.undo()                            # still undoable
    assert 1 in doc.objects() and doc.mask(0).any()


def test_per_object_confidence_rows_each_with_their_own_least_sure(window, qtbot):
    from annotator.timeline import CONF_H, CONF_LEVELS, LANE_H, confidence_color
    doc, strip = window.doc, window.timeline.strip
    window.edits.add_object()
    window.view.set_tool("brush")
    window.brush_spin.setValue(6)
    drag(window.canvas, [(110, 100), (140, 100), (140, 112)])    # object 2: a patch of background
    _propagate(window, qtbot)
    assert strip.lanes() == [1, 2]
    s = doc.session
    for oid in (1, 2):
        expected = np.array([s.confidence(t).get(oid, np.nan) for t in range(doc.n)], np.float32)
        np.testing.assert_allclose(strip.confidence[oid], expected)
    assert not np.allclose(strip.confidence[1][1:], strip.confidence[2][1:])   # two rows, two stories
    # each row's band is painted with its own object's confidence
    img = strip.grab().toImage()
    for i, oid in enumerate((1, 2)):
        y = strip.row_top(i) + LANE_H + 1 + CONF_H // 2
        for t in (3, 7):
            c = strip.confidence[oid][t]
            want = confidence_color(round(c * (CONF_LEVELS - 1)) / (CONF_LEVELS - 1)).getRgb()[:3]
            got = img.pixelColor(int(strip._x(t + 0.5)), y).getRgb()[:3]
            assert np.abs(np.subtract(got, want)).max() <= 2, (oid, t, got, want)
    # its own "next least sure": click the row's name (object 2), or Shift+G for the selected object
    for oid in (2, 1):
        own = sorted((s.confidence(t)[oid], t) for t in range(doc.n)
                     if oid in s.confidence(t) and t not in doc.keyframes()[oid])
        assert doc.least_sure(oid) == [t for _, t in own]
    window.view.goto_frame(0)
    QTest.mouseClick(strip, Qt.MouseButton.LeftButton, pos=QPoint(10, strip.row_top(1) + 5))
    assert doc.frame == doc.least_sure(2)[0]
    assert window.statusBar().currentMessage().startswith("Least sure for object 2: rank 1 of 9")
    doc.select(1)
    window.actions_by_id["next_wrong_object"].trigger()
    assert doc.frame == next(t for t in doc.least_sure(1) if t != doc.least_sure(2)[0])


def test_help_lists_the_new_actions(window):
    window.actions_by_id["help"].trigger()
    table = window.view.help_dialog.table
    rows = {(table.item(r, 1).text(), table.item(r, 2).text()) for r in range(table.rowCount())}
    assert {("Next Least-Sure Frame", "G"), ("Next Least-Sure Frame of the Selected Object", "Shift+G"),
            ("Undo History", "Ctrl+H")} <= rows
    window.view.help_dialog.close()


def test_prompt_markers_show_the_frames_clicks_and_scribbles(window, qtbot):
    from PySide6.QtCore import QEvent
    from annotator.canvas import HOVERED, NEGATIVE, POSITIVE
    from tests.test_annotator_support import _send, view_pos
    canvas = window.canvas
    window.view.goto_frame(4)
    cx, cy = centre(4)
    click(canvas, cx, cy)
    window.view.set_tool("click-")
    click(canvas, 4, 4)
    window.view.set_tool("scribble+")
    drag(canvas, [(cx - 10, cy + 8), (cx, cy + 10), (cx + 10, cy + 8)])
    kinds = [(p.kind, p.positive) for p, _item in canvas._markers]
    assert kinds == [("click", True), ("click", False), ("scribble", True)]
    shot = canvas.viewport().grab().toImage()
    for (x, y), color in (((cx, cy), POSITIVE), ((4, 4), NEGATIVE)):
        px = shot.pixelColor(view_pos(canvas, x, y))
        assert abs(px.red() - color.red()) + abs(px.green() - color.green()) + abs(px.blue() - color.blue()) < 30
    px = shot.pixelColor(view_pos(canvas, cx, cy + 10))                  # on the stroke
    assert abs(px.green() - POSITIVE.green()) < 30 and px.red() < 120
    window.view.goto_frame(5)
    assert canvas._markers == []                                         # only the frame's own prompts
    window.view.goto_frame(4)
    assert len(canvas._markers) == 3
    window.edits.undo()
    assert [p.kind for p, _ in canvas._markers] == ["click", "click"]   # markers follow undo and redo
    window.edits.redo()
    assert len(canvas._markers) == 3
    # hovering a marker highlights it and says what it is
    _send(canvas, QEvent.Type.MouseMove, view_pos(canvas, 5, 4), Qt.MouseButton.NoButton, Qt.MouseButton.NoButton)
    assert canvas.hovered is not None and (canvas.hovered.kind, canvas.hovered.positive) == ("click", False)
    item = next(item for p, item in canvas._markers if p is canvas.hovered)
    assert item.pen().color() == HOVERED and canvas.viewport().toolTip() == "Negative click on square"
    window.edits.toggle_object_flag("hidden")                            # a hidden object's markers hide too
    assert canvas._markers == []
