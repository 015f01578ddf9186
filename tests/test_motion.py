"""The motion prior: previous-frame fractions warped along DIS optical flow."""

import time

import cv2
import numpy as np

from engine.motion import FlowWarper
from engine.upsample import label_fractions


def _textured(h, w, seed=0):
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
    return cv2.GaussianBlur(cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC), (5, 5), 0)


def test_warp_follows_a_camera_pan():
    H, W, dx, dy = 240, 320, 16, 8  # the scene moves 2 cells right and 1 down
    scene = _textured(H + 40, W + 40, seed=3)
    prev, cur = scene[20:20 + H, 20:20 + W], scene[20 - dy:20 - dy + H, 20 - dx:20 - dx + W]
    ids = np.zeros((H, W), np.uint8)
    ids[80:144, 80:144] = 1
    moved = np.zeros_like(ids)
    moved[80 + dy:144 + dy, 80 + dx:144 + dx] = 1
    grid = (H // 8, W // 8)
    prev_fr = label_fractions(ids, [0, 1], grid)
    warped = FlowWarper().warp(prev, cur, prev_fr)
    assert warped.shape == prev_fr.shape
    np.testing.assert_allclose(warped.sum(axis=0), 1.0, atol=1e-5)
    target = label_fractions(moved, [0, 1], grid)[1]
    assert np.abs(warped[1] - target).mean() < 0.25 * np.abs(prev_fr[1] - target).mean()


def test_still_frames_keep_the_mask_and_the_flow_is_cheap():
    image = _textured(480, 854)
    ids = np.zeros((480, 854), np.uint8)
    ids[100:300, 200:500] = 1
    fr = label_fractions(ids, [0, 1], (60, 107))
    warper = FlowWarper()
    warper.warp(image, image, fr)
    t0 = time.perf_counter()
    out = warper.warp(image, image, fr)
    elapsed = time.perf_counter() - t0
    np.testing.assert_allclose(out, fr, atol=0.02)
    assert elapsed < 0.05  # a few ms at 854x480 (budget: propagation >= 40 frames/s)
