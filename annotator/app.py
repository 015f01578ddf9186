"""`vos-annotator [PROJECT_DIR | VIDEO_FILE | FRAME_FOLDER] [--screenshot OUT.png]`.

No argument opens the writable copy of the sample project (see annotator.opening).
--screenshot opens, propagates if nothing was propagated yet (waiting for it), renders the
main window to a PNG and exits; it works with QT_QPA_PLATFORM=offscreen.
"""

import argparse
import sys
import time
import traceback
from importlib.metadata import version

from PySide6.QtCore import QCoreApplication, QEventLoop, QTimer
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vos-annotator", description="Annotate objects in videos.")
    p.add_argument("path", nargs="?", help="project folder, video file or folder of frames "
                                           "(default: a writable copy of the sample project)")
    p.add_argument("--screenshot", metavar="OUT.png", help="render the window to OUT.png and exit")
    p.add_argument("--frame", type=int, default=None, help="frame to show (with --screenshot)")
    p.add_argument("--size", default="1400x860", help="window size WxH (default 1400x860)")
    p.add_argument("--version", action="version", version=f"vos-annotator {version('vos-annotator')}")
    return p


def apply_theme(app: QApplication) -> None:
    """Fusion with a dark palette: easy on the eyes for hours and keeps mask colours readable."""
    app.setStyle("Fusion")
    pal = QPalette()
    base, window, text = QColor(30, 31, 34), QColor(43, 45, 49), QColor(222, 224, 228)
    for role, color in ((QPalette.ColorRole.Window, window), (QPalette.ColorRole.WindowText, text),
                        (QPalette.ColorRole.Base, base), (QPalette.ColorRole.AlternateBase, window),
                        (QPalette.ColorRole.ToolTipBase, window), (QPalette.ColorRole.ToolTipText, text),
                        (QPalette.ColorRole.Text, text), (QPalette.ColorRole.Button, QColor(52, 54, 59)),
                        (QPalette.ColorRole.ButtonText, text), (QPalette.ColorRole.BrightText, QColor(255, 90, 90)),
                        (QPalette.ColorRole.Highlight, QColor(64, 128, 214)),
                        (QPalette.ColorRole.HighlightedText, QColor(255, 255, 255)),
                        (QPalette.ColorRole.PlaceholderText, QColor(130, 134, 140))):
        pal.setColor(role, color)
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
        pal.setColor(QPalette.ColorGroup.Disabled, role, QColor(120, 123, 128))
    app.setPalette(pal)


def check_qt() -> None:
    """PySide6 6.12.0 drops a reference to None/True on many calls; a long session then aborts."""
    import PySide6
    if PySide6.__version__ == "6.12.0":
        print("warning: PySide6 6.12.0 has a reference-counting bug that crashes long sessions; "
              "install PySide6-Essentials<6.12 (6.11.2 works)", file=sys.stderr)


def make_app() -> QApplication:
    check_qt()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    QCoreApplication.setOrganizationName("vos-annotator")
    QCoreApplication.setApplicationName("VOS Annotator")
    apply_theme(app)
    return app


def wait_until(predicate, timeout: float) -> bool:
    """Run the event loop until `predicate()` holds or `timeout` seconds pass."""
    end = time.monotonic() + timeout
    loop = QEventLoop()
    while not predicate() and time.monotonic() < end:
        QTimer.singleShot(20, loop.quit)
        loop.exec()
    return predicate()


def take_screenshot(window, out: str, frame: int | None = None, timeout: float = 600) -> bool:
    """Propagate if needed, show a propagated frame, grab the window to `out`."""
    doc = window.doc
    keys = sorted(set().union(*doc.keyframes().values()))
    if not doc.has_propagation():
        annotated = [t for t in keys if doc.mask(t).any()]
        if annotated:
            doc.set_frame(annotated[0])
            window.jobs.propagate("both")
    ok = wait_until(window.jobs.idle, timeout)
    if frame is None:
        present = [t for t in range(doc.n) if doc.presence[t].any() and t not in keys]
        frame = present[len(present) // 2] if present else doc.frame
    window.view.goto_frame(frame)
    wait_until(lambda: False, 0.2)
    saved = window.grab().save(out)
    return saved and ok and not window.last_error   # an engine failure was printed


def install_excepthook(window) -> None:
    """An unexpected error in a slot becomes a message (details on stderr), not a silent traceback."""
    def hook(kind, value, tb):
        traceback.print_exception(kind, value, tb)
        if window.interactive and window.isVisible():
            from PySide6.QtWidgets import QMessageBox
            QMessageBox.warning(window, "Unexpected error",
                                f"{kind.__name__}: {value}\n\nYour work is still open; consider saving.")
    sys.excepthook = hook


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    app = make_app()
    from annotator.main_window import MainWindow  # after QApplication: widgets need it
    window = MainWindow()
    install_excepthook(window)
    w, h = (int(v) for v in args.size.lower().split("x"))
    window.resize(w, h)
    if args.screenshot:
        window.interactive = False
        window.show()
        if not window.files.open_path(args.path):
            return 1
        ok = take_screenshot(window, args.screenshot, args.frame)
        window.close()
        print(f"screenshot written to {args.screenshot}" if ok else "screenshot failed", file=sys.stderr)
        return 0 if ok else 1
    window.restore_layout()
    window.show()
    if not window.files.offer_recovery():
        window.files.open_path(args.path)
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
