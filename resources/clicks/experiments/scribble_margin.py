"""A correction scribble's change kept only where the click model is sure: the experiment of the top README's
"Strokes that stay marked" (measured, not shipped). Run from a checkout:

    python resources/clicks/experiments/scribble_margin.py MARGIN interactive-eval \
        ../shared/data/davis2016-train --kfold CLICK_FOLDS BOUNDARY_FOLDS --embedding-cache /tmp/emb --user robot

A scribble on a frame that already shows its object then adds only where the model's probability is above
0.5 + MARGIN and removes only where it is below 0.5 - MARGIN (clicks and first strokes as shipped). The model's
grid probability is shifted by the margin before `model_edit` thresholds it at 0.5: the upsampler is linear, so
that is the same test. The rest of the arguments go to `vos-engine` unchanged.
"""

import sys

from engine import interaction
from engine.cli import main


class Shifted:
    """A click model whose grid probability is moved by ``shift`` (not clipped: the threshold is what counts)."""

    def __init__(self, model, shift: float):
        self.model, self.shift = model, shift

    def grid_probability(self, *args):
        return self.model.grid_probability(*args) + self.shift


def patch(margin: float) -> None:
    edit = interaction.model_edit

    def model_edit(ids, emb, obj, strokes, image, model, *args, **kwargs):
        points, positive = strokes[-1]
        if len(points) > 1 and (ids == obj).any():
            model = Shifted(model, -margin if positive else margin)
        return edit(ids, emb, obj, strokes, image, model, *args, **kwargs)

    interaction.model_edit = model_edit


if __name__ == "__main__":
    patch(float(sys.argv[1]))
    sys.argv = ["vos-engine"] + sys.argv[2:]
    sys.exit(main())
