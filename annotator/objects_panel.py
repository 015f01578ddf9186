"""Objects panel: one row per object (colour, name, category, visible, locked) plus add/remove.

A passive view: it shows what `set_objects` gives it and emits requests; the window applies
them through undoable commands and calls `set_objects` again.
"""

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPalette, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QStyle, QTableWidget,
                               QTableWidgetItem, QToolButton, QVBoxLayout, QWidget)

COL_COLOR, COL_NAME, COL_CAT, COL_VISIBLE, COL_LOCK = range(5)


def swatch(rgb, size=14) -> QIcon:
    pm = QPixmap(size, size)
    pm.fill(QColor(*rgb))
    return QIcon(pm)


class ObjectsPanel(QWidget):
    selected = Signal(int)
    addRequested = Signal()
    removeRequested = Signal(int)
    colorRequested = Signal(int)
    changed = Signal(int, str, object)      # object id, field (name|category|hidden|locked), value

    def __init__(self, parent=None):
        super().__init__(parent)
        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["", "Name", "Category", "Show", "Lock"])
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        palette = self.table.palette()   # Fusion draws a check box's frame from Window: light, it shows on dark rows
        palette.setColor(QPalette.ColorRole.Window, QColor(150, 154, 160))
        self.table.setPalette(palette)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.DoubleClicked
                                   | QAbstractItemView.EditTrigger.EditKeyPressed)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(COL_NAME, QHeaderView.ResizeMode.Stretch)
        for col in (COL_COLOR, COL_CAT, COL_VISIBLE, COL_LOCK):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.table.itemSelectionChanged.connect(self._on_selection)
        self.table.itemChanged.connect(self._on_item_changed)
        self.table.cellDoubleClicked.connect(self._on_double_click)
        self.add_button = self._button("Add object (N)", QStyle.StandardPixmap.SP_FileDialogNewFolder,
                                       self.addRequested.emit, "Add")
        self.remove_button = self._button("Remove the selected object (Del)",
                                          QStyle.StandardPixmap.SP_TrashIcon, self._remove, "Remove")
        self.color_button = self._button("Change the selected object's colour", None, self._color, "Colour…")
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        for b in (self.add_button, self.remove_button, self.color_button):
            row.addWidget(b)
        row.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(row)
        layout.addWidget(self.table)
        self._ids: list[int] = []

    def _button(self, tip, icon, slot, text) -> QToolButton:
        b = QToolButton(text=text, toolTip=tip)
        if icon is not None:
            b.setIcon(self.style().standardIcon(icon))
            b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        b.clicked.connect(slot)
        return b

    def set_objects(self, objects: dict, selected: int | None) -> None:
        """Rebuild the rows from `objects` ({id: ObjectInfo}) without emitting change signals."""
        self.table.blockSignals(True)
        self._ids = list(objects)
        self.table.setRowCount(len(self._ids))
        for row, oid in enumerate(self._ids):
            info = objects[oid]
            color = QTableWidgetItem(swatch(info.color), str(oid))
            color.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
            color.setToolTip("Double-click to change the colour")
            self.table.setItem(row, COL_COLOR, color)
            self.table.setItem(row, COL_NAME, QTableWidgetItem(info.name))
            self.table.setItem(row, COL_CAT, QTableWidgetItem(info.category))
            for col, flag in ((COL_VISIBLE, not info.hidden), (COL_LOCK, info.locked)):
                item = QTableWidgetItem()
                item.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable
                              | Qt.ItemFlag.ItemIsUserCheckable)
                item.setCheckState(Qt.CheckState.Checked if flag else Qt.CheckState.Unchecked)
                self.table.setItem(row, col, item)
        self.table.blockSignals(False)
        self.select(selected)

    def select(self, oid: int | None) -> None:
        self.table.blockSignals(True)
        if oid in self._ids:
            self.table.selectRow(self._ids.index(oid))
        else:
            self.table.clearSelection()
        self.table.blockSignals(False)

    def current_id(self) -> int | None:
        rows = self.table.selectionModel().selectedRows()
        return self._ids[rows[0].row()] if rows else None

    def _on_selection(self) -> None:
        oid = self.current_id()
        if oid is not None:
            self.selected.emit(oid)

    def _on_item_changed(self, item: QTableWidgetItem) -> None:
        oid = self._ids[item.row()]
        col = item.column()
        if col == COL_NAME:
            self.changed.emit(oid, "name", item.text().strip() or f"object {oid}")
        elif col == COL_CAT:
            self.changed.emit(oid, "category", item.text().strip() or "object")
        elif col == COL_VISIBLE:
            self.changed.emit(oid, "hidden", item.checkState() != Qt.CheckState.Checked)
        elif col == COL_LOCK:
            self.changed.emit(oid, "locked", item.checkState() == Qt.CheckState.Checked)

    def _on_double_click(self, row: int, col: int) -> None:
        if col == COL_COLOR:
            self.colorRequested.emit(self._ids[row])

    def _remove(self) -> None:
        oid = self.current_id()
        if oid is not None:
            self.removeRequested.emit(oid)

    def _color(self) -> None:
        oid = self.current_id()
        if oid is not None:
            self.colorRequested.emit(oid)
