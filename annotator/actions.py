"""The one table of user actions: menus, toolbar, shortcuts and the help dialog all come from it.

A handler is a method of the MainWindow named by its path from the window ("files.save" is
window.files.save, "close" is window.close), called with `args`. Shortcut strings use
QKeySequence's portable text; a tuple gives alternatives.
"""

from dataclasses import dataclass

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QHeaderView, QStyle, QTableWidget,
                               QTableWidgetItem, QVBoxLayout)


@dataclass(frozen=True)
class ActionSpec:
    id: str
    text: str
    shortcut: str | tuple[str, ...]
    handler: str
    menu: str
    args: tuple = ()
    tip: str = ""
    icon: str | None = None       # QStyle.StandardPixmap name
    group: str | None = None      # exclusive checkable group (tools, overlay modes)
    toolbar: bool = False
    editing: bool = False         # disabled while a propagation or a background edit owns the session


def plain(text: str) -> str:
    """A menu text without its mnemonic `&` and trailing ellipsis, for tooltips and the help table."""
    return text.replace("&", "").rstrip("…")


def _tool(tid, text, key):
    return ActionSpec(f"tool_{tid}", text, key, "view.set_tool", "Tools", (tid,), group="tool", toolbar=True,
                      tip=f"{plain(text)} on the selected object")


def _overlay(mode, text, key):
    return ActionSpec(f"overlay_{mode}", text, key, "view.set_overlay_mode", "View", (mode,), group="overlay")


