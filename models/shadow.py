"""Artificial shadows for cut-outs: a car's soft contact shadow following its footprint, a drop shadow and a
cast ("3D") shadow on the floor. Each is a float32 HxW shadow alpha in [0, 1], drawn black behind the subject."""

from __future__ import annotations

import cv2
import numpy as np

from models.downscale import downscale

SHADOW_TYPES = ("car", "3d", "drop")
WORK_SIDE = 640  # shadows are soft: they are built at this size and scaled up


def _ground_line(lowest: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The line the subject stands on: the lower convex hull (largest y, image rows grow downwards) of each
    column's lowest solid pixel, i.e. the line through the tyres' contact points, evaluated at every column."""
    pts = [(int(x), int(lowest[x])) for x in cols]
    hull: list[tuple[int, int]] = []
    for p in pts:  # Andrew's monotone chain, keeping the chain below all points
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) >= 0:
                hull.pop()
            else:
                break
        hull.append(p)
    hx = np.array([p[0] for p in hull], np.float32)
    hy = np.array([p[1] for p in hull], np.float32)
    return np.interp(cols.astype(np.float32), hx, hy) if len(hull) > 1 else np.full(len(cols), hy[0], np.float32)


def car_shadow(alpha: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """A contact shadow: dark where the silhouette touches the ground line (tyres), lighter where the body floats
    above it (sills, bumpers), plus soft occlusion under the body and a wide penumbra along the footprint."""
    h, w = alpha.shape
    if opacity <= 0 or not (alpha > 0.5).any():
        return np.zeros((h, w), np.float32)
    small, f = downscale(alpha, WORK_SIDE)
    sh, sw = small.shape
    solid = small > 0.5
    has = solid.any(axis=0)
    cols = np.nonzero(has)[0]
    rows = np.nonzero(solid.any(axis=1))[0]
    height = int(rows.max() - rows.min() + 1)
    span = int(cols.max() - cols.min() + 1)
    lowest = np.where(has, sh - 1 - np.argmax(solid[::-1, :], axis=0), -1)
    ground = _ground_line(lowest, cols)
    gap = np.maximum(ground - lowest[cols], 0.0)
    band = max(2.0, height / 14.0)
    contact_strength = np.clip(1.0 - gap / band, 0.0, 1.0) ** 2

    contact = np.zeros((sh, sw), np.float32)
    occlusion = np.zeros((sh, sw), np.float32)
    penumbra = np.zeros((sh, sw), np.float32)
    reach = max(1, round(band / 3))
    for x, g, low, s in zip(cols, ground, lowest[cols], contact_strength, strict=True):
        gy = int(round(g))
        contact[max(gy - reach, 0):min(gy + reach + 1, sh), x] = s  # a patch under each tyre
        occlusion[max(int(low) - reach, 0):min(gy + reach + 1, sh), x] = 0.6  # the floor under the body
        penumbra[max(gy - int(band), 0):min(gy + int(0.6 * band) + 1, sh), x] = 1.0
    contact = cv2.GaussianBlur(contact, (0, 0), sigmaX=max(1.0, span / 200), sigmaY=max(0.8, band / 4))
    occlusion = cv2.GaussianBlur(occlusion, (0, 0), sigmaX=max(1.5, span / 120), sigmaY=max(1.0, band / 3))
    penumbra = cv2.GaussianBlur(penumbra, (0, 0), sigmaX=max(3.0, span / 30), sigmaY=max(2.0, band / 2))
    shadow = np.maximum(contact / max(float(contact.max()), 1e-6), occlusion)
    soft = penumbra / max(float(penumbra.max()), 1e-6) * 0.45
    shadow = np.clip(1.0 - (1.0 - shadow) * (1.0 - soft), 0.0, 1.0)  # the penumbra darkens, never past the contact
    return _full_size(shadow * opacity, (w, h))


def drop_shadow(alpha: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """The silhouette, offset down and to the right and blurred, as a flat object would throw on a wall."""
    h, w = alpha.shape
    if opacity <= 0:
        return np.zeros((h, w), np.float32)
    diag = float(np.hypot(h, w))
    dx, dy = diag * 0.012, diag * 0.018
    moved = cv2.warpAffine(alpha.astype(np.float32), np.float32([[1, 0, dx], [0, 1, dy]]), (w, h))
    return (cv2.GaussianBlur(moved, (0, 0), sigmaX=max(1.0, diag * 0.01)) * opacity).astype(np.float32)


def cast_shadow(alpha: np.ndarray, opacity: float = 0.5) -> np.ndarray:
    """A cast shadow on the floor, light from the front left: the silhouette flattened onto the ground behind the
    subject, sheared to the right, softer the further it falls, plus the car's contact shadow."""
    h, w = alpha.shape
    solid = alpha > 0.5
    if opacity <= 0 or not solid.any():
        return np.zeros((h, w), np.float32)
    rows = np.nonzero(solid.any(axis=1))[0]
    bottom, height = float(rows.max()), float(rows.max() - rows.min() + 1)
    squash, shear = 0.3, 0.5
    # y' = bottom - (bottom - y) * squash; x' = x + (bottom - y) * squash * shear
    m = np.float32([[1, -squash * shear, bottom * squash * shear], [0, squash, bottom * (1 - squash)]])
    flat = cv2.warpAffine(alpha.astype(np.float32), m, (w, h))
    near = cv2.GaussianBlur(flat, (0, 0), sigmaX=max(1.0, height * 0.01))
    far = cv2.GaussianBlur(flat, (0, 0), sigmaX=max(2.0, height * 0.05))
    depth = np.clip((bottom - np.arange(h, dtype=np.float32)) / max(height * squash, 1.0), 0, 1)[:, None]
    cast = (near * (1 - depth) + far * depth) * (1 - 0.6 * depth)
    return np.maximum(cast * 0.7 * opacity, car_shadow(alpha, opacity)).astype(np.float32)


def _full_size(shadow: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if shadow.shape[::-1] == size:
        return shadow.astype(np.float32)
    return cv2.resize(shadow, size, interpolation=cv2.INTER_LINEAR).astype(np.float32)


def make_shadow(alpha: np.ndarray, shadow_type: str = "car", opacity: float = 0.5) -> np.ndarray:
    """The shadow alpha of one of SHADOW_TYPES for a subject's alpha (float32 HxW in [0, 1])."""
    kind = shadow_type.lower()
    if kind == "car":
        return car_shadow(alpha, opacity)
    if kind == "drop":
        return drop_shadow(alpha, opacity)
    if kind == "3d":
        return cast_shadow(alpha, opacity)
    raise ValueError(f"unknown shadow type {shadow_type!r}; one of {', '.join(SHADOW_TYPES)}")


def add_shadow(rgba: np.ndarray, opacity: float = 0.5, shadow_type: str = "car") -> np.ndarray:
    """The cut-out with its shadow drawn behind it (black, semi-transparent), RGBA uint8."""
    alpha = rgba[..., 3].astype(np.float32) * (1.0 / 255.0)
    shadow = make_shadow(alpha, shadow_type, opacity)
    out_a = alpha + shadow * (1.0 - alpha)
    safe = np.where(out_a > 0, out_a, 1.0)[..., None]
    rgb = rgba[..., :3].astype(np.float32) * (alpha[..., None] / safe)  # the shadow's colour is black
    out = np.empty_like(rgba)
    out[..., :3] = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    out[..., 3] = np.clip(out_a * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out
