"""Recognition API: collections, objects, images and scans round trips on synthetic textured images."""

from __future__ import annotations

import base64
import io
import threading

import numpy as np
import pytest

from models.recognition import score_from_inliers
from models.recognition.index import FeatureIndex
from models.recognition.matcher import INLIER_MIDPOINT
from server.services import recognition_index as svc_index
from server.services import recognition_rebuild as svc_rebuild
from server.services import segmentation
from tests.recognition_synth import jpeg, pattern, scene


def _upload(client, headers, cid: str, oid: str, *images: bytes, **form):  # type: ignore[no-untyped-def]
    files = [(io.BytesIO(b), f"{i}.jpg") for i, b in enumerate(images)]
    data = {**form, "image_file": files} if files else form
    return client.post(f"/v1/collections/{cid}/objects/{oid}/images", data=data, headers=headers,
                       content_type="multipart/form-data")


def _scan(client, headers, cid: str, image: bytes, **params):  # type: ignore[no-untyped-def]
    body = {"image_file_b64": base64.b64encode(image).decode(), **params}
    return client.post(f"/v1/collections/{cid}/recognize", json=body, headers=headers)


@pytest.fixture
def coll(client, admin) -> str:  # type: ignore[no-untyped-def]
    r = client.post("/v1/collections", json={"name": "Signs", "object_type": "generic"}, headers=admin.headers)
    assert r.status_code == 201, r.json
    return r.json["id"]


def _stock(client, admin, cid: str, n: int = 3) -> None:  # type: ignore[no-untyped-def]
    for i in range(1, n + 1):
        r = client.put(f"/v1/collections/{cid}/objects/sign-{i}",
                       json={"name": f"Sign {i}", "metadata": {"price": i * 100}}, headers=admin.headers)
        assert r.status_code == 201
        r = _upload(client, admin.headers, cid, f"sign-{i}", jpeg(scene(pattern(i), seed=i)))
        assert r.status_code == 200, r.json
        assert r.json["images"][0]["status"] == "added"


def test_collections_create_list_get_delete(client, admin) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/v1/collections", json={"name": "Stock", "object_type": "car"}, headers=admin.headers)
    cid = r.json["id"]
    assert r.status_code == 201 and r.json["object_type"] == "car"
    assert [c["id"] for c in client.get("/v1/collections", headers=admin.headers).json["collections"]] == [cid]
    assert client.get(f"/v1/collections/{cid}", headers=admin.headers).json["name"] == "Stock"
    assert client.delete(f"/v1/collections/{cid}", headers=admin.headers).status_code == 200
    r = client.get(f"/v1/collections/{cid}", headers=admin.headers)
    assert r.status_code == 404 and r.json["errors"][0]["code"] == "collection_not_found"


def test_bad_collection_and_no_key(client, admin) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/v1/collections", json={"name": "x", "object_type": "boat"}, headers=admin.headers)
    assert r.status_code == 400 and r.json["errors"][0]["code"] == "invalid_parameters"
    assert client.get("/v1/collections").status_code == 403


