"""Navigation and view handlers named in the action table: frames, playback, zoom, overlay, tools."""

from PySide6.QtWidgets import QMessageBox

from annotator import actions as action_table
from annotator import overlay, settings


class ViewMixin:
    # -- navigation and view handlers (named in the action table) ----------------------------------
    def goto_frame(self, t: int) -> None:
        if self.doc is not None:
            self.doc.set_frame(self.doc.n - 1 if t < 0 else t)

    def step_frame(self, delta: int) -> None:
        if self.doc is not None:
            self.doc.set_frame(self.doc.frame + delta)

    def step_keyframe(self, direction: int) -> None:
        keys = sorted(set().union(*self.doc.keyframes().values())) if self.doc.keyframes() else []
        t = self.doc.frame
        cands = [k for k in keys if (k > t if direction > 0 else k < t)]
        if cands:
            self.doc.set_frame(cands[0] if direction > 0 else cands[-1])

    def next_likely_wrong(self) -> None:
        """Walk the engine's ranking of frames most likely wrong, worst first."""
        if self.doc is None:
            return
        try:
            ranking = list(self.doc.session.frames_most_likely_wrong(50))
        except Exception:
            ranking = []
        if not ranking:
            self.statusBar().showMessage("No confidence yet: propagate first.", 4000)
            return
        t = self.doc.frame
        nxt = ranking[(ranking.index(t) + 1) % len(ranking)] if t in ranking else ranking[0]
        self.doc.set_frame(nxt)
        conf = self.doc.confidence[nxt]
        self.statusBar().showMessage(f"Frame {nxt}: rank {ranking.index(nxt) + 1} of the least sure"
                                     + ("" if conf != conf else f" (confidence {conf:.2f})"), 4000)

    def toggle_play(self) -> None:
        if self.doc is None:
            return
        if self._play.isActive():
            self._play.stop()
        else:
            if self.doc.frame >= self.doc.n - 1:
                self.doc.set_frame(0)
            self._play.start(int(1000 / min(30.0, max(1.0, self.doc.video.fps or 25.0))))
        self.timeline.set_playing(self._play.isActive())

    def _play_tick(self) -> None:
        if self.doc.frame >= self.doc.n - 1:
            self._play.stop()
            self.timeline.set_playing(False)
        else:
            self.doc.set_frame(self.doc.frame + 1)

    def fit_view(self) -> None:
        self.canvas.fit()

    def actual_size(self) -> None:
        self.canvas.actual_size()

    def zoom(self, factor: float) -> None:
        self.canvas.zoom_by(factor)

    def set_overlay_mode(self, mode: str) -> None:
        self.overlay_mode = mode
        self.actions_by_id[f"overlay_{mode}"].setChecked(True)
        self.overlay_combo.blockSignals(True)
        self.overlay_combo.setCurrentIndex(overlay.MODES.index(mode))
        self.overlay_combo.blockSignals(False)
        self.opacity_slider.setEnabled(mode == "filled")
        settings.put("overlay/mode", mode)
        self.refresh_canvas()

    def cycle_overlay(self) -> None:
        self.set_overlay_mode(overlay.MODES[(overlay.MODES.index(self.overlay_mode) + 1) % len(overlay.MODES)])

    def _on_opacity(self, value: int) -> None:
        self.opacity = value / 100.0
        settings.put("overlay/opacity", self.opacity)
        self.refresh_canvas()

    def set_tool(self, tool: str) -> None:
        self.tool = tool
        self.actions_by_id[f"tool_{tool}"].setChecked(True)
        self.canvas.set_tool(tool)
        self._update_status()

    def change_brush(self, factor: float) -> None:
        v = self.brush_spin.value()
        self.brush_spin.setValue(max(v + (1 if factor > 1 else -1), int(round(v * factor))) if factor > 1
                                 else min(v - 1, int(round(v * factor))))

    def _on_brush_size(self, value: int) -> None:
        self.canvas.set_brush_radius(value)
        settings.put("tools/brush", value)

    def show_help(self) -> None:
        self.help_dialog = action_table.HelpDialog(self)
        self.help_dialog.show()

    def show_about(self) -> None:
        QMessageBox.about(self, "About VOS Annotator",
                          "Annotate objects in videos: click, scribble or paint on any frame, propagate "
                          "through the video with pixel-wise metric learning, correct, and export.")
