"""Uploads of many images: their pixels are bounded per request before decoding, and they are decoded one at a
time, so a worker's memory stays near one image's whatever the request holds. Measured in a subprocess (RSS)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from PIL import Image

from server.services.uploads import TooManyPixels, check_request_pixels
from tests.helpers import MODELS_DIR, REPO

PHOTO, OTHER = "carvana/images/0ce66b539f52_03.jpg", "distractors/car42.jpg"

# Runs in a fresh interpreter: builds an app on a temporary folder, posts the images with the test client and
# prints the peak growth of resident memory (VmHWM after resetting it, minus VmRSS before) during the request.
PROBE = r"""
import io, json, sys, tempfile
from PIL import Image
from server import create_app
from server.services import accounts
from server.store import get_db

route, count, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
root = tempfile.mkdtemp()
app = create_app({"storage": {"data_dir": root + "/data"}, "models": {"dir": sys.argv[4], "require": False},
                  "logging": {"level": "ERROR"}, "licensing": {"state_dir": root + "/state"},
                  "server": {"max_request_megapixels": limit}, "queue": {"threads": 0}})
with app.app_context():
    user = accounts.create_user(get_db(), "a@b.example", "correct horse battery", "admin")
    key, _ = accounts.create_key(get_db(), user["id"], "k")
client = app.test_client()
h = {"X-Api-Key": key}
buf = io.BytesIO()
Image.new("L", (4999, 5000), 77).save(buf, "PNG", optimize=True)  # ~24 KB, 25 MP, 75 MB once decoded to RGB
png = buf.getvalue()
if route == "recognition":
    cid = client.post("/v1/collections", json={"name": "c"}, headers=h).get_json()["id"]
    client.put(f"/v1/collections/{cid}/objects/o", json={"name": "o"}, headers=h)
    url, field, extra = f"/v1/collections/{cid}/objects/o/images", "image_file", {}
else:
    vid = client.post("/v1/vehicles", json={"vin": "1HGCM82633A004352"}, headers=h).get_json()["id"]
    url, field, extra = f"/v1/vehicles/{vid}/photos", "photo", {"angle": ",".join(["front"] * count)}
data = {field: [(io.BytesIO(png), f"p{i}.png") for i in range(count)], **extra}

def status(key):
    return int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith(key + ":")))

before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # resets VmHWM to the current RSS
resp = client.post(url, data=data, headers=h, content_type="multipart/form-data")
peak = status("VmHWM")
print(json.dumps({"status": resp.status_code, "body": resp.get_json(), "growth_mb": (peak - before) / 1024,
                  "png_bytes": len(png)}))