def test_objects_put_patch_list_pages_and_limits(client, admin, coll) -> None:  # type: ignore[no-untyped-def]
    for i in range(5):
        assert client.put(f"/v1/collections/{coll}/objects/o{i}", json={"name": f"n{i}"},
                          headers=admin.headers).status_code == 201
    r = client.put(f"/v1/collections/{coll}/objects/o1", json={"name": "renamed"}, headers=admin.headers)
    assert r.status_code == 200 and r.json["name"] == "renamed"
    r = client.patch(f"/v1/collections/{coll}/objects/o1", json={"active": False, "metadata": {"vin": "X"}},
                     headers=admin.headers)
    assert r.json == {**r.json, "active": False, "metadata": {"vin": "X"}, "name": "renamed"}
    seen, cursor = [], None
    while True:
        r = client.get(f"/v1/collections/{coll}/objects", query_string={"limit": 2, **({"cursor": cursor} if cursor
                       else {})}, headers=admin.headers)
        seen += [o["object_id"] for o in r.json["objects"]]
        cursor = r.json["next_cursor"]
        if not cursor:
            break
        assert 'rel="next"' in r.headers["Link"]
    assert seen == ["o0", "o1", "o2", "o3", "o4"]
    big = {"blob": "x" * 1_000_001}
    r = client.put(f"/v1/collections/{coll}/objects/o9", json={"metadata": big}, headers=admin.headers)
    assert r.status_code == 400 and r.json["errors"][0]["code"] == "metadata_too_large"
    r = client.put(f"/v1/collections/{coll}/objects/{'a' * 256}", json={}, headers=admin.headers)
    assert r.json["errors"][0]["code"] == "invalid_object_id"
    assert client.put(f"/v1/collections/{coll}/objects/{'a' * 255}", json={},
                      headers=admin.headers).status_code == 201
    assert client.delete(f"/v1/collections/{coll}/objects/o0", headers=admin.headers).status_code == 200
    assert client.get(f"/v1/collections/{coll}/objects/o0", headers=admin.headers).status_code == 404


def test_upload_rate_recognize_and_polygon(client, admin, coll) -> None:  # type: ignore[no-untyped-def]
    _stock(client, admin, coll)
    query = jpeg(scene(pattern(2), seed=50, size=(640, 480), at=(250, 120), scale=1.1, angle=-10))
    r = _scan(client, admin.headers, coll, query)
    assert r.status_code == 200, r.json
    assert [x["object_id"] for x in r.json["results"]] == ["sign-2"]
    top = r.json["results"][0]
    assert top["name"] == "Sign 2" and top["metadata"] == {"price": 200} and top["score"] > 0.9
    poly = np.array(top["polygon"])
    assert poly.shape == (4, 2) and poly[:, 0].min() > 200 and poly[:, 0].max() < 560
    assert r.json["search_time_ms"] > 0
    r = _scan(client, admin.headers, coll, query, mode="all", limit=5)
    assert r.json["results"][0]["object_id"] == "sign-2"
    assert all(x["score"] < 0.5 for x in r.json["results"][1:])
    # A generic collection's scores use the generic calibration (recognition.inlier_midpoint), which the weak
    # chance fits of the other signs (8-17 inliers) tell apart from the car one.
    weak = [x for x in r.json["results"] if 8 <= x["inliers"] <= 30]
    assert weak, r.json["results"]
    for x in r.json["results"]:
        assert x["score"] == pytest.approx(score_from_inliers(x["inliers"], INLIER_MIDPOINT), abs=1e-4)


def test_multi_mode_finds_two_objects_in_one_photo(client, admin, coll) -> None:  # type: ignore[no-untyped-def]
    _stock(client, admin, coll)
    both = scene(pattern(1), seed=70, size=(800, 400), at=(30, 60))
    both[60:300, 480:720] = pattern(3)
    r = _scan(client, admin.headers, coll, jpeg(both), mode="multi")
    assert sorted(x["object_id"] for x in r.json["results"]) == ["sign-1", "sign-3"]
    r = _scan(client, admin.headers, coll, jpeg(both), mode="single")
    assert len(r.json["results"]) == 1


def test_no_match_for_unknown_tiny_and_blank(client, admin, coll) -> None:  # type: ignore[no-untyped-def]
    _stock(client, admin, coll)
    for img in (scene(pattern(77), seed=1), np.full((400, 400, 3), 200, np.uint8),
                scene(pattern(1), seed=1)[:40, :40]):
        r = _scan(client, admin.headers, coll, jpeg(img))
        assert r.status_code == 200 and r.json["results"] == []


