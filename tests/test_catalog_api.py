"""Vehicle catalog API: vehicles, search, photos, duplicates, profiles, the render queue and delivery.

Renders run on a FakeSegmenter (an ellipse matte) and the queue is drained in the test's thread;
test_catalog_real.py drives the same path with the real model and the background threads.
"""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from server.services import catalog, catalog_jobs, segmentation
from tests.helpers import assert_error_shape

VIN_HONDA = "1HGCM82633A004352"
VIN_FORD = "1FTFW1ET9DFC10312"
VIN_TESLA = "5YJ3E1EA2KF317000"


class FakeSegmenter:
    """An ellipse in the middle of the picture, named as a fake."""

    name = "fake-ellipse"
    last_model_ms = 1.0

    def mask(self, image, kind: str = "auto", mirror: bool = False):  # noqa: ANN001
        h, w = np.asarray(image).shape[:2]
        yy, xx = np.mgrid[0:h, 0:w]
        return ((((xx - w / 2) / (w / 4)) ** 2 + ((yy - h / 2) / (h / 4)) ** 2) <= 1).astype(np.float32)


@pytest.fixture
def settings_dict(settings_dict: dict) -> dict:
    return {**settings_dict, "queue": {"threads": 0}}


@pytest.fixture(autouse=True)
def fake_segmenter(monkeypatch):
    fake = FakeSegmenter()
    monkeypatch.setattr(segmentation, "segmenter", lambda settings: fake)
    return fake


