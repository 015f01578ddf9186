"""Timeline: play/pause, frame slider, and a strip with confidence, per-object coverage and keyframes.

The strip is a passive view of numpy arrays the window hands it: coverage[id] is an (N,) bool
array (object present in frame t), confidence an (N,) float array in [0, 1] with NaN = unknown.
"""

import numpy as np
from PySide6.QtCore import QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPen, QPolygonF
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QSlider, QSpinBox, QStyle, QToolButton,
                               QVBoxLayout, QWidget)

RULER_H, CONF_H, LANE_H, GAP, MAX_LANES, GUTTER = 14, 9, 9, 3, 12, 96


class TimelineStrip(QWidget):
    seek = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.n = 1
        self.current = 0
        self.coverage: dict[int, np.ndarray] = {}
        self.keyframes: dict[int, set[int]] = {}
        self.colors: dict[int, tuple[int, int, int]] = {}
        self.names: dict[int, str] = {}
        self.confidence = np.full(1, np.nan, np.float32)
        self.selected: int | None = None
        self.embedded: np.ndarray | None = None   # (N,) bool while the first embedding pass runs
        self.setMouseTracking(True)
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

    def _relayout(self) -> None:
        lanes = max(1, min(MAX_LANES, len(self.colors)))
        self.setFixedHeight(RULER_H + CONF_H + 6 + lanes * (LANE_H + GAP) + 4)

    def sizeHint(self) -> QSize:
        return QSize(400, self.height())

    def _x(self, t: float) -> float:
        return GUTTER + (self.width() - GUTTER - 6) * t / self.n

    def _frame_at(self, x: float) -> int:
        return int(min(self.n - 1, max(0, (x - GUTTER) * self.n / max(1, self.width() - GUTTER - 6))))

    def paintEvent(self, _event):
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(38, 40, 44))
        fw = max(1.0, (self.width() - GUTTER - 6) / self.n)
        font = p.font()
        font.setPointSizeF(7.5)
        p.setFont(font)
        self._ruler(p)
        if self.embedded is not None:
            p.fillRect(QRectF(GUTTER, RULER_H - 2, self.width() - GUTTER - 6, 2), QColor(70, 74, 80))
            for start, stop in _runs(self.embedded):
                p.fillRect(QRectF(self._x(start), RULER_H - 2, self._x(stop) - self._x(start), 2),
                           QColor(80, 150, 240))
        p.translate(0, RULER_H)
        p.setPen(QColor(170, 174, 180))
        p.drawText(QRectF(4, 0, GUTTER - 8, CONF_H + 4), Qt.AlignmentFlag.AlignVCenter, "confidence")
        p.fillRect(QRectF(GUTTER, 2, self.width() - GUTTER - 6, CONF_H), QColor(55, 58, 64))
        # confidence strip: red (unsure) -> green (sure), grey where unknown
        conf = self.confidence
        for t in range(min(self.n, len(conf))):
            c = conf[t]
            if np.isnan(c):
                continue
            col = QColor.fromHsvF(max(0.0, min(1.0, float(c))) * 0.33, 0.75, 0.85)
            p.fillRect(QRectF(self._x(t), 2, fw + 0.5, CONF_H), col)
        y = CONF_H + 6
        for oid in list(self.colors)[:MAX_LANES]:
            r, g, b = self.colors[oid]
            p.setPen(QColor(255, 255, 255) if oid == self.selected else QColor(170, 174, 180))
            name = p.fontMetrics().elidedText(self.names.get(oid, str(oid)), Qt.TextElideMode.ElideRight,
                                              GUTTER - 10)
            p.drawText(QRectF(4, y - 3, GUTTER - 8, LANE_H + 6), Qt.AlignmentFlag.AlignVCenter, name)
            p.fillRect(QRectF(GUTTER, y, self.width() - GUTTER - 6, LANE_H), QColor(55, 58, 64))
            cov = self.coverage.get(oid)
            if cov is not None:
                col = QColor(r, g, b, 255 if oid == self.selected else 170)
                for start, stop in _runs(cov):
                    p.fillRect(QRectF(self._x(start), y, self._x(stop) - self._x(start), LANE_H), col)
            p.setPen(QPen(QColor(255, 255, 255), 1))
            p.setBrush(QColor(255, 255, 255))
            for t in self.keyframes.get(oid, ()):
                cx, cy = self._x(t + 0.5), y + LANE_H / 2
                p.drawPolygon(QPolygonF([QPointF(cx, cy - 4), QPointF(cx + 3, cy),
                                         QPointF(cx, cy + 4), QPointF(cx - 3, cy)]))
            y += LANE_H + GAP
        p.translate(0, -RULER_H)
        x = self._x(self.current + 0.5)
        p.setPen(QPen(QColor(255, 214, 10), 2))
        p.drawLine(QPointF(x, 4), QPointF(x, self.height()))
        p.setBrush(QColor(255, 214, 10))
        p.setPen(Qt.PenStyle.NoPen)
        p.drawPolygon(QPolygonF([QPointF(x - 5, 0), QPointF(x + 5, 0), QPointF(x, 6)]))
        p.end()

    def _ruler(self, p: QPainter) -> None:
        """Frame numbers every `step` frames, step picked so labels stay >= 48 px apart."""
        px = (self.width() - GUTTER - 6) / self.n
        step = next((s for m in (1, 10, 100, 1000, 10000) for s in (m, 2 * m, 5 * m) if s * px >= 48), self.n)
        p.setPen(QColor(120, 124, 130))
        right = self.width() - 4
        for t in range(0, self.n, step):
            x = self._x(t + 0.5)
            p.drawLine(QPointF(x, RULER_H - 4), QPointF(x, RULER_H - 1))
            if x + 2 + p.fontMetrics().horizontalAdvance(str(t)) <= right:
                p.drawText(QRectF(x + 2, 0, 60, RULER_H - 2), Qt.AlignmentFlag.AlignVCenter, str(t))

    def mousePressEvent(self, event):
        self.seek.emit(self._frame_at(event.position().x()))

    def mouseMoveEvent(self, event):
        t = self._frame_at(event.position().x())
        if event.buttons() & Qt.MouseButton.LeftButton:
            self.seek.emit(t)
        conf = self.confidence[t] if t < len(self.confidence) else np.nan
        text = f"Frame {t}" + ("" if np.isnan(conf) else f" — confidence {conf:.2f}")
        self.setToolTip(text)


