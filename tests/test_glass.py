"""See-through windows for type=car (models/glass.py) on real photos and the real IS-Net weights."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from models import glass

SIDE_VIEW = "0ce66b539f52_05"  # a Carvana side view: the backdrop's logo letters show through the rear windows


def _alpha(client, admin, image: bytes, **fields: str) -> np.ndarray:
    data = {"image_file": (io.BytesIO(image), "car.jpg"), "type": "car", "size": "preview", "format": "png", **fields}
    resp = client.post("/v1.0/removebg", data=data, headers=admin.headers, content_type="multipart/form-data")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return np.asarray(Image.open(io.BytesIO(resp.data)).getchannel("A")).astype(np.int16)


@pytest.fixture
def settings_dict(settings_dict: dict) -> dict:
    """The glass is experimental and off by default: these tests turn it on."""
    settings_dict["removebg"] = {"see_through_glass": True}
    return settings_dict


def _identity(rgb: np.ndarray, alpha: np.ndarray, colour: np.ndarray, params: object = None):  # noqa: ANN202
    return alpha, colour


@pytest.mark.slow
def test_semitransparency_changes_alpha_only_inside_the_glass(client, admin, shared_data, monkeypatch) -> None:
    image = (shared_data / "carvana" / "images" / f"{SIDE_VIEW}.jpg").read_bytes()
    truth = np.asarray(Image.open(shared_data / "carvana" / "masks" / f"{SIDE_VIEW}_mask.gif")) > 0
    with_glass = _alpha(client, admin, image)
    off = _alpha(client, admin, image, semitransparency="false")
    monkeypatch.setattr(glass, "see_through", _identity)
    today = _alpha(client, admin, image)
    today_off = _alpha(client, admin, image, semitransparency="false")
    # false: today's opaque result, bit for bit (the glass never runs)
    assert np.array_equal(off, today_off)
    # true: alpha only ever drops, and only in the car's upper band (its windows)
    truth = np.asarray(Image.fromarray(truth).resize(with_glass.shape[::-1], Image.Resampling.NEAREST))
    ys = np.nonzero(truth.any(axis=1))[0]
    changed = np.abs(with_glass - today) > 1
    assert (with_glass <= today + 1).all()
    assert changed.sum() > 0.03 * truth.sum()  # the side windows are a good part of a side view
    rows = np.nonzero(changed.any(axis=1))[0]
    assert rows.min() >= ys.min() and rows.max() <= ys.min() + 0.45 * (ys.max() - ys.min())
    assert (changed & ~truth).sum() < 0.01 * changed.sum()
    # the windows are see-through, not merely softened
    assert np.median(with_glass[changed]) < 0.6 * 255


def test_see_through_leaves_a_photo_without_glass_alone() -> None:
    """A cut-out whose upper band holds no glass-like pixels (a flat bright-red block) is returned unchanged."""
    rgb = np.full((200, 300, 3), 255, np.uint8)
    rgb[60:160, 40:260] = (200, 20, 20)
    alpha = np.zeros((200, 300), np.float32)
    alpha[60:160, 40:260] = 1.0
    out_alpha, out_colour = glass.see_through(rgb, alpha, rgb)
    assert np.array_equal(out_alpha, alpha) and np.array_equal(out_colour, rgb)


def test_try_it_offers_see_through_windows_on_by_default(app, client, admin) -> None:
    from server.dashboard.tryit import _form_choices, removebg_params
    from tests.helpers import sign_in

    sign_in(client, admin)
    page = client.get("/try").get_data(as_text=True)
    assert '<input type="checkbox" name="semitransparency" checked>' in page
    with app.test_request_context("/try", method="POST", data={"type": "car", "semitransparency": "on"}):
        assert removebg_params(_form_choices())["semitransparency"] == "true"
    with app.test_request_context("/try", method="POST", data={"type": "car"}):  # the box unticked
        assert removebg_params(_form_choices())["semitransparency"] == "false"


@pytest.mark.slow
def test_the_glass_is_off_unless_the_admin_turns_it_on(tmp_path, shared_data, monkeypatch) -> None:
    """With the default settings, semitransparency=true (remove.bg's default) never runs the glass step."""
    from server import create_app
    from server.config import RemovebgSettings
    from server.store import close_thread_connections
    from tests.helpers import MODELS_DIR, make_account

    assert RemovebgSettings().see_through_glass is False
    (tmp_path / "d").mkdir()
    app = create_app({"storage": {"data_dir": str(tmp_path / "d")}, "models": {"dir": str(MODELS_DIR), "require": False},
                      "logging": {"level": "WARNING"}, "licensing": {"state_dir": str(tmp_path / "state")}})
    app.config["TESTING"] = True
    calls: list[int] = []

    def counting(rgb, alpha, colour, params=None):  # noqa: ANN001, ANN202
        calls.append(1)
        return alpha, colour

    monkeypatch.setattr(glass, "see_through", counting)
    admin = make_account(app, "admin@dealer.example", "admin")
    image = (shared_data / "carvana" / "images" / f"{SIDE_VIEW}.jpg").read_bytes()
    try:
        alpha = _alpha(app.test_client(), admin, image, semitransparency="true")
    finally:
        close_thread_connections()
    assert calls == []
    assert alpha.max() == 255


def _fake_glass(rgb, alpha, colour, params=None):  # noqa: ANN001, ANN202
    """A stand-in for the glass step: the top fifth of the cut-out's box is 'glass' at alpha 0.3, coloured black."""
    ys = np.nonzero((alpha > 0.5).any(axis=1))[0]
    band = slice(int(ys[0]), int(ys[0] + 0.2 * (ys[-1] - ys[0])))
    alpha, colour = alpha.copy(), colour.copy()
    alpha[band] = np.minimum(alpha[band], 0.3)
    colour[band] = 0
    return alpha, colour


def test_the_glass_reaches_zip_bg_color_add_shadow_and_catalog_renders(app, client, admin, monkeypatch) -> None:
    """Every output of type=car gets the glass's alpha and colour: format=zip's alpha, a flat colour, a background
    image, a shadow, and the catalog's studio render (the glass step runs there too)."""
    from server.services import catalog_jobs, segmentation
    from tests.fakes_removebg import FakeSegmenter, photo
    from tests.test_catalog_api import new_vehicle, upload

    monkeypatch.setattr(segmentation, "segmenter", lambda settings: FakeSegmenter())
    calls: list[int] = []

    def counted(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        return _fake_glass(*args, **kwargs)

    monkeypatch.setattr(glass, "see_through", counted)

    def post(**fields: object):  # noqa: ANN202
        data = {"image_file": (io.BytesIO(photo(400, 300)), "car.jpg"), "type": "car", "size": "preview", **fields}
        resp = client.post("/v1.0/removebg", data=data, headers=admin.headers, content_type="multipart/form-data")
        assert resp.status_code == 200, resp.get_data(as_text=True)
        return resp

    top, body = (200, 85), (200, 150)  # (x, y) in the ellipse's top fifth (y 75-105) and its middle
    with zipfile.ZipFile(io.BytesIO(post(format="zip").data)) as zf:
        zip_alpha = Image.open(io.BytesIO(zf.read("alpha.png")))
    assert zip_alpha.getpixel(top) == pytest.approx(77, abs=3) and zip_alpha.getpixel(body) == 255
    on_white = Image.open(io.BytesIO(post(bg_color="ffffff", format="jpg").data)).convert("L")
    assert on_white.getpixel(top) == pytest.approx(0.7 * 255, abs=8)  # 30% black glass over white
    bg = io.BytesIO()
    Image.new("RGB", (400, 300), (0, 0, 255)).save(bg, "PNG")
    on_blue = Image.open(io.BytesIO(post(bg_image_file=(io.BytesIO(bg.getvalue()), "bg.png"), format="png").data))
    r, g, b = on_blue.convert("RGB").getpixel(top)
    assert b == pytest.approx(0.7 * 255, abs=8) and r < 10  # the new background shows through the glass
    shadowed = Image.open(io.BytesIO(post(add_shadow="true", format="png").data))
    assert shadowed.getchannel("A").getpixel(top) < 128
    calls.clear()
    v = new_vehicle(client, admin.headers)
    upload(client, admin.headers, v["id"], [(photo(640, 480), "front")])
    catalog_jobs.run_pending(app)
    assert calls == [1]
