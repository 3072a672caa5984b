"""A soft contact shadow under a car, following its footprint."""

from __future__ import annotations

import cv2
import numpy as np


def car_shadow(alpha: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """Shadow alpha (float32 HxW, 0-1) under the subject: a tight dark contact line under the tyres and body and a
    wider soft penumbra, both built from the bottom band of the silhouette flattened onto the ground."""
    h, w = alpha.shape
    solid = alpha > 0.5
    cols = np.nonzero(solid.any(axis=0))[0]
    if len(cols) == 0 or opacity <= 0:
        return np.zeros_like(alpha, dtype=np.float32)
    rows = np.nonzero(solid.any(axis=1))[0]
    top, bottom = int(rows.min()), int(rows.max())
    height = bottom - top + 1
    # lowest solid pixel per column: the ground contact line of wheels and sills
    lowest = np.where(solid.any(axis=0), h - 1 - np.argmax(solid[::-1, :], axis=0), -1)
    ground = bottom
    band = max(2, height // 12)
    footprint = np.zeros((h, w), np.float32)
    for x in cols:
        gap = ground - lowest[x]  # how high the body floats above the ground here
        strength = float(np.clip(1.0 - gap / band, 0.25, 1.0))
        footprint[max(ground - 1, 0):min(ground + 2, h), x] = strength
    width_span = cols.max() - cols.min() + 1
    contact = cv2.GaussianBlur(footprint, (0, 0), sigmaX=max(1.5, width_span / 300), sigmaY=max(1.0, height / 120))
    # penumbra: the footprint stretched a little and blurred widely
    soft = np.zeros_like(footprint)
    y0, y1 = max(ground - band // 2, 0), min(ground + band // 2 + 1, h)
    soft[y0:y1, cols.min():cols.max() + 1] = 0.6
    soft = cv2.GaussianBlur(soft, (0, 0), sigmaX=max(3.0, width_span / 40), sigmaY=max(2.0, band / 2))
    shadow = np.clip(contact / max(contact.max(), 1e-6) * 0.9 + soft / max(soft.max(), 1e-6) * 0.45, 0, 1)
    return (shadow * opacity).astype(np.float32)


def add_shadow(rgba: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """The cut-out with its shadow drawn behind it (black, semi-transparent), RGBA uint8."""
    alpha = rgba[..., 3].astype(np.float32) / 255.0
    shadow = car_shadow(alpha, opacity)
    out_a = alpha + shadow * (1 - alpha)
    safe = np.where(out_a > 0, out_a, 1)[..., None]
    rgb = rgba[..., :3].astype(np.float32) * alpha[..., None] / safe  # shadow colour is black
    out = np.concatenate([rgb, out_a[..., None] * 255.0], axis=2)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