ACTIONS: list[ActionSpec] = [
    ActionSpec("new", "&New Project…", "Ctrl+N", "files.new_project", "File", icon="SP_FileIcon",
               tip="Create a project from a video file or a folder of frames"),
    ActionSpec("open", "&Open Project…", "Ctrl+O", "files.open_project", "File", icon="SP_DialogOpenButton",
               toolbar=True),
    ActionSpec("save", "&Save", "Ctrl+S", "files.save", "File", icon="SP_DialogSaveButton", toolbar=True),
    ActionSpec("save_as", "Save &As…", "Ctrl+Shift+S", "files.save_as", "File"),
    ActionSpec("export", "&Export…", "Ctrl+E", "files.export", "File", icon="SP_ArrowUp",
               tip="Export masks: DAVIS, COCO, YouTube-VIS, binary PNGs, overlay video"),
    ActionSpec("quit", "&Quit", "Ctrl+Q", "close", "File"),
    ActionSpec("undo", "&Undo", "Ctrl+Z", "edits.undo", "Edit", icon="SP_ArrowBack", toolbar=True),
    ActionSpec("redo", "&Redo", ("Ctrl+Shift+Z", "Ctrl+Y"), "edits.redo", "Edit", icon="SP_ArrowForward",
               toolbar=True),
    ActionSpec("clear_prompts", "Clear &Prompts on This Frame", "Shift+Del", "edits.clear_prompts", "Edit",
               editing=True, tip="Delete every click and scribble of this frame and re-segment it"),
    ActionSpec("toggle_keyframe", "&Mark/Unmark Keyframe", "K", "edits.toggle_keyframe", "Edit", editing=True,
               tip="Mark this frame a keyframe of the selected object (its mask is right as it is), or unmark it"),
    ActionSpec("toggle_absent", "Object &Absent on This Frame", "A", "edits.toggle_absent", "Edit", editing=True,
               tip="The selected object is not on this frame (occluded, out of view): propagation keeps it empty"),
    ActionSpec("clear_frame", "Clear Object on This &Frame", "Ctrl+Del", "edits.clear_mask", "Edit", ("frame",),
               editing=True, tip="Erase the selected object on this frame"),
    ActionSpec("clear_to", "Clear Object up to Frame…", "", "edits.clear_mask", "Edit", ("ask",), editing=True,
               tip="Erase the selected object from this frame up to a frame you choose"),
    ActionSpec("clear_to_end", "Clear Object from Here to the &End", "Ctrl+Shift+Del", "edits.clear_mask", "Edit",
               ("end",), editing=True, tip="Erase the selected object on this frame and every later one"),
    ActionSpec("add_object", "&Add Object", "N", "edits.add_object", "Objects", editing=True,
               icon="SP_FileDialogNewFolder"),
    ActionSpec("remove_object", "&Remove Object", "Del", "edits.remove_selected_object", "Objects", editing=True),
    ActionSpec("toggle_hide", "&Hide/Show Object", "H", "edits.toggle_object_flag", "Objects", ("hidden",)),
    ActionSpec("toggle_lock", "&Lock/Unlock Object", "Shift+L", "edits.toggle_object_flag", "Objects",
               ("locked",), editing=True),
    *[ActionSpec(f"object_{i}", f"Select Object {i}", str(i), "edits.select_object_number", "Objects", (i,))
      for i in range(1, 10)],
    _tool("click+", "Positive &Click", "C"),
    _tool("click-", "&Negative Click", "V"),
    _tool("scribble+", "Positive &Scribble", "S"),
    _tool("scribble-", "Negative Scri&bble", "D"),
    _tool("brush", "&Brush", "B"),
    _tool("eraser", "&Eraser", "E"),
    _tool("polygon", "&Polygon / Lasso", "L"),
    ActionSpec("brush_bigger", "Bigger Brush", "]", "view.change_brush", "Tools", (1.25,)),
    ActionSpec("brush_smaller", "Smaller Brush", "[", "view.change_brush", "Tools", (0.8,)),
    ActionSpec("propagate_both", "Propagate &Both Ways", ("Ctrl+Return", "Ctrl+Enter"), "jobs.propagate",
               "Propagate", ("both",), icon="SP_BrowserReload", toolbar=True, editing=True,
               tip="Propagate the masks from the current frame in both directions (bounded by keyframes)"),
    ActionSpec("propagate_forward", "Propagate &Forward", "Ctrl+Shift+Right", "jobs.propagate", "Propagate",
               ("forward",), icon="SP_MediaSeekForward", toolbar=True, editing=True),
    ActionSpec("propagate_backward", "Propagate Back&ward", "Ctrl+Shift+Left", "jobs.propagate", "Propagate",
               ("backward",), icon="SP_MediaSeekBackward", toolbar=True, editing=True),
    ActionSpec("propagate_selected", "Propagate &Selected Object Only", "Ctrl+Shift+Return", "jobs.propagate",
               "Propagate", ("both", True), editing=True,
               tip="Propagate only the selected object, both ways from the current frame"),
    ActionSpec("propagate_to", "Propagate &to Frame…", "Ctrl+T", "jobs.propagate_to", "Propagate", editing=True,
               tip="Propagate from this frame up to a frame you choose, across keyframes (which stay as they are); "
                   "or right-click the timeline: Propagate to here"),
    ActionSpec("cancel_job", "&Cancel Running Job", "Esc", "jobs.cancel", "Propagate", icon="SP_BrowserStop"),
    ActionSpec("play", "&Play / Pause", "Space", "view.toggle_play", "Navigate", icon="SP_MediaPlay"),
    ActionSpec("prev_frame", "Previous Frame", "Left", "view.step_frame", "Navigate", (-1,)),
    ActionSpec("next_frame", "Next Frame", "Right", "view.step_frame", "Navigate", (1,)),
    ActionSpec("back_10", "Back 10 Frames", "Shift+Left", "view.step_frame", "Navigate", (-10,)),
    ActionSpec("forward_10", "Forward 10 Frames", "Shift+Right", "view.step_frame", "Navigate", (10,)),
    ActionSpec("first_frame", "First Frame", "Home", "view.goto_frame", "Navigate", (0,)),
    ActionSpec("last_frame", "Last Frame", "End", "view.goto_frame", "Navigate", (-1,)),
    ActionSpec("prev_keyframe", "Previous Keyframe", ",", "view.step_keyframe", "Navigate", (-1,),
               tip="Previous keyframe of the selected object"),
    ActionSpec("next_keyframe", "Next Keyframe", ".", "view.step_keyframe", "Navigate", (1,),
               tip="Next keyframe of the selected object"),
    ActionSpec("next_wrong", "Next Least-Sure Frame", "G", "view.next_likely_wrong", "Navigate",
               icon="SP_MessageBoxWarning",
               tip="The least-sure frame not visited yet, from rank 1 (wraps around); "
                   "visiting a frame or correcting it takes it off the walk"),
    ActionSpec("next_wrong_object", "Next Least-Sure Frame of the Selected Object", "Shift+G",
               "view.next_likely_wrong_of_selected", "Navigate",
               tip="Like G, ranked by the selected object's confidence only (its row on the timeline)"),
    ActionSpec("fit", "&Fit to Window", "F", "view.fit_view", "View"),
    ActionSpec("actual_size", "&Actual Size (1:1)", "Ctrl+1", "view.actual_size", "View"),
    ActionSpec("zoom_in", "Zoom &In", ("Ctrl++", "Ctrl+="), "view.zoom", "View", (1.25,)),
    ActionSpec("zoom_out", "Zoom &Out", "Ctrl+-", "view.zoom", "View", (0.8,)),
    _overlay("filled", "Overlay: &Filled", "Ctrl+Shift+1"),
    _overlay("outline", "Overlay: &Outline", "Ctrl+Shift+2"),
    _overlay("mask", "Overlay: &Mask Only", "Ctrl+Shift+3"),
    _overlay("off", "Overlay: O&ff", "Ctrl+Shift+4"),
    ActionSpec("cycle_overlay", "&Cycle Overlay Mode", "O", "view.cycle_overlay", "View"),
    ActionSpec("history", "Undo &History", "Ctrl+H", "view.toggle_history", "View",
               tip="Show or hide the list of undo steps; click a step to go back (or forward) to it"),
    ActionSpec("help", "&Keyboard Shortcuts…", "F1", "view.show_help", "Help", icon="SP_DialogHelpButton"),
    ActionSpec("about", "&About", "", "view.show_about", "Help"),
]
MENUS = ["File", "Edit", "View", "Tools", "Objects", "Propagate", "Navigate", "Help"]
MOUSE_HELP = [
    ("Wheel", "Zoom around the cursor"),
    ("Middle drag / Space + drag", "Pan"),
    ("Right click (click tools)", "Negative click"),
    ("Hover a click or scribble marker + Delete", "Delete that prompt; the frame is re-segmented from the others"),
    ("Right click on a marker", "Menu: delete this click / clear prompts on this frame"),
    ("Right drag (scribble, brush)", "Opposite sign: negative scribble / eraser"),
    ("Polygon tool", "Click vertices, double-click or Enter to fill; drag for a lasso; Backspace, Esc"),
]


