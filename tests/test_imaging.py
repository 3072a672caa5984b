"""models.imaging: every accepted format and mode comes out as an upright 8-bit RGB or RGBA image; the rest is
refused with remove.bg's codes before anything large is decoded."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageCms

from models import imaging
from models.imaging import ImageInputError
from tests.fakes_removebg import photo


def code_of(data: bytes, **kw) -> str:  # noqa: ANN003
    with pytest.raises(ImageInputError) as info:
        imaging.decode(data, **kw)
    assert info.value.status == 400
    return info.value.code


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF", "BMP"])
def test_common_formats_decode_to_rgb_with_their_pixels(fmt: str) -> None:
    img = imaging.decode(photo(64, 48, fmt=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {})))
    assert img.mode == "RGB" and img.size == (64, 48)
    arr = np.asarray(img).astype(int)
    assert abs(arr[24, 0, 0] - 0) <= 8 and abs(arr[24, 63, 0] - 255) <= 8 and abs(arr[24, 32, 1] - 120) <= 8


def test_heic_from_a_phone_decodes() -> None:
    import pillow_heif

    buf = io.BytesIO()
    pillow_heif.from_pillow(Image.open(io.BytesIO(photo(64, 48)))).save(buf, quality=90)
    img = imaging.decode(buf.getvalue())
    assert img.mode == "RGB" and img.size == (64, 48)
    assert abs(int(np.asarray(img)[24, 32, 1]) - 120) <= 10


def test_exif_orientation_is_applied() -> None:
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # left half white
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise: the white half ends on top
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif, quality=95)
    out = np.asarray(imaging.decode(buf.getvalue()))
    assert out.shape[:2] == (40, 20)
    assert out[5, 10].mean() > 200 and out[35, 10].mean() < 50


def test_cmyk_jpeg_becomes_rgb_with_the_same_colours() -> None:
    red = Image.new("RGB", (16, 16), (220, 30, 30)).convert("CMYK")
    buf = io.BytesIO()
    red.save(buf, "JPEG", quality=95)
    out = imaging.decode(buf.getvalue())
    assert out.mode == "RGB"
    r, g, b = out.getpixel((8, 8))
    assert r > 180 and g < 80 and b < 80


def test_sixteen_bit_grey_and_rgb_are_scaled_to_eight_bits() -> None:
    grey = (np.linspace(0, 65535, 256).reshape(1, 256).repeat(4, axis=0)).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, "PNG")
    out = np.asarray(imaging.decode(buf.getvalue()))
    assert out.shape == (4, 256, 3) and out[0, 0, 0] == 0 and out[0, -1, 0] == 255 and 120 <= out[0, 128, 0] <= 135
    dark = np.full((4, 4), 1000, np.uint16)  # a dark 16-bit image stays dark (no guessing from its maximum)
    buf = io.BytesIO()
    Image.fromarray(dark).save(buf, "TIFF")
    assert np.asarray(imaging.decode(buf.getvalue()))[0, 0, 0] == 4
    import cv2

    rgb16 = np.zeros((4, 4, 3), np.uint16)
    rgb16[..., 2] = 65535  # cv2 writes BGR: this is red
    ok, png = cv2.imencode(".png", rgb16)
    assert ok
    assert imaging.decode(png.tobytes()).getpixel((0, 0)) == (255, 0, 0)


def test_palette_with_transparency_and_grey_with_alpha_keep_their_alpha() -> None:
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.paste(1, (0, 0, 4, 8))
    buf = io.BytesIO()
    pal.save(buf, "PNG", transparency=0)
    out = imaging.decode(buf.getvalue())
    assert out.mode == "RGBA" and out.getpixel((1, 1)) == (255, 0, 0, 255) and out.getpixel((6, 1))[3] == 0
    assert imaging.has_alpha(out)
    la = Image.new("LA", (8, 8), (200, 100))
    buf = io.BytesIO()
    la.save(buf, "PNG")
    assert imaging.decode(buf.getvalue()).getpixel((0, 0)) == (200, 200, 200, 100)
    opaque = imaging.decode(photo(8, 8, fmt="PNG", mode="RGBA"))
    assert opaque.mode == "RGBA" and not imaging.has_alpha(opaque)


def test_lab_image_with_its_profile_comes_out_in_srgb() -> None:
    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB"))
    buf = io.BytesIO()
    Image.new("LAB", (8, 8), (128, 200, 128)).save(buf, "TIFF", icc_profile=lab.tobytes())  # L 50, a +72, b 0
    r, g, b = imaging.decode(buf.getvalue()).getpixel((4, 4))
    assert r > 180 and g < 80 and 90 < b < 160  # a strong magenta-red


def test_refusals_carry_remove_bg_codes() -> None:
    assert code_of(b"") == "failed_to_read_image"
    assert code_of(b"%PDF-1.4 not an image") == "invalid_file_type"
    assert code_of(photo(16, 16, fmt="GIF")) == "invalid_file_type"
    assert code_of(photo(200, 200)[:400]) == "failed_to_read_image"  # cut off mid-stream
    assert code_of(photo(64, 64, fmt="PNG"), max_bytes=100) == "file_too_large"
    assert code_of(photo(300, 200), max_megapixels=0.05) == "resolution_too_high"


@pytest.mark.parametrize("data", [
    b"\xff\xd8\xff" + bytes(5000),  # JPEG magic, then nothing a decoder can use
    photo(200, 200)[:300] + np.random.default_rng(0).bytes(5000),  # a real JPEG header, then noise
    b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 10,  # PNG magic, no chunks
    b"BM" + bytes(60),  # BMP magic, an empty header
], ids=["jpeg-magic-zeros", "jpeg-header-noise", "png-magic-noise", "bmp-magic-empty"])
def test_a_supported_type_that_does_not_decode_is_failed_to_read_image(data: bytes) -> None:
    """remove.bg: failed_to_read_image for an unreadable image of a supported type; invalid_file_type for others."""
    assert code_of(data) == "failed_to_read_image"


def test_only_other_types_are_invalid_file_type() -> None:
    for data in (b"%PDF-1.4 not an image", photo(16, 16, fmt="GIF"), b"GIF89a" + bytes(100), b"hello" * 20):
        assert code_of(data) == "invalid_file_type"


def test_decompression_bombs_are_refused_from_the_header() -> None:
    bomb = photo(20000, 12000, fmt="PNG")  # 240 MP of flat colour in a few hundred kB
    assert len(bomb) < 2_000_000
    assert code_of(bomb) == "resolution_too_high"
    big = photo(9000, 6000, quality=5)  # 54 MP
    assert code_of(big) == "resolution_too_high"


def test_jpeg_draft_decodes_large_photos_at_a_reduced_scale_but_never_below_the_target() -> None:
    data = photo(2000, 1600)
    full = imaging.decode(data)
    assert full.size == (2000, 1600)
    small = imaging.decode(data, draft_megapixels=0.25)
    assert small.size == (1000, 800)  # DCT scaling by 1/2; 1/4 (500x400) would be below 0.25 MP
    assert imaging.resize_to_megapixels(small, 0.25).size == imaging.resize_to_megapixels(full, 0.25).size
    assert imaging.decode(data, draft_megapixels=30).size == (2000, 1600)


def test_resize_to_megapixels_only_shrinks() -> None:
    img = Image.new("RGB", (1000, 500))
    out = imaging.resize_to_megapixels(img, 0.125)
    assert out.width * out.height <= 125_000 and out.size == (500, 250)
    assert imaging.resize_to_megapixels(img, 10) is img
