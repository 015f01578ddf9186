"""The propagation settings group: what refines each propagated frame, and whether the view follows the front.

Refiners are named by what they do, with their measured effect as tooltip (README, "Measured figures":
six DAVIS 2016 sequences held out from training, `vos-engine evaluate` and `vos-engine bench`).
"""

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QFormLayout, QGroupBox

from annotator import settings

FOLLOW_KEY = "propagation/follow_front"
REFINERS = {   # engine name: (what the annotator reads, what it was measured to do)
    "none": ("Plain masks (recommended)",
             "Masks straight from the nearest-neighbour retrieval, nothing added.\n"
             "Measured: J&F 0.786 on six held-out DAVIS sequences, 69 frames/s; neither refinement "
             "below beats it on average."),
    "parts": ("Track object parts (slower, no gain on average)",
              "Tracks parts of each object to drop look-alikes elsewhere in the frame (after FAVOS).\n"
              "Measured: J&F 0.782 against 0.786 plain (5 of 6 sequences worse), 50 frames/s instead of 69."),
    "modulation": ("Sharpen with a small network (slowest, mixed)",
                   "A small network adapted to each object redraws its mask (after OSMN).\n"
                   "Measured: J&F 0.777 against 0.786 plain; +0.08 on one sequence, -0.12 on another; "
                   "23 frames/s instead of 69."),
}


class PropagationPanel(QGroupBox):
    """Refinement combo (the session's choice, kept in the project) and the follow-the-front preference."""
    refinerChosen = Signal(str)   # engine name

    def __init__(self, parent=None):
        super().__init__("Propagation", parent)
        self.refiner = QComboBox()
        self.refiner.activated.connect(lambda _i: self.refinerChosen.emit(self.refiner.currentData()))
        self.refiner.currentIndexChanged.connect(
            lambda _i: self.refiner.setToolTip(REFINERS.get(self.refiner.currentData(), ("", ""))[1]))
        self.follow = QCheckBox("Follow the propagation front")
        self.follow.setToolTip("Show each frame as it is propagated; off: the view stays on your frame")
        self.follow.setChecked(settings.get(FOLLOW_KEY, False, bool))
        self.follow.toggled.connect(lambda on: settings.put(FOLLOW_KEY, on))
        form = QFormLayout(self)
        form.setContentsMargins(8, 4, 8, 4)
        form.addRow("Refinement", self.refiner)
        form.addRow(self.follow)

    def set_refiners(self, names: list[str], current: str) -> None:
        self.refiner.clear()
        for name in names:
            label, tip = REFINERS.get(name, (name, ""))
            self.refiner.addItem(label, name)
            self.refiner.setItemData(self.refiner.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.refiner.setCurrentIndex(max(0, self.refiner.findData(current)))

    def follow_front(self) -> bool:
        return self.follow.isChecked()
