"""Main window: canvas, timeline, objects panel, toolbar and status bar around one Document.

File handling, engine jobs, edits and view handlers live in mixins (window_files, window_jobs,
window_edits, window_view) so each part stays small; this module builds the widgets and keeps the views in sync.
"""

import numpy as np
from PySide6.QtCore import QSize, Qt, QTimer
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QComboBox, QDockWidget, QFormLayout, QLabel, QMainWindow,
                               QProgressBar, QSlider, QSpinBox, QToolBar, QToolButton,
                               QVBoxLayout, QWidget)

from annotator import actions as action_table
from annotator import icons, overlay, settings
from annotator.canvas import TOOLS, Canvas
from annotator.objects_panel import ObjectsPanel
from annotator.timeline import Timeline
from annotator.window_edits import EditsMixin
from annotator.window_files import FilesMixin
from annotator.window_jobs import JobsMixin
from annotator.window_view import ViewMixin
from annotator.workers import describe

TOOL_SHORT = {"click+": "Click +", "click-": "Click −", "scribble+": "Scribble +", "scribble-": "Scribble −",
              "brush": "Brush", "eraser": "Eraser", "polygon": "Polygon"}


class MainWindow(FilesMixin, JobsMixin, EditsMixin, ViewMixin, QMainWindow):
    def __init__(self, doc=None):
        super().__init__()
        self.doc = None
        self.job = None
        self.edit_job = None
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
        self.timeline.setVisible(False)      # shown with the first project
        self.setCentralWidget(central)
        self.objects_panel = ObjectsPanel()
        self.objects_panel.selected.connect(self.select_object)
        self.objects_panel.addRequested.connect(self.add_object)
        self.objects_panel.removeRequested.connect(self.remove_object)
        self.objects_panel.colorRequested.connect(self.recolor_object)
        self.objects_panel.changed.connect(self.change_object)
        dock = QDockWidget("Annotation")
        dock.setObjectName("objects_dock")
        dock.setWidget(self._side_panel())
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        self.objects_dock = dock
        self.canvas.set_brush_radius(self.brush_spin.value())
        self._build_status_bar()

    def _side_panel(self) -> QWidget:
        """Right panel: display settings, the current tool's size, then the objects table."""
        self.brush_spin = QSpinBox(minimum=1, maximum=200, value=int(settings.get("tools/brush", 10)))
        self.brush_spin.setSuffix(" px")
        self.brush_spin.setToolTip("Brush / eraser radius ([ and ])")
        self.brush_spin.valueChanged.connect(self._on_brush_size)
        self.overlay_combo = QComboBox()
        for mode in overlay.MODES:
            self.overlay_combo.addItem(overlay.MODE_NAMES[mode], mode)
        self.overlay_combo.setToolTip("Overlay mode (O cycles)")
        self.overlay_combo.currentIndexChanged.connect(
            lambda i: self.set_overlay_mode(self.overlay_combo.itemData(i)))
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal, minimum=0, maximum=100)
        self.opacity_slider.setValue(int(100 * self.opacity))
        self.opacity_slider.setToolTip("Overlay opacity")
        self.opacity_slider.valueChanged.connect(self._on_opacity)
        self.tool_name = QLabel()
        self.refiner_combo = QComboBox()
        self.refiner_combo.setToolTip("Optional refiner run on every propagated frame (issue 5); "
                                      "'none' is the plain engine")
        self.refiner_combo.activated.connect(lambda _i: self.set_refiner(self.refiner_combo.currentData()))
        form = QFormLayout()
        form.setContentsMargins(8, 6, 8, 2)
        form.addRow("Overlay", self.overlay_combo)
        form.addRow("Opacity", self.opacity_slider)
        form.addRow("Tool", self.tool_name)
        form.addRow("Brush", self.brush_spin)
        form.addRow("Refiner", self.refiner_combo)
        self.refiner_row = form.rowCount() - 1
        self.side_form = form
        form.setRowVisible(self.refiner_row, False)
        panel = QWidget()
        layout = QVBoxLayout(panel)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(form)
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
        self.job_cancel.clicked.connect(self.cancel_job)
        for w in (self.job_label, self.job_bar, self.job_cancel):
            bar.addPermanentWidget(w)
            w.setVisible(False)
        for label, width in ((self.frame_label, 120), (self.object_label, 150), (self.tool_label, 120),
                             (self.timing_label, 230), (self.pixel_label, 100), (self.zoom_label, 48)):
            label.setMinimumWidth(width)
            bar.addPermanentWidget(label)

    def _build_menus_and_toolbar(self) -> None:
        menus = {name: self.menuBar().addMenu(f"&{name}") for name in action_table.MENUS}
        self.recent_menu = menus["File"].addMenu("Open &Recent")
        self.recent_menu.aboutToShow.connect(self._fill_recent_menu)
        last_menu = {}
        for spec in action_table.ACTIONS:
            menu = menus[spec.menu]
            prev = last_menu.get(spec.menu)
            if prev is not None and (prev.group != spec.group or prev.handler != spec.handler) and \
                    (prev.group or spec.group or spec.handler in ("set_tool", "propagate", "export", "close")):
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
        self._play.stop()
        self.detach_document()
        self.doc = doc
        doc.attached = True
        doc.runner = self.run_in_background
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
        self.timeline.setVisible(True)
        self._fill_refiners()
        self.canvas.set_frame(overlay.frame_image(doc.frame_rgb(doc.frame)))
        self.canvas.fit()
        self._on_objects()
        self._on_frame(doc.frame)
        self._update_title()
        self._sync_enabled()

    def _fill_refiners(self) -> None:
        """The refiner choice shows only when the engine's Session can switch refiners."""
        session = self.doc.session
        supported = hasattr(session, "set_refiner")
        self.side_form.setRowVisible(self.refiner_row, supported)
        if not supported:
            return
        try:
            from engine.refiners import available_refiners
            names = available_refiners()
        except Exception:
            names = []
        current = getattr(session, "refiner_name", None) or getattr(session.refiner, "name", None) or "none"
        self.refiner_combo.clear()
        for name in ["none", *names]:
            self.refiner_combo.addItem(name, name)
        self.refiner_combo.setCurrentIndex(max(0, self.refiner_combo.findData(current)))

    def set_refiner(self, name: str) -> None:
        if self.doc is None or self._owns_session():
            return
        try:
            with self.doc.lock:
                self.doc.session.set_refiner(None if name == "none" else name)
        except Exception as exc:
            self.show_error("Refiner", describe(exc))
            self._fill_refiners()
            return
        self.statusBar().showMessage(f"Refiner: {name} (applies to the next propagation)", 5000)
        self._update_title()

    def detach_document(self) -> None:
        """Disconnect the current document's signals (before replacing it or closing)."""
        doc = self.doc
        if doc is None or not getattr(doc, "attached", False):
            return
        doc.attached = False
        for sig in (doc.frameChanged, doc.masksChanged, doc.objectsChanged, doc.selectionChanged,
                    doc.statsChanged, doc.timingReported, doc.undo_stack.cleanChanged,
                    doc.undo_stack.indexChanged):
            try:
                sig.disconnect()
            except (RuntimeError, TypeError):
                pass

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
        try:
            rgb = self.doc.frame_rgb(t)
        except Exception as exc:  # a truncated or damaged video: show black, say why, keep working
            w, h = self.doc.video.working_size
            rgb = np.zeros((h, w, 3), np.uint8)
            self.statusBar().showMessage(f"Cannot read frame {t}: {describe(exc)}", 8000)
        self.canvas.set_frame(overlay.frame_image(rgb))
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
        self.tool_name.setText(TOOLS[self.tool])
        self.brush_spin.setEnabled(self.tool in ("brush", "eraser"))
        self.timing_label.setText(self._last_timing)

    def _on_timing(self, text: str) -> None:
        self._last_timing = f"Engine: {text}"
        self._update_status()

    def _on_cursor(self, x: int, y: int) -> None:
        self.pixel_label.setText(f"x {x}, y {y}" if x >= 0 else "")

    def _sync_enabled(self) -> None:
        """Enable actions by state: no document, a job owning the session, undo availability."""
        has_doc = self.doc is not None
        busy = self._owns_session()
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
        self.canvas.set_editable(has_doc and not busy)
        self.objects_panel.setEnabled(has_doc and not busy)
