"""Recognition metering: uploads, stored images and scans are charged on success only; 402 once exhausted."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest

from server.services import metering
from server.services.licensing import box
from tests.recognition_synth import jpeg, pattern, scene


def _balances(app) -> dict:  # type: ignore[no-untyped-def]
    with app.test_request_context():
        b = box().balances()
    return {"uploads": b["uploads"]["used"], "scans": b["scans"]["used"], "stored": b["stored_images"]["stored"]}


def _upload(client, headers, cid, oid, *images: bytes, **form):  # type: ignore[no-untyped-def]
    files = [(io.BytesIO(b), f"{i}.jpg") for i, b in enumerate(images)]
    return client.post(f"/v1/collections/{cid}/objects/{oid}/images", data={**form, "image_file": files},
                       headers=headers, content_type="multipart/form-data")


def _scan(client, headers, cid, image: bytes, **params):  # type: ignore[no-untyped-def]
    return client.post(f"/v1/collections/{cid}/recognize", headers=headers,
                       json={"image_file_b64": base64.b64encode(image).decode(), **params})


@pytest.fixture
def coll(client, admin) -> str:  # type: ignore[no-untyped-def]
    cid = client.post("/v1/collections", json={"name": "Signs"}, headers=admin.headers).json["id"]
    for oid in ("a", "b"):
        assert client.put(f"/v1/collections/{cid}/objects/{oid}", json={}, headers=admin.headers).status_code == 201
    return cid


def test_only_stored_images_and_answered_scans_are_charged(app, client, admin, coll) -> None:  # type: ignore[no-untyped-def]
    start = _balances(app)
    r = _upload(client, admin.headers, coll, "a", jpeg(scene(pattern(1), seed=1)),
                jpeg(np.full((300, 300, 3), 90, np.uint8)))
    assert [i["status"] for i in r.json["images"]] == ["added", "failed"]
    after_upload = _balances(app)
    assert after_upload == {"uploads": start["uploads"] + 1, "scans": start["scans"], "stored": start["stored"] + 1}
    # A duplicate of object a offered to object b is reported, not stored, not charged.
    r = _upload(client, admin.headers, coll, "b", jpeg(scene(pattern(1), seed=2)))
    assert r.json["images"][0]["status"] == "duplicate"
    # Errors charge nothing: a broken image, a bad mode, an unknown collection.
    assert _upload(client, admin.headers, coll, "b", b"not an image").status_code == 400
    assert _scan(client, admin.headers, coll, jpeg(scene(pattern(1), seed=3)), mode="bogus").status_code == 400
    assert _scan(client, admin.headers, "col_missing", jpeg(scene(pattern(1), seed=3))).status_code == 404
    assert _balances(app) == after_upload
    r = _scan(client, admin.headers, coll, jpeg(scene(pattern(1), seed=3)))
    assert r.status_code == 200 and r.json["results"][0]["object_id"] == "a"
    assert _balances(app)["scans"] == start["scans"] + 1
    image_id = r.json["results"][0]["image_id"]
    assert client.delete(f"/v1/collections/{coll}/objects/a/images/{image_id}", headers=admin.headers).status_code == 200
    assert _balances(app)["stored"] == start["stored"]


def _use_up(app, metric: str) -> None:  # type: ignore[no-untyped-def]
    with app.test_request_context():
        b = box().balances()[metric]
        left = b["remaining"]
        m = metering.meter()
        rid = m.reserve(metric, left, key_id=None, user_id=None, request_id="use-up")
        m.commit(rid)


def test_exhausted_scans_and_uploads_answer_402_and_charge_nothing(app, client, admin, coll) -> None:  # type: ignore[no-untyped-def]
    assert _upload(client, admin.headers, coll, "a", jpeg(scene(pattern(1), seed=1))).status_code == 200
    _use_up(app, "scans")
    _use_up(app, "uploads")
    before = _balances(app)
    r = _scan(client, admin.headers, coll, jpeg(scene(pattern(1), seed=3)))
    assert r.status_code == 402 and r.json["errors"][0]["code"] == "limit_exhausted"
    r = _upload(client, admin.headers, coll, "b", jpeg(scene(pattern(2), seed=2)))
    assert r.status_code == 402 and r.json["errors"][0]["code"] == "limit_exhausted"
    assert client.get(f"/v1/collections/{coll}/objects/b/images", headers=admin.headers).json["images"] == []
    assert _balances(app) == before
