"""See-through car windows (remove.bg's `semitransparency` for `type=car`), by classic vision, no extra weights.

1. The backdrop behind the car is estimated by inpainting the car's silhouette from the photo around it (at a small
   working size): what a window would show if the glass were perfectly clear.
2. Glass is found by GrabCut on the working-size photo, seeded from where glass sits on a car: the rows from
   `core_top` to `core_bot` of the car's height below its top are probably glass, the rest of the upper band (down
   to `band`) maybe, the lower body, the rim of the silhouette and everything outside it never (outside pixels take
   the lower body's colour, so a studio backdrop seen through the windows is not learnt as "not glass"). GrabCut's
   colour models then split the windows from the paint, pillars and roof. Components smaller than `min_area` of
   the car, or starting lower than `reach` below its top, go, and holes are filled (head rests).
   On a dark car (lower-body paint darker than `paint_dark`) whose found glass fills `cab_cover` or more of the upper
   band (a cab taken whole), pixels within `paint_tol` of the paint's main colours are paint, not glass.
3. Matting with a known background, at `matte_size`: each glass pixel is read as I = a * F + (1 - a) * B. B is the
   candidate that explains it best of the inpainted backdrop and the backdrop's palette (the colours of the photo
   outside the car in and `palette_above` above the glass's rows: a studio wall *and* its logo letters), each
   darkened by a glass passing a share k of it (`tint_min` <= k <= 1). Alpha is what the glass takes away (1 - k)
   plus what the backdrop does not explain, |I - kB| / `opaque_at` (the interior, reflections), scaled into
   [`alpha_min`, `alpha_max`] and lightly smoothed: a pixel showing the backdrop or its letters goes clear. The
   colour is decontaminated, F = (I - (1 - a) B) / a, so the old backdrop does not tint the new one.

Where it fails: on a dark car paint and tinted glass look alike: a dark cab's tinted windows stay opaque with its
paint (smaller dark glass is kept, and can take dark door tops with it); on a silver car in a grey studio, the wall
seen through clear glass can be taken for paint; windscreens are found a little inside their frame; a front view
whose roof is cut by the photo's edge lets the bonnet be taken for glass; wind deflectors and roof rails can go
with the glass; interior parts the colour of the backdrop (a grey seat in a grey studio) go clear with it, which can
look blotchy; on a street photo every colour of the street counts as backdrop; glass below the band (a low side
window in a high-angle shot) stays opaque.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from models.downscale import downscale


@dataclass(frozen=True)
class GlassParams:
    """Knobs of the glass finder; lengths are fractions of the car's box height unless said otherwise. `rim`,
    `core_top`, `core_bot`, `work_size` and `cab_cover` were chosen on half a of distractors/parts.json's glass
    photos and checked on half b, the matting's on half a of the Carvana logo figure (scripts/eval_segmentation.py
    --glass --half a|b; docs/decisions/0007)."""

    work_size: int = 256
    band: float = 0.4
    core_top: float = 0.05
    core_bot: float = 0.2
    reach: float = 0.25
    rim: float = 0.005
    iterations: int = 4
    open_r: float = 0.01
    min_area: float = 0.01
    matte_size: int = 640
    palette_rows: float = 0.04
    palette_above: float = 0.5
    tint_min: float = 0.7
    paint_rows: tuple[float, float] = (0.4, 0.6)
    paint_step: int = 16
    paint_cover: float = 0.4
    paint_dark: float = 0.3
    cab_cover: float = 0.58
    paint_tol: float = 0.03
    palette_step: int = 8
    palette_share: float = 0.005
    opaque_at: float = 0.25
    smooth: float = 0.005
    alpha_min: float = 0.0
    alpha_max: float = 0.5


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
    min_px = p.min_area * np.count_nonzero(car)
    found = _big_parts(cand, min_px, max_top=top + p.reach * car_h) & inner
    if p.paint_tol <= 0 or found.sum() < p.cab_cover * band.sum():
        return found  # only glass filling most of the upper band can be a dark cab taken whole
    # glass the colour of the lower body's paint is paint (a dark cab's doors and roof): dropped, then cleaned
    lower_body = inner & (rows >= p.paint_rows[0]) & (rows <= p.paint_rows[1])
    paint = paint_colours(rgb[lower_body], p.paint_step, p.paint_cover)
    if paint.shape[0] == 0 or float(paint[0] @ np.float32([0.299, 0.587, 0.114])) > p.paint_dark:
        return found  # only dark paint passes for tinted glass
    px = rgb[found].astype(np.float32) * (1.0 / 255.0)
    d, _, _ = _nearest(px, paint, 1.0)
    keep = found.copy()
    keep[found] = d > p.paint_tol
    keep = cv2.morphologyEx(keep.astype(np.uint8), cv2.MORPH_OPEN, _disk(2 * p.open_r * car_h))
    return _big_parts(keep, min_px) & found


def _big_parts(mask: np.ndarray, min_px: float, max_top: float | None = None) -> np.ndarray:
    """The 8-connected parts of `mask` holding at least `min_px` pixels (and, with `max_top`, whose top row is at
    most `max_top`), holes filled: boolean."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    big = np.zeros(n, bool)
    big[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_px
    if max_top is not None:
        big[1:] &= stats[1:, cv2.CC_STAT_TOP] <= max_top
    return _fill_holes(big[labels])


def _colour_bins(px: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean colour float32 Kx3 in 0-1, pixel count K) of the RGB bins of `step` levels that `px` (Nx3 uint8) fills."""
    q = (px // step).astype(np.int32)
    key = q[:, 0] * 4096 + q[:, 1] * 64 + q[:, 2]
    uniq, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    sums = np.zeros((uniq.size, 3), np.float64)
    np.add.at(sums, inverse.ravel(), px.astype(np.float64))
    return (sums / counts[:, None] / 255.0).astype(np.float32), counts


def backdrop_palette(rgb: np.ndarray, car: np.ndarray, rows: tuple[int, int], grow: int, step: int,
                     share: float) -> np.ndarray:
    """The colours of the backdrop in rows `rows[0]:rows[1]` (pixels at least `grow` away from the car): the bins
    of `step` levels holding at least `share` of those pixels, float32 Kx3 in 0-1 (K may be 0). A studio's wall
    and its logo letters are both in it, so glass showing either can go clear."""
    y0, y1 = max(0, rows[0]), min(car.shape[0], rows[1])
    px = rgb[y0:y1][~(cv2.dilate(car[y0:y1].astype(np.uint8), _disk(grow)) > 0)]
    if px.shape[0] < 20:
        return np.zeros((0, 3), np.float32)
    colours, counts = _colour_bins(px, step)
    return colours[counts >= max(3, share * px.shape[0])]


def paint_colours(px: np.ndarray, step: int, cover: float) -> np.ndarray:
    """The paint's colours: the most common bins (of `step` levels) of `px` (Nx3 uint8, the lower body) that
    together hold `cover` of it, float32 Kx3 in 0-1, most common first (the paint's shades, not its wheels)."""
    if px.shape[0] < 20:
        return np.zeros((0, 3), np.float32)
    colours, counts = _colour_bins(px, step)
    order = np.argsort(-counts)
    return colours[order[:int(np.searchsorted(np.cumsum(counts[order]), cover * px.shape[0])) + 1]]


def _nearest(img: np.ndarray, palette: np.ndarray, tint_min: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each pixel of `img` (Nx3, 0-1) the `palette` colour P (Kx3) that, darkened by a glass passing a share k
    of it (`tint_min` <= k <= 1), comes nearest: (distance |I - kP|, k, P)."""
    dot = img @ palette.T
    pp = np.maximum((palette * palette).sum(axis=1), 1e-6)
    k = np.clip(dot / pp, tint_min, 1.0)
    d2 = np.maximum((img * img).sum(axis=1)[:, None] - 2.0 * k * dot + k * k * pp, 0.0)
    i = d2.argmin(axis=1)
    rows = np.arange(img.shape[0])
    return np.sqrt(d2[rows, i]), k[rows, i], palette[i]


def find_glass(rgb: np.ndarray, alpha: np.ndarray, params: GlassParams = GlassParams()) -> Glass | None:
    """The glass of the car(s) in `rgb` (uint8 HxWx3) whose cut-out matte is `alpha` (float32 HxW, 0-1); None when
    there is none."""
    p = params
    height, width = alpha.shape
    small, scale = downscale(rgb, p.work_size)
    small_a, _ = downscale(alpha, p.work_size)
    size = (small.shape[1], small.shape[0])
    car = small_a > 0.5
    ys = np.nonzero(car.any(axis=1))[0]
    if ys.size == 0:
        return None
    car_h = float(ys[-1] - ys[0] + 1)
    bg = backdrop(small, car, max(1, round(0.01 * car_h)))
    mask = glass_mask(small, car, bg, p)
    if not mask.any():
        return None
    # matting at a finer size: the glass is read as I = a * F + (1 - a) * B, B the backdrop behind it
    mrgb, mscale = downscale(rgb, p.matte_size)
    mcar = downscale(alpha, p.matte_size)[0] > 0.5
    msize = (mrgb.shape[1], mrgb.shape[0])
    mmask = cv2.resize(mask.astype(np.uint8), msize, interpolation=cv2.INTER_NEAREST) > 0
    mbg = cv2.resize(bg, msize, interpolation=cv2.INTER_LINEAR)
    mh = car_h * msize[1] / size[1]
    img = mrgb.astype(np.float32) * (1.0 / 255.0)
    # B: of the inpainted backdrop and the colours of the backdrop in and above the same rows (wall, logo
    # letters), the one that, seen through a glass passing a share k of it, explains the pixel best
    gy = np.nonzero(mmask.any(axis=1))[0]
    band = max(2, int(round(p.palette_rows * mh)))
    dist = np.zeros(mmask.shape, np.float32)
    passed = np.ones(mmask.shape, np.float32)
    behind = mbg.copy()
    px, plate = img[mmask], mbg[mmask]
    k0 = np.clip((px * plate).sum(axis=1) / np.maximum((plate * plate).sum(axis=1), 1e-6), p.tint_min, 1.0)
    dist[mmask] = np.linalg.norm(px - k0[:, None] * plate, axis=1)
    passed[mmask] = k0
    for y0 in range(int(gy[0]), int(gy[-1]) + 1, band):
        inside = mmask[y0:y0 + band]
        if not inside.any():
            continue
        pal = backdrop_palette(mrgb, mcar, (y0 - int(p.palette_above * mh), y0 + 2 * band),
                               max(1, round(0.01 * mh)), p.palette_step, p.palette_share)
        if pal.shape[0] == 0:
            continue
        d, k, c = _nearest(img[y0:y0 + band][inside], pal, p.tint_min)
        rows_d, rows_k, rows_b = dist[y0:y0 + band], passed[y0:y0 + band], behind[y0:y0 + band]
        closer = d < rows_d[inside]
        rows_d[inside] = np.where(closer, d, rows_d[inside])
        rows_k[inside] = np.where(closer, k, rows_k[inside])
        rows_b[inside] = np.where(closer[:, None], c, rows_b[inside])
    # alpha: what the glass takes from the backdrop (1 - k) plus what the backdrop does not explain (|I - kB| /
    # `opaque_at`: the interior, reflections)
    a_m = np.clip(1.0 - passed + dist / p.opaque_at, 0.0, 1.0) * (p.alpha_max - p.alpha_min) + p.alpha_min
    sigma = max(0.7, p.smooth * mh)
    weight = cv2.GaussianBlur(mmask.astype(np.float32), (0, 0), sigma) + 1e-4
    a_m = cv2.GaussianBlur((a_m * mmask).astype(np.float32), (0, 0), sigma) / weight
    a_m = np.where(mmask, a_m, p.alpha_max).astype(np.float32)
    # decontaminated colour: F = (I - (1 - a) B) / a
    tint = (img - (1.0 - a_m[..., None]) * behind) / np.maximum(a_m[..., None], 0.05)
    tint = np.clip(tint, 0.0, 1.0) * mmask[..., None]
    # the glass's outline: feathered at the working size and scaled up smoothly (no staircase)
    feather = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), max(0.7, 0.004 * car_h)) * mask
    feather = cv2.resize(feather, (width, height), interpolation=cv2.INTER_LINEAR) if scale < 1 else feather
    if mscale < 1:
        a_m = cv2.resize(a_m, (width, height), interpolation=cv2.INTER_LINEAR)
        tint = cv2.resize(tint.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    colour = (np.clip(tint, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return Glass(np.clip(feather, 0.0, 1.0).astype(np.float32), np.clip(a_m, 0.0, 1.0).astype(np.float32), colour)


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
