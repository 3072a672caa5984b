"""The remove.bg endpoint on the real IS-Net weights (few, small images)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.helpers import assert_error_shape


def _carvana(shared_data, name: str) -> tuple[bytes, np.ndarray]:
    image = (shared_data / "carvana" / "images" / f"{name}.jpg").read_bytes()
    mask = np.asarray(Image.open(shared_data / "carvana" / "masks" / f"{name}_mask.gif")) > 0
    return image, mask


@pytest.mark.slow
def test_type_car_keeps_the_car_and_drops_the_backdrop_logo(client, admin, shared_data) -> None:
    image, truth = _carvana(shared_data, "0ce66b539f52_05")
    resp = client.post("/v1.0/removebg", data={"image_file": (io.BytesIO(image), "car.jpg"), "type": "car",
                                               "size": "preview"}, headers=admin.headers,
                       content_type="multipart/form-data")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    out = Image.open(io.BytesIO(resp.data))
    alpha = np.asarray(out.getchannel("A")) > 127
    small_truth = np.asarray(Image.fromarray(truth).resize(out.size, Image.Resampling.NEAREST))
    dice = 2 * (alpha & small_truth).sum() / (alpha.sum() + small_truth.sum())
    assert dice > 0.97
    # nothing kept far from the car (the studio's logo letters sit on the backdrop above it)
    ys, xs = np.nonzero(small_truth)
    far = alpha.copy()
    far[max(ys.min() - 10, 0):ys.max() + 10, max(xs.min() - 10, 0):xs.max() + 10] = False
    assert far.sum() < 0.002 * alpha.size
    assert resp.headers["X-Type"] == "car" and resp.headers["X-Credits-Charged"] == "0.25"


def test_missing_weights_is_a_clear_503_and_costs_nothing(settings_dict, tmp_path, shared_data) -> None:
    from server import create_app
    from tests.helpers import make_account

    settings_dict["models"] = {"dir": str(tmp_path / "empty-models"), "require": False}
    app = create_app(settings_dict)
    admin = make_account(app, "a@dealer.example", "admin")
    client = app.test_client()
    before = client.get("/v1.0/account", headers=admin.headers).get_json()["data"]["attributes"]["credits"]["total"]
    image, _ = _carvana(shared_data, "0ce66b539f52_01")
    resp = client.post("/v1.0/removebg", data={"image_file": (io.BytesIO(image), "car.jpg")},
                       headers=admin.headers, content_type="multipart/form-data")
    err = assert_error_shape(resp, 503)
    assert err["code"] == "model_unavailable" and "forecourt models fetch" in err["detail"]
    after = client.get("/v1.0/account", headers=admin.headers).get_json()["data"]["attributes"]["credits"]["total"]
    assert after == pytest.approx(before)
    ready = client.get("/readyz")
    assert ready.status_code == 200  # require=false here; the segmenter check still says what is wrong
    seg = next(c for c in ready.get_json()["checks"] if c["name"] == "segmenter")
    assert seg["ok"] is False and "missing" in seg["detail"]
