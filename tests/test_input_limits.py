"""Client-given values are bounded: vehicle metadata like object metadata (1 MB serialized), and ids printable."""

from __future__ import annotations

import io

import pytest

from core.encoding import printable_id
from tests.helpers import assert_error_shape

VIN = "1HGCM82633A004352"
BIG = {"blob": "x" * 10_000_000}  # the 10 MB value that was stored


def test_vehicle_metadata_is_capped_like_object_metadata(client, admin) -> None:
    coll = client.post("/v1/collections", json={"name": "c"}, headers=admin.headers).get_json()["id"]
    obj = client.put(f"/v1/collections/{coll}/objects/o", json={"metadata": BIG}, headers=admin.headers)
    expected = assert_error_shape(obj, obj.status_code)
    resp = client.post("/v1/vehicles", json={"vin": VIN, "metadata": BIG}, headers=admin.headers)
    err = assert_error_shape(resp, obj.status_code)
    assert (resp.status_code, err["code"]) == (400, expected["code"]) == (400, "metadata_too_large")
    assert client.get("/v1/vehicles", headers=admin.headers).get_json()["data"] == []
    vid = client.post("/v1/vehicles", json={"vin": VIN, "metadata": {"note": "y" * 900_000}},
                      headers=admin.headers).get_json()["id"]
    resp = client.patch(f"/v1/vehicles/{vid}", json={"metadata": BIG}, headers=admin.headers)
    assert assert_error_shape(resp, 400)["code"] == "metadata_too_large"
    kept = client.get(f"/v1/vehicles/{vid}", headers=admin.headers).get_json()["metadata"]
    assert kept == {"note": "y" * 900_000}


@pytest.mark.parametrize("bad", ["a%00b", "a%0Ab", "a%0D%0AInjected:%20yes", "tab%09id", "del%7F", "rtl%E2%80%AEgpj",
                                 "zero%E2%80%8Bwidth", "%20lead", "x" * 256])
def test_object_ids_with_control_characters_are_refused(client, admin, bad: str) -> None:
    coll = client.post("/v1/collections", json={"name": "c"}, headers=admin.headers).get_json()["id"]
    resp = client.put(f"/v1/collections/{coll}/objects/{bad}", json={"name": "n"}, headers=admin.headers)
    assert assert_error_shape(resp, 400)["code"] == "invalid_object_id"
    assert client.get(f"/v1/collections/{coll}/objects", headers=admin.headers).get_json()["objects"] == []


def test_printable_unicode_ids_are_fine(client, admin) -> None:
    coll = client.post("/v1/collections", json={"name": "c"}, headers=admin.headers).get_json()["id"]
    for good in ("STK-4411", "Käfer 1303 blau", "車両-7", "a" * 255):
        resp = client.put(f"/v1/collections/{coll}/objects/{good}", json={}, headers=admin.headers)
        assert resp.status_code in (200, 201), (good, resp.get_data(as_text=True))
        assert resp.get_json()["object_id"] == good


@pytest.mark.parametrize("bad", ["A1\x00", "A1\nB2", "\u202eA1", "x" * 101])
def test_vehicle_stock_numbers_are_printable(client, admin, bad: str) -> None:
    resp = client.post("/v1/vehicles", json={"vin": VIN, "stock_number": bad}, headers=admin.headers)
    assert assert_error_shape(resp, 400)["code"] == "invalid_parameters"
    vid = client.post("/v1/vehicles", json={"vin": VIN, "stock_number": " STK-1 "}, headers=admin.headers)
    assert vid.get_json()["stock_number"] == "STK-1"
    resp = client.patch(f"/v1/vehicles/{vid.get_json()['id']}", json={"stock_number": bad}, headers=admin.headers)
    assert assert_error_shape(resp, 400)["code"] == "invalid_parameters"


def test_dashboard_refuses_an_object_id_with_a_newline(app, client, admin) -> None:
    from tests.helpers import csrf_token, sign_in
    from tests.recognition_synth import jpeg, pattern, scene

    sign_in(client, admin)
    coll = client.post("/v1/collections", json={"name": "c"}, headers=admin.headers).get_json()["id"]
    resp = client.post(f"/collections/{coll}/objects", content_type="multipart/form-data", data={
        "object_id": "a\nb", "csrf_token": csrf_token(client, f"/collections/{coll}"),
        "photos": (io.BytesIO(jpeg(scene(pattern(1), seed=1))), "p.jpg")})
    assert resp.status_code == 400 and "printable" in resp.get_data(as_text=True)
    assert client.get(f"/v1/collections/{coll}/objects", headers=admin.headers).get_json()["objects"] == []


def test_printable_id() -> None:
    assert printable_id("STK 1") and printable_id("é")
    assert not any(printable_id(v) for v in ("", "a\x00", "a\n", "\x7f", "\u200b", " a", 7, None, "x" * 256))