def test_inactive_objects_are_not_recognized(client, admin, coll) -> None:  # type: ignore[no-untyped-def]
    _stock(client, admin, coll)
    client.patch(f"/v1/collections/{coll}/objects/sign-1", json={"active": False}, headers=admin.headers)
    assert _scan(client, admin.headers, coll, jpeg(scene(pattern(1), seed=9))).json["results"] == []


def test_duplicate_of_another_object_is_reported_not_added(client, admin, coll) -> None:  # type: ignore[no-untyped-def]
    _stock(client, admin, coll, n=1)
    client.put(f"/v1/collections/{coll}/objects/copy", json={}, headers=admin.headers)
    r = _upload(client, admin.headers, coll, "copy", jpeg(scene(pattern(1), seed=33)))
    img = r.json["images"][0]
    assert img["status"] == "duplicate" and img["id"] is None
    assert img["duplicates"][0]["object_id"] == "sign-1" and img["duplicates"][0]["score"] > 0.9
    assert client.get(f"/v1/collections/{coll}/objects/copy/images", headers=admin.headers).json["images"] == []
    r = _upload(client, admin.headers, coll, "copy", jpeg(scene(pattern(1), seed=33)), force="true")
    assert r.json["images"][0]["status"] == "added"


def test_a_weak_match_of_another_object_is_reported_but_added(client, admin, coll, app) -> None:  # type: ignore[no-untyped-def]
    """A photo showing only a sliver of sign-1 matches it above min_score but under duplicate_score (0.95): it is
    reported in `duplicates` and added; with duplicate_score at min_score the same upload is refused."""
    _stock(client, admin, coll, n=1)
    client.put(f"/v1/collections/{coll}/objects/sliver", json={}, headers=admin.headers)
    sliver = pattern(1)
    sliver[:, 20:] = 255
    photo = jpeg(scene(sliver, seed=34))
    settings = app.extensions["forecourt.settings"].recognition
    settings.duplicate_score = 0.5
    img = _upload(client, admin.headers, coll, "sliver", photo).json["images"][0]
    assert img["status"] == "duplicate" and img["id"] is None
    settings.duplicate_score = 0.95
    img = _upload(client, admin.headers, coll, "sliver", photo).json["images"][0]
    assert img["status"] == "added" and img["id"] is not None
    assert [d["object_id"] for d in img["duplicates"]] == ["sign-1"]
    assert 0.5 <= img["duplicates"][0]["score"] < 0.95


def test_many_images_in_one_upload_and_base64(client, admin, coll) -> None:  # type: ignore[no-untyped-def]
    client.put(f"/v1/collections/{coll}/objects/multi", json={}, headers=admin.headers)
    r = _upload(client, admin.headers, coll, "multi", jpeg(scene(pattern(5), seed=1)),
                jpeg(scene(pattern(5), seed=2, angle=20)), jpeg(np.full((300, 300, 3), 90, np.uint8)))
    statuses = [(i["status"], i["rating"]) for i in r.json["images"]]
    assert [s for s, _ in statuses] == ["added", "added", "failed"]
    assert statuses[0][1] >= 3 and statuses[2][1] == 0
    r = client.post(f"/v1/collections/{coll}/objects/multi/images", headers=admin.headers,
                    json={"images_b64": [base64.b64encode(jpeg(scene(pattern(6), seed=4))).decode()]})
    assert r.json["images"][0]["status"] == "added"
    images = client.get(f"/v1/collections/{coll}/objects/multi/images", headers=admin.headers).json["images"]
    assert len(images) == 3
    r = _upload(client, admin.headers, coll, "multi", b"not an image")
    assert r.status_code == 400 and r.json["errors"][0]["code"] == "invalid_file_type" or \
        r.json["errors"][0]["code"] == "failed_to_read_image"