def _runs(flags: np.ndarray):
    """(start, stop) pairs of consecutive True values in a 1-D bool array."""
    f = np.concatenate([[False], np.asarray(flags, bool), [False]])
    d = np.flatnonzero(np.diff(f.astype(np.int8)))
    return zip(d[0::2], d[1::2])


class Timeline(QWidget):
    """Transport row (play, slider, frame box, next-likely-wrong) above the strip."""
    frameRequested = Signal(int)
    playToggled = Signal()
    nextWrongRequested = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        style = self.style()
        self.play_button = QToolButton(toolTip="Play / pause (Space)")
        self.play_button.setIcon(style.standardIcon(QStyle.StandardPixmap.SP_MediaPlay))
        self.play_button.clicked.connect(self.playToggled)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.valueChanged.connect(self.frameRequested)
        self.spin = QSpinBox()
        self.spin.setKeyboardTracking(False)
        self.spin.valueChanged.connect(self.frameRequested)
        self.total = QLabel("/ 0")
        self.wrong_button = QToolButton(text="Next likely wrong")
        self.wrong_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.wrong_button.setIcon(style.standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning))
        self.wrong_button.setToolTip("Go to the next frame the engine is least sure about (G)")
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
        for w in (self.slider, self.spin):
            w.blockSignals(True)
            w.setRange(0, max(0, n - 1))
            w.blockSignals(False)
        self.total.setText(f"/ {max(0, n - 1)}")

    def set_current(self, t: int) -> None:
        for w in (self.slider, self.spin):
            w.blockSignals(True)
            w.setValue(t)
            w.blockSignals(False)
        self.strip.set_current(t)

    def set_playing(self, playing: bool) -> None:
        icon = QStyle.StandardPixmap.SP_MediaPause if playing else QStyle.StandardPixmap.SP_MediaPlay
        self.play_button.setIcon(self.style().standardIcon(icon))
