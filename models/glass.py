"""See-through car windows (remove.bg's `semitransparency` for `type=car`), by classic vision, no extra weights.

1. The backdrop behind the car is estimated by inpainting the car's silhouette from the photo around it (at a small
   working size): what a window would show if the glass were perfectly clear.
2. Glass is looked for in the car's upper band (from the roof down to `band` of the car's height, inside the silhouette eroded by a rim): low-saturation pixels that are either dark (below `dark`, or `darker` times the lower body's median
   brightness: tinted glass, the interior)
   or close to the estimated backdrop (the studio seen through side windows). The candidates are cleaned with an
   opening and a closing; components smaller than `min_area` of the car, or starting lower than `reach` below the
   roof (tail lights, plates), go, and holes are filled (head rests).
3. Inside the glass the photo is read as a dark tint over the backdrop, I = a * tint + (1 - a) * B: alpha is the
   luminance the glass takes away, 1 - L / L_B (L_B at least `bright_floor`: a dark street behind a
   windscreen does not make it clear), after a brightness closing that removes dark details smaller than
   `detail` of the car (the backdrop's logo letters seen through a window), clamped to [`alpha_min`, `alpha_max`]
   and smoothed. The glass colour is the tint that equation gives, so the old backdrop does not tint the new one.

Where it fails: a dark car's roof and pillars look like tinted glass (they turn partly see-through); a light
interior behind clear glass reads as backdrop; reflections of the sky are lost (the tint is smooth); glass below
the band (a low side window in a high-angle shot) stays opaque.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class GlassParams:
    """Knobs of the glass finder; lengths are fractions of the car's box height unless said otherwise. `max_sat`,
    `dark`, `darker`, `rim` and `close_r` were chosen on half of distractors/parts.json's glass photos and checked
    on the other half (the same choice won on either half)."""

    work_size: int = 384
    band: float = 0.4
    reach: float = 0.25
    rim: float = 0.02
    max_sat: float = 0.75
    dark: float = 0.45
    darker: float = 0.95
    backdrop_dist: float = 0.12
    open_r: float = 0.015
    close_r: float = 0.05
    min_area: float = 0.01
    detail: float = 0.08
    alpha_min: float = 0.12
    alpha_max: float = 0.75
    bright_floor: float = 0.9


@dataclass
class Glass:
    """The glass found on a photo: `mask` (float32 HxW, 0-1, feathered), `alpha` and `colour` (HxWx3 uint8) to use
    inside it."""

    mask: np.ndarray
    alpha: np.ndarray
    colour: np.ndarray


def _disk(radius: float) -> np.ndarray:
    r = max(1, int(round(radius)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros(mask.shape, np.uint8)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled > 0


def backdrop(rgb: np.ndarray, car: np.ndarray, grow: int) -> np.ndarray:
    """The photo with the car (grown by `grow` pixels) inpainted from around it: float32 RGB in 0-1."""
    hole = cv2.dilate(car.astype(np.uint8), _disk(grow))
    filled = cv2.inpaint(rgb, hole, 3, cv2.INPAINT_TELEA)
    return filled.astype(np.float32) * (1.0 / 255.0)


def glass_mask(rgb: np.ndarray, car: np.ndarray, bg: np.ndarray, params: GlassParams = GlassParams()) -> np.ndarray:
    """Boolean glass mask on a working-size photo (`rgb` uint8), its car silhouette and estimated backdrop."""
    p = params
    ys, xs = np.nonzero(car)
    if ys.size == 0:
        return np.zeros(car.shape, bool)
    car_h = float(ys.max() - ys.min() + 1)
    height, width = car.shape
    # the upper band: from the roof down to `band` of the car's height
    band = np.zeros(car.shape, bool)
    band[: int(ys.min() + p.band * car_h) + 1] = True
    inner = cv2.erode(car.astype(np.uint8), _disk(p.rim * car_h)) > 0
    img = rgb.astype(np.float32) * (1.0 / 255.0)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    sat = hsv[..., 1].astype(np.float32) / 255.0
    val = hsv[..., 2].astype(np.float32) / 255.0
    near_backdrop = np.linalg.norm(img - bg, axis=2) < p.backdrop_dist
    lower = inner & ~band
    body = float(np.median(val[lower])) if lower.any() else 1.0
    dark = val < max(p.dark, p.darker * body)
    candidate = band & inner & (sat < p.max_sat) & (dark | near_backdrop)
    cand = cv2.morphologyEx(candidate.astype(np.uint8), cv2.MORPH_OPEN, _disk(p.open_r * car_h))
    cand = cv2.morphologyEx(cand, cv2.MORPH_CLOSE, _disk(p.close_r * car_h)) & inner.astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(cand, connectivity=8)
    if n <= 1:
        return np.zeros(car.shape, bool)
    big = np.zeros(n, bool)
    big[1:] = (stats[1:, cv2.CC_STAT_AREA] >= p.min_area * np.count_nonzero(car)) & (
        stats[1:, cv2.CC_STAT_TOP] <= ys.min() + p.reach * car_h)
    return _fill_holes(big[labels]) & inner


def find_glass(rgb: np.ndarray, alpha: np.ndarray, params: GlassParams = GlassParams()) -> Glass | None:
    """The glass of the car(s) in `rgb` (uint8 HxWx3) whose cut-out matte is `alpha` (float32 HxW, 0-1); None when
    there is none."""
    p = params
    height, width = alpha.shape
    scale = min(1.0, p.work_size / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
    small_a = cv2.resize(alpha, size, interpolation=cv2.INTER_AREA) if scale < 1 else alpha
    car = small_a > 0.5
    ys = np.nonzero(car.any(axis=1))[0]
    if ys.size == 0:
        return None
    car_h = float(ys[-1] - ys[0] + 1)
    bg = backdrop(small, car, max(1, round(0.01 * car_h)))
    mask = glass_mask(small, car, bg, p)
    if not mask.any():
        return None
    # alpha: what the glass takes from the backdrop's luminance, without details smaller than `detail`
    img = small.astype(np.float32) * (1.0 / 255.0)
    lum = img @ np.float32([0.299, 0.587, 0.114])
    lum_bg = np.maximum(bg @ np.float32([0.299, 0.587, 0.114]), p.bright_floor)
    kernel = _disk(p.detail * car_h / 2)
    closed = cv2.erode(cv2.dilate(np.where(mask, lum, 0.0).astype(np.float32), kernel),
                       kernel)  # a brightness closing inside the glass
    closed = np.where(mask, np.maximum(closed, lum), 0.0)
    a_small = np.clip(1.0 - closed / lum_bg, p.alpha_min, p.alpha_max)
    sigma = max(1.0, 0.02 * car_h)
    weight = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma) + 1e-4
    a_small = cv2.GaussianBlur((a_small * mask).astype(np.float32), (0, 0), sigma) / weight
    # the tint that alpha implies, smoothed the same way (the glass's own colour without the backdrop's)
    closed_rgb = np.stack([cv2.erode(cv2.dilate(np.where(mask, img[..., c], 0.0).astype(np.float32), kernel), kernel)
                           for c in range(3)], axis=2)
    tint = (closed_rgb - (1.0 - a_small[..., None]) * bg) / np.maximum(a_small[..., None], 0.05)
    tint = np.clip(tint, 0.0, 1.0) * mask[..., None]
    tint = cv2.GaussianBlur(tint.astype(np.float32), (0, 0), sigma) / weight[..., None]
    feather = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), max(0.7, 0.004 * car_h)) * mask
    if scale < 1:
        feather = cv2.resize(feather, (width, height), interpolation=cv2.INTER_LINEAR)
        a_small = cv2.resize(a_small.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
        tint = cv2.resize(tint, (width, height), interpolation=cv2.INTER_LINEAR)
    colour = (np.clip(tint, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return Glass(np.clip(feather, 0.0, 1.0).astype(np.float32), np.clip(a_small, 0.0, 1.0).astype(np.float32), colour)


def see_through(rgb: np.ndarray, alpha: np.ndarray, colour: np.ndarray,
                params: GlassParams = GlassParams()) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, colour) of a car cut-out with its windows made see-through: both change only inside the glass
    (alpha never rises), everything else is returned as given."""
    glass = find_glass(rgb, alpha, params)
    if glass is None:
        return alpha, colour
    m = glass.mask
    new_alpha = alpha * (1.0 - m) + np.minimum(alpha, glass.alpha) * m
    inside = m > 0
    new_colour = colour.copy()
    m3 = m[inside][:, None]
    new_colour[inside] = (colour[inside] * (1.0 - m3) + glass.colour[inside] * m3 + 0.5).astype(np.uint8)
    return new_alpha.astype(np.float32), new_colour
