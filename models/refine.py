"""Edges at full resolution: a guided filter snaps the upscaled matte to the photo's edges, and foreground
colour estimation (`decontaminate`) removes the old background's colour from semi-transparent edge pixels."""

from __future__ import annotations

import cv2
import numpy as np

MODEL_SIDE = 1024  # the segmenters' input side; a matte larger than this was upscaled and is worth refining


def _box(x: np.ndarray, radius: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * radius + 1, 2 * radius + 1), normalize=True, borderType=cv2.BORDER_REFLECT)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float, subsample: int = 1) -> np.ndarray:
    """He et al.'s guided filter (gray guide), the fast variant: coefficients at 1/`subsample` scale."""
    height, width = src.shape
    if subsample > 1:
        size = (max(1, width // subsample), max(1, height // subsample))
        guide_s = cv2.resize(guide, size, interpolation=cv2.INTER_AREA)
        src_s = cv2.resize(src, size, interpolation=cv2.INTER_AREA)
        r = max(1, radius // subsample)
    else:
        guide_s, src_s, r = guide, src, radius
    mean_i = _box(guide_s, r)
    mean_p = _box(src_s, r)
    cov_ip = _box(guide_s * src_s, r) - mean_i * mean_p
    var_i = _box(guide_s * guide_s, r) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    mean_a = _box(a, r)
    mean_b = _box(b, r)
    if subsample > 1:
        mean_a = cv2.resize(mean_a, (width, height), interpolation=cv2.INTER_LINEAR)
        mean_b = cv2.resize(mean_b, (width, height), interpolation=cv2.INTER_LINEAR)
    return mean_a * guide + mean_b


def refine_alpha(rgb: np.ndarray, alpha: np.ndarray, *, eps: float = 1e-3) -> np.ndarray:
    """Sharpen an upscaled matte along the photo's edges; mattes no larger than the model input are returned as is."""
    height, width = alpha.shape
    scale = max(height, width) / MODEL_SIDE
    if scale <= 1.0:
        return alpha
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) * (1.0 / 255.0)
    radius = max(2, int(round(2 * scale)))
    refined = guided_filter(gray, alpha, radius, eps, subsample=2 if radius >= 4 else 1)
    return np.clip(refined, 0.0, 1.0, out=refined)


def decontaminate(image: np.ndarray, alpha: np.ndarray, *, radius: int | None = None) -> np.ndarray:
    """Foreground colours (uint8 RGB) for compositing `image` with `alpha` on a new background, without a halo.

    Approximate fast foreground colour estimation (Forte and Pitie, ICIP 2021, "blur fusion"): foreground and
    background colours are local alpha-weighted means, and each edge pixel's foreground is corrected so that
    alpha * F + (1 - alpha) * B reproduces the photo. Two passes, a wide and a narrow one.
    """
    rgb = np.asarray(image)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError("decontaminate needs an RGB image")
    a = np.clip(alpha.astype(np.float32), 0.0, 1.0)
    if rgb.shape[:2] != a.shape:
        raise ValueError(f"image is {rgb.shape[:2]}, alpha is {a.shape}")
    wide = radius or max(8, int(round(0.04 * max(a.shape))))
    narrow = max(2, wide // 15)
    # Near-0 pixels are invisible and near-1 pixels keep the photo's colour: only the real edge band needs work.
    edge = (a > 0.01) & (a < 0.99)
    out = rgb.copy()
    rows, cols = np.nonzero(edge.any(axis=1))[0], np.nonzero(edge.any(axis=0))[0]
    if len(rows) == 0:
        return out
    # Only pixels within reach of an edge pixel matter: work on that window (same result, far less work).
    pad = wide + narrow + 2
    y0, y1 = max(rows[0] - pad, 0), min(rows[-1] + pad + 1, a.shape[0])
    x0, x1 = max(cols[0] - pad, 0), min(cols[-1] + pad + 1, a.shape[1])
    aw = np.ascontiguousarray(a[y0:y1, x0:x1])
    window_edge = edge[y0:y1, x0:x1]
    ey, ex = np.nonzero(window_edge)
    # Large photos: estimate the (smooth) colours at half size, then solve each full-size edge pixel exactly.
    half = max(aw.shape) > 1200
    if half:
        size = ((x1 - x0 + 1) // 2, (y1 - y0 + 1) // 2)
        img_s = cv2.resize(rgb[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        a_s = cv2.resize(aw, size, interpolation=cv2.INTER_AREA)
        radii = (max(2, wide // 2), max(1, narrow // 2))
    else:
        img_s, a_s, radii = rgb[y0:y1, x0:x1].astype(np.float32) / 255.0, aw, (wide, narrow)
    fg, bg = img_s, img_s
    for r in radii:
        fg, bg = _blur_fusion_step(img_s, fg, bg, a_s, r)
    if half:
        # background estimate at the edge pixels (bilinear from the half-size grid), then
        # alpha * F + (1 - alpha) * B = I solved for F
        bg_full = cv2.resize(bg, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
        ea = aw[ey, ex][:, None]
        pix = rgb[y0:y1, x0:x1][ey, ex].astype(np.float32) / 255.0
        values = (pix - (1.0 - ea) * bg_full[ey, ex]) / np.maximum(ea, 0.05)
    else:
        values = fg[ey, ex]
    out[y0 + ey, x0 + ex] = (np.clip(values, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return out


def _blur_fusion_step(img: np.ndarray, fg: np.ndarray, bg: np.ndarray, a: np.ndarray,
                      r: int) -> tuple[np.ndarray, np.ndarray]:
    ksize = (2 * r + 1, 2 * r + 1)
    a3 = a[..., None]
    blur_a = cv2.blur(a, ksize)[..., None]
    blur_f = cv2.blur(fg * a3, ksize) / (blur_a + 1e-5)
    blur_b = cv2.blur(bg * (1.0 - a3), ksize) / ((1.0 - blur_a) + 1e-5)
    fg = blur_f + a3 * (img - a3 * blur_f - (1.0 - a3) * blur_b)
    np.clip(fg, 0.0, 1.0, out=fg)
    return fg, blur_b
