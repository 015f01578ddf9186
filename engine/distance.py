"""The exact Euclidean distance transform, the same to the last bit wherever the array lies in memory.

OpenCV's precise distance transform rounds the last bit of its square roots differently depending on where
the input starts in memory (2 results for one mask at 64 offsets), and the click model's training amplified
those differences into other weights. The squared distance between two pixels is an integer, so rounding
OpenCV's square and taking numpy's (correctly rounded) square root gives one answer.
"""

import cv2
import numpy as np


def distance_to_zero(src: np.ndarray) -> np.ndarray:
    """(H, W) float32 distance of each pixel of the uint8 ``src`` to its nearest zero pixel."""
    d = cv2.distanceTransform(src, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.sqrt(np.round(d * d))


def distance_inside(mask: np.ndarray) -> np.ndarray:
    """(H, W) float32 distance of each pixel of ``mask`` to the nearest pixel outside it, the image's border
    counting as outside (0 outside the mask)."""
    padded = cv2.copyMakeBorder(np.asarray(mask).astype(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    return distance_to_zero(padded)[1:-1, 1:-1]
