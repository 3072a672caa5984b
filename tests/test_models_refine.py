"""Edges: the guided filter pulls an upscaled matte onto the photo's edge; decontamination removes colour spill."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from models.refine import decontaminate, guided_filter, refine_alpha


def disc_scene(height: int = 1280, width: int = 1918) -> tuple[np.ndarray, np.ndarray]:
    """A red disc on a green background, and its exact (anti-aliased) alpha."""
    alpha = np.zeros((height * 4, width * 4), np.float32)
    cv2.circle(alpha, (width * 2, height * 2), height * 3 // 2, 1.0, -1)
    alpha = cv2.resize(alpha, (width, height), interpolation=cv2.INTER_AREA)
    red, green = np.array([220, 30, 30], np.float32), np.array([40, 200, 60], np.float32)
    image = alpha[..., None] * red + (1 - alpha[..., None]) * green
    return (image + 0.5).astype(np.uint8), alpha


def test_refine_alpha_moves_an_upscaled_blurry_matte_towards_the_true_edge() -> None:
    image, truth = disc_scene()
    small = cv2.resize(truth, (1024, 683), interpolation=cv2.INTER_AREA)
    blurry = cv2.resize(cv2.GaussianBlur(small, (0, 0), 1.5), truth.shape[::-1], interpolation=cv2.INTER_LINEAR)
    refined = refine_alpha(image, blurry)
    assert refined.shape == truth.shape and refined.dtype == np.float32
    assert 0.0 <= refined.min() and refined.max() <= 1.0
    band = cv2.dilate(((truth > 0.01) & (truth < 0.99)).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    before = np.abs(blurry - truth)[band].mean()
    after = np.abs(refined - truth)[band].mean()
    assert after < 0.9 * before


def test_refine_alpha_leaves_mattes_no_larger_than_the_model_input_alone() -> None:
    image, truth = disc_scene(360, 480)
    assert refine_alpha(image, truth) is truth


def test_guided_filter_with_a_flat_guide_is_a_box_blur_and_keeps_constants() -> None:
    flat = np.full((64, 64), 0.5, np.float32)
    ones = np.ones((64, 64), np.float32)
    assert np.allclose(guided_filter(flat, ones, 4, 1e-3), 1.0, atol=1e-5)
    step = np.zeros((64, 64), np.float32)
    step[:, 32:] = 1
    out = guided_filter(flat, step, 4, 1e-3)
    assert 0.2 < out[10, 31] < 0.8 and out[10, 10] == pytest.approx(0.0, abs=1e-5)


def test_decontaminate_removes_the_background_colour_from_edge_pixels() -> None:
    image, alpha = disc_scene(320, 480)
    fg = decontaminate(image, alpha)
    assert fg.shape == image.shape and fg.dtype == np.uint8
    edge = (alpha > 0.1) & (alpha < 0.9)
    assert edge.sum() > 100
    green_before = image[edge][:, 1].astype(float).mean()
    green_after = fg[edge][:, 1].astype(float).mean()
    assert green_before > 90 and green_after < 60  # the red disc's edge no longer carries the green
    solid = alpha >= 1.0
    assert np.array_equal(fg[solid], image[solid]), "opaque pixels keep their colour"
    # composited on white, no green halo: every edge pixel is closer to red-over-white than to green
    over_white = alpha[..., None] * fg + (1 - alpha[..., None]) * 255.0
    assert (over_white[edge][:, 1] < over_white[edge][:, 0] + 1).all()


def test_decontaminate_checks_its_inputs() -> None:
    image, alpha = disc_scene(32, 48)
    with pytest.raises(ValueError):
        decontaminate(image, alpha[:10])
    with pytest.raises(ValueError):
        decontaminate(image[..., 0], alpha)


def test_decontaminate_large_image_recovers_foreground_colour_at_edges() -> None:
    """The half-size estimate used for big photos still removes the old background's colour from the edge."""
    import cv2

    h, w = 1400, 2000
    alpha = np.zeros((h, w), np.float32)
    cv2.ellipse(alpha, (1000, 700), (600, 300), 0, 0, 360, 1.0, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), 4)
    fg, bg = np.array([200, 30, 30], np.float32), np.array([20, 200, 20], np.float32)
    img = (alpha[..., None] * fg + (1 - alpha[..., None]) * bg).astype(np.uint8)
    out = decontaminate(img, alpha)
    edge = (alpha > 0.2) & (alpha < 0.8)
    assert np.abs(out[edge].mean(0) - fg).max() < 15  # was ~90 off before decontamination
    assert (out[alpha >= 0.99] == img[alpha >= 0.99]).all()  # solid pixels keep the photo's colour
