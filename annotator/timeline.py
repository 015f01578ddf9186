"""Timeline: play/pause, frame slider, and a strip with one row per object: coverage, keyframes, confidence.

The strip is a passive view of numpy arrays the window hands it: coverage[id] is an (N,) bool
array (object present in frame t), confidence[id] an (N,) float array in [0, 1] with NaN = unknown.
"""

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPen, QPolygonF
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QMenu, QSlider, QSpinBox, QStyle, QToolButton,
                               QVBoxLayout, QWidget)

RULER_H, LANE_H, CONF_H, GAP, MAX_LANES, GUTTER = 14, 9, 5, 4, 12, 96
ROW_H = LANE_H + 1 + CONF_H + GAP     # one object: coverage lane, its confidence band, a gap
CONF_LEVELS = 16                      # confidence colours drawn (runs of one colour are one rectangle)


def confidence_color(c: float) -> QColor:
    """Red (unsure) to green (sure)."""
    return QColor.fromHsvF(max(0.0, min(1.0, c)) * 0.33, 0.75, 0.85)


KEYFRAME_WHY = {"annotated": "annotated", "corrected": "corrected by clicks on a propagated mask",
                "marked": "marked as right", "absent": "object absent"}   # tooltip words per engine reason


class TimelineStrip(QWidget):
    """Per object (up to MAX_LANES): its name (click: its next least-sure frame), a lane with its
    coverage and keyframes (diamonds; hollow: absent there), and under it a band with its confidence (red = unsure)."""
    seek = Signal(int)
    leastSureRequested = Signal(int)      # object id whose name was clicked
    propagateToRequested = Signal(int)    # right click, "Propagate to here": that frame

    def __init__(self, parent=None):
        super().__init__(parent)
        self.n = 1
        self.current = 0
        self.coverage: dict[int, np.ndarray] = {}
        self.keyframes: dict[int, dict[int, str]] = {}   # {id: {keyframe: why (the engine's keyframe_info)}}
        self.colors: dict[int, tuple[int, int, int]] = {}
        self.names: dict[int, str] = {}
        self.confidence: dict[int, np.ndarray] = {}   # {id: (N,) float, NaN = unknown}
        self.selected: int | None = None
        self.menu: QMenu | None = None
        self.embedded: np.ndarray | None = None   # (N,) bool while the first embedding pass runs
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)   # a click takes focus from the frame box
        self._relayout()

    def set_data(self, n, coverage, keyframes, colors, names, confidence, selected) -> None:
        self.n = max(1, n)
        self.coverage, self.keyframes, self.colors, self.names = coverage, keyframes, colors, names
        self.confidence, self.selected = confidence, selected
        self._relayout()
        self.update()

    def set_current(self, t: int) -> None:
        self.current = t
        self.update()

    def set_embedded(self, embedded: np.ndarray | None) -> None:
        """Frames whose embeddings are ready (clicks there are instant); None hides the line."""
        self.embedded = embedded
        self.update()

    def lanes(self) -> list[int]:
        """Object ids with a row, top to bottom."""
        return list(self.colors)[:MAX_LANES]

    def row_top(self, i: int) -> int:
        return RULER_H + 4 + i * ROW_H

    def _relayout(self) -> None:
        self.setFixedHeight(self.row_top(max(1, len(self.lanes()))) + 2)

    def sizeHint(self) -> QSize:
        return QSize(400, self.height())

    def _x(self, t: float) -> float:
        return GUTTER + (self.width() - GUTTER - 6) * t / self.n

    def _frame_at(self, x: float) -> int:
        return int(min(self.n - 1, max(0, (x - GUTTER) * self.n / max(1, self.width() - GUTTER - 6))))

    def _lane_at(self, y: float) -> int | None:
        i = int((y - RULER_H - 4) // ROW_H)
        lanes = self.lanes()
        return lanes[i] if y >= RULER_H + 4 and i < len(lanes) else None

    def paintEvent(self, _event):
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(38, 40, 44))
        font = p.font()
        font.setPointSizeF(7.5)
        p.setFont(font)
        self._ruler(p)
        width = self.width() - GUTTER - 6
        if self.embedded is not None:
            p.fillRect(QRectF(GUTTER, RULER_H - 2, width, 2), QColor(70, 74, 80))
            for start, stop in _runs(self.embedded):
                p.fillRect(QRectF(self._x(start), RULER_H - 2, self._x(stop) - self._x(start), 2),
                           QColor(80, 150, 240))
        for i, oid in enumerate(self.lanes()):
            y = self.row_top(i)
            r, g, b = self.colors[oid]
            p.setPen(QColor(255, 255, 255) if oid == self.selected else QColor(170, 174, 180))
            name = p.fontMetrics().elidedText(self.names.get(oid, str(oid)), Qt.TextElideMode.ElideRight,
                                              GUTTER - 22)
            p.drawText(QRectF(4, y - 3, GUTTER - 20, LANE_H + CONF_H + 7), Qt.AlignmentFlag.AlignVCenter, name)
            self._least_sure_glyph(p, GUTTER - 12, y + (LANE_H + CONF_H) / 2)
            p.fillRect(QRectF(GUTTER, y, width, LANE_H), QColor(55, 58, 64))
            cov = self.coverage.get(oid)
            if cov is not None:
                col = QColor(r, g, b, 255 if oid == self.selected else 170)
                for start, stop in _runs(cov):
                    p.fillRect(QRectF(self._x(start), y, self._x(stop) - self._x(start), LANE_H), col)
            self._confidence_band(p, self.confidence.get(oid), y + LANE_H + 1)
            p.setPen(QPen(QColor(255, 255, 255), 1))
            for t, why in self.keyframes.get(oid, {}).items():
                p.setBrush(Qt.BrushStyle.NoBrush if why == "absent" else QColor(255, 255, 255))   # absent: hollow
                cx, cy = self._x(t + 0.5), y + LANE_H / 2
                p.drawPolygon(QPolygonF([QPointF(cx, cy - 4), QPointF(cx + 3, cy),
                                         QPointF(cx, cy + 4), QPointF(cx - 3, cy)]))
        x = self._x(self.current + 0.5)
        p.setPen(QPen(QColor(255, 214, 10), 2))
        p.drawLine(QPointF(x, 4), QPointF(x, self.height()))
        p.setBrush(QColor(255, 214, 10))
        p.setPen(Qt.PenStyle.NoPen)
        p.drawPolygon(QPolygonF([QPointF(x - 5, 0), QPointF(x + 5, 0), QPointF(x, 6)]))
        p.end()

    def _confidence_band(self, p: QPainter, conf, y: float) -> None:
        p.fillRect(QRectF(GUTTER, y, self.width() - GUTTER - 6, CONF_H), QColor(55, 58, 64))
        if conf is None:
            return
        level = np.where(np.isnan(conf), -1, np.round(np.clip(np.nan_to_num(conf), 0, 1) * (CONF_LEVELS - 1)))
        edges = np.flatnonzero(np.diff(level)) + 1
        for start, stop in zip(np.r_[0, edges], np.r_[edges, len(level)]):
            if level[start] >= 0:
                p.fillRect(QRectF(self._x(start), y, self._x(stop) - self._x(start) + 0.5, CONF_H),
                           confidence_color(level[start] / (CONF_LEVELS - 1)))

    @staticmethod
    def _least_sure_glyph(p: QPainter, x: float, cy: float) -> None:
        """A small warning triangle: click the row's name to go to its next least-sure frame."""
        p.save()
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(230, 150, 60))
        p.drawPolygon(QPolygonF([QPointF(x, cy - 4), QPointF(x + 4.5, cy + 4), QPointF(x - 4.5, cy + 4)]))
        p.restore()

    def _ruler(self, p: QPainter) -> None:
        """Frame numbers (counted from 1, as everywhere on screen) every `step` frames, step picked so
        labels stay >= 48 px apart."""
        px = (self.width() - GUTTER - 6) / self.n
        step = next((s for m in (1, 10, 100, 1000, 10000) for s in (m, 2 * m, 5 * m) if s * px >= 48), self.n)
        p.setPen(QColor(120, 124, 130))
        right = self.width() - 4
        for number in [1] * (step >= 5) + list(range(step, self.n + 1, step)):
            x = self._x(number - 0.5)
            p.drawLine(QPointF(x, RULER_H - 4), QPointF(x, RULER_H - 1))
            if x + 2 + p.fontMetrics().horizontalAdvance(str(number)) <= right:
                p.drawText(QRectF(x + 2, 0, 60, RULER_H - 2), Qt.AlignmentFlag.AlignVCenter, str(number))

    def mousePressEvent(self, event):
        pos = event.position()
        if pos.x() < GUTTER:
            oid = self._lane_at(pos.y())
            if oid is not None:
                self.leastSureRequested.emit(oid)
            return
        t = self._frame_at(pos.x())
        if event.button() == Qt.MouseButton.RightButton:
            self.menu = QMenu(self)        # kept while it shows
            self.menu.addAction(f"Propagate to here (frame {t + 1})", lambda: self.propagateToRequested.emit(t))
            self.menu.popup(event.globalPosition().toPoint())
            return
        self.seek.emit(t)

    def mouseMoveEvent(self, event):
        pos = event.position()
        oid = self._lane_at(pos.y())
        name = self.names.get(oid, "")
        if pos.x() < GUTTER:
            self.setToolTip(f"{name}: click for its next least-sure frame (Shift+G for the selected object)"
                            if oid is not None else "")
            return
        t = self._frame_at(pos.x())
        if event.buttons() & Qt.MouseButton.LeftButton:
            self.seek.emit(t)
        text = f"Frame {t + 1}"
        if oid is not None:
            conf = self.confidence.get(oid)
            c = conf[t] if conf is not None and t < len(conf) else np.nan
            why = self.keyframes.get(oid, {}).get(t)
            text += f" — {name}: " + (f"keyframe ({KEYFRAME_WHY.get(why, why)})" if why else
                                      "not propagated" if np.isnan(c) else f"confidence {c:.2f}")
        self.setToolTip(text)


