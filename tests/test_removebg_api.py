"""POST /v1.0/removebg: remove.bg's inputs, parameters, error codes, headers and credits.

Parameter handling runs on a FakeSegmenter (an ellipse matte) for speed; test_removebg_real.py drives the same
path with the real IS-Net weights.
"""

from __future__ import annotations

import base64
import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from server.services import removebg as service
from server.services import segmentation
from tests.fakes_removebg import FakeEmptySegmenter, FakeSegmenter, photo
from tests.helpers import assert_error_shape


@pytest.fixture
def fake_segmenter(monkeypatch):
    fake = FakeSegmenter()
    monkeypatch.setattr(segmentation, "segmenter", lambda settings: fake)
    return fake


def credits(client, headers) -> float:
    return client.get("/v1.0/account", headers=headers).get_json()["data"]["attributes"]["credits"]["total"]


def post(client, headers, data=None, **kw):
    return client.post("/v1.0/removebg", data=data or {}, headers=headers, content_type="multipart/form-data", **kw)


def test_preview_png_with_headers_and_quarter_credit(client, admin, fake_segmenter) -> None:
    before = credits(client, admin.headers)
    resp = post(client, admin.headers, {"image_file": (io.BytesIO(photo(2000, 1000)), "car.jpg"), "size": "preview"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.mimetype == "image/png"
    img = Image.open(io.BytesIO(resp.data))
    assert img.mode == "RGBA"
    assert img.width * img.height <= 250_000 and img.width == int(resp.headers["X-Width"])
    assert resp.headers["X-Credits-Charged"] == "0.25"
    assert resp.headers["X-Type"] == "other"
    # the ellipse spans the middle half of the picture
    assert int(resp.headers["X-Foreground-Left"]) == pytest.approx(img.width / 4, abs=3)
    assert int(resp.headers["X-Foreground-Width"]) == pytest.approx(img.width / 2, abs=4)
    alpha = np.asarray(img.getchannel("A"))
    assert alpha[img.height // 2, img.width // 2] == 255 and alpha[2, 2] == 0
    assert credits(client, admin.headers) == pytest.approx(before - 0.25)


def test_full_size_costs_one_credit_and_keeps_resolution(client, admin, fake_segmenter) -> None:
    before = credits(client, admin.headers)
    resp = post(client, admin.headers, {"image_file": (io.BytesIO(photo(1200, 800)), "c.jpg"), "size": "hd",
                                        "type": "car"})
    assert resp.status_code == 200
    assert (resp.headers["X-Width"], resp.headers["X-Height"]) == ("1200", "800")
    assert resp.headers["X-Credits-Charged"] == "1" and resp.headers["X-Type"] == "car"
    assert credits(client, admin.headers) == pytest.approx(before - 1)


def test_type_car_asks_for_the_mirrored_pass_and_other_types_do_not(client, admin, fake_segmenter) -> None:
    for type_ in ("car", "auto", "product"):
        resp = post(client, admin.headers, {"image_file": (io.BytesIO(photo()), "a.jpg"), "type": type_})
        assert resp.status_code == 200
    assert list(zip(fake_segmenter.kinds, fake_segmenter.mirrors, strict=True)) == [
        ("car", True), ("auto", False), ("auto", False)]


def test_car_mirror_pass_setting_turns_the_second_pass_off(settings_dict, monkeypatch) -> None:
    from server import create_app
    from tests.helpers import make_account

    fake = FakeSegmenter()
    monkeypatch.setattr(segmentation, "segmenter", lambda settings: fake)
    app = create_app({**settings_dict, "removebg": {"car_mirror_pass": False}})
    client = app.test_client()
    headers = make_account(app, "admin@dealer.example", "admin").headers
    resp = post(client, headers, {"image_file": (io.BytesIO(photo()), "a.jpg"), "type": "car"})
    assert resp.status_code == 200 and fake.kinds == ["car"] and fake.mirrors == [False]


def test_json_and_base64_input_and_json_output(client, admin, fake_segmenter) -> None:
    b64 = base64.b64encode(photo()).decode()
    resp = client.post("/v1.0/removebg", json={"image_file_b64": b64, "format": "jpg", "bg_color": "81d4fa"},
                       headers={**admin.headers, "Accept": "application/json"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    data = resp.get_json()["data"]
    assert set(data) == {"result_b64", "foreground_top", "foreground_left", "foreground_width", "foreground_height"}
    img = Image.open(io.BytesIO(base64.b64decode(data["result_b64"])))
    assert img.format == "JPEG"
    r, g, b = img.convert("RGB").getpixel((2, 2))
    assert abs(r - 0x81) < 6 and abs(g - 0xD4) < 6 and abs(b - 0xFA) < 6
    assert data["foreground_width"] > 0


def test_v1_alias_form_bg_color_name_and_alpha_channel(client, admin, fake_segmenter) -> None:
    resp = client.post("/v1/removebg", data={"image_file_b64": base64.b64encode(photo()).decode(),
                                             "channels": "alpha"}, headers=admin.headers)
    assert resp.status_code == 200
    assert Image.open(io.BytesIO(resp.data)).mode == "L"
    named = post(client, admin.headers, {"image_file": (io.BytesIO(photo()), "a.jpg"), "bg_color": "red",
                                         "format": "png"})
    assert Image.open(io.BytesIO(named.data)).convert("RGB").getpixel((1, 1)) == (255, 0, 0)


def test_zip_holds_color_jpg_and_alpha_png(client, admin, fake_segmenter) -> None:
    resp = post(client, admin.headers, {"image_file": (io.BytesIO(photo()), "a.jpg"), "format": "zip"})
    assert resp.mimetype == "application/zip"
    with zipfile.ZipFile(io.BytesIO(resp.data)) as zf:
        assert sorted(zf.namelist()) == ["alpha.png", "color.jpg"]
        assert Image.open(io.BytesIO(zf.read("alpha.png"))).mode == "L"


def test_crop_margin_scale_and_position(client, admin, fake_segmenter) -> None:
    resp = post(client, admin.headers, {"image_file": (io.BytesIO(photo(400, 300)), "a.jpg"), "crop": "true",
                                        "crop_margin": "10px"})
    img = Image.open(io.BytesIO(resp.data))
    # the ellipse's box (about 200x150 at full size 400x300, preview keeps it) plus 10 px each side
    assert img.size == (int(resp.headers["X-Width"]), int(resp.headers["X-Height"]))
    assert img.width == pytest.approx(200 + 20, abs=4) and img.height == pytest.approx(150 + 20, abs=4)
    scaled = post(client, admin.headers, {"image_file": (io.BytesIO(photo(400, 300)), "a.jpg"), "scale": "25%",
                                          "position": "0% 100%"})
    alpha = np.asarray(Image.open(io.BytesIO(scaled.data)).getchannel("A"))
    ys, xs = np.nonzero(alpha > 128)
    assert xs.min() <= 2 and ys.max() >= alpha.shape[0] - 3  # pushed to the bottom-left corner
    # the 200x150 subject scaled to fit 25% of the 400x300 canvas: 100x75
    assert xs.max() - xs.min() + 1 == pytest.approx(100, abs=3)
    assert ys.max() - ys.min() + 1 == pytest.approx(75, abs=3)


def test_shadow_darkens_below_the_subject(client, admin, fake_segmenter) -> None:
    plain = post(client, admin.headers, {"image_file": (io.BytesIO(photo()), "a.jpg"), "bg_color": "white",
                                         "format": "png"})
    shadowed = post(client, admin.headers, {"image_file": (io.BytesIO(photo()), "a.jpg"), "bg_color": "white",
                                            "format": "png", "add_shadow": "true", "shadow_opacity": "80"})
    a = np.asarray(Image.open(io.BytesIO(plain.data)).convert("L"), np.float32)
    b = np.asarray(Image.open(io.BytesIO(shadowed.data)).convert("L"), np.float32)
    h, w = a.shape
    below = slice(int(h * 0.75) + 1, int(h * 0.75) + 6), slice(w // 3, 2 * w // 3)
    assert (a[below] - b[below]).mean() > 20  # darker right under the footprint
    assert abs(a[:5, :5] - b[:5, :5]).mean() < 1  # far away untouched


@pytest.mark.parametrize(("data", "code"), [
    ({"size": "huge"}, "invalid_size"),
    ({"format": "gif"}, "invalid_format"),
    ({"channels": "rgb"}, "invalid_channels"),
    ({"roi": "1 2 3"}, "invalid_roi"),
    ({"roi": "0% 0% 120% 100%"}, "roi_exceeds_bounds"),
    ({"roi": "0 0 9999 10"}, "roi_exceeds_bounds"),
    ({"roi": "50 50 10 10"}, "roi_region_empty"),
    ({"crop_margin": "1 2 3"}, "invalid_crop_margin"),
    ({"crop_margin": "600px"}, "invalid_crop_margin"),
    ({"crop_margin": "51%"}, "invalid_crop_margin"),
    ({"scale": "5%"}, "invalid_scale"),
    ({"scale": "big"}, "invalid_scale"),
    ({"position": "left"}, "invalid_position"),
    ({"position": "10% 20% 30%"}, "invalid_position"),
    ({"bg_color": "#12345"}, "invalid_bg_color"),
    ({"bg_color": "notacolour"}, "invalid_bg_color"),
    ({"type": "boat"}, "invalid_type"),
    ({"shadow_opacity": "150"}, "invalid_shadow_opacity"),
    ({"crop": "maybe"}, "invalid_crop"),
])
def test_invalid_values_get_remove_bg_codes_and_cost_nothing(client, admin, fake_segmenter, data, code) -> None:
    before = credits(client, admin.headers)
    resp = post(client, admin.headers, {"image_file": (io.BytesIO(photo()), "a.jpg"), **data})
    assert assert_error_shape(resp, 400)["code"] == code
    assert credits(client, admin.headers) == before


def test_source_errors(client, admin, fake_segmenter) -> None:
    assert assert_error_shape(post(client, admin.headers, {"size": "preview"}), 400)["code"] == "missing_source"
    both = post(client, admin.headers, {"image_file": (io.BytesIO(photo()), "a.jpg"),
                                        "image_file_b64": base64.b64encode(photo()).decode()})
    assert assert_error_shape(both, 400)["code"] == "multiple_sources"
    bgs = post(client, admin.headers, {"image_file": (io.BytesIO(photo()), "a.jpg"), "bg_color": "fff",
                                       "bg_image_file": (io.BytesIO(photo()), "bg.jpg")})
    assert assert_error_shape(bgs, 400)["code"] == "multiple_bg_sources"
    junk = post(client, admin.headers, {"image_file": (io.BytesIO(b"%PDF-1.4 not an image"), "a.pdf")})
    assert assert_error_shape(junk, 400)["code"] == "invalid_file_type"
    gif = post(client, admin.headers, {"image_file": (io.BytesIO(photo(fmt="GIF")), "a.gif")})
    assert assert_error_shape(gif, 400)["code"] == "invalid_file_type"
    bad_b64 = client.post("/v1.0/removebg", json={"image_file_b64": "***"}, headers=admin.headers)
    assert assert_error_shape(bad_b64, 400)["code"] == "failed_to_read_image"
    truncated = post(client, admin.headers, {"image_file": (io.BytesIO(photo()[:300]), "a.jpg")})
    assert assert_error_shape(truncated, 400)["code"] == "failed_to_read_image"


def test_image_url_is_off_by_default_and_private_hosts_are_refused(client, admin, app, fake_segmenter) -> None:
    resp = client.post("/v1.0/removebg", json={"image_url": "http://example.com/car.jpg"}, headers=admin.headers)
    assert assert_error_shape(resp, 400)["code"] == "image_url_disabled"
    app.extensions["forecourt.settings"].removebg.url_allow_hosts = ["localhost"]
    resp = client.post("/v1.0/removebg", json={"image_url": "http://localhost:1/car.jpg"}, headers=admin.headers)
    err = assert_error_shape(resp, 400)
    assert err["code"] == "invalid_image_url" and "private" in err["detail"]
    resp = client.post("/v1.0/removebg", json={"image_url": "http://other.example/car.jpg"}, headers=admin.headers)
    assert "allow-list" in assert_error_shape(resp, 400)["detail"]


def test_decompression_bomb_and_resolution_limits(client, admin, fake_segmenter) -> None:
    big = photo(8000, 7000, quality=10)  # 56 MP, small file
    assert assert_error_shape(post(client, admin.headers, {"image_file": (io.BytesIO(big), "a.jpg")}),
                              400)["code"] == "resolution_too_high"
    bomb = photo(20000, 12000, fmt="PNG")  # 240 MP of flat colour, a few hundred kB
    assert assert_error_shape(post(client, admin.headers, {"image_file": (io.BytesIO(bomb), "b.png")}),
                              400)["code"] == "resolution_too_high"


@pytest.mark.parametrize("mode", ["CMYK", "P", "L", "LA", "RGBA", "I;16"])
def test_odd_modes_are_handled(client, admin, fake_segmenter, mode) -> None:
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "I;16" else "PNG")
    if mode == "I;16":
        arr = (np.linspace(0, 65535, 300 * 200).reshape(200, 300)).astype(np.uint16)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "TIFF")
        data = buf.getvalue()
    else:
        data = photo(300, 200, fmt=fmt, mode=mode)
    resp = post(client, admin.headers, {"image_file": (io.BytesIO(data), f"a.{fmt.lower()}")})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert Image.open(io.BytesIO(resp.data)).size == (300, 200)


def test_exif_orientation_is_applied(client, admin, fake_segmenter) -> None:
    img = Image.open(io.BytesIO(photo(400, 200)))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    resp = post(client, admin.headers, {"image_file": (io.BytesIO(buf.getvalue()), "r.jpg")})
    assert (resp.headers["X-Width"], resp.headers["X-Height"]) == ("200", "400")


def test_heic_input(client, admin, fake_segmenter) -> None:
    import pillow_heif

    buf = io.BytesIO()
    pillow_heif.from_pillow(Image.open(io.BytesIO(photo(320, 240)))).save(buf, quality=80)
    resp = post(client, admin.headers, {"image_file": (io.BytesIO(buf.getvalue()), "phone.heic")})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.headers["X-Width"] == "320"


def test_no_foreground_is_unknown_foreground_and_free(client, admin, monkeypatch) -> None:
    monkeypatch.setattr(segmentation, "segmenter", lambda settings: FakeEmptySegmenter())
    before = credits(client, admin.headers)
    resp = post(client, admin.headers, {"image_file": (io.BytesIO(photo()), "a.jpg")})
    assert assert_error_shape(resp, 400)["code"] == "unknown_foreground"
    assert credits(client, admin.headers) == before


def test_segment_without_sam_is_a_clear_503(client, admin) -> None:
    resp = client.post("/v1/segment", json={"image_file_b64": base64.b64encode(photo()).decode(),
                                            "points": [[200, 150]], "labels": [1]}, headers=admin.headers)
    err = assert_error_shape(resp, 503)
    assert err["code"] == "sam_not_installed" and "forecourt models install" in err["detail"]
    resp = client.post("/v1/segment", json={"image_file_b64": base64.b64encode(photo()).decode()},
                       headers=admin.headers)
    assert assert_error_shape(resp, 400)["code"] == "invalid_prompt"


def test_missing_key_is_403_and_nothing_runs(client, fake_segmenter) -> None:
    resp = post(client, {}, {"image_file": (io.BytesIO(photo()), "a.jpg")})
    assert assert_error_shape(resp, 403)["code"] == "auth_failed"


@pytest.mark.parametrize(("size", "cap_mp", "charged"), [
    ("small", 0.25, "0.25"), ("regular", 0.25, "0.25"), ("medium", 1.5, "1"), ("hd", 4.0, "1"), ("4k", None, "1"),
])
def test_size_aliases_cap_resolution_and_price(client, admin, fake_segmenter, size, cap_mp, charged) -> None:
    resp = post(client, admin.headers, {"image_file": (io.BytesIO(photo(2400, 1800)), "a.jpg"), "size": size,
                                        "format": "jpg"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    w, h = int(resp.headers["X-Width"]), int(resp.headers["X-Height"])
    if cap_mp is None:
        assert (w, h) == (2400, 1800)
    else:
        assert w * h <= cap_mp * 1e6 and w * h > 0.95 * cap_mp * 1e6 and abs(w / h - 4 / 3) < 0.01
    assert resp.headers["X-Credits-Charged"] == charged


def test_png_output_is_capped_at_10_megapixels_other_formats_at_the_size() -> None:
    opts = service.parse_options({"size": "full", "format": "png"})
    assert service.output_megapixels(opts, "full") == 10
    assert service.output_megapixels(service.parse_options({"size": "50MP", "format": "zip"}), "50MP") == 50
    assert service.output_megapixels(service.parse_options({"size": "full", "format": "jpg"}), "full") == 25
    # auto becomes PNG unless an opaque background makes the result opaque
    assert service.output_megapixels(service.parse_options({"size": "full"}), "full") == 10
    assert service.output_megapixels(service.parse_options({"size": "full", "bg_color": "fff"}), "full") == 25
    assert service.output_megapixels(service.parse_options({"size": "full", "bg_color": "ffffff80"}), "full") == 10


def test_auto_size_takes_full_then_falls_back_to_preview_when_credits_run_short(client, admin, fake_segmenter,
                                                                                monkeypatch) -> None:
    from licensing.errors import InsufficientCredits
    from server.services import metering

    big = {"image_file": (io.BytesIO(photo(1200, 800)), "a.jpg"), "size": "auto"}
    resp = post(client, admin.headers, big)
    assert resp.headers["X-Credits-Charged"] == "1" and resp.headers["X-Width"] == "1200"
    tiny = post(client, admin.headers, {"image_file": (io.BytesIO(photo(400, 300)), "a.jpg"), "size": "auto"})
    assert tiny.headers["X-Credits-Charged"] == "0.25" and tiny.headers["X-Width"] == "400"

    real_charge = metering.charge

    def short_of_a_full_credit(metric: str, amount: float):  # noqa: ANN202
        if amount >= 1:
            raise InsufficientCredits("Not enough credits for this request.")
        return real_charge(metric, amount)

    monkeypatch.setattr(metering, "charge", short_of_a_full_credit)
    before = credits(client, admin.headers)
    resp = post(client, admin.headers, {"image_file": (io.BytesIO(photo(1200, 800)), "a.jpg"), "size": "auto"})
    assert resp.status_code == 200 and resp.headers["X-Credits-Charged"] == "0.25"
    assert int(resp.headers["X-Width"]) * int(resp.headers["X-Height"]) <= 250_000
    assert credits(client, admin.headers) == pytest.approx(before - 0.25)
    full = post(client, admin.headers, {"image_file": (io.BytesIO(photo(1200, 800)), "a.jpg"), "size": "full"})
    assert assert_error_shape(full, 402)["code"] == "insufficient_credits"
    assert credits(client, admin.headers) == pytest.approx(before - 0.25)


@pytest.mark.parametrize(("extra", "mimetype"), [
    ({}, "image/png"),
    ({"bg_color": "white"}, "image/jpeg"),
    ({"bg_color": "81d4fa77"}, "image/png"),  # a see-through background keeps transparency: PNG
    ({"bg_color": "white", "format": "webp"}, "image/webp"),
    ({"channels": "alpha"}, "image/png"),
    ({"channels": "alpha", "format": "jpg"}, "image/jpeg"),
])
def test_format_auto_follows_transparency(client, admin, fake_segmenter, extra, mimetype) -> None:
    resp = post(client, admin.headers, {"image_file": (io.BytesIO(photo()), "a.jpg"), **extra})
    assert resp.status_code == 200 and resp.mimetype == mimetype
    img = Image.open(io.BytesIO(resp.data))
    if extra.get("channels") == "alpha":
        assert img.mode == "L"
    elif "81d4fa77" in extra.values():
        assert img.getpixel((1, 1)) == (0x81, 0xD4, 0xFA, 0x77)


def test_foreground_headers_describe_the_subject_not_its_shadow(client, admin, fake_segmenter) -> None:
    plain = post(client, admin.headers, {"image_file": (io.BytesIO(photo(400, 300)), "a.jpg")})
    shadowed = post(client, admin.headers, {"image_file": (io.BytesIO(photo(400, 300)), "a.jpg"),
                                            "add_shadow": "true", "crop": "true"})
    keys = ("X-Foreground-Top", "X-Foreground-Left", "X-Foreground-Width", "X-Foreground-Height")
    assert [int(plain.headers[k]) for k in keys] == pytest.approx([75, 100, 200, 150], abs=2)
    # cropped to subject + shadow: the shadow adds rows below (and a soft edge beside) the subject, whose box
    # stays 200x150 at the top
    top, left, width, height = (int(shadowed.headers[k]) for k in keys)
    assert (top, width, height) == (0, 200, 150) and left >= 0
    assert int(shadowed.headers["X-Height"]) > 150 and int(shadowed.headers["X-Width"]) >= left + width


@pytest.mark.parametrize("shadow_type", ["car", "3D", "drop"])
def test_shadow_types_draw_a_shadow_and_none_draws_none(client, admin, fake_segmenter, shadow_type) -> None:
    def alpha_of(extra: dict) -> np.ndarray:
        resp = post(client, admin.headers, {"image_file": (io.BytesIO(photo()), "a.jpg"), **extra})
        assert resp.status_code == 200, resp.get_data(as_text=True)
        return np.asarray(Image.open(io.BytesIO(resp.data)).getchannel("A")).astype(int)

    plain = alpha_of({"shadow_type": "none"})
    shadowed = alpha_of({"shadow_type": shadow_type, "shadow_opacity": "90"})
    added = (shadowed - plain).clip(0)
    assert added.max() > 100 and (plain > 0).sum() < (shadowed > 0).sum()
    assert (shadowed[plain == 255] == 255).all()
    faint = alpha_of({"shadow_type": shadow_type, "shadow_opacity": "30"})
    assert 0 < (faint - plain).clip(0).max() < added.max()


def test_roi_limits_the_foreground_and_semitransparency_off_hardens_edges(client, admin, monkeypatch) -> None:
    class FakeSoftSegmenter(FakeSegmenter):
        def mask(self, image, kind="auto", mirror=False):  # noqa: ANN001
            hard = super().mask(image, kind, mirror)
            return np.where(hard > 0, 1.0, 0.3).astype(np.float32)  # a see-through haze all around

    monkeypatch.setattr(segmentation, "segmenter", lambda settings: FakeSoftSegmenter())
    resp = post(client, admin.headers, {"image_file": (io.BytesIO(photo(400, 300)), "a.jpg"),
                                        "roi": "0% 0% 50% 100%"})
    alpha = np.asarray(Image.open(io.BytesIO(resp.data)).getchannel("A"))
    assert alpha[:, 201:].max() == 0 and alpha[150, 150] == 255 and alpha[5, 5] == pytest.approx(77, abs=1)
    hard = post(client, admin.headers, {"image_file": (io.BytesIO(photo(400, 300)), "a.jpg"),
                                        "semitransparency": "false"})
    alpha = np.asarray(Image.open(io.BytesIO(hard.data)).getchannel("A"))
    assert alpha[5, 5] == 0 and alpha[150, 200] == 255


def test_bg_image_file_shows_behind_the_subject(client, admin, fake_segmenter) -> None:
    bg = io.BytesIO()
    Image.new("RGB", (100, 100), (0, 200, 0)).save(bg, "PNG")
    resp = post(client, admin.headers, {"image_file": (io.BytesIO(photo(400, 300)), "a.jpg"),
                                        "bg_image_file": (io.BytesIO(bg.getvalue()), "bg.png"), "format": "png"})
    img = Image.open(io.BytesIO(resp.data)).convert("RGB")
    assert img.getpixel((3, 3)) == (0, 200, 0) and img.getpixel((200, 150))[1] < 160
    bad_bg = post(client, admin.headers, {"image_file": (io.BytesIO(photo()), "a.jpg"),
                                          "bg_image_file": (io.BytesIO(b"nope"), "bg.png")})
    assert assert_error_shape(bad_bg, 400)["code"] == "invalid_file_type"


def test_json_body_with_native_types_and_a_data_url(client, admin, fake_segmenter) -> None:
    b64 = "data:image/jpeg;base64," + base64.b64encode(photo(400, 300)).decode()
    resp = client.post("/v1.0/removebg", json={"image_file_b64": b64, "crop": True, "shadow_opacity": 40,
                                               "add_shadow": False, "size": "preview"}, headers=admin.headers)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert (resp.headers["X-Width"], resp.headers["X-Height"]) == ("200", "150")
    not_object = client.post("/v1.0/removebg", json=["image_file_b64"], headers=admin.headers)
    assert assert_error_shape(not_object, 400)["code"] == "invalid_parameters"


def test_a_crash_mid_request_is_a_500_in_the_error_shape_and_costs_nothing(client, admin, monkeypatch) -> None:
    from tests.fakes_removebg import FakeCrashingSegmenter

    monkeypatch.setattr(segmentation, "segmenter", lambda settings: FakeCrashingSegmenter(fail_width=400))
    before = credits(client, admin.headers)
    resp = post(client, admin.headers, {"image_file": (io.BytesIO(photo(400, 300)), "a.jpg"), "size": "full"})
    err = assert_error_shape(resp, 500)
    assert err["code"] == "internal_error" and "worker died" not in err["detail"]
    assert credits(client, admin.headers) == before


def test_inference_time_is_recorded(client, admin, fake_segmenter) -> None:
    from server.metrics import INFERENCE

    def count() -> float:
        return sum(s.value for m in INFERENCE.collect() for s in m.samples
                   if s.name.endswith("_count") and s.labels.get("model") == "fake-ellipse")

    before = count()
    assert post(client, admin.headers, {"image_file": (io.BytesIO(photo()), "a.jpg")}).status_code == 200
    assert count() == before + 1


def test_image_file_sent_as_text_is_refused_clearly(client, admin, fake_segmenter) -> None:
    as_text = client.post("/v1.0/removebg", data={"image_file": "car.jpg"}, headers=admin.headers)
    err = assert_error_shape(as_text, 400)
    assert err["code"] == "failed_to_read_image" and "multipart" in err["detail"]
    in_json = client.post("/v1.0/removebg", json={"image_file": "abc", "bg_image_file": "x"}, headers=admin.headers)
    assert assert_error_shape(in_json, 400)["code"] == "failed_to_read_image"
    assert fake_segmenter.calls == 0
