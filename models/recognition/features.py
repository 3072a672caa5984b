"""RootSIFT local features (OpenCV SIFT, L1-normalised then square-rooted), optionally limited to a mask."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import cv2
import numpy as np

from models import main_car
from models.recognition import colour

MAX_SIDE = 800
MAX_KEYPOINTS = 1000
_local = threading.local()


@dataclass
class Features:
    """Keypoint positions (N,2 float32, in the source image's pixels) and RootSIFT descriptors (N,128 float32),
    strongest keypoint first; from a colour image also each keypoint's colour (N,3 uint8 sRGB, colour.py), the
    image's illuminant (3 floats) and its body colour (colour.signature, 3 floats), else None; with a car mask also
    the mask's pixels on a coarse grid (colour.paint_pixels: positions and colour coordinates, not stored), from
    which a query's match takes the body colour of the part it covers."""

    points: np.ndarray
    descriptors: np.ndarray
    width: int
    height: int
    colours: np.ndarray | None = None
    light: np.ndarray | None = None
    body: np.ndarray | None = None
    paint_points: np.ndarray | None = None
    paint: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def coverage(self, grid: int = 8) -> float:
        """Share of a grid x grid layout of cells that hold at least one keypoint (how spread the features are)."""
        if not len(self):
            return 0.0
        cx = np.clip((self.points[:, 0] / max(self.width, 1) * grid).astype(int), 0, grid - 1)
        cy = np.clip((self.points[:, 1] / max(self.height, 1) * grid).astype(int), 0, grid - 1)
        return len(set(zip(cx.tolist(), cy.tolist(), strict=True))) / (grid * grid)

    def to_blobs(self) -> tuple[bytes, bytes]:
        """Compact storage: points as float32, descriptors quantised to uint8 (RootSIFT values lie in [0, 1])."""
        q = np.clip(np.rint(self.descriptors * 255.0), 0, 255).astype(np.uint8)
        return self.points.astype(np.float32).tobytes(), q.tobytes()

    def colour_blob(self) -> bytes | None:
        """The illuminant and the body colour (3 + 3 float32), then the keypoints' colours (N x 3 uint8); None
        without colour."""
        if self.colours is None or self.light is None or self.body is None:
            return None
        return (np.asarray(self.light, np.float32).tobytes() + np.asarray(self.body, np.float32).tobytes()
                + np.asarray(self.colours, np.uint8).tobytes())

    @classmethod
    def from_blobs(cls, points: bytes, descriptors: bytes, width: int, height: int,
                   colours: bytes | None = None) -> Features:
        """Inverse of to_blobs and colour_blob (descriptors re-normalised to unit length)."""
        pts = np.frombuffer(points, dtype=np.float32).reshape(-1, 2).copy()
        d = np.frombuffer(descriptors, dtype=np.uint8).reshape(-1, 128).astype(np.float32)
        d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6)
        light = body = cols = None
        if colours and len(colours) == 24 + 3 * len(pts):
            light = np.frombuffer(colours[:12], dtype=np.float32).copy()
            body = blob_body(colours).copy()  # type: ignore[union-attr]
            cols = np.frombuffer(colours[24:], dtype=np.uint8).reshape(-1, 3).copy()
        return cls(pts, d, width, height, cols, light, body)


def blob_body(colours: bytes | None) -> np.ndarray | None:
    """The body colour (colour.signature) kept in a colour blob (Features.colour_blob), read in place; None when the
    blob is missing or too short to hold one."""
    return np.frombuffer(colours[12:24], dtype=np.float32) if colours and len(colours) >= 24 else None


def _sift(max_keypoints: int) -> cv2.SIFT:
    cache = getattr(_local, "sift", None)
    if cache is None or cache[0] != max_keypoints:
        cache = (max_keypoints, cv2.SIFT_create(nfeatures=max_keypoints))
        _local.sift = cache
    return cache[1]


def rootsift(desc: np.ndarray) -> np.ndarray:
    """RootSIFT (Arandjelovic & Zisserman 2012): L1-normalise, square-root; the result has unit L2 norm."""
    d = desc.astype(np.float32)
    d /= np.maximum(d.sum(axis=1, keepdims=True), 1e-7)
    return np.sqrt(d)


def _binary_mask(mask: np.ndarray | None) -> np.ndarray | None:
    """A uint8 0/255 mask for OpenCV from a float or bool one (>0.5 = keep)."""
    return None if mask is None else (np.asarray(mask, dtype=np.float32) > 0.5).astype(np.uint8) * 255


