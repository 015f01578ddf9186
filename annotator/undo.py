"""Undo/redo: every edit is a QUndoCommand holding engine snapshots taken before and after it.

The edit has already been applied when the command is pushed, so the first redo() is a no-op
(QUndoStack calls redo() on push). A whole propagation is one command.
"""

from PySide6.QtGui import QUndoCommand


class SnapshotCommand(QUndoCommand):
    """Restores `before` on undo and `after` on redo; `frames` tells the views what to refresh."""

    def __init__(self, doc, text: str, before, after, frames, select_after=None, select_before=None):
        super().__init__(text)
        self.doc, self.before, self.after = doc, before, after
        self.frames = list(frames)
        self.select_before, self.select_after = select_before, select_after
        self._pushed = False

    def redo(self) -> None:
        if not self._pushed:
            self._pushed = True
            return
        self.doc.restore(self.after, self.frames, self.select_after)

    def undo(self) -> None:
        self.doc.restore(self.before, self.frames, self.select_before)
