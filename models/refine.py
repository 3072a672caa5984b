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
    rgb = np.ascontiguousarray(image)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError("decontaminate needs an RGB image")
    a = np.clip(alpha.astype(np.float32, copy=False), 0.0, 1.0)
    if rgb.shape[:2] != a.shape:
        raise ValueError(f"image is {rgb.shape[:2]}, alpha is {a.shape}")
    height, width = a.shape
    wide = radius or max(8, int(round(0.04 * max(a.shape))))
    narrow = max(2, wide // 15)
    # Near-0 pixels are invisible and near-1 pixels keep the photo's colour: only the real edge band needs work.
    flat = np.flatnonzero((a > 0.01) & (a < 0.99))
    out = rgb.copy()
    if flat.size == 0:
        return out
    ey, ex = np.divmod(flat, width)
    # Only pixels within reach of an edge pixel matter: work on that window (same result, far less work).
    pad = wide + narrow + 2
    y0, y1 = max(int(ey[0]) - pad, 0), min(int(ey[-1]) + pad + 1, height)
    x0, x1 = max(int(ex.min()) - pad, 0), min(int(ex.max()) + pad + 1, width)
    aw = np.ascontiguousarray(a[y0:y1, x0:x1])
    ea = a.ravel()[flat][:, None]
    pix = rgb.reshape(-1, 3)[flat].astype(np.float32) * (1.0 / 255.0)
    if max(aw.shape) > 1200:
        # Large photos: the (smooth) background is estimated at half size and sampled bilinearly at each edge
        # pixel, whose foreground then solves alpha * F + (1 - alpha) * B = I exactly. The blur-fusion background
        # never depends on its foreground estimate, so only the background is computed.
        size = ((x1 - x0 + 1) // 2, (y1 - y0 + 1) // 2)
        img_s = cv2.resize(rgb[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA).astype(np.float32) * (1.0 / 255.0)
        a_s = cv2.resize(aw, size, interpolation=cv2.INTER_AREA)
        bg = _background(img_s, a_s, (max(2, wide // 2), max(1, narrow // 2)))
        fx, fy = size[0] / (x1 - x0), size[1] / (y1 - y0)  # the grid of a resize to the window's size
        bg_at = _sample(bg, (ex - x0 + 0.5) * fx - 0.5, (ey - y0 + 0.5) * fy - 0.5)
        values = (pix - (1.0 - ea) * bg_at) / np.maximum(ea, 0.05)
    else:
        img_w = rgb[y0:y1, x0:x1].astype(np.float32) * (1.0 / 255.0)
        fg, bg = img_w, img_w
        for r in (wide, narrow):
            fg, bg = _blur_fusion_step(img_w, fg, bg, aw, r)
        values = fg.reshape(-1, 3)[(ey - y0) * (x1 - x0) + (ex - x0)]
    out.reshape(-1, 3)[flat] = (np.clip(values, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return out


def _sample(img: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Bilinear samples (N x channels) of `img` at the points (xs, ys), edges replicated."""
    n, cols = len(xs), 4096  # remap's maps must stay under 32767 pixels a side
    rows = -(-n // cols)
    map_x = np.zeros(rows * cols, np.float32)
    map_y = np.zeros(rows * cols, np.float32)
    map_x[:n], map_y[:n] = xs, ys
    sampled = cv2.remap(img, map_x.reshape(rows, cols), map_y.reshape(rows, cols), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)
    return sampled.reshape(rows * cols, -1)[:n]


def _background(img: np.ndarray, a: np.ndarray, radii: tuple[int, ...]) -> np.ndarray:
    """The background half of the blur-fusion passes: B = blur(B * (1 - a)) / blur(1 - a), radius by radius."""
    inv = 1.0 - a
    weighted_img = img * inv[..., None]
    bg = img
    for r in radii:
        ksize = (2 * r + 1, 2 * r + 1)
        weight = cv2.blur(inv, ksize)
        weight += 1e-5
        bg = cv2.blur(weighted_img if bg is img else bg * inv[..., None], ksize)
        bg /= weight[..., None]
    return bg


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