def _strongest(grey: np.ndarray, mask: np.ndarray | None, max_keypoints: int) -> tuple[np.ndarray, np.ndarray]:
    """Keypoint positions (in `grey`'s pixels) and RootSIFT descriptors, strongest first, so that the first N
    descriptors of an image are its N best (index_keypoints, vote_keypoints); two empty arrays when none."""
    kps, desc = _sift(max_keypoints).detectAndCompute(grey, mask)
    if desc is None or not kps:
        return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32)
    order = np.argsort([-kp.response for kp in kps], kind="stable")[:max_keypoints]
    return np.array([kps[i].pt for i in order], dtype=np.float32), rootsift(desc[order])


# Blur (a phone photo out of focus or shaken, then JPEG'd): SIFT finds fewer keypoints on a blurred car and its
# descriptors no longer match a sharp studio reference's (docs/decisions/0008: lot photos blurred by sigma 1-1.5 px
# lose a quarter of their inliers). With extract's `sharpen` (recognition.sharpen_blurred, off for now), an image
# blurred past BLUR_TRIGGER (sigma in pixels at the working size; the 832 studio photos measure at most 0.87) is
# sharpened towards SHARP_SIGMA, a studio photo's, before SIFT; a sharp image is left exactly as it was, so its
# features (the references) do not change.
BLUR_TRIGGER = 1.0
SHARP_SIGMA = 0.8
BLUR_PROBE = 1.0  # sigma of the extra blur blur_sigma measures the edges' response to
WIENER_NOISE = 0.03  # the deconvolution's noise-to-signal ratio: JPEG blocks and sensor noise are not amplified


def _gradient(grey: np.ndarray) -> np.ndarray:
    return cv2.magnitude(cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3))


