"""Body colour at keypoints, discounting the light: two units of one model in different colours are different
objects, while one car under studio light and under daylight (another white balance, another exposure) is one.

- Each keypoint keeps the mean sRGB colour of a small window around it (within the car mask when there is one).
- Each image keeps an estimate of its illuminant: shades of grey (Finlayson & Trezzi 2004, p = 6) over the whole
  photo in linear RGB, which a global white-balance change (a per-channel gain) and an exposure change scale exactly
  like the pixels, so dividing by it (von Kries chromatic adaptation) undoes them.
- Colours are compared as log-chromaticities, log(R/G) and log(B/G) of the adapted linear colour (hue and
  saturation, whatever the brightness), and the log of the adapted luminance at a lower weight (LIGHTNESS_WEIGHT):
  silver and black are both neutral, so only lightness tells them apart, while shading and glare move lightness
  more than hue. A small floor keeps black and dark colours from turning noise into hue.
- Two matched images are compared twice: at their inlier pairs (a high quantile of the per-pair distances, since
  glass, tyres and trim are neutral on every car and agree whatever the body colour), and by their body colour
  (`signature`: the chroma of the car's most saturated pixels and its median lightness), which is what the score
  uses: keypoints gather on wheels, lights and trim, which two units of one model share in any paint.
"""

from __future__ import annotations

import cv2
import numpy as np

WINDOW = 0.006  # window radius around a keypoint, as a share of the image's longer side
FLOOR = 0.01  # linear-RGB floor added before the log ratios (dark colours keep a hue only when clearly coloured)
QUANTILE = 0.75  # of the per-inlier distances; neutral parts (glass, tyres) agree on any two cars
PAINT_QUANTILE = 0.75  # the body colour's chroma comes from the car's pixels more saturated than this share
LIGHTNESS_WEIGHT = 0.5  # of log adapted luminance against the two log-chromaticities
SHADES_P = 6.0
CLIPPED = 0.98  # linear value past which a pixel is taken as clipped (left out of the illuminant estimate)
_WORK_SIDE = 400
PAINT_SIDE = 128  # grid of a query's car pixels kept for the matched region's body colour (body_within)
REGION_SHARE = 0.45  # a matched region holding less than this share of the car mask's pixels gives the body colour
REGION_MARGIN = 0.2  # the region grown by this share of its size (the inliers' box stops short of the car's edges)
MIN_REGION_PIXELS = 40


def _linear(srgb: np.ndarray) -> np.ndarray:
    """sRGB (0-255) to linear RGB (0-1)."""
    c = np.asarray(srgb, dtype=np.float32) / 255.0
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _small(rgb: np.ndarray, side: int = _WORK_SIDE) -> tuple[np.ndarray, float]:
    """The image with its long side at most `side` (area-averaged), and the scale applied."""
    h, w = rgb.shape[:2]
    scale = min(1.0, side / max(h, w))
    if scale < 1.0:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return rgb, scale


def illuminant(rgb: np.ndarray) -> np.ndarray:
    """The scene illuminant's linear RGB (shades of grey, p = 6, over the pixels that are not clipped), scaled
    like the pixels, so that exposure cancels too."""
    small, _ = _small(rgb)
    lin = _linear(small.reshape(-1, 3))
    ok = lin.max(axis=1) < CLIPPED
    if ok.sum() >= 0.05 * len(lin):
        lin = lin[ok]
    est = np.power(np.mean(np.power(lin, SHADES_P), axis=0), 1.0 / SHADES_P)
    return np.maximum(est, 1e-4).astype(np.float32)