"""


def probe(route: str, count: int, limit_megapixels: float) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, route, str(count), str(limit_megapixels), str(MODELS_DIR)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_thousand_25_megapixel_pngs_are_refused_before_decoding() -> None:
    """1,000 single-colour 4999x5000 PNGs (~24 MB of request) would be 75 GB decoded: 413 at once, and the worker
    grows by little more than the request body."""
    got = probe("recognition", 1000, 400)
    assert got["status"] == 413, got["body"]
    err = got["body"]["errors"][0]
    assert err["code"] == "request_too_large" and "max_request_megapixels" in err["detail"]
    assert got["growth_mb"] < 150, got


@pytest.mark.slow
@pytest.mark.parametrize("route", ["recognition", "vehicles"])
def test_images_within_the_bound_are_decoded_one_at_a_time(route: str) -> None:
    """Ten 25 MP images (250 MP, under a raised bound) decode to 750 MB together; one at a time, the worker's
    peak growth stays under 350 MB: one image decoded and analysed at its working copy (264 MB measured for
    recognition; 356 MB when it was analysed at full size), not ten (1.2 GB)."""
    got = probe(route, 10, 1000)
    assert got["status"] in (200, 201), got["body"]
    if route == "recognition":
        assert len(got["body"]["images"]) == 10  # each examined (single colour: no features, so "failed")
    assert got["growth_mb"] < 350, got


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (w, h), 3).save(buf, "PNG")
    return buf.getvalue()


def test_request_pixels_are_read_from_headers_and_bounded() -> None:
    assert check_request_pixels([_png(1000, 1000), _png(2000, 500), b"not an image"], 2.0) == 2_000_000
    with pytest.raises(TooManyPixels) as exc:
        check_request_pixels([_png(1000, 1000), _png(1000, 1001)], 2.0)
    assert exc.value.status == 413 and "2 images" in exc.value.detail


def test_the_bound_answers_413_in_the_error_shape_on_every_multi_image_route(app, client, admin) -> None:
    from tests.helpers import assert_error_shape

    app.extensions["forecourt.settings"].server.max_request_megapixels = 1.5
    png = _png(1000, 1000)
    cid = client.post("/v1/collections", json={"name": "c"}, headers=admin.headers).get_json()["id"]
    client.put(f"/v1/collections/{cid}/objects/o", json={"name": "o"}, headers=admin.headers)
    resp = client.post(f"/v1/collections/{cid}/objects/o/images", headers=admin.headers,
                       content_type="multipart/form-data",
                       data={"image_file": [(io.BytesIO(png), "a.png"), (io.BytesIO(png), "b.png")]})
    assert assert_error_shape(resp, 413)["code"] == "request_too_large"
    vid = client.post("/v1/vehicles", json={"vin": "1HGCM82633A004352"}, headers=admin.headers).get_json()["id"]
    resp = client.post(f"/v1/vehicles/{vid}/photos", headers=admin.headers, content_type="multipart/form-data",
                       data={"photo": [(io.BytesIO(png), "a.png"), (io.BytesIO(png), "b.png")],
                             "angle": "front,rear"})
    assert assert_error_shape(resp, 413)["code"] == "request_too_large"
    assert client.get(f"/v1/vehicles/{vid}/photos", headers=admin.headers).get_json()["data"] == []


def test_a_later_unreadable_image_is_reported_and_the_others_are_added(client, admin) -> None:
    """Decoded one at a time, a broken second file no longer needs the whole batch refused: it is reported
    failed with its code and not charged; the first image stays added."""
    from tests.recognition_synth import jpeg, pattern, scene

    cid = client.post("/v1/collections", json={"name": "c"}, headers=admin.headers).get_json()["id"]
    client.put(f"/v1/collections/{cid}/objects/o", json={}, headers=admin.headers)
    good = jpeg(scene(pattern(5), seed=1))
    broken = good[: len(good) // 3]  # a JPEG header, a truncated body
    resp = client.post(f"/v1/collections/{cid}/objects/o/images", headers=admin.headers,
                       content_type="multipart/form-data",
                       data={"image_file": [(io.BytesIO(good), "a.jpg"), (io.BytesIO(b"not an image"), "b.jpg"),
                                            (io.BytesIO(broken), "c.jpg")]})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    images = resp.get_json()["images"]
    assert [i["status"] for i in images][:2] == ["added", "failed"]
    assert images[1]["code"] in ("invalid_file_type", "failed_to_read_image") and images[1]["id"] is None
    assert len(client.get(f"/v1/collections/{cid}/objects/o/images", headers=admin.headers).get_json()["images"]) \
        == sum(1 for i in images if i["status"] == "added")


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_a_25_megapixel_photo_is_stored_and_recognised_in_its_own_pixels(client, admin, shared_data) -> None:  # type: ignore[no-untyped-def]
    """A large upload is analysed at a working copy (recognition.WORK_SIDE), so its memory stays bounded, yet the
    stored size is the upload's and a scan's polygon is in the query's own pixels, at the car's place."""
    small = Image.open(shared_data / PHOTO).convert("RGB")  # 1918x1280
    big = _jpeg(small.resize((6124, 4082), Image.Resampling.BICUBIC))  # 25 MP
    h = admin.headers
    cid = client.post("/v1/collections", json={"name": "c"}, headers=h).get_json()["id"]
    for oid, data in (("big", big), ("other", (shared_data / OTHER).read_bytes())):
        client.put(f"/v1/collections/{cid}/objects/{oid}", json={"name": oid}, headers=h)
        resp = client.post(f"/v1/collections/{cid}/objects/{oid}/images", headers=h,
                           content_type="multipart/form-data", data={"image_file": (io.BytesIO(data), "p.jpg")})
        assert resp.status_code == 200 and resp.get_json()["images"][0]["status"] == "added", resp.get_json()
    stored = client.get(f"/v1/collections/{cid}/objects/big/images", headers=h).get_json()["images"]
    assert [(i["width"], i["height"]) for i in stored] == [(6124, 4082)]

    def scan(data: bytes) -> dict:
        resp = client.post(f"/v1/collections/{cid}/recognize", headers=h, content_type="multipart/form-data",
                           data={"image_file": (io.BytesIO(data), "q.jpg")})
        assert resp.status_code == 200, resp.get_json()
        best = resp.get_json()["results"][0]
        assert best["object_id"] == "big" and best["score"] >= 0.9, best
        return best

    near, far = scan(_jpeg(small)), scan(big)
    xs_near, xs_far = [p[0] for p in near["polygon"]], [p[0] for p in far["polygon"]]
    assert max(xs_near) <= 1918 and 2048 < max(xs_far) <= 6124
    scale = 6124 / 1918  # the same place in both queries' pixels
    assert abs(min(xs_far) / scale - min(xs_near)) < 20 and abs(max(xs_far) / scale - max(xs_near)) < 20
