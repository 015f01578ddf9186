"""Objects never vanish without evidence.

A region tracked on the previous frame that loses every cell on this one is kept where retrieval
still gives it some probability inside its previous (motion-warped) region; only when retrieval gives
it less than ``floor`` everywhere there does it vanish. An object that did vanish is marked unsure
(confidence 0) on every frame of the gap, not only on the first one, so the user is led to all of it.
"""

from __future__ import annotations

import numpy as np

from engine.palette import present_ids


def keep_tracked(probs: np.ndarray, prev_fr: np.ndarray, floor: float) -> np.ndarray:
    """(L, h, w) grid probabilities -> the same, with vanished objects kept where evidence allows.

    prev_fr: (L, h, w) previous-frame fractions in the same label order (plane 0 = background).
    An object i with cells prev_fr[i] >= 0.5 but no arg-max cell now gets, inside that region, the
    cells where probs[i] >= floor raised just above the best other label, then renormalised.
    """
    arg = np.argmax(probs, axis=0)
    out = probs
    for i in range(1, len(probs)):
        region = prev_fr[i] >= 0.5
        if not region.any() or (arg == i).any():
            continue
        keep = region & (probs[i] >= floor)
        if not keep.any():
            continue  # retrieval says it is gone
        if out is probs:
            out = probs.copy()
        best_other = np.max(np.delete(out, i, axis=0), axis=0)
        out[i][keep] = np.maximum(out[i][keep], best_other[keep] * 1.01 + 1e-4)
    if out is probs:
        return probs
    return (out / out.sum(axis=0, keepdims=True)).astype(np.float32)


def present_objects(ids: np.ndarray, labels: list[int]) -> set[int]:
    """Objects of ``labels`` (0 excluded) with at least one pixel in the (H, W) uint8 ids."""
    found = set(present_ids(ids).tolist())
    return {lab for lab in labels if lab != 0 and lab in found}