def keypoint_colours(rgb: np.ndarray, points: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The mean sRGB colour (N,3 uint8) of a window around each keypoint (source-image pixels), taken from the
    mask's pixels when a mask is given and the window holds any."""
    if len(points) == 0:
        return np.zeros((0, 3), np.uint8)
    small, scale = _small(rgb)
    h, w = small.shape[:2]
    k = max(1, round(WINDOW * max(rgb.shape[:2]) * scale)) * 2 + 1
    img = small.astype(np.float32)
    if mask is not None:
        m = cv2.resize((np.asarray(mask, dtype=np.float32) > 0.5).astype(np.float32), (w, h),
                       interpolation=cv2.INTER_AREA)
        num = cv2.blur(img * m[..., None], (k, k))
        den = cv2.blur(m, (k, k))[..., None]
        mean = np.where(den > 1e-3, num / np.maximum(den, 1e-3), cv2.blur(img, (k, k)))
    else:
        mean = cv2.blur(img, (k, k))
    x = np.clip(np.rint(points[:, 0] * scale).astype(int), 0, w - 1)
    y = np.clip(np.rint(points[:, 1] * scale).astype(int), 0, h - 1)
    return np.clip(np.rint(mean[y, x]), 0, 255).astype(np.uint8)


def chroma(colours: np.ndarray, light: np.ndarray) -> np.ndarray:
    """Colour coordinates (N,3: log R/G, log B/G, log luminance) of sRGB colours adapted to a neutral illuminant of
    brightness 1."""
    lin = _linear(np.asarray(colours).reshape(-1, 3)) / np.asarray(light, dtype=np.float32)
    lum = lin @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    lin = lin + FLOOR
    return np.stack([np.log(lin[:, 0] / lin[:, 1]), np.log(lin[:, 2] / lin[:, 1]), np.log(lum + FLOOR)], axis=1)


def signature(rgb: np.ndarray, mask: np.ndarray | None, light: np.ndarray) -> np.ndarray:
    """The body colour (3 floats: log R/G, log B/G, log luminance): the mean chroma of the most saturated quarter of
    the mask's pixels (the paint, whether it covers a third of the car in one view or two thirds in another; a
    median flips between paint and glass) and the median lightness. The whole image without a mask."""
    small, _ = _small(rgb)
    pixels = small.reshape(-1, 3)
    if mask is not None:
        m = _mask_at(mask, small)
        if m.any():
            pixels = small[m]
    return body_of(chroma(pixels, light))


def _mask_at(mask: np.ndarray, small: np.ndarray) -> np.ndarray:
    """The mask (>0.5 = car) at the size of `small` (nearest neighbour): boolean."""
    return cv2.resize((np.asarray(mask, dtype=np.float32) > 0.5).astype(np.uint8), (small.shape[1], small.shape[0]),
                      interpolation=cv2.INTER_NEAREST) > 0


def body_of(coords: np.ndarray) -> np.ndarray:
    """signature's body colour from the colour coordinates (chroma) of a car's pixels."""
    sat = np.linalg.norm(coords[:, :2], axis=1)
    paint = coords[sat >= np.quantile(sat, PAINT_QUANTILE), :2].mean(axis=0)
    return np.array([paint[0], paint[1], np.median(coords[:, 2])], np.float32)


def paint_pixels(rgb: np.ndarray, mask: np.ndarray, light: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions N,2 in the source image's pixels, colour coordinates N,3) of the mask's pixels on a PAINT_SIDE
    grid: a query's car, so that its body colour can be taken from the part a match covers (body_within)."""
    h, w = rgb.shape[:2]
    small, _ = _small(rgb, PAINT_SIDE)
    m = _mask_at(mask, small)
    ys, xs = np.nonzero(m)
    points = np.stack([(xs + 0.5) * (w / small.shape[1]), (ys + 0.5) * (h / small.shape[0])],
                      axis=1).astype(np.float32)
    return points, chroma(small[m], light).astype(np.float32)


def body_within(points: np.ndarray, coords: np.ndarray, polygon: list[list[float]]) -> np.ndarray | None:
    """The body colour of the car pixels inside a matched region (a polygon in the same pixels, grown by
    REGION_MARGIN of its size about its middle) when the region holds less than REGION_SHARE of them, i.e. the car
    mask holds more than the matched car (another car merged into it on a lot photo); None otherwise or when too
    few pixels are inside."""
    if len(polygon) < 3 or len(points) < MIN_REGION_PIXELS:
        return None
    poly = np.asarray(polygon, np.float32)
    middle = poly.mean(axis=0)
    grown = (middle + (poly - middle) * (1.0 + REGION_MARGIN)).astype(np.float32)
    hull = cv2.convexHull(grown).reshape(-1, 2)
    if len(hull) < 3:
        return None
    edges = np.roll(hull, -1, axis=0) - hull
    rel = points[:, None, :] - hull[None, :, :]
    cross = edges[None, :, 0] * rel[:, :, 1] - edges[None, :, 1] * rel[:, :, 0]
    inside = (cross >= 0).all(axis=1) | (cross <= 0).all(axis=1)  # on one side of every edge of the convex hull
    if inside.sum() < MIN_REGION_PIXELS or inside.mean() >= REGION_SHARE:
        return None
    return body_of(coords[inside])


_WEIGHTS = np.array([1.0, 1.0, LIGHTNESS_WEIGHT], np.float32)


def distance(a: np.ndarray, b: np.ndarray, quantile: float = QUANTILE) -> float:
    """How differently coloured two sets of paired colour coordinates are (a quantile of the pair distances,
    lightness weighted by LIGHTNESS_WEIGHT); 0 for none."""
    if len(a) == 0:
        return 0.0
    return float(np.quantile(np.linalg.norm((a - b) * _WEIGHTS, axis=1), quantile))