def _runs(flags: np.ndarray):
    """(start, stop) pairs of consecutive True values in a 1-D bool array."""
    f = np.concatenate([[False], np.asarray(flags, bool), [False]])
    d = np.flatnonzero(np.diff(f.astype(np.int8)))
    return zip(d[0::2], d[1::2])


class Timeline(QWidget):
    """Transport row (play, slider, frame box, next-least-sure) above the strip. Frames are counted
    from 1 on screen ("1 / 132"); the signals carry 0-based indices."""
    frameRequested = Signal(int)
    playToggled = Signal()
    nextWrongRequested = Signal()
    frameEntered = Signal()           # Enter in the frame box: focus goes back to the canvas

    def __init__(self, parent=None):
        super().__init__(parent)
        style = self.style()
        self.play_button = QToolButton(toolTip="Play / pause (Space)")
        self.play_button.setIcon(style.standardIcon(QStyle.StandardPixmap.SP_MediaPlay))
        self.play_button.clicked.connect(self.playToggled)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.valueChanged.connect(self.frameRequested)
        self.spin = QSpinBox(toolTip="Frame number (type it, then Enter)")
        self.spin.setKeyboardTracking(False)
        self.spin.valueChanged.connect(lambda v: self.frameRequested.emit(v - 1))
        self.spin.lineEdit().returnPressed.connect(self.frameEntered)
        self.total = QLabel("/ 0")
        self.wrong_button = QToolButton(text="Next least sure")
        self.wrong_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.wrong_button.setIcon(style.standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning))
        self.wrong_button.setToolTip("Go to the least-sure frame not visited yet (G); "
                                     "click an object's name below for its own")
        self.wrong_button.clicked.connect(self.nextWrongRequested)
        self.strip = TimelineStrip()
        self.strip.seek.connect(self.frameRequested)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        for w in (self.play_button, self.slider, self.spin, self.total, self.wrong_button):
            row.addWidget(w)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.setSpacing(3)
        layout.addLayout(row)
        layout.addWidget(self.strip)

    def set_length(self, n: int) -> None:
        for w, low in ((self.slider, 0), (self.spin, 1)):
            w.blockSignals(True)
            w.setRange(low, max(0, n - 1) + low)
            w.blockSignals(False)
        self.total.setText(f"/ {n}")

    def set_current(self, t: int) -> None:
        for w, value in ((self.slider, t), (self.spin, t + 1)):
            w.blockSignals(True)
            w.setValue(value)
            w.blockSignals(False)
        self.strip.set_current(t)

    def set_playing(self, playing: bool) -> None:
        icon = QStyle.StandardPixmap.SP_MediaPause if playing else QStyle.StandardPixmap.SP_MediaPlay
        self.play_button.setIcon(self.style().standardIcon(icon))
