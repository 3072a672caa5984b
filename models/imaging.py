"""Decoding uploaded images safely: formats, EXIF orientation, colour profiles, odd modes, size limits, bombs."""

from __future__ import annotations

import io
import logging

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from models.errors import ModelError

try:  # HEIC/HEIF from phones
    from pillow_heif import register_heif_opener

    register_heif_opener()
except ImportError:  # pragma: no cover - declared dependency
    pass

log = logging.getLogger(__name__)

ACCEPTED_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "HEIF", "HEIC", "TIFF", "BMP"}
MAX_FILE_BYTES = 22 * 1024 * 1024  # remove.bg's upload limit
MAX_MEGAPIXELS = 50.0  # remove.bg's input resolution limit
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1")


def has_supported_signature(data: bytes) -> bool:
    """Whether the bytes start like a JPEG, PNG, WebP, HEIC/HEIF, TIFF or BMP file (the magic bytes only)."""
    return (data.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"II*\x00", b"MM\x00*", b"II+\x00", b"BM"))
            or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
            or (data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS))


class ImageInputError(ModelError):
    """An input image the service cannot use; code says why (remove.bg's codes)."""

    code, title, status = "failed_to_read_image", "Could not read the image", 400


def decode(data: bytes, *, max_bytes: int = MAX_FILE_BYTES, max_megapixels: float = MAX_MEGAPIXELS,
           what: str = "image", draft_megapixels: float | None = None) -> Image.Image:
    """Bytes to an upright 8-bit sRGB image (RGB, or RGBA when it has alpha); ImageInputError with remove.bg's
    codes on any problem. `draft_megapixels`: the caller will downscale to this anyway, so a JPEG may be decoded
    at a reduced scale (DCT scaling; never below that size)."""
    if not data:
        raise ImageInputError(f"The {what} is empty.")
    if len(data) > max_bytes:
        raise ImageInputError(f"The {what} is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB.",
                              code="file_too_large", title="File too large")
    try:
        img = Image.open(io.BytesIO(data))  # reads the header only; refuses > 2x Image.MAX_IMAGE_PIXELS itself
        fmt = (img.format or "").upper()
        if fmt not in ACCEPTED_FORMATS:
            raise ImageInputError(f"The {what} is {fmt}; send JPEG, PNG, WebP, HEIC/HEIF, TIFF or BMP.",
                                  code="invalid_file_type", title="Unsupported file type")
        megapixels = img.width * img.height / 1e6
        if megapixels > max_megapixels:  # before a single pixel is decoded: no decompression bombs
            raise ImageInputError(
                f"The {what} is {img.width}x{img.height} ({megapixels:.1f} megapixels); the limit is "
                f"{max_megapixels:g} megapixels.", code="resolution_too_high", title="Resolution too high")
        if draft_megapixels and fmt in ("JPEG", "MPO") and megapixels > draft_megapixels:
            factor = (draft_megapixels / megapixels) ** 0.5
            img.draft(None, (int(img.width * factor) + 1, int(img.height * factor) + 1))
        img.load()
        return normalise(img)
    except ImageInputError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageInputError(f"The {what} claims too many pixels to decode safely.",
                              code="resolution_too_high", title="Resolution too high") from exc
    except UnidentifiedImageError as exc:
        if has_supported_signature(data):  # a supported type whose body does not decode: unreadable, not unsupported
            raise ImageInputError(f"The {what} looks like a supported image type but could not be read; the file "
                                  f"may be damaged or incomplete.") from exc
        raise ImageInputError(f"The {what} is not an image this server reads; send JPEG, PNG, WebP, HEIC/HEIF, "
                              f"TIFF or BMP.", code="invalid_file_type", title="Unsupported file type") from exc
    except (OSError, ValueError, SyntaxError, EOFError, ImageCms.PyCMSError) as exc:
        raise ImageInputError(f"The {what} could not be decoded ({exc}).") from exc


def normalise(img: Image.Image) -> Image.Image:
    """EXIF orientation applied; colour profile converted to sRGB; CMYK, 16-bit, float, palette, greyscale and
    LA brought to 8-bit RGB, or RGBA when the image carries alpha."""
    ImageOps.exif_transpose(img, in_place=True)  # in place: without an orientation tag a copy would cost the image again
    icc = img.info.get("icc_profile")
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float32)
        peak = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr * (255.0 / peak) + 0.5, 0, 255).astype(np.uint8), "L")
        mode = "L"  # a 16-bit grey profile does not describe the rescaled values: drop it
        icc = None
    elif mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 if lo >= 0.0 and hi <= 1.0 else 255.0 / max(hi - lo, 1e-9)
        offset = 0.0 if lo >= 0.0 and hi <= 1.0 else lo
        img = Image.fromarray(np.clip((arr - offset) * scale + 0.5, 0, 255).astype(np.uint8), "L")
        mode, icc = "L", None
    elif mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    elif mode in ("PA", "RGBa", "La"):
        img = img.convert("RGBA")
        mode = "RGBA"
    target = "RGBA" if mode in ("RGBA", "LA") else "RGB"
    if icc:
        converted = _to_srgb(img, icc, target)
        if converted is not None:
            return converted
    return img if img.mode == target else img.convert(target)


def _to_srgb(img: Image.Image, icc: bytes, target: str) -> Image.Image | None:
    """Convert through the embedded ICC profile to sRGB; None when it is sRGB already or cannot be used."""
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if img.mode in ("RGB", "RGBA") and "srgb" in ImageCms.getProfileDescription(profile).lower():
            return None
        alpha = img.getchannel("A") if img.mode in ("RGBA", "LA") else None
        base = img.convert("L") if img.mode == "LA" else (img.convert("RGB") if img.mode == "RGBA" else img)
        out = ImageCms.profileToProfile(base, profile, _SRGB, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:
        log.debug("ignoring an unusable ICC profile: %s", exc)
        return None
    if out is None:
        return None
    if target == "RGBA" and alpha is not None:
        out.putalpha(alpha)
    return out


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
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)



def header_pixels(data: bytes) -> int:
    """Width x height from the image's header, without decoding any pixel; 0 when the header does not read
    (decode then says why)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return int(img.width) * int(img.height)
    except Exception:  # noqa: BLE001 - any unreadable header: decode reports it with the right code
        return 0
