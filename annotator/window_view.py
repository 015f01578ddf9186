"""View controller: navigation, playback, zoom, overlay mode, the current tool and brush size, help.

It owns the view state (overlay mode and opacity, the tool, the playback timer); the window draws with it.
"""

from PySide6.QtCore import QObject, QTimer
from PySide6.QtWidgets import QMessageBox

from annotator import actions as action_table
from annotator import overlay, settings

LEAST_SURE = 50   # frames in a least-sure ranking (G walks them)


class ViewController(QObject):
    def __init__(self, window):
        super().__init__(window)
        self.w = window
        mode = settings.get("overlay/mode", "filled")
        self.overlay_mode = mode if mode in overlay.MODES else "filled"
        self.opacity = float(settings.get("overlay/opacity", 0.5))
        self.tool = "click+"
        self.help_dialog = None
        self.visited: set[int] = set()     # frames the least-sure walk counts as seen (reset per project)
        self._play = QTimer(self)
        self._play.timeout.connect(self._play_tick)

    # -- navigation ------------------------------------------------------------------------------
    def goto_frame(self, t: int) -> None:
        if self.w.doc is not None:
            self.w.doc.set_frame(self.w.doc.n - 1 if t < 0 else t)

    def step_frame(self, delta: int) -> None:
        if self.w.doc is not None:
            self.w.doc.set_frame(self.w.doc.frame + delta)

    def step_keyframe(self, direction: int) -> None:
        """Go to the previous / next keyframe of the selected object (of any object when none is selected)."""
        doc = self.w.doc
        if doc is None:
            return
        every = doc.keyframes()
        keys = sorted(every.get(doc.selected, ()) if doc.selected is not None else set().union(*every.values()))
        cands = [k for k in keys if (k > doc.frame if direction > 0 else k < doc.frame)]
        if cands:
            doc.set_frame(cands[0] if direction > 0 else cands[-1])

    def next_likely_wrong(self, oid: int | None = None) -> None:
        """Go to the least-sure frame not visited yet (of all objects, or of object `oid`), from rank 1.

        The frame on screen counts as visited; when every ranked frame was, the walk starts again at
        rank 1. A propagation's new results are unvisited again (forget_visited). Corrected frames
        become keyframes, which the rankings leave out.
        """
        doc = self.w.doc
        if doc is None:
            return
        who = "" if oid is None else f" for {doc.objects()[oid].name}"
        ranking = doc.least_sure(oid, LEAST_SURE)
        if not ranking:
            self.w.say(f"No confidence{who} yet: propagate first.", 4000)
            return
        self.visited.add(doc.frame)
        fresh = [t for t in ranking if t not in self.visited]
        again = "" if fresh else f" (all {len(ranking)} visited: from rank 1 again)"
        if not fresh:
            self.visited.difference_update(ranking)
            fresh = ranking
        t = fresh[0]
        self.visited.add(t)
        doc.set_frame(t)
        conf = doc.frame_confidence(t, oid)
        self.w.say(f"Least sure{who}: rank {ranking.index(t) + 1} of {len(ranking)}, frame {t + 1}"
                   + ("" if conf != conf else f", confidence {conf:.2f}") + again, 6000)

    def next_likely_wrong_of_selected(self) -> None:
        doc = self.w.doc
        if doc is not None and doc.selected is not None:
            self.next_likely_wrong(doc.selected)

    def forget_visited(self, frames) -> None:
        self.visited.difference_update(frames)

    # -- playback --------------------------------------------------------------------------------
    def toggle_play(self) -> None:
        doc = self.w.doc
        if doc is None:
            return
        if self._play.isActive():
            self._play.stop()
        else:
            if doc.frame >= doc.n - 1:
                doc.set_frame(0)
            self._play.start(int(1000 / min(30.0, max(1.0, doc.video.fps or 25.0))))
        self.w.timeline.set_playing(self._play.isActive())

    def playing(self) -> bool:
        return self._play.isActive()

    def stop_play(self) -> None:
        self._play.stop()
        self.w.timeline.set_playing(False)

    def _play_tick(self) -> None:
        doc = self.w.doc
        if doc.frame >= doc.n - 1:
            self.stop_play()
        else:
            doc.set_frame(doc.frame + 1)

    # -- zoom ------------------------------------------------------------------------------------
    def fit_view(self) -> None:
        self.w.canvas.fit()

    def actual_size(self) -> None:
        self.w.canvas.actual_size()

    def zoom(self, factor: float) -> None:
        self.w.canvas.zoom_by(factor)

    # -- overlay ---------------------------------------------------------------------------------
    def set_overlay_mode(self, mode: str) -> None:
        self.overlay_mode = mode
        self.w.actions_by_id[f"overlay_{mode}"].setChecked(True)
        combo = self.w.overlay_combo
        combo.blockSignals(True)
        combo.setCurrentIndex(overlay.MODES.index(mode))
        combo.blockSignals(False)
        self.w.opacity_slider.setEnabled(mode == "filled")
        settings.put("overlay/mode", mode)
        self.w.refresh_canvas()

    def cycle_overlay(self) -> None:
        self.set_overlay_mode(overlay.MODES[(overlay.MODES.index(self.overlay_mode) + 1) % len(overlay.MODES)])

    def set_opacity(self, percent: int) -> None:
        self.opacity = percent / 100.0
        settings.put("overlay/opacity", self.opacity)
        self.w.refresh_canvas()

    # -- tools -----------------------------------------------------------------------------------
    def set_tool(self, tool: str) -> None:
        self.tool = tool
        self.w.actions_by_id[f"tool_{tool}"].setChecked(True)
        self.w.canvas.set_tool(tool)
        self.w.update_status()

    def change_brush(self, factor: float) -> None:
        spin = self.w.brush_spin
        v = spin.value()
        spin.setValue(max(v + 1, int(round(v * factor))) if factor > 1 else min(v - 1, int(round(v * factor))))

    def set_brush_size(self, value: int) -> None:
        self.w.canvas.set_brush_radius(value)
        settings.put("tools/brush", value)

    def toggle_history(self) -> None:
        dock = self.w.history_dock
        dock.setVisible(not dock.isVisible())

    # -- help ------------------------------------------------------------------------------------
    def show_help(self) -> None:
        self.help_dialog = action_table.HelpDialog(self.w)
        self.help_dialog.show()

    def show_about(self) -> None:
        QMessageBox.about(self.w, "About VOS Annotator",
                          "Annotate objects in videos: click, scribble or paint on any frame, propagate "
                          "through the video with pixel-wise metric learning, correct, and export.")
