"""GUI tests for issue 14 phase 2: markers come from the engine and can be deleted (hover + Delete, right-click
menu), a frame's prompts cleared, keyframes marked / absent / cleared, propagation to a chosen frame; all undoable."""

import numpy as np
from PySide6.QtCore import QEvent, Qt
from PySide6.QtTest import QTest

from tests.test_annotator_support import _send, centre, click, open_window, view_pos, wait_idle
from tests.test_annotator_support import home, messages, one_torch_thread, project, window  # noqa: F401 (fixtures)

SQUARE_ID = 1


def _hover(canvas, x, y):
    _send(canvas, QEvent.Type.MouseMove, view_pos(canvas, x, y), Qt.MouseButton.NoButton, Qt.MouseButton.NoButton)


def _two_clicks(window, qtbot, t=4):
    """A positive click on the square and a negative one inside it, on frame t: (mask after the first, x, y
    of the second)."""
    canvas, doc = window.canvas, window.doc
    window.view.goto_frame(t)
    cx, cy = centre(t)
    click(canvas, cx, cy)
    wait_idle(qtbot, window)
    qtbot.waitUntil(lambda: not window.edits.working(), timeout=60_000)
    first = doc.mask(t).copy()
    window.view.set_tool("click-")
    click(canvas, cx + 8, cy + 8)
    qtbot.waitUntil(lambda: not window.edits.working(), timeout=60_000)
    assert [(p.kind, p.positive) for p, _ in canvas._markers] == [("click", True), ("click", False)]
    return first, cx + 8, cy + 8


def test_delete_on_a_hovered_marker_deletes_that_click_and_resegments(window, qtbot):
    canvas, doc = window.canvas, window.doc
    first, nx, ny = _two_clicks(window, qtbot)
    cut = doc.mask(4).copy()
    assert not np.array_equal(cut, first)                 # the negative click changed the mask
    ids = [p.id for p, _ in canvas._markers]
    canvas.setFocus()
    _hover(canvas, nx, ny)
    assert canvas.hovered is not None and not canvas.hovered.positive
    QTest.keyClick(canvas, Qt.Key.Key_Delete)
    qtbot.waitUntil(lambda: not window.edits.working(), timeout=60_000)
    assert list(doc.objects()) == [SQUARE_ID]            # Delete on a marker is not "remove object"
    assert [p.id for p, _ in canvas._markers] == ids[:1]
    assert np.array_equal(doc.mask(4), first)            # as if the negative click had never been made
    assert doc.undo_stack.undoText() == "Delete Click − on square, frame 5"
    window.edits.undo()
    qtbot.waitUntil(lambda: not window.edits.working(), timeout=60_000)
    assert [p.id for p, _ in canvas._markers] == ids and np.array_equal(doc.mask(4), cut)
    window.edits.redo()
    qtbot.waitUntil(lambda: not window.edits.working(), timeout=60_000)
    assert [p.id for p, _ in canvas._markers] == ids[:1] and np.array_equal(doc.mask(4), first)


def test_right_click_menu_clears_the_frames_prompts_and_a_reopened_project_shows_its_markers(
        window, qtbot, project):
    canvas, doc = window.canvas, window.doc
    before = doc.mask(4).copy()
    _, nx, ny = _two_clicks(window, qtbot)
    _hover(canvas, nx, ny)
    _send(canvas, QEvent.Type.MouseButtonPress, view_pos(canvas, nx, ny), Qt.MouseButton.RightButton,
          Qt.MouseButton.RightButton)
    menu = window.edits.prompt_menu
    assert menu is not None and [a.text() for a in menu.actions()] == ["Delete this click",
                                                                       "Clear prompts on this frame"]
    assert len(doc.session.prompts(4)) == 2               # the right click made no negative click
    menu.actions()[1].trigger()
    menu.close()
    qtbot.waitUntil(lambda: not window.edits.working(), timeout=60_000)
    assert canvas._markers == [] and np.array_equal(doc.mask(4), before)
    assert 4 not in doc.keyframes().get(SQUARE_ID, set())
    assert doc.undo_stack.undoText() == "Clear prompts, frame 5"
    window.edits.undo()
    qtbot.waitUntil(lambda: not window.edits.working(), timeout=60_000)
    assert len(canvas._markers) == 2
    window.files.save()
    window.interactive = False
    window.close()
    again = open_window(qtbot, project)                  # the engine keeps the prompts: they show again
    again.view.goto_frame(4)
    assert [(p.kind, p.positive) for p, _ in again.canvas._markers] == [("click", True), ("click", False)]
    again.interactive = False
    again.close()


