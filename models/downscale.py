"""Working copies at a bounded long side: the one sizing rule every model stage uses for its analysis copy."""

from __future__ import annotations

import cv2
import numpy as np


def long_side_scale(height: int, width: int, side: float) -> float:
    """The factor (at most 1: never upscale) that brings the long side of a height x width image to `side`."""
    return min(1.0, side / max(height, width))


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """OpenCV's (width, height) of a height x width image scaled by `scale`, each side at least 1 pixel."""
    return max(1, round(width * scale)), max(1, round(height * scale))


def downscale(image: np.ndarray, side: float, interpolation: int = cv2.INTER_AREA) -> tuple[np.ndarray, float]:
    """The image with its long side at most `side` (the image itself when it is already that small), and the scale
    applied."""
    height, width = image.shape[:2]
    scale = long_side_scale(height, width, side)
    if scale < 1.0:
        image = cv2.resize(image, scaled_size(height, width, scale), interpolation=interpolation)
    return image, scale
