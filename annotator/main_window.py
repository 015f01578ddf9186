"""Main window: canvas, timeline, objects panel, toolbar and status bar around one Document.

File handling, engine jobs and edits live in mixins (window_files, window_jobs, window_edits)
so each part stays small; this module builds the widgets and keeps the views in sync.
"""

from PySide6.QtCore import QSize, Qt, QTimer
from PySide6.QtWidgets import (QComboBox, QDockWidget, QLabel, QMainWindow, QMessageBox,
                               QProgressBar, QSlider, QSpinBox, QToolBar, QToolButton, QVBoxLayout,
                               QWidget)

from annotator import actions as action_table
from annotator import overlay, settings
from annotator.canvas import TOOLS, Canvas
from annotator.objects_panel import ObjectsPanel
from annotator.timeline import Timeline
from annotator.window_edits import EditsMixin
from annotator.window_files import FilesMixin
from annotator.window_jobs import JobsMixin

TOOL_SHORT = {"click+": "Click +", "click-": "Click −", "scribble+": "Scribble +", "scribble-": "Scribble −",
              "brush": "Brush", "eraser": "Eraser", "polygon": "Polygon"}


class MainWindow(FilesMixin, JobsMixin, EditsMixin, QMainWindow):
    def __init__(self, doc=None):
        super().__init__()
        self.doc = None
        self.job = None
        self.overlay_mode = settings.get("overlay/mode", "filled")
        self.opacity = float(settings.get("overlay/opacity", 0.5))
        self.tool = "click+"
        self._last_timing = ""
        self._build_widgets()
        self.actions_by_id = action_table.build(self)
        self._build_menus_and_toolbar()
        self._play = QTimer(self)
        self._play.timeout.connect(self._play_tick)
        self._init_files()
        self.set_tool("click+")
        self.set_overlay_mode(self.overlay_mode if self.overlay_mode in overlay.MODES else "filled")
        self.resize(1400, 860)
        if doc is not None:
            self.set_document(doc)
        self._sync_enabled()

    # -- construction ----------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        self.canvas = Canvas()
        self.canvas.clicked.connect(self.on_canvas_click)
        self.canvas.stroked.connect(self.on_canvas_stroke)
        self.canvas.polygonDone.connect(self.on_canvas_polygon)
        self.canvas.cursorMoved.connect(self._on_cursor)
        self.canvas.playToggled.connect(self.toggle_play)
        self.canvas.zoomChanged.connect(lambda z: self.zoom_label.setText(f"{100 * z:.0f}%"))
        self.timeline = Timeline()
        self.timeline.frameRequested.connect(self.goto_frame)
        self.timeline.playToggled.connect(self.toggle_play)
        self.timeline.nextWrongRequested.connect(self.next_likely_wrong)
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.canvas, 1)
        layout.addWidget(self.timeline)
        self.setCentralWidget(central)
        self.objects_panel = ObjectsPanel()
        self.objects_panel.selected.connect(self.select_object)
        self.objects_panel.addRequested.connect(self.add_object)
        self.objects_panel.removeRequested.connect(self.remove_object)
        self.objects_panel.colorRequested.connect(self.recolor_object)
        self.objects_panel.changed.connect(self.change_object)
        dock = QDockWidget("Objects")
        dock.setObjectName("objects_dock")
        dock.setWidget(self.objects_panel)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        self.objects_dock = dock
        self.brush_spin = QSpinBox(minimum=1, maximum=200, value=int(settings.get("tools/brush", 10)))
        self.brush_spin.setSuffix(" px")
        self.brush_spin.setToolTip("Brush / eraser radius ([ and ])")
        self.brush_spin.valueChanged.connect(self._on_brush_size)
        self.canvas.set_brush_radius(self.brush_spin.value())
        self.overlay_combo = QComboBox()
        for mode in overlay.MODES:
            self.overlay_combo.addItem(overlay.MODE_NAMES[mode], mode)
        self.overlay_combo.currentIndexChanged.connect(
            lambda i: self.set_overlay_mode(self.overlay_combo.itemData(i)))
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal, minimum=0, maximum=100)
        self.opacity_slider.setValue(int(100 * self.opacity))
        self.opacity_slider.setFixedWidth(110)
        self.opacity_slider.setToolTip("Overlay opacity")
        self.opacity_slider.valueChanged.connect(self._on_opacity)
        self._build_status_bar()

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.frame_label, self.object_label = QLabel(), QLabel()
        self.tool_label, self.timing_label = QLabel(), QLabel()
        self.pixel_label, self.zoom_label = QLabel(), QLabel()
        for label, width in ((self.frame_label, 130), (self.object_label, 170), (self.tool_label, 120),
                             (self.pixel_label, 110), (self.zoom_label, 50)):
            label.setMinimumWidth(width)
            bar.addWidget(label)
        bar.addWidget(self.timing_label, 1)
        self.job_label = QLabel()
        self.job_bar = QProgressBar(maximumWidth=220, textVisible=True)
        self.job_cancel = QToolButton(text="Cancel")
        self.job_cancel.clicked.connect(self.cancel_job)
        for w in (self.job_label, self.job_bar, self.job_cancel):
            bar.addPermanentWidget(w)
            w.setVisible(False)

    def _build_menus_and_toolbar(self) -> None:
        menus = {name: self.menuBar().addMenu(f"&{name}") for name in action_table.MENUS}
        self.recent_menu = menus["File"].addMenu("Open &Recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        last_menu = {}
        for spec in action_table.ACTIONS:
            menu = menus[spec.menu]
            prev = last_menu.get(spec.menu)
            if prev is not None and (prev.group != spec.group or prev.handler != spec.handler) and \
                    (prev.group or spec.group or spec.handler in ("set_tool", "propagate", "export", "quit")):
                menu.addSeparator()
            menu.addAction(self.actions_by_id[spec.id])
            last_menu[spec.menu] = spec
        menus["File"].insertMenu(self.actions_by_id["save"], self.recent_menu)
        tb = QToolBar("Main")
        tb.setObjectName("main_toolbar")
        tb.setIconSize(QSize(18, 18))
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        for ids in (("open", "save"), ("undo", "redo")):
            for aid in ids:
                tb.addAction(self.actions_by_id[aid])
            tb.addSeparator()
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        for tid in TOOLS:
            action = self.actions_by_id[f"tool_{tid}"]
            action.setIconText(TOOL_SHORT[tid])
            tb.addAction(action)
        tb.addWidget(QLabel("  Size "))
        tb.addWidget(self.brush_spin)
        tb.addSeparator()
        for aid, text in (("propagate_backward", "◀ Propagate"), ("propagate_both", "◀ Propagate ▶"),
                          ("propagate_forward", "Propagate ▶")):
            self.actions_by_id[aid].setIconText(text)
            tb.addAction(self.actions_by_id[aid])
        tb.addSeparator()
        tb.addWidget(QLabel(" Overlay "))
        tb.addWidget(self.overlay_combo)
        tb.addWidget(QLabel("  Opacity "))
        tb.addWidget(self.opacity_slider)
        self.addToolBar(tb)
        self.toolbar = tb

    # -- document --------------------------------------------------------------------------------
    def set_document(self, doc) -> None:
        """Show `doc`; the previous one (if any) is dropped after its jobs were stopped by the caller."""
        self._play.stop()
        self.doc = doc
        doc.setParent(self)
        doc.frameChanged.connect(self._on_frame)
        doc.masksChanged.connect(self._on_masks)
        doc.objectsChanged.connect(self._on_objects)
        doc.selectionChanged.connect(self._on_selection)
        doc.statsChanged.connect(self._refresh_timeline)
        doc.timingReported.connect(self._on_timing)
        doc.undo_stack.cleanChanged.connect(lambda _c: self._update_title())
        doc.undo_stack.indexChanged.connect(lambda _i: self._sync_enabled())
        self.timeline.set_length(doc.n)
        self.canvas.set_frame(overlay.frame_image(doc.frame_rgb(doc.frame)))
        self.canvas.fit()
        self._on_objects()
        self._on_frame(doc.frame)
        self._update_title()
        self._sync_enabled()

    def _update_title(self) -> None:
        if self.doc is None:
            self.setWindowTitle("VOS Annotator")
            return
        star = "*" if self.doc.is_dirty() else ""
        self.setWindowTitle(f"{self.doc.folder.name}{star} — {self.doc.video.name} — VOS Annotator")

    # -- view sync -------------------------------------------------------------------------------
    def refresh_canvas(self) -> None:
        if self.doc is None:
            return
        doc, t = self.doc, self.doc.frame
        objs = doc.objects()
        colors = {oid: tuple(o.color) for oid, o in objs.items()}
        hidden = {oid for oid, o in objs.items() if o.hidden}
        img = overlay.render(doc.mask(t), colors, hidden, self.overlay_mode, self.opacity, doc.selected)
        self.canvas.set_overlay(img, mask_only=self.overlay_mode == "mask")

    def _on_frame(self, t: int) -> None:
        self.canvas.set_frame(overlay.frame_image(self.doc.frame_rgb(t)))
        self.refresh_canvas()
        self.timeline.set_current(t)
        self._update_status()

    def _on_masks(self, frames: list) -> None:
        if self.doc.frame in frames:
            self.refresh_canvas()
        self._refresh_timeline()
        self._update_title()

    def _on_objects(self) -> None:
        self.objects_panel.set_objects(self.doc.objects(), self.doc.selected)
        self._on_selection(self.doc.selected)
        self._refresh_timeline()
        self._update_title()

    def _on_selection(self, oid) -> None:
        self.objects_panel.select(oid)
        info = self.doc.objects().get(oid)
        if info is not None:
            from PySide6.QtGui import QColor
            self.canvas.color = QColor(*info.color)
        self.refresh_canvas()
        self._refresh_timeline()
        self._update_status()
        self._sync_enabled()

    def _refresh_timeline(self) -> None:
        doc = self.doc
        objs = doc.objects()
        self.timeline.strip.set_data(doc.n, doc.coverage(), doc.keyframes(),
                                     {oid: tuple(o.color) for oid, o in objs.items()},
                                     {oid: o.name for oid, o in objs.items()}, doc.confidence, doc.selected)

    def _update_status(self) -> None:
        doc = self.doc
        if doc is None:
            return
        keys = doc.keyframes().get(doc.selected, set())
        key = " ◆" if doc.frame in keys else ""
        self.frame_label.setText(f"Frame {doc.frame} / {doc.n - 1}{key}")
        info = doc.objects().get(doc.selected)
        self.object_label.setText(f"Object: {info.name} (#{info.id})" if info else "Object: none")
        self.tool_label.setText(f"Tool: {TOOL_SHORT[self.tool]}")
        self.timing_label.setText(self._last_timing)

    def _on_timing(self, text: str) -> None:
        self._last_timing = f"Engine: {text}"
        self._update_status()

    def _on_cursor(self, x: int, y: int) -> None:
        self.pixel_label.setText(f"x {x}, y {y}" if x >= 0 else "")

    def _sync_enabled(self) -> None:
        """Enable actions by state: no document, a job owning the session, undo availability."""
        has_doc = self.doc is not None
        busy = self.job is not None and self.job.name in ("propagate", "export")
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
        self.actions_by_id["cancel_job"].setEnabled(self.job is not None)
        self.canvas.set_editable(has_doc and not busy and self.doc.selected is not None)
        self.objects_panel.setEnabled(has_doc and not busy)

    # -- navigation and view handlers (named in the action table) ----------------------------------
    def goto_frame(self, t: int) -> None:
        if self.doc is not None:
            self.doc.set_frame(self.doc.n - 1 if t < 0 else t)

    def step_frame(self, delta: int) -> None:
        if self.doc is not None:
            self.doc.set_frame(self.doc.frame + delta)

    def step_keyframe(self, direction: int) -> None:
        keys = sorted(set().union(*self.doc.keyframes().values())) if self.doc.keyframes() else []
        t = self.doc.frame
        cands = [k for k in keys if (k > t if direction > 0 else k < t)]
        if cands:
            self.doc.set_frame(cands[0] if direction > 0 else cands[-1])

    def toggle_play(self) -> None:
        if self.doc is None:
            return
        if self._play.isActive():
            self._play.stop()
        else:
            if self.doc.frame >= self.doc.n - 1:
                self.doc.set_frame(0)
            self._play.start(int(1000 / min(30.0, max(1.0, self.doc.video.fps or 25.0))))
        self.timeline.set_playing(self._play.isActive())

    def _play_tick(self) -> None:
        if self.doc.frame >= self.doc.n - 1:
            self._play.stop()
            self.timeline.set_playing(False)
        else:
            self.doc.set_frame(self.doc.frame + 1)

    def fit_view(self) -> None:
        self.canvas.fit()

    def actual_size(self) -> None:
        self.canvas.actual_size()

    def zoom(self, factor: float) -> None:
        self.canvas.zoom_by(factor)

    def set_overlay_mode(self, mode: str) -> None:
        self.overlay_mode = mode
        self.actions_by_id[f"overlay_{mode}"].setChecked(True)
        self.overlay_combo.blockSignals(True)
        self.overlay_combo.setCurrentIndex(overlay.MODES.index(mode))
        self.overlay_combo.blockSignals(False)
        self.opacity_slider.setEnabled(mode == "filled")
        settings.put("overlay/mode", mode)
        self.refresh_canvas()

    def cycle_overlay(self) -> None:
        self.set_overlay_mode(overlay.MODES[(overlay.MODES.index(self.overlay_mode) + 1) % len(overlay.MODES)])

    def _on_opacity(self, value: int) -> None:
        self.opacity = value / 100.0
        settings.put("overlay/opacity", self.opacity)
        self.refresh_canvas()

    def set_tool(self, tool: str) -> None:
        self.tool = tool
        self.actions_by_id[f"tool_{tool}"].setChecked(True)
        self.canvas.set_tool(tool)
        self._update_status()

    def change_brush(self, factor: float) -> None:
        v = self.brush_spin.value()
        self.brush_spin.setValue(max(v + (1 if factor > 1 else -1), int(round(v * factor))) if factor > 1
                                 else min(v - 1, int(round(v * factor))))

    def _on_brush_size(self, value: int) -> None:
        self.canvas.set_brush_radius(value)
        settings.put("tools/brush", value)

    def show_help(self) -> None:
        self.help_dialog = action_table.HelpDialog(self)
        self.help_dialog.show()

    def show_about(self) -> None:
        QMessageBox.about(self, "About VOS Annotator",
                          "Annotate objects in videos: click, scribble or paint on any frame, propagate "
                          "through the video with pixel-wise metric learning, correct, and export.")