def test_propagate_to_a_chosen_frame_from_the_timeline_menu_and_the_dialog(window, qtbot, monkeypatch):
    from PySide6.QtCore import QPoint
    from PySide6.QtWidgets import QInputDialog
    doc, strip = window.doc, window.timeline.strip
    x = int(strip._x(5.5))
    QTest.mouseClick(strip, Qt.MouseButton.RightButton, Qt.KeyboardModifier.NoModifier,
                     QPoint(x, strip.row_top(0) + 3))
    assert doc.frame == 0                                  # the right click opened a menu, it did not seek
    action = strip.menu.actions()[0]
    assert action.text() == "Propagate to here (frame 6)"
    action.trigger()
    strip.menu.close()
    wait_idle(qtbot, window)
    assert doc.session.masked_frames() == [0, 1, 2, 3, 4, 5]
    assert doc.undo_stack.undoText().startswith("Propagate 2-6")
    window.view.goto_frame(8)
    window.edits.on_canvas_click(*centre(8), True)          # a keyframe on the way
    qtbot.waitUntil(lambda: not window.edits.working(), timeout=60_000)
    key8 = doc.mask(8).copy()
    window.view.goto_frame(5)
    monkeypatch.setattr(QInputDialog, "getInt", staticmethod(lambda *a, **k: (10, True)))
    window.actions_by_id["propagate_to"].trigger()          # Ctrl+T: asks for the frame (1-based)
    wait_idle(qtbot, window)
    assert doc.session.masked_frames() == list(range(10))
    assert np.array_equal(doc.mask(8), key8)                # crossed, not rewritten
    assert doc.frame == 5


def test_keyframes_the_user_controls(window, qtbot, monkeypatch):
    from PySide6.QtCore import QPoint
    from PySide6.QtWidgets import QInputDialog
    doc, strip, act = window.doc, window.timeline.strip, window.actions_by_id
    window.jobs.propagate("forward")
    wait_idle(qtbot, window)
    assert doc.session.masked_frames() == list(range(10))

    def run(name):
        act[name].trigger()
        qtbot.waitUntil(lambda: not window.edits.working(), timeout=60_000)

    window.view.goto_frame(5)
    run("toggle_keyframe")                                   # K: frame 5 is right as it is
    window.view.goto_frame(7)
    run("toggle_absent")                                     # A: occluded on frame 7
    assert not (doc.mask(7) == SQUARE_ID).any()
    assert doc.keyframe_info() == {SQUARE_ID: {0: "annotated", 5: "marked", 7: "absent"}}
    assert doc.undo_stack.undoText() == "square absent, frame 8"
    QTest.mouseMove(strip, QPoint(int(strip._x(5.5)), strip.row_top(0) + 3))
    assert strip.toolTip() == "Frame 6 — square: keyframe (marked as right)"
    QTest.mouseMove(strip, QPoint(int(strip._x(7.5)), strip.row_top(0) + 3))
    assert strip.toolTip() == "Frame 8 — square: keyframe (object absent)"
    window.view.goto_frame(2)
    run("next_keyframe")                                     # "." and "," walk the selected object's keyframes
    assert doc.frame == 5
    run("next_keyframe")
    assert doc.frame == 7
    run("prev_keyframe")
    assert doc.frame == 5
    window.view.goto_frame(2)
    run("clear_frame")                                       # Ctrl+Del
    assert not (doc.mask(2) == SQUARE_ID).any() and (doc.mask(3) == SQUARE_ID).any()
    window.view.goto_frame(8)
    run("clear_to_end")                                      # Ctrl+Shift+Del
    assert not any((doc.mask(t) == SQUARE_ID).any() for t in (8, 9))
    window.view.goto_frame(3)
    monkeypatch.setattr(QInputDialog, "getInt", staticmethod(lambda *a, **k: (5, True)))
    run("clear_to")                                          # frames 4-5 (1-based)
    assert not any((doc.mask(t) == SQUARE_ID).any() for t in (3, 4)) and (doc.mask(5) == SQUARE_ID).any()
    assert doc.keyframe_info() == {SQUARE_ID: {0: "annotated", 5: "marked", 7: "absent"}}
    assert doc.undo_stack.undoText() == "Clear square, frame 4-5"
    for _ in range(3):
        window.edits.undo()
        qtbot.waitUntil(lambda: not window.edits.working(), timeout=60_000)
    assert doc.keyframe_info() == {SQUARE_ID: {0: "annotated", 5: "marked", 7: "absent"}}
    assert all((doc.mask(t) == SQUARE_ID).any() for t in (2, 3, 4, 8, 9))
    window.view.goto_frame(5)
    run("toggle_keyframe")                                   # K again: unmarked
    assert 5 not in doc.keyframe_info()[SQUARE_ID]


def test_help_lists_the_editing_actions(window):
    window.actions_by_id["help"].trigger()
    table = window.view.help_dialog.table
    rows = {(table.item(r, 1).text(), table.item(r, 2).text()) for r in range(table.rowCount())}
    assert {("Mark/Unmark Keyframe", "K"), ("Object Absent on This Frame", "A"),
            ("Clear Object on This Frame", "Ctrl+Del"), ("Clear Object from Here to the End", "Ctrl+Shift+Del"),
            ("Clear Prompts on This Frame", "Shift+Del"), ("Propagate to Frame", "Ctrl+T")} <= rows
    actions = {table.item(r, 1).text() for r in range(table.rowCount())}
    assert "Delete that prompt; the frame is re-segmented from the others" in actions
    window.view.help_dialog.close()