def test_delete_image_and_object_remove_them_from_scans(client, admin, coll) -> None:  # type: ignore[no-untyped-def]
    _stock(client, admin, coll)
    query = jpeg(scene(pattern(3), seed=8))
    assert _scan(client, admin.headers, coll, query).json["results"][0]["object_id"] == "sign-3"
    image_id = client.get(f"/v1/collections/{coll}/objects/sign-3/images", headers=admin.headers).json["images"][0]["id"]
    assert client.delete(f"/v1/collections/{coll}/objects/sign-3/images/{image_id}",
                         headers=admin.headers).status_code == 200
    assert _scan(client, admin.headers, coll, query).json["results"] == []
    client.delete(f"/v1/collections/{coll}/objects/sign-2", headers=admin.headers)
    assert _scan(client, admin.headers, coll, jpeg(scene(pattern(2), seed=8))).json["results"] == []
    s = client.get(f"/v1/collections/{coll}/summary", headers=admin.headers).json
    assert (s["objects"], s["images"], s["active"], s["scans_this_month"]) == (2, 1, 2, 3)
    assert s["index"]["descriptors"] > 0 and s["processing"] == 0


def test_index_survives_restart_and_rebuilds_when_corrupt(app, client, admin, coll) -> None:  # type: ignore[no-untyped-def]
    _stock(client, admin, coll)
    query = jpeg(scene(pattern(1), seed=12))
    with app.app_context():
        path = svc_index.index_path(app.extensions["forecourt.settings"], coll)
    assert path.exists()
    svc_index.forget_cached_indexes()  # a new process
    assert _scan(client, admin.headers, coll, query).json["results"][0]["object_id"] == "sign-1"
    for broken in (b"garbage", None):
        svc_index.forget_cached_indexes()
        if broken is None:
            path.unlink()
        else:
            path.write_bytes(broken)
        assert _scan(client, admin.headers, coll, query).json["results"][0]["object_id"] == "sign-1"
        assert path.stat().st_size > 1000


def test_stale_index_in_another_process_is_reloaded(app, client, admin, coll) -> None:  # type: ignore[no-untyped-def]
    _stock(client, admin, coll, n=1)
    query = jpeg(scene(pattern(2), seed=5))
    assert _scan(client, admin.headers, coll, query).json["results"] == []  # caches the index at this generation
    with app.app_context():
        cached = dict(svc_index._cache)
    client.put(f"/v1/collections/{coll}/objects/sign-2", json={}, headers=admin.headers)
    _upload(client, admin.headers, coll, "sign-2", jpeg(scene(pattern(2), seed=2)))
    svc_index._cache.clear()
    svc_index._cache.update(cached)  # this "worker" still holds the old generation
    assert _scan(client, admin.headers, coll, query).json["results"][0]["object_id"] == "sign-2"


