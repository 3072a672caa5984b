"""Decoding uploaded images safely: formats, EXIF orientation, odd modes, size limits, decompression bombs."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from models.errors import ModelError

try:  # HEIC/HEIF from phones
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - declared dependency
    pass

ACCEPTED_FORMATS = {"JPEG", "PNG", "WEBP", "HEIF", "HEIC", "TIFF", "BMP", "MPO"}
MAX_FILE_BYTES = 22 * 1024 * 1024
MAX_MEGAPIXELS = 50.0
# Anything claiming more pixels than this is refused before decoding (decompression bombs).
Image.MAX_IMAGE_PIXELS = int(MAX_MEGAPIXELS * 1_000_000 * 2)


class ImageInputError(ModelError):
    """An input image the service cannot use; code says why (remove.bg's codes)."""

    code, title, status = "failed_to_read_image", "Could not read the image", 400


def decode(data: bytes, *, max_bytes: int = MAX_FILE_BYTES, max_megapixels: float = MAX_MEGAPIXELS,
           what: str = "image") -> Image.Image:
    """Bytes to an upright RGB or RGBA image; raise ImageInputError with remove.bg's codes on any problem."""
    if not data:
        raise ImageInputError(f"The {what} is empty.", code="failed_to_read_image")
    if len(data) > max_bytes:
        raise ImageInputError(f"The {what} is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB.",
                              code="file_too_large", title="File too large")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = (img.format or "").upper()
            if fmt not in ACCEPTED_FORMATS:
                raise ImageInputError(
                    f"The {what} is {fmt or 'not an image'}; send JPEG, PNG, WebP, HEIC/HEIF, TIFF or BMP.",
                    code="invalid_file_type", title="Unsupported file type")
            megapixels = img.width * img.height / 1e6
            if megapixels > max_megapixels:
                raise ImageInputError(
                    f"The {what} has {megapixels:.1f} megapixels; the limit is {max_megapixels:.0f}.",
                    code="resolution_too_high", title="Resolution too high")
            img.load()
    except ImageInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageInputError(f"The {what} claims too many pixels to decode safely.",
                              code="resolution_too_high", title="Resolution too high") from exc
    except UnidentifiedImageError as exc:
        raise ImageInputError(f"The {what} is not a readable image.", code="invalid_file_type",
                              title="Unsupported file type") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageInputError(f"The {what} could not be decoded ({exc}).", code="failed_to_read_image") from exc
    return normalise(img)


def normalise(img: Image.Image) -> Image.Image:
    """EXIF orientation applied; CMYK, 16-bit, palette, greyscale and LA brought to RGB or RGBA (8-bit)."""
    img = ImageOps.exif_transpose(img) or img
    mode = img.mode
    if mode in ("RGB", "RGBA"):
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        arr = (arr - arr.min()) / max(arr.max() - arr.min(), 1e-9)
        return Image.fromarray((arr * 255).astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        return img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if mode in ("LA", "PA", "RGBa", "La"):
        return img.convert("RGBA")
    if mode == "CMYK":
        return img.convert("RGB")
    return img.convert("RGB")


def has_alpha(img: Image.Image) -> bool:
    """Whether the image carries a non-trivial alpha channel."""
    if img.mode != "RGBA":
        return False
    lo, _hi = img.getchannel("A").getextrema()
    return lo < 255


def resize_to_megapixels(img: Image.Image, megapixels: float) -> Image.Image:
    """Downscale (never upscale) so the image has at most this many megapixels."""
    pixels = img.width * img.height
    limit = megapixels * 1_000_000
    if pixels <= limit:
        return img
    factor = (limit / pixels) ** 0.5
    size = (max(1, int(img.width * factor)), max(1, int(img.height * factor)))
    return img.resize(size, Image.Resampling.LANCZOS)