def shortcuts_of(spec: ActionSpec) -> list[QKeySequence]:
    keys = (spec.shortcut,) if isinstance(spec.shortcut, str) else spec.shortcut
    return [QKeySequence(k) for k in keys if k]


def build(window) -> dict[str, QAction]:
    """One QAction per spec, parented to `window`, wired to its handler; groups made exclusive."""
    actions, groups = {}, {}
    for spec in ACTIONS:
        action = QAction(spec.text, window)
        action.setShortcuts(shortcuts_of(spec))
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        tip = spec.tip or plain(spec.text)
        keys = ", ".join(k.toString(QKeySequence.SequenceFormat.NativeText) for k in shortcuts_of(spec))
        action.setToolTip(f"{tip} ({keys})" if keys else tip)
        action.setStatusTip(tip)
        if spec.icon:
            action.setIcon(window.style().standardIcon(getattr(QStyle.StandardPixmap, spec.icon)))
        if spec.group:
            action.setCheckable(True)
            groups.setdefault(spec.group, QActionGroup(window)).addAction(action)
        handler = window
        for name in spec.handler.split("."):
            handler = getattr(handler, name)
        action.triggered.connect(lambda _checked=False, h=handler, a=spec.args: h(*a))
        window.addAction(action)
        actions[spec.id] = action
    return actions


class HelpDialog(QDialog):
    """Every action with its shortcut, straight from the table, plus the mouse gestures."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        rows = []
        for s in ACTIONS:
            if not s.shortcut or (s.handler == "edits.select_object_number" and s.args != (1,)):
                continue
            keys = ", ".join(k.toString(QKeySequence.SequenceFormat.NativeText) for k in shortcuts_of(s))
            text = plain(s.text)
            if s.handler == "edits.select_object_number":   # one row for 1..9
                text, keys = "Select Object 1 … 9 (in list order)", "1 … 9"
            rows.append((s.menu, text, keys))
        rows += [("Mouse", what, gesture) for gesture, what in MOUSE_HELP]
        table = QTableWidget(len(rows), 3)
        table.setHorizontalHeaderLabels(["Menu", "Action", "Shortcut"])
        table.verticalHeader().setVisible(False)
        table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                table.setItem(r, c, QTableWidgetItem(text))
        table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        table.resizeColumnsToContents()
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(table)
        layout.addWidget(buttons)
        self.table = table
        self.resize(620, 640)
