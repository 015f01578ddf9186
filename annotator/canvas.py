"""The frame view: zoom, pan, overlay, and the annotation tools' mouse gestures.

Scene coordinates are frame pixel coordinates at working size (x right, y down; pixel (x, y)
covers [x, x+1) x [y, y+1)). The canvas only reports gestures as signals in those coordinates;
the main window turns them into engine edits.
"""

from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QEvent, QPoint, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QCursor, QImage, QPainterPath, QPen, QPixmap
from PySide6.QtWidgets import (QGraphicsEllipseItem, QGraphicsItem, QGraphicsPathItem, QGraphicsPixmapItem,
                               QGraphicsScene, QGraphicsView)


@dataclass(frozen=True)
class Tool:
    name: str     # side panel: "Positive click"
    short: str    # status bar: "Click +"


TOOLS = {   # the one table of tools, in toolbar order (menu texts and keys: annotator.actions)
    "click+": Tool("Positive click", "Click +"), "click-": Tool("Negative click", "Click −"),
    "scribble+": Tool("Positive scribble", "Scribble +"), "scribble-": Tool("Negative scribble", "Scribble −"),
    "brush": Tool("Brush", "Brush"), "eraser": Tool("Eraser", "Eraser"),
    "polygon": Tool("Polygon / lasso", "Polygon"),
}
STROKE_TOOLS = ("scribble+", "scribble-", "brush", "eraser")
MARKER_R, HOVER_PX = 5, 6          # click marker radius, how near (view pixels) the mouse hovers a marker
POSITIVE, NEGATIVE, HOVERED = QColor(60, 200, 90), QColor(235, 60, 60), QColor(255, 214, 10)
_POLY_KEYS = (Qt.Key.Key_Return, Qt.Key.Key_Enter, Qt.Key.Key_Escape, Qt.Key.Key_Backspace)


