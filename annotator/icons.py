"""Tool icons drawn with QPainter at run time (no image files to ship or theme)."""

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPainterPath, QPen, QPixmap, QPolygonF

GREEN, RED, FG = QColor(88, 200, 110), QColor(235, 90, 80), QColor(225, 228, 232)


def _canvas(size=32):
    pm = QPixmap(size, size)
    pm.fill(Qt.GlobalColor.transparent)
    p = QPainter(pm)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.scale(size / 32, size / 32)
    return pm, p


def _sign(p, color, plus, cx=16, cy=16, r=11):
    p.setPen(QPen(color, 2.5))
    p.setBrush(QColor(color.red(), color.green(), color.blue(), 60))
    p.drawEllipse(QPointF(cx, cy), r, r)
    p.setPen(QPen(FG, 3))
    p.drawLine(QPointF(cx - 5, cy), QPointF(cx + 5, cy))
    if plus:
        p.drawLine(QPointF(cx, cy - 5), QPointF(cx, cy + 5))


def _squiggle(p, color):
    path = QPainterPath(QPointF(4, 22))
    path.cubicTo(QPointF(9, 6), QPointF(14, 28), QPointF(19, 14))
    path.cubicTo(QPointF(22, 6), QPointF(26, 10), QPointF(28, 8))
    p.setPen(QPen(color, 3.2, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap))
    p.drawPath(path)


def tool_icon(tool: str) -> QIcon:
    pm, p = _canvas()
    if tool in ("click+", "click-"):
        _sign(p, GREEN if tool == "click+" else RED, tool == "click+")
    elif tool in ("scribble+", "scribble-"):
        positive = tool == "scribble+"
        _squiggle(p, GREEN if positive else RED)
        p.setPen(QPen(FG, 2.5))
        p.drawLine(QPointF(20, 26), QPointF(28, 26))
        if positive:
            p.drawLine(QPointF(24, 22), QPointF(24, 30))
    elif tool == "brush":
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(110, 160, 240))
        p.drawEllipse(QRectF(5, 5, 22, 22))
        p.setPen(QPen(FG, 1.5, Qt.PenStyle.DashLine))
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawEllipse(QRectF(2, 2, 28, 28))
    elif tool == "eraser":
        p.translate(16, 16)
        p.rotate(-35)
        p.setPen(QPen(FG, 1.5))
        p.setBrush(QColor(240, 150, 170))
        p.drawRoundedRect(QRectF(-12, -6, 14, 12), 2, 2)
        p.setBrush(QColor(200, 205, 212))
        p.drawRoundedRect(QRectF(2, -6, 10, 12), 2, 2)
    elif tool == "polygon":
        pts = [QPointF(5, 10), QPointF(17, 4), QPointF(28, 14), QPointF(22, 28), QPointF(8, 24)]
        p.setPen(QPen(QColor(250, 200, 70), 2))
        p.setBrush(QColor(250, 200, 70, 70))
        p.drawPolygon(QPolygonF(pts))
        p.setBrush(FG)
        p.setPen(Qt.PenStyle.NoPen)
        for q in pts:
            p.drawEllipse(q, 2.4, 2.4)
    p.end()
    return QIcon(pm)


def propagate_icon(direction: str) -> QIcon:
    pm, p = _canvas()
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(QColor(110, 170, 245))
    right = QPolygonF([QPointF(17, 7), QPointF(29, 16), QPointF(17, 25)])
    left = QPolygonF([QPointF(15, 7), QPointF(3, 16), QPointF(15, 25)])
    if direction in ("forward", "both"):
        p.drawPolygon(right)
    if direction in ("backward", "both"):
        p.drawPolygon(left)
    p.setBrush(FG)
    p.drawRect(QRectF(14.5, 6, 3, 20))
    p.end()
    return QIcon(pm)


def view_icon(kind: str) -> QIcon:
    """'fit' (corners pointing out), 'actual' (1:1), 'help' (?)."""
    pm, p = _canvas()
    p.setPen(QPen(FG, 2.4, Qt.PenStyle.SolidLine, Qt.PenCapStyle.RoundCap, Qt.PenJoinStyle.RoundJoin))
    if kind == "fit":
        for sx, sy in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
            cx, cy = 16 + sx * 11, 16 + sy * 11
            p.drawLine(QPointF(cx, cy), QPointF(cx - sx * 7, cy))
            p.drawLine(QPointF(cx, cy), QPointF(cx, cy - sy * 7))
        p.drawRect(QRectF(10, 11, 12, 10))
    else:
        font = p.font()
        font.setBold(True)
        font.setPixelSize(15 if kind == "actual" else 20)
        p.setFont(font)
        if kind == "help":
            p.drawEllipse(QRectF(3, 3, 26, 26))
        p.drawText(QRectF(0, 0, 32, 32), Qt.AlignmentFlag.AlignCenter, "1:1" if kind == "actual" else "?")
    p.end()
    return QIcon(pm)
