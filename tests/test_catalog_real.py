"""End to end on the real model: a vehicle from a real VIN, the 16 Carvana photos of one car, renders by the
background threads, masks against the ground truth, a resized WebP through a signed URL, a profile change."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from server.jobs import queue

pytestmark = pytest.mark.slow  # real model weights

CAR = "0ce66b539f52"
ANGLES8 = ("front", "front_left", "left", "rear_left", "rear", "rear_right", "right", "front_right")


def carvana_angle(n: int) -> str:
    """Carvana's 16 views are 22.5 degrees apart (01 front, 05 left side, 09 rear, 13 right side)."""
    return ANGLES8[round((n - 1) / 2) % 8]


def wait_for_renders(client, headers, vehicle_id: int, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = client.get(f"/v1/vehicles/{vehicle_id}", headers=headers).get_json()["renders"]
        if progress["queued"] == 0 and progress["running"] == 0:
            return progress
        time.sleep(0.5)
    pytest.fail(f"renders not done after {timeout}s: {progress}")


def car_mask(render: Image.Image, bg: tuple[int, int, int]) -> np.ndarray:
    """Pixels clearly unlike the flat studio background."""
    diff = np.abs(np.asarray(render.convert("RGB")).astype(int) - np.array(bg)).sum(axis=2)
    return diff > 60


def crop_to_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


@pytest.fixture
def settings_dict(settings_dict: dict) -> dict:
    # preview working size (0.25 MP) keeps the test to a couple of minutes on 2 cores
    return {**settings_dict, "catalog": {"render_size": "preview"}, "queue": {"threads": 1, "poll_seconds": 0.2}}


@pytest.fixture(autouse=True)
def stop_render_threads(app):
    """The background threads end with the test, pass or fail."""
    yield
    queue.stop_in_server(app)


@pytest.mark.slow
@pytest.mark.timeout(1200)  # sixteen photos through the real model, eight renders each
def test_one_car_sixteen_angles_end_to_end(app, client, admin, shared_data) -> None:
    h = admin.headers
    green = (0, 200, 0)
    prof = client.post("/v1/profiles", json={"name": "e2e-green", "bg_color": "00c800", "add_shadow": False,
                                             "width": 600, "height": 400, "format": "png"}, headers=h).get_json()
    v = client.post("/v1/vehicles", json={"vin": "1HGCM82633A004352", "model": "Accord",
                                          "profile_id": prof["id"]}, headers=h).get_json()
    assert v["make"] == "Honda" and v["year"] == 2003
    names = [f"{CAR}_{n:02d}" for n in range(1, 17)]
    data = {"photo": [(io.BytesIO((shared_data / "carvana" / "images" / f"{n}.jpg").read_bytes()), f"{n}.jpg")
                      for n in names],
            "angle": [carvana_angle(n) for n in range(1, 17)]}
    started = time.perf_counter()
    resp = client.post(f"/v1/vehicles/{v['id']}/photos", data=data, headers=h, content_type="multipart/form-data")
    assert resp.status_code == 201, resp.get_data(as_text=True)
    assert len(resp.get_json()["photos"]) == 16 and resp.get_json()["duplicates"] == []
    progress = wait_for_renders(client, h, v["id"])
    print(f"render 16 photos: {time.perf_counter() - started:.1f} s")  # noqa: T201
    assert progress["done"] == 16 and progress["failed"] == 0

    images = client.get(f"/v1/vehicles/{v['id']}/images", headers=h).get_json()["data"]
    assert [i["angle"] for i in images] == [carvana_angle(n) for n in range(1, 17)]
    worst = 1.0
    for name, img in zip(names, images, strict=True):
        render = Image.open(io.BytesIO(client.get(img["url"], headers=h).data))
        assert render.size == (600, 400)
        rgb = np.asarray(render.convert("RGB"))
        assert tuple(rgb[2, 2]) == green and tuple(rgb[-3, -3]) == green
        # the profile scales and centres the car: compare the shapes inside their bounding boxes
        got = crop_to_box(car_mask(render, green))
        truth = crop_to_box(np.asarray(Image.open(shared_data / "carvana" / "masks" / f"{name}_mask.gif")) > 0)
        truth = np.asarray(Image.fromarray(truth).resize(got.shape[::-1], Image.Resampling.NEAREST))
        worst = min(worst, (got & truth).sum() / (got | truth).sum())
    print(f"worst render IoU against the ground truth: {worst:.3f}")  # noqa: T201
    assert worst > 0.85

    # a resized WebP through a signed URL, no API key
    signed = client.post(f"/v1/images/{images[0]['id']}/signed-url", json={"width": 320, "format": "webp"},
                         headers=h).get_json()
    web = client.get(signed["url"])
    assert web.status_code == 200 and web.mimetype == "image/webp"
    assert Image.open(io.BytesIO(web.data)).size == (320, 213)

    # a new look: every photo re-renders, old renders are served meanwhile and stay reachable
    changed = client.patch(f"/v1/profiles/{prof['id']}", json={"bg_color": "ff00ff", "scale": 0.7}, headers=h)
    assert changed.status_code == 200 and changed.get_json()["progress"]["queued"] >= 1
    started = time.perf_counter()
    wait_for_renders(client, h, v["id"])
    print(f"re-render 16 photos: {time.perf_counter() - started:.1f} s")  # noqa: T201
    fresh = client.get(f"/v1/vehicles/{v['id']}/images", headers=h).get_json()["data"]
    assert {i["id"] for i in fresh}.isdisjoint({i["id"] for i in images})
    assert all(i["profile_version"] == 2 for i in fresh)
    corner = np.asarray(Image.open(io.BytesIO(client.get(fresh[4]["url"], headers=h).data)).convert("RGB"))[2, 2]
    assert tuple(corner) == (255, 0, 255)
    assert client.get(images[4]["url"], headers=h).status_code == 200