class Canvas(QGraphicsView):
    clicked = Signal(int, int, bool)          # x, y, positive
    stroked = Signal(str, list, bool)         # tool, [(x, y), ...], positive
    polygonDone = Signal(list)                # [(x, y), ...] closed outline
    promptDeleted = Signal(object)            # the hovered prompt, on Delete
    promptMenu = Signal(object, QPoint)       # the hovered prompt, right-clicked; global position
    cursorMoved = Signal(int, int)            # x, y under the mouse (-1, -1 outside)
    playToggled = Signal()                    # space tapped without dragging
    zoomChanged = Signal(float)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setBackgroundBrush(QColor(32, 33, 36))
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMouseTracking(True)
        self.setFrameShape(QGraphicsView.Shape.NoFrame)
        self._frame = QGraphicsPixmapItem()
        self._overlay = QGraphicsPixmapItem()
        self._overlay.setZValue(1)
        self._preview = QGraphicsPathItem()
        self._preview.setZValue(2)
        self._cursor = QGraphicsEllipseItem()
        self._cursor.setZValue(3)
        self._cursor.setPen(QPen(QColor(255, 255, 255, 220), 0))
        self._cursor.setVisible(False)
        for item in (self._frame, self._overlay, self._preview, self._cursor):
            self.scene().addItem(item)
        self._markers: list = []      # (prompt, item) of the frame's clicks and scribbles
        self.hovered = None            # the prompt under the mouse, highlighted
        self._hint = self.scene().addSimpleText(
            "Open a project (Ctrl+O), or start one from a video or a folder of frames (Ctrl+N).\n"
            "You can also drop a video or a project folder here.")
        self._hint.setBrush(QColor(150, 154, 160))
        self.tool = "click+"
        self.brush_radius = 8
        self.color = QColor(255, 80, 80)
        self.editable = True
        self._fitted = True
        self._pan_from = None
        self._space = False
        self._space_used = False
        self._points: list[tuple[float, float]] = []
        self._stroke_tool = None
        self._poly_drag = False

    # -- content -------------------------------------------------------------------------------
    def set_frame(self, image: QImage) -> None:
        first = self._frame.pixmap().isNull() or self._frame.pixmap().size() != image.size()
        self._hint.setVisible(False)
        self._frame.setPixmap(QPixmap.fromImage(image))
        self.scene().setSceneRect(QRectF(0, 0, image.width(), image.height()))
        if first:
            self.fit()

    def set_overlay(self, image: QImage | None, mask_only: bool = False) -> None:
        self._overlay.setVisible(image is not None)
        if image is not None:
            self._overlay.setPixmap(QPixmap.fromImage(image))
        self._frame.setVisible(not mask_only)

    def set_prompts(self, prompts, names: dict[int, str]) -> None:
        """Markers of the frame's prompts (the engine's Prompt): clicks as green (positive) or red (negative)
        dots, scribbles as their strokes; `names` {object id: name} for the tooltips."""
        for _prompt, item in self._markers:
            self.scene().removeItem(item)
        self._markers, self.hovered = [], None
        for prompt in prompts:
            color = POSITIVE if prompt.positive else NEGATIVE
            if prompt.kind == "click":
                x, y = prompt.points[0]
                item = QGraphicsEllipseItem(-MARKER_R, -MARKER_R, 2 * MARKER_R, 2 * MARKER_R)
                item.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations)
                item.setPos(x + 0.5, y + 0.5)
                item.setBrush(color)
            else:
                path = QPainterPath()
                path.moveTo(prompt.points[0][0] + 0.5, prompt.points[0][1] + 0.5)
                for x, y in prompt.points[1:]:
                    path.lineTo(x + 0.5, y + 0.5)
                item = QGraphicsPathItem(path)
            sign = "Positive" if prompt.positive else "Negative"
            item.setToolTip(f"{sign} {prompt.kind} on {names.get(prompt.object_id, prompt.object_id)}")
            item.setZValue(1.5)
            self.scene().addItem(item)
            self._markers.append((prompt, item))
            self._style_marker(prompt, item, False)

    def _style_marker(self, prompt, item, hovered: bool) -> None:
        color = HOVERED if hovered else (POSITIVE if prompt.positive else NEGATIVE)
        if prompt.kind == "click":
            item.setPen(QPen(HOVERED if hovered else QColor(255, 255, 255), 3 if hovered else 1.5))
        else:
            pen = QPen(color, 5 if hovered else 3, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap,
                       Qt.PenJoinStyle.RoundJoin)
            pen.setCosmetic(True)
            item.setPen(pen)

    def _hover(self, pos: QPointF) -> None:
        """Highlight the marker under the mouse (the nearest within HOVER_PX view pixels)."""
        best, best_d = None, HOVER_PX
        for prompt, item in self._markers:
            pts = [self.mapFromScene(QPointF(x + 0.5, y + 0.5)) for x, y in prompt.points]
            d = _polyline_distance(pos.x(), pos.y(), [(p.x(), p.y()) for p in pts])
            if prompt.kind == "click":
                d = max(0.0, d - MARKER_R)
            if d <= best_d:
                best, best_d = (prompt, item), d
        hovered = best[0] if best else None
        if hovered is self.hovered:
            return
        for prompt, item in self._markers:
            self._style_marker(prompt, item, prompt is hovered)
        self.hovered = hovered
        self.viewport().setToolTip(best[1].toolTip() if best else "")

    def frame_size(self) -> tuple[int, int]:
        pm = self._frame.pixmap()
        return pm.width(), pm.height()

    def set_tool(self, tool: str) -> None:
        self.cancel_gesture()
        self.tool = tool
        self._update_cursor_item(self._cursor.rect().center())
        self._apply_cursor()

    def set_brush_radius(self, radius: int) -> None:
        self.brush_radius = max(1, int(radius))
        self._update_cursor_item(self._cursor.rect().center())

    def set_editable(self, editable: bool) -> None:
        self.editable = editable
        if not editable:
            self.cancel_gesture()
        self._apply_cursor()

    # -- zoom ----------------------------------------------------------------------------------
    def fit(self) -> None:
        if not self.sceneRect().isEmpty():
            self.fitInView(self.sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)
        self._fitted = True
        self.zoomChanged.emit(self.zoom())

    def actual_size(self) -> None:
        self.resetTransform()
        self._fitted = False
        self.zoomChanged.emit(1.0)

    def zoom(self) -> float:
        return self.transform().m11()

    def zoom_by(self, factor: float) -> None:
        z = self.zoom()
        factor = max(0.05 / z, min(40.0 / z, factor))
        self.scale(factor, factor)
        self._fitted = False
        self.zoomChanged.emit(self.zoom())

    def wheelEvent(self, event):
        self.zoom_by(1.15 ** (event.angleDelta().y() / 120.0))

    def resizeEvent(self, event):
        super().resizeEvent(event)
        if self._fitted:
            self.fit()

    # -- mouse ---------------------------------------------------------------------------------
    def _scene_xy(self, pos) -> tuple[float, float]:
        p = self.mapToScene(pos)
        return p.x(), p.y()

    def _inside(self, x: float, y: float) -> bool:
        w, h = self.frame_size()
        return 0 <= x < w and 0 <= y < h

    def _clamped(self, x: float, y: float) -> tuple[int, int]:
        w, h = self.frame_size()
        return int(min(max(x, 0), w - 1)), int(min(max(y, 0), h - 1))

    def mousePressEvent(self, event):
        button = event.button()
        if button == Qt.MouseButton.MiddleButton or (button == Qt.MouseButton.LeftButton and self._space):
            self._pan_from = event.position()
            self._space_used = True
            self.viewport().setCursor(Qt.CursorShape.ClosedHandCursor)
            return
        if not self.editable or button not in (Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton):
            return
        x, y = self._scene_xy(event.position().toPoint())
        right = button == Qt.MouseButton.RightButton
        if right and self.hovered is not None:     # a marker's menu, not a negative edit
            self.promptMenu.emit(self.hovered, event.globalPosition().toPoint())
            return
        if self.tool in ("click+", "click-"):
            if self._inside(x, y):
                positive = (self.tool == "click+") != right
                self.clicked.emit(int(x), int(y), positive)
        elif self.tool in STROKE_TOOLS:
            self._stroke_tool = self._flip(self.tool) if right else self.tool
            self._points = [(x, y)]
            self._draw_preview()
        elif self.tool == "polygon" and not right:
            self._points.append((x, y))
            self._poly_drag = len(self._points) == 1
            self._draw_preview()

    def mouseMoveEvent(self, event):
        x, y = self._scene_xy(event.position().toPoint())
        self._update_cursor_item(QPointF(x, y))
        if not event.buttons():
            self._hover(event.position())
        self.cursorMoved.emit(*((int(x), int(y)) if self._inside(x, y) else (-1, -1)))
        if self._pan_from is not None:
            delta = event.position() - self._pan_from
            self._pan_from = event.position()
            self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() - int(delta.x()))
            self.verticalScrollBar().setValue(self.verticalScrollBar().value() - int(delta.y()))
            return
        if event.buttons() and self._stroke_tool is not None:
            self._points.append((x, y))
            self._draw_preview()
        elif event.buttons() & Qt.MouseButton.LeftButton and self.tool == "polygon" and self._poly_drag:
            self._points.append((x, y))
            self._draw_preview()

    def mouseReleaseEvent(self, event):
        if self._pan_from is not None:
            self._pan_from = None
            self._apply_cursor()
            return
        if self._stroke_tool is not None:
            tool, points = self._stroke_tool, [self._clamped(*p) for p in self._points]
            self._stroke_tool, self._points = None, []
            self._draw_preview()
            kind = "eraser" if tool == "eraser" else ("brush" if tool == "brush" else "scribble")
            self.stroked.emit(kind, _dedupe(points), tool in ("scribble+", "brush"))
        elif self.tool == "polygon" and self._poly_drag and len(self._points) > 8:
            self.finish_polygon()  # press-drag-release = lasso
        else:
            self._poly_drag = False

    def mouseDoubleClickEvent(self, event):
        if self.tool == "polygon" and self.editable:
            self.finish_polygon()
        else:
            self.mousePressEvent(event)

    def leaveEvent(self, event):
        self._cursor.setVisible(False)
        self.cursorMoved.emit(-1, -1)
        super().leaveEvent(event)

    # -- polygon -------------------------------------------------------------------------------
    def finish_polygon(self) -> None:
        points = _dedupe([self._clamped(*p) for p in self._points])
        self._points, self._poly_drag = [], False
        self._draw_preview()
        if len(points) >= 3:
            self.polygonDone.emit(points)

    def cancel_gesture(self) -> None:
        self._points, self._stroke_tool, self._poly_drag = [], None, False
        self._draw_preview()

    # -- keys ----------------------------------------------------------------------------------
    def event(self, event):
        if event.type() == QEvent.Type.ShortcutOverride:
            key = event.key()
            if key == Qt.Key.Key_Space and not event.modifiers():
                event.accept()
                return True
            if key in _POLY_KEYS and self.tool == "polygon" and self._points:
                event.accept()
                return True
            if key == Qt.Key.Key_Delete and self.hovered is not None and self.editable:
                event.accept()       # Delete on a marker deletes the prompt, not the object
                return True
        return super().event(event)

    def keyPressEvent(self, event):
        key = event.key()
        if key == Qt.Key.Key_Space:
            if not event.isAutoRepeat():
                self._space, self._space_used = True, False
                self.viewport().setCursor(Qt.CursorShape.OpenHandCursor)
            return
        if key == Qt.Key.Key_Delete and self.hovered is not None and self.editable:
            return self.promptDeleted.emit(self.hovered)
        if self.tool == "polygon" and self._points:
            if key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                return self.finish_polygon()
            if key == Qt.Key.Key_Escape:
                return self.cancel_gesture()
            if key == Qt.Key.Key_Backspace:
                self._points.pop()
                return self._draw_preview()
        super().keyPressEvent(event)

    def keyReleaseEvent(self, event):
        if event.key() == Qt.Key.Key_Space and not event.isAutoRepeat():
            self._space = False
            self._apply_cursor()
            if not self._space_used:
                self.playToggled.emit()
            return
        super().keyReleaseEvent(event)

    # -- drawing helpers -----------------------------------------------------------------------
    @staticmethod
    def _flip(tool: str) -> str:
        return {"scribble+": "scribble-", "scribble-": "scribble+", "brush": "eraser", "eraser": "brush"}[tool]

    def _draw_preview(self) -> None:
        path = QPainterPath()
        if self._points:
            path.moveTo(*self._points[0])
            for p in self._points[1:]:
                path.lineTo(*p)
        tool = self._stroke_tool or self.tool
        color = QColor(self.color)
        if tool in ("scribble-", "eraser", "click-"):
            color = QColor(240, 240, 240)
        if tool in ("brush", "eraser"):
            color.setAlpha(140)
            pen = QPen(color, 2 * self.brush_radius, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap,
                       Qt.PenJoinStyle.RoundJoin)
        else:
            pen = QPen(color, 2.5 / max(self.zoom(), 1e-3), Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap)
            pen.setCosmetic(False)
        if tool == "polygon" and len(self._points) >= 2:
            path.closeSubpath()
            fill = QColor(self.color)
            fill.setAlpha(70)
            self._preview.setBrush(QBrush(fill))
        else:
            self._preview.setBrush(Qt.BrushStyle.NoBrush)
        self._preview.setPen(pen)
        self._preview.setPath(path)

    def _update_cursor_item(self, center: QPointF) -> None:
        show = self.tool in ("brush", "eraser") and self.editable and self._inside(center.x(), center.y())
        r = self.brush_radius
        self._cursor.setRect(QRectF(center.x() - r, center.y() - r, 2 * r, 2 * r))
        self._cursor.setVisible(show)

    def _apply_cursor(self) -> None:
        shape = Qt.CursorShape.CrossCursor if self.editable else Qt.CursorShape.ForbiddenCursor
        self.viewport().setCursor(QCursor(shape))


def _polyline_distance(x: float, y: float, points) -> float:
    """Distance from (x, y) to the polyline through `points` (one point: to that point)."""
    p = np.asarray(points, float).reshape(-1, 2)
    a, b = p[:-1] if len(p) > 1 else p, p[1:] if len(p) > 1 else p
    ab = b - a
    t = np.clip(((x - a[:, 0]) * ab[:, 0] + (y - a[:, 1]) * ab[:, 1]) / np.maximum((ab ** 2).sum(1), 1e-9), 0, 1)
    return float(np.hypot(a[:, 0] + t * ab[:, 0] - x, a[:, 1] + t * ab[:, 1] - y).min())


def _dedupe(points: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for p in points:
        if not out or out[-1] != p:
            out.append(p)
    return out
