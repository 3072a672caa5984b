"""models.compose and models.shadow: crop and margins, scale and position, backgrounds, encodings, shadows."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from models import compose, shadow
from models.compose import Box, Margin


def cutout(h: int = 100, w: int = 200, box: tuple[int, int, int, int] = (50, 20, 60, 40)) -> np.ndarray:
    """A transparent RGBA picture with one opaque blue rectangle at box = (left, top, width, height)."""
    rgba = np.zeros((h, w, 4), np.uint8)
    left, top, bw, bh = box
    rgba[top:top + bh, left:left + bw] = (0, 0, 255, 255)
    return rgba


def test_foreground_box_reads_float_and_uint8_alpha() -> None:
    rgba = cutout()
    assert compose.foreground_box(rgba[..., 3]) == Box(50, 20, 60, 40)
    assert compose.foreground_box(rgba[..., 3].astype(np.float32) / 255) == Box(50, 20, 60, 40)
    assert compose.foreground_box(np.zeros((5, 5), np.float32)) is None


def test_crop_with_pixel_and_percent_margins_pads_past_the_edge() -> None:
    rgba = cutout()
    box = compose.foreground_box(rgba[..., 3])
    out = compose.crop_with_margin(rgba, box, (Margin(10, False), Margin(0, False), Margin(0, False),
                                               Margin(0, False)))
    assert out.shape == (50, 60, 4) and out[:10, :, 3].max() == 0 and out[10:, :, 3].min() == 255
    # 50% of the 40 px high box on top and bottom, 100 px on the left: more than the picture has there
    pct = compose.crop_with_margin(rgba, box, (Margin(50, True), Margin(0, False), Margin(50, True),
                                               Margin(100, False)))
    assert pct.shape == (80, 160, 4)
    assert compose.foreground_box(pct[..., 3]) == Box(100, 20, 60, 40)
    extra = np.dstack([rgba, rgba[..., 3]])  # a fifth channel rides along
    assert compose.crop_with_margin(extra, box, (Margin(0, False),) * 4).shape == (40, 60, 5)


def test_place_scales_to_the_canvas_and_positions_in_the_free_space() -> None:
    rgba = cutout()  # subject 60x40 in a 200x100 canvas
    centred = compose.place(rgba, (200, 100), 0.5, (0.5, 0.5))
    # the tighter side decides: 50% of the height is 50 px, so 75x50
    assert compose.foreground_box(centred[..., 3]) == Box(62, 25, 75, 50)
    corner = compose.place(rgba, (200, 100), None, (1.0, 0.0))
    assert compose.foreground_box(corner[..., 3]) == Box(140, 0, 60, 40)
    assert compose.place(rgba, (200, 100), None, None) is rgba


def test_composite_over_colour_image_and_semi_transparent_colour() -> None:
    rgba = cutout()
    rgba[20:60, 50:110, 3] = 128  # half see-through subject
    over_red = compose.composite(rgba, (255, 0, 0, 255))
    assert tuple(over_red[0, 0]) == (255, 0, 0, 255)
    assert tuple(over_red[30, 60]) == pytest.approx((127, 0, 128, 255), abs=1)
    over_half = compose.composite(cutout(), (255, 0, 0, 128))
    assert tuple(over_half[0, 0]) == (255, 0, 0, 128) and tuple(over_half[30, 60]) == (0, 0, 255, 255)
    bg = compose.cover(Image.new("RGB", (50, 50), (0, 255, 0)), (200, 100))
    assert bg.shape == (100, 200, 4)
    assert tuple(compose.composite(cutout(), bg)[0, 0]) == (0, 255, 0, 255)


def test_encodings() -> None:
    rgba = cutout()
    png, media = compose.encode(rgba, "png")
    img = Image.open(io.BytesIO(png))
    assert media == "image/png" and img.mode == "RGBA" and np.array_equal(np.asarray(img), rgba)
    jpg, media = compose.encode(rgba, "jpg")
    flat = Image.open(io.BytesIO(jpg))
    assert media == "image/jpeg" and flat.mode == "RGB"
    assert min(flat.getpixel((2, 2))) > 245  # transparent areas become white
    webp, media = compose.encode(rgba, "webp")
    assert media == "image/webp" and Image.open(io.BytesIO(webp)).mode == "RGBA"
    archive, media = compose.encode(rgba, "zip")
    assert media == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        assert sorted(zf.namelist()) == ["alpha.png", "color.jpg"]
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(zf.read("alpha.png")))), rgba[..., 3])
        assert Image.open(io.BytesIO(zf.read("color.jpg"))).size == (200, 100)
    alpha_png, media = compose.encode(rgba, "png", channels="alpha")
    assert media == "image/png" and Image.open(io.BytesIO(alpha_png)).mode == "L"
    alpha_jpg, media = compose.encode(rgba, "jpg", channels="alpha")
    assert media == "image/jpeg" and Image.open(io.BytesIO(alpha_jpg)).mode == "L"
    assert compose.has_transparency(rgba) and not compose.has_transparency(compose.composite(rgba, (0, 0, 0, 255)))


def test_png_drops_the_colour_of_invisible_pixels_only() -> None:
    rgba = cutout()
    rgba[0, 0] = (10, 20, 30, 0)  # invisible: its colour is dropped
    rgba[0, 1] = (10, 20, 30, 1)  # barely visible: kept exactly
    png = np.asarray(Image.open(io.BytesIO(compose.encode(rgba, "png")[0])))
    assert tuple(png[0, 0]) == (0, 0, 0, 0) and tuple(png[0, 1]) == (10, 20, 30, 1)
    assert np.array_equal(png[1:], rgba[1:]) and tuple(png[30, 60]) == (0, 0, 255, 255)  # RGBA order kept
    webp = np.asarray(Image.open(io.BytesIO(compose.encode(rgba, "webp")[0])).convert("RGBA"))
    assert webp[0, 0, 3] == 0 and webp[30, 60, 3] == 255


def car_like(h: int = 300, w: int = 600, tilt: int = 0) -> np.ndarray:
    """A body floating above two wheels; with tilt the rear wheel stands higher (a three-quarter view)."""
    alpha = np.zeros((h, w), np.float32)
    alpha[100:200, 100:500] = 1.0  # body, bottom at row 199
    yy, xx = np.mgrid[0:h, 0:w]
    for cx, bottom in ((180, 240), (420, 240 - tilt)):
        alpha[(xx - cx) ** 2 + (yy - (bottom - 40)) ** 2 <= 40 ** 2] = 1.0
    return alpha


def test_car_shadow_sits_on_the_ground_line_under_the_tyres() -> None:
    alpha = car_like(tilt=30)
    s = shadow.car_shadow(alpha, opacity=1.0)
    assert s.shape == alpha.shape and s.dtype == np.float32 and 0 <= s.min() and s.max() <= 1
    # darkest right under each tyre, each at its own height (the ground line runs through both contacts)
    front, rear = s[236:246, 175:186].max(), s[206:216, 415:426].max()
    assert front > 0.8 and rear > 0.8
    assert s[206:216, 175:186].max() < 0.6 * front  # above the front contact, behind the wheel: lighter
    # under the body between the wheels: soft occlusion, lighter than the contacts
    between = s[215:222, 290:310].mean()
    assert 0.2 < between < 0.85 * min(front, rear)
    # far from the car: nothing
    assert s[:60].max() < 0.01 and s[:, :40].max() < 0.05 and s[280:, :].max() < 0.2
    assert shadow.car_shadow(alpha, opacity=0.4).max() == pytest.approx(0.4 * s.max(), rel=0.02)
    assert shadow.car_shadow(np.zeros((10, 10), np.float32)).max() == 0


def test_drop_and_cast_shadows_fall_where_their_light_puts_them() -> None:
    alpha = car_like()
    drop = shadow.drop_shadow(alpha, 0.5)
    ys, xs = np.nonzero(drop > 0.25)
    ys0, xs0 = np.nonzero(alpha > 0.5)
    assert xs.mean() > xs0.mean() + 3 and ys.mean() > ys0.mean() + 5  # down and to the right
    cast = shadow.cast_shadow(alpha, 0.8)
    behind = cast[200:239, 500:560]  # beyond the body's right end, above the ground: the sheared floor shadow
    assert behind.max() > 0.2 and cast[:90].max() < 0.05
    with pytest.raises(ValueError):
        shadow.make_shadow(alpha, "halo")


def test_add_shadow_keeps_the_subject_and_darkens_around_it() -> None:
    rgba = np.zeros((300, 600, 4), np.uint8)
    alpha = car_like()
    rgba[..., 0] = 200
    rgba[..., 3] = (alpha * 255).astype(np.uint8)
    out = shadow.add_shadow(rgba, 0.6, "car")
    solid = alpha > 0.5
    assert np.array_equal(out[solid], rgba[solid])  # the car itself is untouched
    assert out[242, 180, 3] > 100 and out[242, 180, :3].max() == 0  # black, semi-transparent shadow below
