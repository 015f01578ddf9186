"""Main window: canvas, timeline, objects panel, toolbar and status bar around one Document.

It builds the widgets, keeps the views in sync with the Document and enables actions by state. What the
actions do lives in four small controllers, each owning its own state: `files` (window_files: open, save,
export, autosave, recovery), `jobs` (window_jobs: embedding and propagation), `edits` (window_edits: tools
and objects as undoable edits), `view` (window_view: navigation, zoom, overlay, tool). The action table
(annotator.actions) names their methods.
"""

import sys

import numpy as np
from PySide6.QtCore import QSize, Qt, QTimer
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QComboBox, QDockWidget, QFormLayout, QFrame, QLabel, QMainWindow, QMessageBox,
                               QProgressBar, QSlider, QSpinBox, QToolBar, QToolButton, QUndoView,
                               QVBoxLayout, QWidget)

from annotator import actions as action_table
from annotator import icons, overlay, settings
from annotator.canvas import TOOLS, Canvas
from annotator.objects_panel import ObjectsPanel
from annotator.propagation_panel import PropagationPanel
from annotator.timeline import Timeline
from annotator.window_edits import EditsController
from annotator.window_files import FilesController
from annotator.window_jobs import JobsController
from annotator.window_view import ViewController
from annotator.workers import describe

SECTION_STARTS = ("view.set_tool", "jobs.propagate", "files.export", "close")   # a separator above these