def blur_sigma(grey: np.ndarray, mask: np.ndarray | None = None) -> float:
    """How blurred an image is: the sigma (pixels) of a Gaussian blur, from how much its strongest edges' gradient
    (its top 1% within the mask, eroded off the outline) weakens when blurred by BLUR_PROBE more: a step edge
    blurred by s keeps s / sqrt(s^2 + p^2) of its peak gradient."""
    inside = None
    if mask is not None:
        inside = cv2.erode((mask > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        ys, xs = np.nonzero(inside.any(axis=1))[0], np.nonzero(inside.any(axis=0))[0]
        if len(ys) < 20 or len(xs) < 20:
            inside = None
        else:  # the mask's box only (with room for the filters)
            box = (slice(max(0, ys[0] - 8), ys[-1] + 9), slice(max(0, xs[0] - 8), xs[-1] + 9))
            grey, inside = grey[box], inside[box]
    g = grey.astype(np.float32)
    g0 = _gradient(g)
    values = g0[inside] if inside is not None else g0.ravel()
    if values.size < 100:
        return 0.0
    edges = g0 >= np.percentile(values[:: max(1, values.size // 20000)], 99.0)
    if inside is not None:
        edges &= inside
    before = float(g0[edges].sum())
    if before <= 0:
        return 0.0
    kept = min(float(_gradient(cv2.GaussianBlur(g, (0, 0), BLUR_PROBE))[edges].sum()) / before, 0.99)
    return BLUR_PROBE * kept / math.sqrt(1.0 - kept * kept)


def deconvolved(grey: np.ndarray, sigma: float, noise: float = WIENER_NOISE) -> np.ndarray:
    """grey (uint8) with a Gaussian blur of this sigma undone by a Wiener filter (edges padded by reflection)."""
    pad = int(3 * sigma) + 4
    h, w = grey.shape
    big_h, big_w = cv2.getOptimalDFTSize(h + 2 * pad), cv2.getOptimalDFTSize(w + 2 * pad)
    g = cv2.copyMakeBorder(grey.astype(np.float32), pad, big_h - h - pad, pad, big_w - w - pad, cv2.BORDER_REFLECT)
    fy = np.fft.fftfreq(big_h)[:, None]
    fx = np.fft.rfftfreq(big_w)[None, :]
    otf = np.exp(-2.0 * math.pi ** 2 * sigma ** 2 * (fx ** 2 + fy ** 2))
    gain = otf * (1.0 + noise) / (otf ** 2 + noise)  # 1 at zero frequency: brightness kept
    out = np.fft.irfft2(np.fft.rfft2(g) * gain, s=g.shape)
    return np.clip(out[pad:pad + h, pad:pad + w] + 0.5, 0, 255).astype(np.uint8)


def sharpened(grey: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """grey deconvolved down to SHARP_SIGMA when blurred past BLUR_TRIGGER (blur_sigma, within the mask), else grey
    itself (the same array)."""
    sigma = blur_sigma(grey, mask)
    if sigma <= BLUR_TRIGGER:
        return grey
    return deconvolved(grey, math.sqrt(sigma * sigma - SHARP_SIGMA * SHARP_SIGMA))


def extract(rgb: np.ndarray, mask: np.ndarray | None = None, *, max_side: int = MAX_SIDE,
            max_keypoints: int = MAX_KEYPOINTS, sharpen: bool = False) -> Features:
    """RootSIFT features of an RGB (or grey) uint8 image, resized to max_side (`sharpen`: and sharpened when
    blurred, `sharpened`); mask (HxW, >0.5 = keep) limits them."""
    h, w = rgb.shape[:2]
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        grey = cv2.resize(grey, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    m = _binary_mask(mask)
    if m is not None:
        m = cv2.resize(m, (grey.shape[1], grey.shape[0]), interpolation=cv2.INTER_NEAREST)
    pts, desc = _strongest(sharpened(grey, m) if sharpen else grey, m, max_keypoints)
    return _with_colour(Features(pts / scale, desc, w, h), rgb, mask)


def _with_colour(f: Features, rgb: np.ndarray, mask: np.ndarray | None) -> Features:
    """f with its keypoints' colours, the image's illuminant and body colour (a colour image only)."""
    if rgb.ndim == 3 and rgb.shape[2] == 3:
        f.colours = colour.keypoint_colours(rgb, f.points, mask)
        f.light = colour.illuminant(rgb)
        f.body = colour.signature(rgb, mask, f.light)
        if mask is not None:
            f.paint_points, f.paint = colour.paint_pixels(rgb, mask, f.light)
    return f


# View simulation (ASIFT, Morel & Yu 2009): a car turned 45 degrees is foreshortened horizontally by about
# cos(45) ~ 0.71 on one face and stretched on the other, more than SIFT's affine tolerance. Extracting features
# again from the query squeezed horizontally (a face seen more obliquely) and vertically (the same as stretching
# it horizontally, at a smaller size) gives the wide-baseline matches back.
TILTS = ((1 / 1.41, 1.0), (1.0, 1 / 1.41))


def extract_views(rgb: np.ndarray, mask: np.ndarray | None = None, *, max_side: int = MAX_SIDE,
                  max_keypoints: int = MAX_KEYPOINTS,
                  tilts: tuple[tuple[float, float], ...] = TILTS) -> Features:
    """RootSIFT features of affine-squeezed copies of the image (x and y scale factors in `tilts`), their points
    mapped back into the source image's pixels, concatenated (one view after another)."""
    h, w = rgb.shape[:2]
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
    scale = min(1.0, max_side / max(h, w))
    m = _binary_mask(mask)
    pts_all, desc_all = [np.zeros((0, 2), np.float32)], [np.zeros((0, 128), np.float32)]
    for sx, sy in tilts:
        size = (max(1, round(w * scale * sx)), max(1, round(h * scale * sy)))
        g = cv2.resize(grey, size, interpolation=cv2.INTER_AREA)
        mv = None if m is None else cv2.resize(m, size, interpolation=cv2.INTER_NEAREST)
        pts, desc = _strongest(g, mv, max_keypoints)
        pts[:, 0] *= w / size[0]
        pts[:, 1] *= h / size[1]
        pts_all.append(pts)
        desc_all.append(desc)
    return _with_colour(Features(np.concatenate(pts_all), np.concatenate(desc_all), w, h), rgb, mask)


def main_subject(mask: np.ndarray) -> np.ndarray:
    """The one car the photo is about, from a car mask that may hold several (a lot photo with other cars in view):
    models.main_car's choice, the one type=car makes, kept to the single most prominent car and what is attached to
    it (main_car.ONE_CAR), since a second car's paint and keypoints would be mixed into this one's. A float mask is
    also the choice's confidence. Boolean HxW."""
    prob = np.asarray(mask, dtype=np.float32)
    return main_car.select_main(prob > 0.5, prob, main_car.ONE_CAR)


def rating(features: Features) -> int:
    """0-5: how recognizable a reference image is, from its keypoint count and how widely they spread."""
    n = len(features)
    if n < 20:
        return 0
    value = 5.0 * min(1.0, n / 500.0) ** 0.5 * min(1.0, features.coverage() / 0.4) ** 0.5
    return int(max(1, min(5, round(value))))
