"""Helpers for the GUI tests (no tests here): a tiny synthetic video, a ready project, mouse gestures."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint, QPointF, Qt
from PySide6.QtGui import QMouseEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication, QMessageBox

W, H, SQUARE = 160, 120, 36
OBJECT_COLOR = (255, 0, 255)


def square_at(t: int) -> tuple[int, int]:
    """Top-left (x, y) of the moving square in frame t."""
    return 20 + 6 * t, 30 + 2 * t


def make_frames(folder: Path, n: int = 10) -> Path:
    """n frames 160x120: a textured blue-green background and a moving orange checkered square."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.stack([40 + 30 * np.sin(xx / 9.0), 90 + 40 * np.cos(yy / 7.0), 150 + 0 * xx], -1)
    for t in range(n):
        img = base + rng.normal(0, 6, base.shape)
        x, y = square_at(t)
        check = ((xx - x) // 6 + (yy - y) // 6) % 2
        inside = (xx >= x) & (xx < x + SQUARE) & (yy >= y) & (yy < y + SQUARE)
        img[inside] = np.where(check[inside, None] == 1, [250, 140, 20], [200, 60, 10])
        rgb = np.clip(img, 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"{t:05d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return folder


def square_mask(t: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    x, y = square_at(t)
    m[y:y + SQUARE, x:x + SQUARE] = True
    return m


def make_project(root: Path, n: int = 10, annotate: bool = True) -> Path:
    """A saved project on a synthetic video with object 1 ('square') marked on frame 0."""
    from engine import Session
    frames = make_frames(root / "frames", n)
    folder = root / "square.vosproj"
    s = Session.create(folder, frames)
    obj = s.add_object(name="square", category="toy", color=OBJECT_COLOR)
    if annotate:
        s.set_object_mask(0, obj.id, square_mask(0))
    s.save()
    s.close()
    return folder


def view_pos(canvas, x: float, y: float) -> QPoint:
    """Viewport position of frame pixel (x, y)'s centre."""
    return canvas.mapFromScene(QPointF(x + 0.5, y + 0.5))


def _send(canvas, kind, pos: QPoint, button, buttons):
    vp = canvas.viewport()
    ev = QMouseEvent(kind, QPointF(pos), QPointF(vp.mapToGlobal(pos)), button, buttons,
                     Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(vp, ev)


def drag(canvas, points, button=Qt.MouseButton.LeftButton) -> None:
    """Press at the first frame point, move through the others, release at the last."""
    pos = [view_pos(canvas, x, y) for x, y in points]
    _send(canvas, QEvent.Type.MouseButtonPress, pos[0], button, button)
    for p in pos[1:]:
        _send(canvas, QEvent.Type.MouseMove, p, Qt.MouseButton.NoButton, button)
    _send(canvas, QEvent.Type.MouseButtonRelease, pos[-1], button, Qt.MouseButton.NoButton)


def click(canvas, x, y, button=Qt.MouseButton.LeftButton, double=False) -> None:
    """QTest click (or double-click) on frame pixel (x, y)."""
    p = view_pos(canvas, x, y)
    QTest.mouseClick(canvas.viewport(), button, Qt.KeyboardModifier.NoModifier, p)
    if double:
        QTest.mouseDClick(canvas.viewport(), button, Qt.KeyboardModifier.NoModifier, p)


# ---- fixtures shared by the GUI test modules (imported there by name) ----


def iou(a, b) -> float:
    return float((a & b).sum()) / max(1, float((a | b).sum()))


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The engine's network on one thread: on a busy 2-core machine two threads thrash (seconds per frame)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """Settings, recent list and autosaves in a per-test folder."""
    monkeypatch.setenv("VOS_ANNOTATOR_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def messages(monkeypatch):
    """Message boxes recorded instead of shown; `answer['question']` answers questions."""
    log, answer = [], {"question": QMessageBox.StandardButton.Discard}

    def record(kind):
        def show(_parent, title, text, *_a, **_k):
            log.append((kind, title, text))
            return answer["question"] if kind == "question" else QMessageBox.StandardButton.Ok
        return staticmethod(show)

    for kind in ("critical", "warning", "information", "question"):
        monkeypatch.setattr(QMessageBox, kind, record(kind))
    return log, answer


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path)


def wait_idle(qtbot, window, timeout=60_000):
    qtbot.waitUntil(lambda: window.jobs.idle(), timeout=timeout)


def open_window(qtbot, path):
    from annotator.main_window import MainWindow
    w = MainWindow()
    qtbot.addWidget(w)
    w.resize(1100, 720)
    w.show()
    qtbot.waitExposed(w)
    assert w.files.open_path(path)
    wait_idle(qtbot, w)
    return w


@pytest.fixture
def window(qtbot, project, messages):
    w = open_window(qtbot, project)
    yield w
    w.interactive = False
    w.close()


def centre(t):
    x, y = square_at(t)
    return x + SQUARE // 2, y + SQUARE // 2