class MainWindow(QMainWindow):
    def __init__(self):
        super().__init__()
        self.doc = None
        self.interactive = True    # False (screenshot mode): errors go to stderr instead of message boxes
        self.last_error: str | None = None
        self._last_timing = ""
        self.view = ViewController(self)
        self.files = FilesController(self)
        self.jobs = JobsController(self)
        self.edits = EditsController(self)
        self._build_widgets()
        self.actions_by_id = action_table.build(self)
        self._build_menus_and_toolbar()
        self.setAcceptDrops(True)
        self.view.set_tool("click+")
        self.view.set_overlay_mode(self.view.overlay_mode)
        self.resize(1400, 860)
        self.sync_enabled()

    # -- construction ----------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        self.canvas = Canvas()
        self.canvas.clicked.connect(self.edits.on_canvas_click)
        self.canvas.stroked.connect(self.edits.on_canvas_stroke)
        self.canvas.polygonDone.connect(self.edits.on_canvas_polygon)
        self.canvas.promptDeleted.connect(self.edits.delete_prompt)
        self.canvas.promptMenu.connect(self.edits.show_prompt_menu)
        self.canvas.cursorMoved.connect(self._on_cursor)
        self.canvas.playToggled.connect(self.view.toggle_play)
        self.canvas.zoomChanged.connect(lambda z: self.zoom_label.setText(f"{100 * z:.0f}%"))
        self.timeline = Timeline()
        self.timeline.frameRequested.connect(self.view.goto_frame)
        self.timeline.playToggled.connect(self.view.toggle_play)
        self.timeline.nextWrongRequested.connect(self.view.next_likely_wrong)
        self.timeline.strip.leastSureRequested.connect(self.view.next_likely_wrong)
        self.timeline.strip.propagateToRequested.connect(self.jobs.propagate_to)
        self.timeline.frameEntered.connect(self.canvas.setFocus)
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.canvas, 1)
        layout.addWidget(self.timeline)
        self.timeline.setVisible(False)      # shown with the first project
        self.setCentralWidget(central)
        self.objects_panel = ObjectsPanel()
        self.objects_panel.selected.connect(self.edits.select_object)
        self.objects_panel.addRequested.connect(self.edits.add_object)
        self.objects_panel.removeRequested.connect(self.edits.remove_object)
        self.objects_panel.colorRequested.connect(self.edits.recolor_object)
        self.objects_panel.changed.connect(self.edits.change_object)
        dock = QDockWidget("Annotation")
        dock.setObjectName("objects_dock")
        dock.setWidget(self._side_panel())
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        self.objects_dock = dock
        self.history = QUndoView()
        self.history.setEmptyLabel("Opened")
        self.history_dock = QDockWidget("Undo history")
        self.history_dock.setObjectName("history_dock")
        self.history_dock.setWidget(self.history)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.history_dock)
        self.canvas.set_brush_radius(self.brush_spin.value())
        self._build_status_bar()

    def _side_panel(self) -> QWidget:
        """Right panel: display settings, the current tool's size, then the objects table."""
        self.brush_spin = QSpinBox(minimum=1, maximum=200, value=int(settings.get("tools/brush", 10)))
        self.brush_spin.setSuffix(" px")
        self.brush_spin.setToolTip("Brush / eraser radius ([ and ])")
        self.brush_spin.valueChanged.connect(self.view.set_brush_size)
        self.overlay_combo = QComboBox()
        for mode in overlay.MODES:
            self.overlay_combo.addItem(overlay.MODE_NAMES[mode], mode)
        self.overlay_combo.setToolTip("Overlay mode (O cycles)")
        self.overlay_combo.currentIndexChanged.connect(
            lambda i: self.view.set_overlay_mode(self.overlay_combo.itemData(i)))
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal, minimum=0, maximum=100)
        self.opacity_slider.setValue(int(100 * self.view.opacity))
        self.opacity_slider.setToolTip("Overlay opacity")
        self.opacity_slider.valueChanged.connect(self.view.set_opacity)
        self.tool_name = QLabel()
        self.propagation = PropagationPanel()
        self.propagation.refinerChosen.connect(self.set_refiner)
        self.propagation.setVisible(False)   # shown with the first project
        form = QFormLayout()
        form.setContentsMargins(8, 6, 8, 2)
        form.addRow("Overlay", self.overlay_combo)
        form.addRow("Opacity", self.opacity_slider)
        form.addRow("Tool", self.tool_name)
        form.addRow("Brush", self.brush_spin)
        panel = QWidget()
        layout = QVBoxLayout(panel)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(form)
        layout.addWidget(self.propagation)
        title = QLabel("Objects")
        title.setStyleSheet("font-weight: 600; padding: 6px 8px 0 8px;")
        layout.addWidget(title)
        layout.addWidget(self.objects_panel, 1)
        panel.setMinimumWidth(280)
        return panel

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.frame_label, self.object_label = QLabel(), QLabel()
        self.tool_label, self.timing_label = QLabel(), QLabel()
        self.pixel_label, self.zoom_label = QLabel(), QLabel()
        self.job_label = QLabel()
        self.job_bar = QProgressBar(maximumWidth=240, textVisible=True)
        self.job_cancel = QToolButton(text="Cancel")
        self.job_cancel.clicked.connect(self.jobs.cancel)
        for w in (self.job_label, self.job_bar, self.job_cancel):
            bar.addPermanentWidget(w)
            w.setVisible(False)
        for i, (label, width) in enumerate(((self.frame_label, 120), (self.object_label, 150),
                                            (self.tool_label, 120), (self.timing_label, 230),
                                            (self.pixel_label, 100), (self.zoom_label, 48))):
            if i:   # a line between texts, so they never run together
                line = QFrame(frameShape=QFrame.Shape.VLine, frameShadow=QFrame.Shadow.Sunken)
                bar.addPermanentWidget(line)
            label.setMinimumWidth(width)
            label.setContentsMargins(4, 0, 4, 0)
            bar.addPermanentWidget(label)

    def _build_menus_and_toolbar(self) -> None:
        menus = {name: self.menuBar().addMenu(f"&{name}") for name in action_table.MENUS}
        self.recent_menu = menus["File"].addMenu("Open &Recent")
        self.recent_menu.aboutToShow.connect(self.files.fill_recent_menu)
        last_menu = {}
        for spec in action_table.ACTIONS:
            menu = menus[spec.menu]
            prev = last_menu.get(spec.menu)
            if prev is not None and (prev.group != spec.group or prev.handler != spec.handler) and \
                    (prev.group or spec.group or spec.handler in SECTION_STARTS):
                menu.addSeparator()
            menu.addAction(self.actions_by_id[spec.id])
            last_menu[spec.menu] = spec
        menus["File"].insertMenu(self.actions_by_id["save"], self.recent_menu)
        a = self.actions_by_id
        for tid in TOOLS:
            a[f"tool_{tid}"].setIcon(icons.tool_icon(tid))
        for direction, text in (("backward", "Backward"), ("both", "Both ways"), ("forward", "Forward")):
            a[f"propagate_{direction}"].setIcon(icons.propagate_icon(direction))
            a[f"propagate_{direction}"].setIconText(text)
        a["undo"].setIconText("Undo")
        a["redo"].setIconText("Redo")
        tb = QToolBar("Main")
        tb.setObjectName("main_toolbar")
        tb.setIconSize(QSize(20, 20))
        tb.setMovable(False)
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        for group in (("open", "save"), ("undo", "redo")):
            for aid in group:
                tb.addAction(a[aid])
            tb.addSeparator()
        tb.addWidget(QLabel(" Propagate "))
        for aid in ("propagate_backward", "propagate_both", "propagate_forward"):
            tb.addAction(a[aid])
        tb.addSeparator()
        tb.addAction(a["export"])
        tb.addAction(a["next_wrong"])
        a["next_wrong"].setIconText("Least sure")
        self.addToolBar(tb)
        tools = QToolBar("Tools")
        tools.setObjectName("tools_toolbar")
        tools.setMovable(False)
        tools.setIconSize(QSize(26, 26))
        tools.setOrientation(Qt.Orientation.Vertical)
        for tid in TOOLS:
            tools.addAction(a[f"tool_{tid}"])
        tools.addSeparator()
        for aid in ("fit", "actual_size", "help"):
            tools.addAction(a[aid])
        a["fit"].setIcon(icons.view_icon("fit"))
        a["actual_size"].setIcon(icons.view_icon("actual"))
        a["help"].setIcon(icons.view_icon("help"))
        self.addToolBar(Qt.ToolBarArea.LeftToolBarArea, tools)
        self.toolbar, self.tools_toolbar = tb, tools

    # -- document --------------------------------------------------------------------------------
    def set_document(self, doc) -> None:
        """Show `doc`; the previous one (if any) is dropped after its jobs were stopped by the caller."""
        self.view.stop_play()
        self.detach_document()
        self.doc = doc
        doc.attached = True
        doc.runner = self.edits.run_in_background
        doc.setParent(self)
        doc.frameChanged.connect(self._on_frame)
        doc.masksChanged.connect(self._on_masks)
        doc.objectsChanged.connect(self._on_objects)
        doc.selectionChanged.connect(self._on_selection)
        doc.statsChanged.connect(self.refresh_timeline)
        doc.timingReported.connect(self._on_timing)
        doc.undo_stack.cleanChanged.connect(lambda _c: self.update_title())
        doc.undo_stack.indexChanged.connect(lambda _i: self.sync_enabled())
        self.timeline.set_length(doc.n)
        self.history.setStack(doc.undo_stack)
        self.view.visited.clear()
        self.timeline.setVisible(True)
        self._fill_refiners()
        self.canvas.set_frame(overlay.frame_image(doc.frame_rgb(doc.frame)))
        self.canvas.fit()
        self._on_objects()
        self._on_frame(doc.frame)
        self.update_title()
        self.sync_enabled()

    def _fill_refiners(self) -> None:
        self.propagation.setVisible(True)
        self.propagation.set_refiners(self.doc.session.refiner_names(), self.doc.session.refiner_name)

    def set_refiner(self, name: str) -> None:
        if self.doc is None or self.session_busy():
            return
        try:
            with self.doc.lock:
                self.doc.session.set_refiner(None if name == "none" else name)
        except Exception as exc:
            self.show_error("Refiner", describe(exc))
            self._fill_refiners()
            return
        self.say(f"Refinement: {self.propagation.refiner.currentText()} (applies to the next propagation)", 5000)
        self.update_title()

    def detach_document(self) -> None:
        """Disconnect the current document's signals (before replacing it or closing)."""
        doc = self.doc
        if doc is None or not doc.attached:
            return
        doc.attached = False
        for sig in (doc.frameChanged, doc.masksChanged, doc.objectsChanged, doc.selectionChanged,
                    doc.statsChanged, doc.timingReported, doc.undo_stack.cleanChanged,
                    doc.undo_stack.indexChanged):
            try:
                sig.disconnect()
            except (RuntimeError, TypeError):
                pass

    def update_title(self) -> None:
        if self.doc is None:
            self.setWindowTitle("VOS Annotator")
            return
        star = "*" if self.doc.is_dirty() else ""
        self.setWindowTitle(f"{self.doc.folder.name}{star} — {self.doc.video.name} — VOS Annotator")

    # -- what the controllers share --------------------------------------------------------------
    def session_busy(self) -> bool:
        """A propagation or a background edit/undo owns the session: edits and undo wait."""
        return self.jobs.propagating() or self.edits.working()

    def stop_jobs(self) -> None:
        """Wait for background edits and autosaves, cancel and wait for the running job."""
        self.edits.wait()
        self.files.wait_autosave()
        self.jobs.stop()

    def say(self, text: str, ms: int = 6000) -> None:
        self.statusBar().showMessage(text, ms)

    def show_error(self, title: str, text: str) -> None:
        self._tell(QMessageBox.critical, title, text)

    def show_warning(self, title: str, text: str) -> None:
        self._tell(QMessageBox.warning, title, text)

    def _tell(self, box, title: str, text: str) -> None:
        self.last_error = text
        if self.interactive:
            box(self, title, text)
        else:
            print(f"{title}: {text}", file=sys.stderr)

    def show_job(self, label: str | None, total: int = 0) -> None:
        """The status bar's job row: shown with `label` and an empty bar, or hidden (None)."""
        for w in (self.job_label, self.job_bar, self.job_cancel):
            w.setVisible(label is not None)
        if label is not None:
            self.job_label.setText(label)
            self.job_bar.setRange(0, max(1, total))
            self.job_bar.setValue(0)

    def job_progress(self, done: int, total: int, eta: str) -> None:
        self.job_bar.setMaximum(max(1, total))
        self.job_bar.setValue(min(done, max(1, total)))
        self.job_bar.setFormat(f"%p%  {eta}")

    # -- view sync -------------------------------------------------------------------------------
    def refresh_canvas(self) -> None:
        if self.doc is None:
            return
        doc, t = self.doc, self.doc.frame
        objs = doc.objects()
        colors = {oid: tuple(o.color) for oid, o in objs.items()}
        hidden = {oid for oid, o in objs.items() if o.hidden}
        mode = self.view.overlay_mode
        img = overlay.render(doc.mask(t), colors, hidden, mode, self.view.opacity, doc.selected)
        self.canvas.set_overlay(img, mask_only=mode == "mask")
        shown = [] if mode == "off" else [p for p in doc.prompts_on(t) if p.object_id not in hidden]
        self.canvas.set_prompts(shown, {oid: o.name for oid, o in objs.items()})

    def _on_frame(self, t: int) -> None:
        try:
            rgb = self.doc.frame_rgb(t)
        except Exception as exc:  # a truncated or damaged video: show black, say why, keep working
            w, h = self.doc.video.working_size
            rgb = np.zeros((h, w, 3), np.uint8)
            self.say(f"Cannot read frame {t}: {describe(exc)}", 8000)
        self.canvas.set_frame(overlay.frame_image(rgb))
        self.refresh_canvas()
        self.timeline.set_current(t)
        self.update_status()

    def _on_masks(self, frames: list) -> None:
        if self.doc.frame in frames:
            self.refresh_canvas()
        self.refresh_timeline()
        self.update_title()

    def _on_objects(self) -> None:
        self.objects_panel.set_objects(self.doc.objects(), self.doc.selected)
        self._on_selection(self.doc.selected)
        self.refresh_timeline()
        self.update_title()

    def _on_selection(self, oid) -> None:
        self.objects_panel.select(oid)
        info = self.doc.objects().get(oid)
        if info is not None:
            self.canvas.color = QColor(*info.color)
        self.refresh_canvas()
        self.refresh_timeline()
        self.update_status()
        self.sync_enabled()

    def refresh_timeline(self) -> None:
        doc = self.doc
        objs = doc.objects()
        self.timeline.strip.set_data(doc.n, doc.coverage(), doc.keyframe_info(),
                                     {oid: tuple(o.color) for oid, o in objs.items()},
                                     {oid: o.name for oid, o in objs.items()},
                                     {oid: doc.confidence[:, oid] for oid in objs if oid < 256}, doc.selected)

    def update_status(self) -> None:
        doc = self.doc
        if doc is None:
            return
        keys = doc.keyframes().get(doc.selected, set())
        key = " ◆" if doc.frame in keys else ""
        self.frame_label.setText(f"Frame {doc.frame + 1} / {doc.n}{key}")
        info = doc.objects().get(doc.selected)
        self.object_label.setText(f"Object: {info.name} (#{info.id})" if info else "Object: none")
        tool = self.view.tool
        self.tool_label.setText(f"Tool: {TOOLS[tool].short}")
        self.tool_name.setText(TOOLS[tool].name)
        self.brush_spin.setEnabled(tool in ("brush", "eraser"))
        self.timing_label.setText(self._last_timing)

    def _on_timing(self, text: str) -> None:
        self._last_timing = f"Engine: {text}"
        self.update_status()

    def _on_cursor(self, x: int, y: int) -> None:
        self.pixel_label.setText(f"x {x}, y {y}" if x >= 0 else "")

    def sync_enabled(self) -> None:
        """Enable actions by state: no document, a job owning the session, undo availability."""
        has_doc = self.doc is not None
        busy = self.session_busy()
        for spec in action_table.ACTIONS:
            action = self.actions_by_id[spec.id]
            enabled = has_doc or spec.menu in ("File", "Help") and spec.id not in ("save", "save_as", "export")
            if spec.editing and busy:
                enabled = False
            action.setEnabled(enabled)
        if has_doc:
            stack = self.doc.undo_stack
            self.actions_by_id["undo"].setEnabled(stack.canUndo() and not busy)
            self.actions_by_id["redo"].setEnabled(stack.canRedo() and not busy)
            self.actions_by_id["undo"].setText(f"&Undo {stack.undoText()}".strip())
            self.actions_by_id["redo"].setText(f"&Redo {stack.redoText()}".strip())
            self.actions_by_id["export"].setEnabled(not busy)
        self.actions_by_id["cancel_job"].setEnabled(self.jobs.running is not None)
        self.canvas.set_editable(has_doc and not busy)
        self.history.setEnabled(has_doc and not busy)   # its clicks undo: not while a job owns the session
        self.objects_panel.setEnabled(has_doc and not busy)

    # -- window events ---------------------------------------------------------------------------
    def closeEvent(self, event) -> None:
        if not self.files.maybe_save():
            event.ignore()
            return
        self.stop_jobs()
        self.files.close_project()
        if self.doc is not None:
            self.detach_document()
            self.doc.close()
        if self.interactive:
            settings.put("window/geometry", self.saveGeometry())
            settings.put("window/state", self.saveState())
        event.accept()

    def restore_layout(self) -> None:
        """Window size, position and dock layout from the last session."""
        geometry, state = settings.get("window/geometry"), settings.get("window/state")
        if geometry is not None:
            self.restoreGeometry(geometry)
        if state is not None:
            self.restoreState(state)

    # drag and drop: a project folder, video file or frame folder opens
    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls() and len(event.mimeData().urls()) == 1:
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        path = event.mimeData().urls()[0].toLocalFile()
        if path:
            event.acceptProposedAction()
            QTimer.singleShot(0, lambda: self.files.open_path(path))