def test_concurrent_uploads_and_scans(app, client, admin, coll) -> None:  # type: ignore[no-untyped-def]
    _stock(client, admin, coll, n=1)
    for i in range(2, 6):
        client.put(f"/v1/collections/{coll}/objects/sign-{i}", json={}, headers=admin.headers)
    errors: list[str] = []

    def upload(i: int) -> None:
        c = app.test_client()
        r = _upload(c, admin.headers, coll, f"sign-{i}", jpeg(scene(pattern(i), seed=i)))
        if r.status_code != 200 or r.json["images"][0]["status"] != "added":
            errors.append(str(r.json))

    def scan() -> None:
        c = app.test_client()
        r = _scan(c, admin.headers, coll, jpeg(scene(pattern(1), seed=40)))
        if r.status_code != 200 or r.json["results"][0]["object_id"] != "sign-1":
            errors.append(str(r.json))

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(2, 6)]
    threads += [threading.Thread(target=scan) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    svc_index.forget_cached_indexes()
    for i in range(1, 6):
        r = _scan(client, admin.headers, coll, jpeg(scene(pattern(i), seed=60 + i)))
        assert r.json["results"][0]["object_id"] == f"sign-{i}"


class FakeSegmenter:
    """Stands in for the car segmenter: the car is the left half of the photo."""

    def mask(self, rgb, kind: str = "auto"):  # type: ignore[no-untyped-def]
        assert kind == "car"
        m = np.zeros(rgb.shape[:2], np.float32)
        m[:, : rgb.shape[1] // 2] = 1.0
        return m


def test_car_collections_use_features_on_the_car_only(client, admin, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(segmentation, "segmenter", lambda settings: FakeSegmenter())
    cid = client.post("/v1/collections", json={"name": "Cars", "object_type": "car"}, headers=admin.headers).json["id"]
    client.put(f"/v1/collections/{cid}/objects/car-1", json={}, headers=admin.headers)
    # The "car" (pattern 1) on the left, a shared "backdrop" (pattern 9) on the right.
    ref = scene(pattern(1), seed=1, size=(560, 300), at=(20, 30))
    ref[30:270, 300:540] = pattern(9)
    r = _upload(client, admin.headers, cid, "car-1", jpeg(ref))
    assert r.json["images"][0]["status"] == "added"
    backdrop_only = scene(pattern(4), seed=2, size=(560, 300), at=(20, 30))
    backdrop_only[30:270, 300:540] = pattern(9)
    assert _scan(client, admin.headers, cid, jpeg(backdrop_only)).json["results"] == []
    assert _scan(client, admin.headers, cid, jpeg(ref)).json["results"][0]["object_id"] == "car-1"


def test_cli_index_rebuild_restores_a_deleted_index(app, client, admin, coll, cli_runner) -> None:  # type: ignore[no-untyped-def]
    from server.cli import cli

    _stock(client, admin, coll, n=2)
    with app.app_context():
        path = svc_index.index_path(app.extensions["forecourt.settings"], coll)
    size = path.stat().st_size
    path.unlink()
    runner, env = cli_runner
    result = runner.invoke(cli, ["index", "rebuild"], env=env)
    assert result.exit_code == 0, result.output
    assert f"{coll}: 2 images" in result.output and "flat index" in result.output
    assert path.stat().st_size == size
    result = runner.invoke(cli, ["index", "rebuild", "--collection", "nope"], env=env)
    assert result.exit_code != 0 and "no collection" in result.output


@pytest.fixture
def small_ivf(settings_dict: dict) -> dict:
    settings_dict["recognition"] = {"ivf_threshold": 1000}
    return settings_dict


def test_upload_past_the_ivf_threshold_rebuilds_the_index_as_ivf(small_ivf, app, client, admin) -> None:  # type: ignore[no-untyped-def]
    cid = client.post("/v1/collections", json={"name": "Signs", "object_type": "generic"},
                      headers=admin.headers).json["id"]
    kinds = []
    for i in range(1, 9):
        client.put(f"/v1/collections/{cid}/objects/sign-{i}", json={"name": f"Sign {i}"}, headers=admin.headers)
        r = _upload(client, admin.headers, cid, f"sign-{i}", jpeg(scene(pattern(i), seed=i)))
        assert r.json["images"][0]["status"] == "added", r.json
        with app.app_context():
            assert svc_rebuild.wait_for_rebuilds(timeout=120)  # the rebuild runs in this worker's background thread
        index = client.get(f"/v1/collections/{cid}/summary", headers=admin.headers).json["index"]
        kinds.append((index["kind"], index["descriptors"]))
    assert kinds[0][0] == "flat" and kinds[-1][0] == "ivfpq", kinds
    assert all(kind == ("flat" if n <= 1000 else "ivfpq") for kind, n in kinds), kinds
    with app.app_context():
        path = svc_index.index_path(app.extensions["forecourt.settings"], cid)
    svc_index.forget_cached_indexes()  # the saved file is the IVF one
    assert _scan(client, admin.headers, cid, jpeg(scene(pattern(6), seed=60, angle=5))).json["results"][0][
        "object_id"] == "sign-6"
    with app.app_context():
        assert FeatureIndex.load(path).kind == "ivfpq"
