"""The three variants of the top README's "Negative scribbles refer with their background" (measured, not shipped).
Run from a checkout:

    python resources/clicks/experiments/stroke_sides.py VARIANT interactive-eval \
        ../shared/data/davis2016-train --kfold CLICK_FOLDS BOUNDARY_FOLDS --embedding-cache /tmp/emb [--user robot]

VARIANT ``positive-scribbles``: a positive scribble too refers only with the cells that the frame's mask now puts
at least ``pure_fraction`` in the object (the "both signs" rows, with ``--user robot``). VARIANT
``positive-neighbours``: the same for the look-alike cells beside a positive scribble only, its own cells as
shipped (with ``--user robot``). VARIANT ``negative-clicks``: a negative click refers only with the cells of its
seed vectors that the mask now puts in the background, as a negative scribble does (the clicker, without
``--user``). The rest of the arguments go to `vos-engine` unchanged.
"""

import sys

import numpy as np

from engine import interaction
from engine.cli import main
from engine.session import Session
from engine.upsample import label_fractions


def _side_vectors(emb, points, frac, positive, pure, own_cells_too: bool = True) -> np.ndarray:
    """The seed vectors of the stroke's cells that the mask (``frac``, the object's fraction per cell) puts at
    least ``pure`` on its side (of the cells beside the stroke only, when not ``own_cells_too``)."""
    side = frac >= pure if positive else frac <= 1.0 - pure
    if not own_cells_too:
        side |= interaction._seed_cells(points, emb.shape[:2], 0)
    return interaction.seed_vectors(emb, points, within=side)


def patch(variant: str) -> None:
    if variant in ("positive-scribbles", "positive-neighbours"):
        shipped = interaction.scribble_references

        def scribble_references(emb, points, ids, obj, positive, pure):
            if not positive:
                return shipped(emb, points, ids, obj, positive, pure)
            grid = emb.shape[:2]
            frac = label_fractions(ids, [obj], grid)[0]
            vecs = _side_vectors(emb, points, frac, positive, pure, variant == "positive-scribbles")
            return interaction._own_side(vecs, emb, interaction._seed_cells(points, grid, 0), frac, positive, pure)

        interaction.scribble_references = scribble_references
    elif variant == "negative-clicks":
        shipped = Session._references

        def _references(self, it):
            if it.kind == "scribble" or it.positive:
                return shipped(self, it)
            emb = self.embedding(it.frame)
            frac = label_fractions(self._annotation.masks.get(it.frame), [it.object_id], emb.shape[:2])[0]
            return _side_vectors(emb, it.points, frac, False, self._propagator.config.pure_fraction)

        Session._references = _references
    else:
        raise SystemExit(f"unknown variant {variant!r}: positive-scribbles, positive-neighbours or negative-clicks")


if __name__ == "__main__":
    patch(sys.argv[1])
    sys.argv = ["vos-engine"] + sys.argv[2:]
    sys.exit(main())
