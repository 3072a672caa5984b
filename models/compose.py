"""Putting a cut-out together: foreground box, crop and margins, scale and position, backgrounds, encoding."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Box:
    """A pixel rectangle."""

    left: int
    top: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.left + self.width

    @property
    def bottom(self) -> int:
        return self.top + self.height


def foreground_box(alpha: np.ndarray, threshold: float = 0.05) -> Box | None:
    """The smallest box holding every pixel with alpha above threshold (alpha 0-1 float, or 0-255 uint8), or None
    when there is no foreground."""
    limit = threshold * 255.0 if alpha.dtype == np.uint8 else threshold
    x, y, w, h = cv2.boundingRect((alpha > limit).astype(np.uint8))
    if w == 0 or h == 0:
        return None
    return Box(int(x), int(y), int(w), int(h))


@dataclass(frozen=True)
class Margin:
    """One side's margin: pixels or a percentage of the subject's box."""

    value: float
    percent: bool

    def pixels(self, extent: int) -> int:
        return int(round(self.value / 100.0 * extent)) if self.percent else int(self.value)


def crop_with_margin(rgba: np.ndarray, box: Box, margins: tuple[Margin, Margin, Margin, Margin]) -> np.ndarray:
    """Crop an HxWxC array (RGBA, plus any extra channels) to box plus margins (top, right, bottom, left, each px
    or % of the box); margins past the picture's edge are transparent padding."""
    top = margins[0].pixels(box.height)
    right = margins[1].pixels(box.width)
    bottom = margins[2].pixels(box.height)
    left = margins[3].pixels(box.width)
    h = box.height + top + bottom
    w = box.width + left + right
    out = np.zeros((h, w, rgba.shape[2]), dtype=rgba.dtype)
    out[top:top + box.height, left:left + box.width] = rgba[box.top:box.bottom, box.left:box.right]
    return out


def place(rgba: np.ndarray, canvas: tuple[int, int], scale: float | None,
          position: tuple[float, float] | None) -> np.ndarray:
    """Put the subject (alpha in channel 3) on a transparent canvas (w, h): scaled so it fills `scale` of the canvas
    on its tighter side and positioned at (x, y) fractions of the free space; None keeps the original size or
    centre. Extra channels after the fourth move with the subject."""
    cw, ch = canvas
    box = foreground_box(rgba[..., 3])
    if box is None or (scale is None and position is None):
        return rgba
    subject = rgba[box.top:box.bottom, box.left:box.right]
    if scale is not None:
        factor = min(cw * scale / box.width, ch * scale / box.height)
        size = (max(1, int(round(box.width * factor))), max(1, int(round(box.height * factor))))
        subject = cv2.resize(subject, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC)
    sh, sw = subject.shape[:2]
    if position is None:  # keep the subject's centre where it was
        cx, cy = box.left + box.width / 2, box.top + box.height / 2
        x, y = int(round(cx - sw / 2)), int(round(cy - sh / 2))
    else:
        x = int(round((cw - sw) * position[0]))
        y = int(round((ch - sh) * position[1]))
    out = np.zeros((ch, cw, rgba.shape[2]), dtype=rgba.dtype)
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + sw, cw), min(y + sh, ch)
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = subject[y0 - y:y1 - y, x0 - x:x1 - x]
    return out


def composite(rgba: np.ndarray, background: np.ndarray | tuple[int, int, int, int]) -> np.ndarray:
    """Alpha-blend an RGBA cut-out over a colour (RGBA tuple) or an RGB(A) image of the same size; RGBA out."""
    h, w = rgba.shape[:2]
    if isinstance(background, tuple):
        bg = np.empty((h, w, 4), dtype=np.float32)
        bg[...] = np.array(background, dtype=np.float32)
    else:
        bg = background.astype(np.float32)
        if bg.shape[2] == 3:
            bg = np.concatenate([bg, np.full((h, w, 1), 255, np.float32)], axis=2)
    fa = rgba[..., 3:4].astype(np.float32) / 255.0
    ba = bg[..., 3:4] / 255.0
    out_a = fa + ba * (1 - fa)
    safe = np.where(out_a > 0, out_a, 1)
    out_rgb = (rgba[..., :3].astype(np.float32) * fa + bg[..., :3] * ba * (1 - fa)) / safe
    out = np.concatenate([out_rgb, out_a * 255.0], axis=2)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def cover(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """An RGBA background image resized to cover (w, h), centre-cropped."""
    w, h = size
    img = image.convert("RGBA")
    factor = max(w / img.width, h / img.height)
    resized = img.resize((max(w, int(round(img.width * factor))), max(h, int(round(img.height * factor)))),
                         Image.Resampling.LANCZOS)
    left = (resized.width - w) // 2
    top = (resized.height - h) // 2
    return np.asarray(resized.crop((left, top, left + w, top + h)))


def has_transparency(rgba: np.ndarray) -> bool:
    """Whether any pixel is less than fully opaque (format=auto picks PNG then, JPG otherwise)."""
    return bool((rgba[..., 3] < 255).any())


def encode(rgba: np.ndarray, fmt: str, *, channels: str = "rgba", quality: int = 90) -> tuple[bytes, str]:
    """Encode the result as png, jpg, webp or zip (color.jpg + alpha.png); channels="alpha" gives the matte alone
    (grey PNG, or grey JPG/WebP when asked). Returns (bytes, media type)."""
    alpha_plane = np.ascontiguousarray(rgba[..., 3])
    if channels == "alpha":
        if fmt == "jpg":
            return _jpeg(Image.fromarray(alpha_plane, "L"), quality), "image/jpeg"
        if fmt == "webp":
            return _webp(Image.fromarray(alpha_plane, "L"), quality), "image/webp"
        return _png(alpha_plane), "image/png"
    if fmt == "png":
        # invisible pixels carry no colour (smaller, faster to encode); OpenCV wants BGRA
        bgra = cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA)
        return _png(cv2.bitwise_and(bgra, bgra, mask=alpha_plane)), "image/png"
    if fmt == "webp":
        visible = cv2.bitwise_and(rgba, rgba, mask=alpha_plane)
        return _webp(Image.fromarray(visible, "RGBA"), quality), "image/webp"
    if fmt == "jpg":
        flat = rgba if not has_transparency(rgba) else composite(rgba, (255, 255, 255, 255))
        return _jpeg(Image.fromarray(np.ascontiguousarray(flat[..., :3]), "RGB"), quality), "image/jpeg"
    if fmt == "zip":
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("color.jpg", _jpeg(Image.fromarray(np.ascontiguousarray(rgba[..., :3]), "RGB"), quality))
            zf.writestr("alpha.png", _png(alpha_plane))
        return out.getvalue(), "application/zip"
    raise ValueError(f"unknown format {fmt}")


# zlib level 1 with every row "Up"-filtered: about twice as fast as Pillow's adaptive filtering at level 1, for
# files a few percent larger (scripts/bench_removebg.py: PNG encoding is the largest cost beyond the model)
PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]


def _png(pixels: np.ndarray) -> bytes:
    """An 8-bit PNG of a grey (HxW) or BGRA (HxWx4) array."""
    ok, buf = cv2.imencode(".png", pixels, PNG_PARAMS)
    if not ok:  # pragma: no cover - OpenCV reports no reason
        raise ValueError(f"PNG encoding failed for a {pixels.shape} array")
    return buf.tobytes()


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, subsampling=0 if img.mode == "RGB" else -1)
    return buf.getvalue()


def _webp(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "WEBP", quality=quality, method=4)
    return buf.getvalue()
