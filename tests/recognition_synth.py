"""Helpers (no tests here): synthetic textured images, a seeded pattern pasted into different backgrounds."""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image


def pattern(seed: int, size: int = 240) -> np.ndarray:
    """A textured RGB pattern (random shapes and text) that SIFT finds many keypoints on."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), 255, np.uint8)
    for _ in range(60):
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        kind = rng.integers(0, 3)
        p = tuple(int(v) for v in rng.integers(0, size, 2))
        if kind == 0:
            cv2.circle(img, p, int(rng.integers(3, 25)), color, -1)
        elif kind == 1:
            q = tuple(int(v) for v in rng.integers(0, size, 2))
            cv2.rectangle(img, p, q, color, int(rng.integers(1, 4)))
        else:
            cv2.putText(img, str(rng.integers(10, 99)), p, cv2.FONT_HERSHEY_SIMPLEX, 0.8, color, 2)
    return img


def scene(pattern_rgb: np.ndarray, seed: int, size: tuple[int, int] = (480, 360), at: tuple[int, int] = (60, 50),
          scale: float = 1.0, angle: float = 0.0) -> np.ndarray:
    """The pattern, scaled and rotated, pasted at `at` into a smooth background made from seed."""
    w, h = size
    rng = np.random.default_rng(1000 + seed)
    c0, c1 = rng.integers(0, 255, 3), rng.integers(0, 255, 3)
    t = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    bg = np.broadcast_to(c0 * (1 - t) + c1 * t, (h, w, 3)).astype(np.uint8).copy()
    ph, pw = pattern_rgb.shape[:2]
    m = cv2.getRotationMatrix2D((pw / 2, ph / 2), angle, scale)
    m[:, 2] += np.array(at, dtype=np.float64) + np.array([pw * (scale - 1) / 2, ph * (scale - 1) / 2])
    warped = cv2.warpAffine(pattern_rgb, m, (w, h), flags=cv2.INTER_LINEAR)
    inside = cv2.warpAffine(np.full((ph, pw), 255, np.uint8), m, (w, h)) > 128
    bg[inside] = warped[inside]
    return bg


def jpeg(rgb: np.ndarray) -> bytes:
    """JPEG bytes of an RGB array."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=92)
    return buf.getvalue()