def photo(seed: int, w: int = 640, h: int = 480, fmt: str = "JPEG") -> bytes:
    """A distinct blocky picture per seed (so perceptual hashes differ)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    img = Image.fromarray(small, "RGB").resize((w, h), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, fmt, quality=92)
    return buf.getvalue()


def new_vehicle(client, headers, vin=VIN_HONDA, **fields) -> dict:
    resp = client.post("/v1/vehicles", json={"vin": vin, **fields}, headers=headers)
    assert resp.status_code == 201, resp.get_data(as_text=True)
    return resp.get_json()


def upload(client, headers, vehicle_id, items, **form):
    data = {"photo": [(io.BytesIO(b), f"p{i}.jpg") for i, (b, _) in enumerate(items)],
            "angle": [a for _, a in items], **form}
    return client.post(f"/v1/vehicles/{vehicle_id}/photos", data=data, headers=headers,
                       content_type="multipart/form-data")


# --- vehicles --------------------------------------------------------------------------------------------------
def test_create_vehicle_decodes_the_vin(client, admin) -> None:
    v = new_vehicle(client, admin.headers, model="Accord", color="Silver", stock_number="A-17")
    assert v["vin"] == VIN_HONDA and v["make"] == "Honda" and v["year"] == 2003 and v["status"] == "in_stock"
    assert v["vin_info"]["country"] == "United States" and v["vin_info"]["region"] == "North America"
    got = client.get(f"/v1/vehicles/{v['id']}", headers=admin.headers).get_json()
    assert got["model"] == "Accord" and got["stock_number"] == "A-17" and got["photo_count"] == 0


@pytest.mark.parametrize(("vin", "code"), [("1HGCM82643A004352", "invalid_vin_check_digit"),
                                           ("1HGCM82633A0O4352", "invalid_vin"), ("1HGCM8263", "invalid_vin")])
def test_bad_vin_is_a_clear_400(client, admin, vin, code) -> None:
    resp = client.post("/v1/vehicles", json={"vin": vin}, headers=admin.headers)
    assert resp.status_code == 400
    assert_error_shape(resp)
    assert resp.get_json()["errors"][0]["code"] == code


def test_duplicate_vin_is_409_and_missing_key_403(client, admin) -> None:
    new_vehicle(client, admin.headers)
    resp = client.post("/v1/vehicles", json={"vin": VIN_HONDA}, headers=admin.headers)
    assert resp.status_code == 409 and resp.get_json()["errors"][0]["code"] == "duplicate_vin"
    assert client.get("/v1/vehicles").status_code == 403


def test_patch_and_delete_vehicle(client, admin) -> None:
    v = new_vehicle(client, admin.headers)
    resp = client.patch(f"/v1/vehicles/{v['id']}", json={"status": "sold", "metadata": {"price": 9900}},
                        headers=admin.headers)
    assert resp.status_code == 200 and resp.get_json()["status"] == "sold"
    assert resp.get_json()["metadata"] == {"price": 9900}
    bad = client.patch(f"/v1/vehicles/{v['id']}", json={"status": "stolen"}, headers=admin.headers)
    assert bad.status_code == 400 and bad.get_json()["errors"][0]["code"] == "invalid_status"
    assert client.delete(f"/v1/vehicles/{v['id']}", headers=admin.headers).status_code == 204
    gone = client.get(f"/v1/vehicles/{v['id']}", headers=admin.headers)
    assert gone.status_code == 404 and gone.get_json()["errors"][0]["code"] == "vehicle_not_found"


def test_search_filters_and_cursor_pages_with_link_header(client, admin) -> None:
    new_vehicle(client, admin.headers, VIN_HONDA, model="Accord", color="Silver")
    new_vehicle(client, admin.headers, VIN_FORD, model="F-150", color="Blue")
    new_vehicle(client, admin.headers, VIN_TESLA, model="Model 3", color="Blue", status="sold")
    h = admin.headers
    assert [v["make"] for v in client.get("/v1/vehicles?color=blue", headers=h).get_json()["data"]] == \
        ["Ford", "Tesla"]
    assert [v["vin"] for v in client.get("/v1/vehicles?make=Ford&year=2013", headers=h).get_json()["data"]] == \
        [VIN_FORD]
    assert [v["model"] for v in client.get("/v1/vehicles?status=sold", headers=h).get_json()["data"]] == ["Model 3"]
    assert [v["model"] for v in client.get("/v1/vehicles?q=accord", headers=h).get_json()["data"]] == ["Accord"]
    first = client.get("/v1/vehicles?limit=2&color=Blue", headers=h)
    assert first.get_json()["next_cursor"] is None and "Link" not in first.headers
    page1 = client.get("/v1/vehicles?limit=2", headers=h)
    assert len(page1.get_json()["data"]) == 2 and 'rel="next"' in page1.headers["Link"]
    link = page1.headers["Link"].split(";")[0].strip("<>")
    page2 = client.get(link.replace("http://localhost", ""), headers=h).get_json()
    assert [v["vin"] for v in page2["data"]] == [VIN_TESLA] and page2["next_cursor"] is None
    bad = client.get("/v1/vehicles?cursor=notacursor", headers=h)
    assert bad.status_code == 400 and bad.get_json()["errors"][0]["code"] == "invalid_cursor"


# --- photos, duplicates, renders ------------------------------------------------------------------------------
def test_upload_keeps_originals_reports_duplicates_and_renders(app, client, admin, data_dir) -> None:
    v = new_vehicle(client, admin.headers)
    front, rear = photo(1), photo(2)
    resp = upload(client, admin.headers, v["id"], [(front, "front"), (rear, "rear")])
    assert resp.status_code == 201, resp.get_data(as_text=True)
    body = resp.get_json()
    assert [p["angle"] for p in body["photos"]] == ["front", "rear"] and body["duplicates"] == []
    assert [p["primary"] for p in body["photos"]] == [True, False]
    assert body["photos"][0]["job"]["status"] == "queued" and body["photos"][0]["render"] is None
    originals = sorted((data_dir / "images" / "originals" / str(v["id"])).iterdir())
    assert sorted(p.read_bytes() for p in originals) == sorted([front, rear])  # byte for byte
    # the same shot again, and re-encoded smaller: both reported, not stored
    smaller = io.BytesIO()
    Image.open(io.BytesIO(front)).resize((320, 240)).save(smaller, "PNG")
    dup = upload(client, admin.headers, v["id"], [(front, "front"), (smaller.getvalue(), "front")])
    assert dup.status_code == 201
    assert [d["duplicate_of"] for d in dup.get_json()["duplicates"]] == [body["photos"][0]["id"]] * 2
    assert dup.get_json()["photos"] == []

    assert catalog_jobs.run_pending(app) == 2
    images = client.get(f"/v1/vehicles/{v['id']}/images", headers=admin.headers).get_json()
    assert [i["angle"] for i in images["data"]] == ["front", "rear"] and images["progress"]["done"] == 2
    served = client.get(images["data"][0]["url"], headers=admin.headers)
    assert served.status_code == 200 and served.mimetype == "image/jpeg"
    img = Image.open(io.BytesIO(served.data)).convert("RGB")
    assert img.size == (1200, 800)  # the default profile's canvas
    assert np.asarray(img)[5, 5].min() >= 245  # white studio background at the corner


def test_upload_errors(client, admin) -> None:
    v = new_vehicle(client, admin.headers)
    bad_angle = upload(client, admin.headers, v["id"], [(photo(1), "roof")])
    assert bad_angle.status_code == 400 and bad_angle.get_json()["errors"][0]["code"] == "invalid_angle"
    not_image = upload(client, admin.headers, v["id"], [(b"hello", "front")])
    assert not_image.status_code == 400
    assert_error_shape(not_image)
    none = client.post(f"/v1/vehicles/{v['id']}/photos", data={}, headers=admin.headers,
                       content_type="multipart/form-data")
    assert none.status_code == 400 and none.get_json()["errors"][0]["code"] == "missing_source"
    missing = upload(client, admin.headers, 999, [(photo(1), "front")])
    assert missing.status_code == 404


def test_plate_regions_are_masked_in_the_render(app, client, admin, monkeypatch) -> None:
    seen = {}

    def spy(image, opts, settings):  # noqa: ANN001
        seen["rgb"] = np.asarray(image.convert("RGB")).copy()
        return real(image, opts, settings)

    real = catalog_jobs.remove_background
    monkeypatch.setattr(catalog_jobs, "remove_background", spy)
    v = new_vehicle(client, admin.headers)
    src = photo(5)
    resp = upload(client, admin.headers, v["id"], [(src, "rear")], plate_regions=["[[0, 0, 160, 120]]"])
    assert resp.status_code == 201 and resp.get_json()["photos"][0]["plate_regions"] == [[0, 0, 160, 120]]
    catalog_jobs.run_pending(app)
    orig = np.asarray(Image.open(io.BytesIO(src)).convert("RGB")).astype(int)
    diff = np.abs(seen["rgb"].astype(int) - orig)
    assert diff[:120, :160].mean() > 5 and diff[200:, 300:].mean() == 0  # only the plate box changed


def test_profile_change_rerenders_while_old_render_is_served(app, client, admin) -> None:
    v = new_vehicle(client, admin.headers)
    upload(client, admin.headers, v["id"], [(photo(1), "front")])
    catalog_jobs.run_pending(app)
    old = client.get(f"/v1/vehicles/{v['id']}/images", headers=admin.headers).get_json()["data"][0]
    pid = v["profile_id"]
    member_try = client.patch(f"/v1/profiles/{pid}", json={"bg_color": "000000"}, headers={"X-Api-Key": "x"})
    assert member_try.status_code == 403
    resp = client.patch(f"/v1/profiles/{pid}", json={"bg_color": "203040", "width": 800, "height": 600,
                                                     "format": "png"}, headers=admin.headers)
    assert resp.status_code == 200 and resp.get_json()["version"] == 2 and resp.get_json()["progress"]["queued"] == 1
    still = client.get(f"/v1/vehicles/{v['id']}/images", headers=admin.headers).get_json()["data"][0]
    assert still["id"] == old["id"]  # the old render is served until the new one lands
    catalog_jobs.run_pending(app)
    new = client.get(f"/v1/vehicles/{v['id']}/images", headers=admin.headers).get_json()["data"][0]
    assert new["id"] != old["id"] and (new["width"], new["height"], new["format"]) == (800, 600, "png")
    img = Image.open(io.BytesIO(client.get(new["url"], headers=admin.headers).data)).convert("RGB")
    assert tuple(np.asarray(img)[3, 3]) == (0x20, 0x30, 0x40)
    assert client.get(old["url"], headers=admin.headers).status_code == 200  # old links keep working
    bad = client.patch(f"/v1/profiles/{pid}", json={"bg_color": "nocolour"}, headers=admin.headers)
    assert bad.status_code == 400
    assert_error_shape(bad)


def test_vehicle_profile_switch_and_new_profile(app, client, admin) -> None:
    resp = client.post("/v1/profiles", json={"name": "showroom-grey", "bg_color": "808080", "width": 400,
                                             "height": 300, "format": "webp"}, headers=admin.headers)
    assert resp.status_code == 201, resp.get_data(as_text=True)
    prof = resp.get_json()
    v = new_vehicle(client, admin.headers)
    upload(client, admin.headers, v["id"], [(photo(3), "left")])
    catalog_jobs.run_pending(app)
    client.patch(f"/v1/vehicles/{v['id']}", json={"profile_id": prof["id"]}, headers=admin.headers)
    assert client.get(f"/v1/vehicles/{v['id']}", headers=admin.headers).get_json()["renders"]["queued"] == 1
    catalog_jobs.run_pending(app)
    img = client.get(f"/v1/vehicles/{v['id']}/images", headers=admin.headers).get_json()["data"][0]
    assert (img["width"], img["height"], img["format"]) == (400, 300, "webp")


# --- delivery --------------------------------------------------------------------------------------------------
@pytest.fixture
def render_url(app, client, admin) -> str:
    v = new_vehicle(client, admin.headers)
    upload(client, admin.headers, v["id"], [(photo(1), "front")])
    catalog_jobs.run_pending(app)
    return client.get(f"/v1/vehicles/{v['id']}/images", headers=admin.headers).get_json()["data"][0]["url"]


def test_resized_webp_is_cached_with_etag(client, admin, render_url, data_dir) -> None:
    first = client.get(render_url + "?width=300&format=webp", headers=admin.headers)
    assert first.status_code == 200 and first.mimetype == "image/webp" and first.headers["X-Cache"] == "MISS"
    assert Image.open(io.BytesIO(first.data)).size == (300, 200)
    assert "max-age=86400" in first.headers["Cache-Control"] and first.headers["ETag"]
    again = client.get(render_url + "?width=300&format=webp", headers=admin.headers)
    assert again.headers["X-Cache"] == "HIT" and again.data == first.data
    cached = list((data_dir / "images" / "cache").rglob("*.webp"))
    assert len(cached) == 1
    not_modified = client.get(render_url + "?width=300&format=webp",
                              headers={**admin.headers, "If-None-Match": first.headers["ETag"]})
    assert not_modified.status_code == 304 and not_modified.data == b""
    cover = client.get(render_url + "?width=200&height=200&fit=cover&format=png", headers=admin.headers)
    assert Image.open(io.BytesIO(cover.data)).size == (200, 200) and cover.mimetype == "image/png"
    if "avif" in catalog.SERVE_FORMATS:  # where the installed Pillow can encode it
        avif = client.get(render_url + "?width=300&format=avif", headers=admin.headers)
        assert avif.mimetype == "image/avif" and Image.open(io.BytesIO(avif.data)).size == (300, 200)
    for query, code in (("?width=0", "invalid_width"), ("?format=gif", "invalid_format"), ("?fit=squash", "invalid_fit")):
        bad = client.get(render_url + query, headers=admin.headers)
        assert bad.status_code == 400 and bad.get_json()["errors"][0]["code"] == code


def test_signed_url_serves_without_key_and_expires(client, admin, render_url, time_machine) -> None:
    rid = render_url.rsplit("/", 1)[1]
    resp = client.post(f"/v1/images/{rid}/signed-url", json={"width": 240, "format": "webp", "expires_in": 3600},
                       headers=admin.headers)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    url = resp.get_json()["url"]
    assert url.startswith("http://localhost/v1/public/images/") and url.endswith(resp.get_json()["path"])
    served = client.get(url)
    assert served.status_code == 200 and served.mimetype == "image/webp"
    assert Image.open(io.BytesIO(served.data)).width == 240
    assert served.headers["Cache-Control"].startswith("public")
    tampered = client.get(url.replace("width=240", "width=2400"))
    assert tampered.status_code == 403 and tampered.get_json()["errors"][0]["code"] == "invalid_signature"
    assert client.get(render_url).status_code == 403  # the keyed route still needs a key
    time_machine.move_to(time.time() + 3700)
    expired = client.get(url)
    assert expired.status_code == 403 and expired.get_json()["errors"][0]["code"] == "link_expired"


def break_renders(monkeypatch, error: Exception) -> list[int]:  # noqa: ANN001
    """Every render fails with `error`; the list counts the attempts."""
    calls: list[int] = []

    def broken(image, opts, settings):  # noqa: ANN001
        calls.append(1)
        raise type(error)(*error.args)  # a fresh one each attempt

    monkeypatch.setattr(catalog_jobs, "remove_background", broken)
    return calls


def test_job_failure_is_reported(app, client, admin, monkeypatch) -> None:
    break_renders(monkeypatch, RuntimeError("segmenter crashed"))
    v = new_vehicle(client, admin.headers)
    upload(client, admin.headers, v["id"], [(photo(1), "front")])
    catalog_jobs.run_pending(app)
    photos = client.get(f"/v1/vehicles/{v['id']}/photos", headers=admin.headers).get_json()
    assert photos["progress"]["failed"] == 1
    assert photos["data"][0]["job"]["status"] == "failed" and "segmenter crashed" in photos["data"][0]["job"]["error"]


def test_frame_fills_scale_of_the_canvas_at_position() -> None:
    cut = Image.new("RGBA", (200, 100), (0, 0, 0, 0))
    cut.paste((200, 10, 10, 255), (10, 10, 110, 60))  # a 100x50 "car"
    profile = {"width": 400, "height": 400, "bg_color": "ffffff", "scale": 0.5, "position": "center"}
    out = np.asarray(catalog_jobs.frame(cut, profile))
    ys, xs = np.nonzero((out != 255).any(axis=2))
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (100, 300, 150, 250)  # 200 wide = half the canvas
    low = np.asarray(catalog_jobs.frame(cut, {**profile, "position": "50% 100%"}))
    ys, _ = np.nonzero((low != 255).any(axis=2))
    assert ys.max() + 1 == 400  # sits on the bottom edge


# --- HEIC, background images, plate detection, angles -----------------------------------------------------------
def test_heic_from_a_phone_is_kept_as_sent_and_rendered(app, client, admin, data_dir) -> None:
    from pillow_heif import register_heif_opener

    register_heif_opener()
    buf = io.BytesIO()
    Image.open(io.BytesIO(photo(7))).save(buf, "HEIF", quality=90)
    heic = buf.getvalue()
    v = new_vehicle(client, admin.headers)
    resp = upload(client, admin.headers, v["id"], [(heic, "front_left")])
    assert resp.status_code == 201, resp.get_data(as_text=True)
    p = resp.get_json()["photos"][0]
    assert (p["width"], p["height"], p["angle"]) == (640, 480, "front_left")
    (original,) = (data_dir / "images" / "originals" / str(v["id"])).iterdir()
    assert original.read_bytes() == heic and original.suffix == ".heif"
    assert catalog_jobs.run_pending(app) == 1
    img = client.get(f"/v1/vehicles/{v['id']}/images", headers=admin.headers).get_json()["data"][0]
    assert (img["width"], img["height"]) == (1200, 800)


def test_profile_background_image_rerenders_and_can_be_removed(app, client, admin) -> None:
    v = new_vehicle(client, admin.headers)
    upload(client, admin.headers, v["id"], [(photo(1), "front")])
    catalog_jobs.run_pending(app)
    pid = v["profile_id"]
    backdrop = io.BytesIO()
    Image.new("RGB", (300, 300), (10, 120, 200)).save(backdrop, "PNG")
    resp = client.put(f"/v1/profiles/{pid}/background", data={"image": (io.BytesIO(backdrop.getvalue()), "bg.png")},
                      headers=admin.headers, content_type="multipart/form-data")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["bg_image"] is True and resp.get_json()["progress"]["queued"] == 1
    catalog_jobs.run_pending(app)
    url = client.get(f"/v1/vehicles/{v['id']}/images", headers=admin.headers).get_json()["data"][0]["url"]
    corner = np.asarray(Image.open(io.BytesIO(client.get(url, headers=admin.headers).data)).convert("RGB"))[4, 4]
    assert np.abs(corner.astype(int) - (10, 120, 200)).max() <= 3  # JPEG
    member_try = client.delete(f"/v1/profiles/{pid}/background", headers={"X-Api-Key": "nope"})
    assert member_try.status_code == 403
    gone = client.delete(f"/v1/profiles/{pid}/background", headers=admin.headers)
    assert gone.status_code == 200 and gone.get_json()["bg_image"] is False and gone.get_json()["version"] == 3
    catalog_jobs.run_pending(app)
    url = client.get(f"/v1/vehicles/{v['id']}/images", headers=admin.headers).get_json()["data"][0]["url"]
    assert np.asarray(Image.open(io.BytesIO(client.get(url, headers=admin.headers).data)))[4, 4].min() >= 245
    missing = client.put(f"/v1/profiles/{pid}/background", data={}, headers=admin.headers,
                         content_type="multipart/form-data")
    assert missing.status_code == 400 and missing.get_json()["errors"][0]["code"] == "missing_source"


def test_plate_detection_needs_an_installed_cascade(client, admin, app) -> None:
    app.extensions["forecourt.settings"].catalog.plate_cascade = "/nonexistent/plates.xml"
    resp = client.patch("/v1/profiles/1", json={"detect_plates": True}, headers=admin.headers)
    assert resp.status_code == 400 and resp.get_json()["errors"][0]["code"] == "plate_detector_unavailable"


def test_detected_plates_are_masked_and_reported(app, client, admin, monkeypatch) -> None:
    from models import plates

    def fake_plate_detector(rgb, configured=None):  # noqa: ANN001
        return [(400, 300, 560, 360)]

    monkeypatch.setattr(plates, "detector_available", lambda configured=None: True)
    monkeypatch.setattr(plates, "detect", fake_plate_detector)
    seen = {}
    real = catalog_jobs.remove_background

    def spy(image, opts, settings):  # noqa: ANN001
        seen["rgb"] = np.asarray(image.convert("RGB")).copy()
        return real(image, opts, settings)

    monkeypatch.setattr(catalog_jobs, "remove_background", spy)
    assert client.patch("/v1/profiles/1", json={"detect_plates": True}, headers=admin.headers).status_code == 200
    v = new_vehicle(client, admin.headers)
    src = photo(9)
    upload(client, admin.headers, v["id"], [(src, "rear")], plate_regions=["[[0, 0, 80, 40]]"])
    catalog_jobs.run_pending(app)
    img = client.get(f"/v1/vehicles/{v['id']}/images", headers=admin.headers).get_json()["data"][0]
    assert img["masked_regions"] == [[0, 0, 80, 40], [400, 300, 560, 360]]  # given ones always, detected ones too
    diff = np.abs(seen["rgb"].astype(int) - np.asarray(Image.open(io.BytesIO(src)).convert("RGB")).astype(int))
    assert diff[300:360, 400:560].mean() > 5 and diff[100:250, 100:350].mean() == 0


def test_images_by_angle_and_photo_order(app, client, admin) -> None:
    v = new_vehicle(client, admin.headers)
    body = upload(client, admin.headers, v["id"], [(photo(1), "front"), (photo(2), "rear"), (photo(3), "left")])
    ids = [p["id"] for p in body.get_json()["photos"]]
    catalog_jobs.run_pending(app)
    h = admin.headers
    client.patch(f"/v1/photos/{ids[2]}", json={"position": 0, "primary": True}, headers=h)
    images = client.get(f"/v1/vehicles/{v['id']}/images", headers=h).get_json()["data"]
    assert [(i["angle"], i["primary"]) for i in images] == [("left", True), ("front", False), ("rear", False)]
    rear = client.get(f"/v1/vehicles/{v['id']}/images?angle=rear", headers=h).get_json()["data"]
    assert [i["photo_id"] for i in rear] == [ids[1]]
    bad = client.get(f"/v1/vehicles/{v['id']}/images?angle=roof", headers=h)
    assert bad.status_code == 400 and bad.get_json()["errors"][0]["code"] == "invalid_angle"
    assert client.delete(f"/v1/photos/{ids[2]}", headers=h).status_code == 204
    images = client.get(f"/v1/vehicles/{v['id']}/images", headers=h).get_json()["data"]
    assert [(i["angle"], i["primary"]) for i in images] == [("front", True), ("rear", False)]


def test_patch_with_a_bad_vin_is_refused(client, admin) -> None:
    v = new_vehicle(client, admin.headers)
    resp = client.patch(f"/v1/vehicles/{v['id']}", json={"vin": "1HGCM82643A004352"}, headers=admin.headers)
    assert resp.status_code == 400 and resp.get_json()["errors"][0]["code"] == "invalid_vin_check_digit"
    assert client.get(f"/v1/vehicles/{v['id']}", headers=admin.headers).get_json()["vin"] == VIN_HONDA


@pytest.mark.parametrize(("setting", "size", "expected"), [
    ("auto", (600, 400), "medium"), ("auto", (1200, 800), "hd"), ("auto", (300, 200), "preview"),
    ("auto", (3000, 2000), "full"), ("preview", (3000, 2000), "preview")])
def test_working_size_follows_the_canvas(setting, size, expected) -> None:
    assert catalog_jobs.working_size(setting, {"width": size[0], "height": size[1]}) == expected


def test_uploads_charge_per_new_photo_at_the_working_size(client, admin) -> None:
    def credits() -> float:
        return client.get("/v1.0/account", headers=admin.headers).get_json()["data"]["attributes"]["credits"]["total"]

    v = new_vehicle(client, admin.headers)
    before = credits()
    upload(client, admin.headers, v["id"], [(photo(1), "front"), (photo(2), "rear")])
    assert credits() == pytest.approx(before - 2)  # the default 1200x800 canvas renders at hd: 1 credit each
    upload(client, admin.headers, v["id"], [(photo(1), "front")])  # a duplicate costs nothing
    assert credits() == pytest.approx(before - 2)
    small = client.post("/v1/profiles", json={"name": "thumbs", "width": 300, "height": 200},
                        headers=admin.headers).get_json()
    client.patch(f"/v1/vehicles/{v['id']}", json={"profile_id": small["id"]}, headers=admin.headers)
    assert credits() == pytest.approx(before - 2)  # re-renders are free
    upload(client, admin.headers, v["id"], [(photo(3), "left")])
    assert credits() == pytest.approx(before - 2.25)  # a 300x200 canvas renders at preview


def test_a_new_look_reuses_the_cutout_and_a_new_shadow_does_not(app, client, admin, monkeypatch, data_dir) -> None:
    calls = []
    real = catalog_jobs.remove_background

    def counting(image, opts, settings):  # noqa: ANN001
        calls.append(opts.shadow_type)
        return real(image, opts, settings)

    monkeypatch.setattr(catalog_jobs, "remove_background", counting)
    v = new_vehicle(client, admin.headers)
    pid = upload(client, admin.headers, v["id"], [(photo(1), "front")]).get_json()["photos"][0]["id"]
    catalog_jobs.run_pending(app)
    assert calls == ["car"]
    h, profile = admin.headers, v["profile_id"]
    client.patch(f"/v1/profiles/{profile}", json={"bg_color": "102030", "scale": 0.6, "format": "png"}, headers=h)
    catalog_jobs.run_pending(app)
    assert calls == ["car"]  # same photo, size and shadow: re-framed from the cached cutout
    img = client.get(f"/v1/vehicles/{v['id']}/images", headers=h).get_json()["data"][0]
    assert img["profile_version"] == 2 and img["format"] == "png"
    client.patch(f"/v1/profiles/{profile}", json={"add_shadow": False}, headers=h)
    catalog_jobs.run_pending(app)
    assert calls == ["car", None]  # the shadow is part of the cutout: segmented again
    assert len(list((data_dir / "images" / "cutouts" / str(pid)).iterdir())) == 2
    client.delete(f"/v1/photos/{pid}", headers=h)
    assert not (data_dir / "images" / "cutouts" / str(pid)).exists()


def test_replaced_renders_are_served_for_a_while_then_pruned(app, client, admin, data_dir) -> None:
    import datetime as dt

    from server.services import catalog as catalog_service

    v = new_vehicle(client, admin.headers)
    upload(client, admin.headers, v["id"], [(photo(1), "front")])
    catalog_jobs.run_pending(app)
    h = admin.headers
    old = client.get(f"/v1/vehicles/{v['id']}/images", headers=h).get_json()["data"][0]
    assert client.get(old["url"] + "?width=100", headers=h).status_code == 200  # a cached size too
    client.patch(f"/v1/profiles/{v['profile_id']}", json={"bg_color": "000000"}, headers=h)
    catalog_jobs.run_pending(app)
    new = client.get(f"/v1/vehicles/{v['id']}/images", headers=h).get_json()["data"][0]
    settings = app.extensions["forecourt.settings"]
    from server.store import get_db

    with app.app_context():
        db = get_db()
        now = dt.datetime.now(dt.UTC)
        assert catalog_service.prune_old_renders(db, settings, now + dt.timedelta(days=29)) == 0
        assert catalog_service.prune_old_renders(db, settings, now + dt.timedelta(days=31)) == 1
    assert client.get(old["url"], headers=h).status_code == 404
    assert client.get(new["url"], headers=h).status_code == 200
    assert not (data_dir / "images" / "cache" / old["id"]).exists()
    assert [p.stem for p in (data_dir / "images" / "renders").iterdir()] == [new["id"]]
