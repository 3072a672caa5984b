"""The one long-side sizing rule of the model stages (models/downscale.py)."""

from __future__ import annotations

import cv2
import numpy as np

from models.downscale import downscale, long_side_scale, scaled_size


def test_downscale_bounds_the_long_side_and_keeps_the_aspect() -> None:
    image = np.arange(1200 * 800, dtype=np.float32).reshape(1200, 800)
    small, scale = downscale(image, 300)
    assert small.shape == (300, 200)
    assert scale == 0.25
    assert small.dtype == np.float32


def test_downscale_never_upscales_and_returns_the_same_array() -> None:
    image = np.zeros((100, 60, 3), np.uint8)
    small, scale = downscale(image, 300)
    assert small is image
    assert scale == 1.0


def test_a_thin_image_keeps_at_least_one_pixel() -> None:
    assert scaled_size(3000, 2, long_side_scale(3000, 2, 100)) == (1, 100)


def test_interpolation_is_the_callers() -> None:
    image = np.zeros((40, 40), np.uint8)
    image[::2, ::2] = 255  # a checkerboard of dots: area-averaging greys it, nearest keeps 0/255
    area, _ = downscale(image, 20)
    nearest, _ = downscale(image, 20, cv2.INTER_NEAREST)
    assert set(np.unique(nearest)) <= {0, 255}
    assert 0 < int(area.max()) < 255
