"""See-through car windows (remove.bg's `semitransparency` for `type=car`), by classic vision, no extra weights.

1. The backdrop behind the car is estimated by inpainting the car's silhouette from the photo around it (at a small
   working size): what a window would show if the glass were perfectly clear.
2. Glass is found by GrabCut on the working-size photo, seeded from where glass sits on a car: the rows from
   `core_top` to `core_bot` of the car's height below its top are probably glass, the rest of the upper band (down
   to `band`) maybe, the lower body, the rim of the silhouette and everything outside it never (outside pixels take
   the lower body's colour, so a studio backdrop seen through the windows is not learnt as "not glass"). GrabCut's
   colour models then split the windows from the paint, pillars and roof. Components smaller than `min_area` of
   the car, or starting lower than `reach` below its top, go, and holes are filled (head rests).
3. Inside the glass the photo is read as a dark tint over the backdrop, I = a * tint + (1 - a) * B: alpha is the
   luminance the glass takes away, 1 - L / L_B (L_B at least `bright_floor`: a dark street behind a
   windscreen does not make it clear), after a brightness closing that removes dark details smaller than
   `detail` of the car (the backdrop's logo letters seen through a window), clamped to [`alpha_min`, `alpha_max`]
   and smoothed. The glass colour is the tint that equation gives, so the old backdrop does not tint the new one.

Where it fails: on a dark car paint and tinted glass look alike, and the cab's roof and door tops can go with the
glass; on a silver car in a grey studio, the wall seen through clear glass can be taken for paint; windscreens are
found a little inside their frame; a front view whose roof is cut by the photo's edge lets the bonnet be taken for
glass; wind deflectors and roof rails can go with the glass; a light interior behind clear glass reads as backdrop;
reflections of the sky are lost (the tint is smooth); glass below the band (a low side window in a high-angle shot)
stays opaque.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class GlassParams:
    """Knobs of the glass finder; lengths are fractions of the car's box height unless said otherwise. `rim`,
    `core_top`, `core_bot` and `work_size` were chosen on half a of distractors/parts.json's glass photos and checked
    on half b (scripts/eval_segmentation.py --glass --half a|b)."""

    work_size: int = 256
    band: float = 0.4
    core_top: float = 0.05
    core_bot: float = 0.2
    reach: float = 0.25
    rim: float = 0.005
    iterations: int = 4
    open_r: float = 0.01
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
    """Boolean glass mask on a working-size photo (`rgb` uint8) and its car silhouette, by GrabCut seeded from where
    glass sits on a car: probably glass in the core rows (`core_top` to `core_bot` of the car's height below its
    top), maybe glass elsewhere in the upper band (down to `band`), never glass below it, on the rim or outside the
    car (whose pixels take the lower body's colour so the backdrop never teaches the model what is not glass).
    `bg` is unused here (kept for the caller's signature)."""
    p = params
    ys, _ = np.nonzero(car)
    if ys.size == 0:
        return np.zeros(car.shape, bool)
    top = int(ys.min())
    car_h = float(ys.max() - top + 1)
    rows = (np.arange(car.shape[0], dtype=np.float32)[:, None] - top) / car_h
    inner = cv2.erode(car.astype(np.uint8), _disk(p.rim * car_h)) > 0
    band = inner & (rows <= p.band)
    core = inner & (rows >= p.core_top) & (rows <= p.core_bot)
    if not core.any():
        return np.zeros(car.shape, bool)
    lower = inner & ~band
    img = rgb.copy()
    img[~car] = np.median(rgb[lower], axis=0).astype(np.uint8) if lower.any() else 128
    seeds = np.full(car.shape, cv2.GC_BGD, np.uint8)
    seeds[band] = cv2.GC_PR_BGD
    seeds[core] = cv2.GC_PR_FGD
    bgd_model = np.zeros((1, 65), np.float64)
    fgd_model = np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut's k-means initialisation: the same photo gives the same glass
    try:
        cv2.grabCut(img, seeds, None, bgd_model, fgd_model, p.iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # a degenerate model (e.g. a one-colour band)
        return np.zeros(car.shape, bool)
    cand = ((seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)).astype(np.uint8)
    cand = cv2.morphologyEx(cand, cv2.MORPH_OPEN, _disk(p.open_r * car_h)) & inner.astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(cand, connectivity=8)
    if n <= 1:
        return np.zeros(car.shape, bool)
    big = np.zeros(n, bool)
    big[1:] = (stats[1:, cv2.CC_STAT_AREA] >= p.min_area * np.count_nonzero(car)) & (
        stats[1:, cv2.CC_STAT_TOP] <= top + p.reach * car_h)
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
