"""Background rebuilds of the recognition index: an upload that outgrows it queues a rebuild and answers at once;
the rebuild reads a snapshot without the write lock, then swaps in with what landed meanwhile. Real SIFT features on
small synthetic images; recognition.background_rebuild = false so that each test runs the queue itself."""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import time
from collections import Counter

import faiss
import numpy as np
import pytest
import requests

from core.process import owner_id
from models.recognition.index import KP_BITS, FeatureIndex
from server.services import recognition_index as svc_index
from server.services import recognition_rebuild as svc_rebuild
from server.store import get_db, write_txn
from tests.recognition_synth import jpeg, pattern, scene


@pytest.fixture
def settings_dict(settings_dict: dict) -> dict:
    # 300 descriptors an image: the fourth upload crosses the threshold
    settings_dict["recognition"] = {"ivf_threshold": 1000, "background_rebuild": False}
    return settings_dict


@pytest.fixture
def coll(client, admin) -> str:  # type: ignore[no-untyped-def]
    r = client.post("/v1/collections", json={"name": "Signs", "object_type": "generic"}, headers=admin.headers)
    return r.json["id"]


def _upload(client, admin, cid: str, i: int) -> int:  # type: ignore[no-untyped-def]
    client.put(f"/v1/collections/{cid}/objects/sign-{i}", json={"name": f"Sign {i}"}, headers=admin.headers)
    r = client.post(f"/v1/collections/{cid}/objects/sign-{i}/images", headers=admin.headers,
                    data={"image_file": [(io.BytesIO(jpeg(scene(pattern(i), seed=i))), "a.jpg")]},
                    content_type="multipart/form-data")
    assert r.status_code == 200 and r.json["images"][0]["status"] == "added", r.json
    return int(r.json["images"][0]["id"])


def _found(client, admin, cid: str, i: int) -> str | None:  # type: ignore[no-untyped-def]
    """The object a new photo of pattern i (another background, turned 5 degrees) is recognised as."""
    query = base64.b64encode(jpeg(scene(pattern(i), seed=50 + i, angle=5))).decode()
    r = client.post(f"/v1/collections/{cid}/recognize", json={"image_file_b64": query}, headers=admin.headers)
    assert r.status_code == 200, r.json
    return r.json["results"][0]["object_id"] if r.json["results"] else None


def _summary(client, admin, cid: str) -> dict:  # type: ignore[no-untyped-def]
    return client.get(f"/v1/collections/{cid}/summary", headers=admin.headers).json


def _descriptors_per_image(index: FeatureIndex) -> Counter:
    """How many descriptors of each image id an IVF index holds."""
    ivf = faiss.extract_index_ivf(index.index)
    lists = ivf.invlists
    ids = np.concatenate([faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                          for i in range(ivf.nlist) if lists.list_size(i)])
    return Counter((ids >> KP_BITS).tolist())


def _stored(app, cid: str) -> Counter:  # type: ignore[no-untyped-def]
    """How many descriptors of each stored image belong in the index (its 300 strongest)."""
    with app.app_context():
        return Counter({r[0]: r[1] for r in get_db().execute(
            "SELECT id, MIN(keypoints, 300) FROM rec_images WHERE collection_id = ?", [cid])})


def _saved(app, cid: str) -> FeatureIndex:  # type: ignore[no-untyped-def]
    with app.app_context():
        return FeatureIndex.load(svc_index.index_path(app.extensions["forecourt.settings"], cid))


def _rows(app, cid: str) -> list[dict]:  # type: ignore[no-untyped-def]
    """The collection's rebuild jobs that are queued or running."""
    with app.app_context():
        return list(get_db().query("SELECT * FROM jobs WHERE unique_key = ? AND state IN ('queued', 'running') "
                                   "ORDER BY id", [f"{svc_rebuild.REBUILD}:{cid}"]))


@pytest.mark.timeout(900)  # 100-160 s on a loaded 2-core box (make test-fast, 06:10 UTC): more than the default 300 s under heavier load
def test_crossing_the_threshold_queues_a_rebuild_that_makes_an_exact_ivf_index(app, client, admin, coll) -> None:  # type: ignore[no-untyped-def]
    for i in range(1, 4):
        _upload(client, admin, coll, i)
    s = _summary(client, admin, coll)
    assert (s["index"]["kind"], s["index"]["rebuild"], s["pending_index_work"]) == ("flat", None, 0)
    assert _found(client, admin, coll, 2) == "sign-2"  # before

    _upload(client, admin, coll, 4)  # 1200 descriptors > 1000: answered at once, on the flat index
    s = _summary(client, admin, coll)
    assert s["index"] == {**s["index"], "kind": "flat", "descriptors": 1200, "rebuild": "queued"}
    assert s["pending_index_work"] == 1
    assert _saved(app, coll).kind == "flat"
    assert _found(client, admin, coll, 4) == "sign-4"  # while queued: the flat index holds the new image

    with app.app_context():
        results = svc_rebuild.run_pending_rebuilds()
    assert results == [{**results[0], "collection_id": coll, "status": "done", "kind": "ivfpq",
                        "descriptors": 1200, "added_meanwhile": 0, "removed_meanwhile": 0}]
    s = _summary(client, admin, coll)
    assert (s["index"]["kind"], s["index"]["descriptors"], s["index"]["rebuild"], s["pending_index_work"]) == (
        "ivfpq", 1200, None, 0)
    saved = _saved(app, coll)
    assert saved.kind == "ivfpq" and _descriptors_per_image(saved) == _stored(app, coll)
    for i in (1, 4):  # after, in this worker and in one that loads the file
        assert _found(client, admin, coll, i) == f"sign-{i}"
    svc_index.forget_cached_indexes()
    assert _found(client, admin, coll, 3) == "sign-3"
    with app.app_context():
        assert svc_rebuild.run_pending_rebuilds() == []


@pytest.mark.timeout(900)  # 100-160 s on a loaded 2-core box (make test-fast, 06:10 UTC): more than the default 300 s under heavier load
def test_an_upload_and_a_delete_between_snapshot_and_swap_are_in_the_new_index(app, client, admin, coll) -> None:  # type: ignore[no-untyped-def]
    first = _upload(client, admin, coll, 1)
    for i in range(2, 5):
        _upload(client, admin, coll, i)
    queued = _rows(app, coll)
    assert [r["state"] for r in queued] == ["queued"]
    seen: dict = {}

    def meanwhile(cid: str) -> None:  # the index is built; another request lands before the swap
        seen["state"] = _summary(client, admin, cid)["index"]["rebuild"]
        seen["claimed_by"] = _rows(app, cid)[0]["claimed_by"]
        seen["found"] = _found(client, admin, cid, 3)  # while running: the old (flat) index answers
        seen["new"] = _upload(client, admin, cid, 5)  # still outgrown: asks again, but one is running
        seen["rows"] = _rows(app, cid)
        r = client.delete(f"/v1/collections/{cid}/objects/sign-1/images/{first}", headers=admin.headers)
        assert r.status_code == 200, r.json

    with app.app_context():
        [result] = svc_rebuild.run_pending_rebuilds(before_swap=meanwhile)
    assert seen["state"] == "running" and seen["found"] == "sign-3"
    assert [(r["id"], r["state"], r["claimed_by"]) for r in seen["rows"]] == [
        (queued[0]["id"], "running", seen["claimed_by"])]  # not queued twice
    assert result == {**result, "status": "done", "kind": "ivfpq", "added_meanwhile": 1, "removed_meanwhile": 1}
    assert _rows(app, coll) == []
    expected = _stored(app, coll)
    assert first not in expected and seen["new"] in expected and len(expected) == 4
    svc_index.forget_cached_indexes()
    saved = _saved(app, coll)
    assert saved.kind == "ivfpq" and _descriptors_per_image(saved) == expected
    assert _found(client, admin, coll, 5) == "sign-5"
    assert _found(client, admin, coll, 1) is None


def test_requests_are_not_duplicated_and_image_ids_are_not_reused(app, client, admin, coll) -> None:  # type: ignore[no-untyped-def]
    ids = [_upload(client, admin, coll, i) for i in range(1, 5)]
    before = _rows(app, coll)
    ids.append(_upload(client, admin, coll, 5))  # outgrown again while queued
    assert _rows(app, coll) == before and len(before) == 1
    client.delete(f"/v1/collections/{coll}/objects/sign-5/images/{ids[-1]}", headers=admin.headers)
    again = _upload(client, admin, coll, 6)
    assert again > ids[-1]  # SQLite alone would hand out the deleted last id again


@pytest.mark.timeout(900)  # 100-160 s on a loaded 2-core box (make test-fast, 06:10 UTC): more than the default 300 s under heavier load
def test_a_rebuild_whose_worker_is_gone_is_taken_over(app, client, admin, coll) -> None:  # type: ignore[no-untyped-def]
    for i in range(1, 5):
        _upload(client, admin, coll, i)

    def claim(owner: str, lease_in: float) -> None:
        with app.app_context():
            db = get_db()
            with write_txn(db):
                db.execute("UPDATE jobs SET state = 'running', claimed_by = ?, lease_until = ? WHERE unique_key = ? "
                           "AND state IN ('queued', 'running')", [owner, time.time() + lease_in,
                                                                  f"{svc_rebuild.REBUILD}:{coll}"])

    claim("other-host:1234:abcd", 600)  # another worker, alive and within its lease
    assert _summary(client, admin, coll)["index"]["rebuild"] == "running"
    with app.app_context():
        assert svc_rebuild.run_pending_rebuilds() == []
    claim("other-host:1234:abcd", -1)  # its lease lapsed (killed, or stuck)
    assert _summary(client, admin, coll)["index"]["rebuild"] == "queued"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert dead.pid != os.getpid()
    boot = owner_id().split(":")[0]
    claim(f"{socket.gethostname()}:{boot}:{dead.pid}:-:abcd", 600)  # a worker of this box that is gone, lease or not
    assert _summary(client, admin, coll)["index"]["rebuild"] == "queued"

    def taken_over(cid: str) -> None:  # while this build ran, its lease lapsed and another worker claimed it
        claim("other-host:99:efgh", 600)

    with app.app_context():
        assert [r["status"] for r in svc_rebuild.run_pending_rebuilds(before_swap=taken_over)] == ["superseded"]
    assert _saved(app, coll).kind == "flat" and _rows(app, coll)[0]["claimed_by"] == "other-host:99:efgh"
    claim("other-host:99:efgh", -1)
    with app.app_context():
        assert [r["status"] for r in svc_rebuild.run_pending_rebuilds()] == ["done"]
    assert _saved(app, coll).kind == "ivfpq" and _rows(app, coll) == []
    assert _found(client, admin, coll, 2) == "sign-2"


def test_cli_runs_pending_rebuilds_and_a_full_rebuild_clears_them(app, client, admin, coll, cli_runner) -> None:  # type: ignore[no-untyped-def]
    from server.cli import cli

    runner, env = cli_runner
    env = {**env, "FORECOURT_RECOGNITION__IVF_THRESHOLD": "1000", "FORECOURT_RECOGNITION__BACKGROUND_REBUILD": "false"}
    assert "no rebuild is queued" in runner.invoke(cli, ["index", "rebuild", "--pending"], env=env).output
    for i in range(1, 5):
        _upload(client, admin, coll, i)
    result = runner.invoke(cli, ["index", "rebuild"], env=env)
    assert result.exit_code == 0 and "ivfpq index" in result.output, result.output
    assert _rows(app, coll) == []
    _upload(client, admin, coll, 5)  # the IVF index is not outgrown
    assert _rows(app, coll) == []
    with app.app_context():
        db = get_db()
        with write_txn(db):
            svc_rebuild.request_rebuild(db, app.extensions["forecourt.settings"], coll)
    result = runner.invoke(cli, ["index", "rebuild", "--pending"], env=env)
    assert result.exit_code == 0 and f"{coll}: done, 1500 descriptors, ivfpq index" in result.output, result.output
    assert _rows(app, coll) == []
    assert _found(client, admin, coll, 5) == "sign-5"


@pytest.mark.slow
def test_under_gunicorn_the_upload_answers_and_a_worker_thread_rebuilds(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.helpers import start_live_server, stop_live_server

    data = tmp_path / "live"
    data.mkdir()
    server = start_live_server(data, extra_env={"FORECOURT_RECOGNITION__IVF_THRESHOLD": "1000"})
    try:
        url = server.url
        made = server.cli("users", "create", "sales@dealer.example", "--password", "long enough password")
        assert made.returncode == 0, made.stderr
        headers = {"X-Api-Key": server.cli("keys", "create", "sales@dealer.example").stdout.strip()}
        cid = requests.post(f"{url}/v1/collections", json={"name": "Signs"}, headers=headers, timeout=30).json()["id"]
        for i in range(1, 5):
            requests.put(f"{url}/v1/collections/{cid}/objects/sign-{i}", json={}, headers=headers, timeout=30)
            r = requests.post(f"{url}/v1/collections/{cid}/objects/sign-{i}/images", headers=headers, timeout=120,
                              files={"image_file": ("a.jpg", jpeg(scene(pattern(i), seed=i)), "image/jpeg")})
            assert r.json()["images"][0]["status"] == "added", r.text
        deadline = time.monotonic() + 120  # a bound, not a measure: the rebuild takes well under a second here
        while True:
            index = requests.get(f"{url}/v1/collections/{cid}/summary", headers=headers, timeout=30).json()["index"]
            if index["rebuild"] is None or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert (index["kind"], index["descriptors"], index["rebuild"]) == ("ivfpq", 1200, None)
        for n in range(4):  # both workers answer from the new index
            query = base64.b64encode(jpeg(scene(pattern(n % 4 + 1), seed=70 + n, angle=5))).decode()
            r = requests.post(f"{url}/v1/collections/{cid}/recognize", json={"image_file_b64": query},
                              headers=headers, timeout=120)
            assert r.json()["results"][0]["object_id"] == f"sign-{n % 4 + 1}", r.text
        assert "rebuilt in the background as ivfpq" in server.log()
    finally:
        stop_live_server(server)


def test_a_failing_rebuild_job_is_retried_then_dead_and_still_wanted(app, client, admin, coll,
                                                                     monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from server.jobs import queue, store

    calls = []

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        raise MemoryError("no room for the new index")

    _upload(client, admin, coll, 1)
    real = svc_rebuild.rebuild_descriptors
    monkeypatch.setattr(svc_rebuild, "rebuild_descriptors", broken)
    settings = app.extensions["forecourt.settings"]
    settings.recognition.background_rebuild = True  # uploads put their rebuild on the job queue
    with app.app_context():
        db = get_db()
        with write_txn(db):
            first = svc_rebuild.request_rebuild(db, settings, coll)
            assert svc_rebuild.request_rebuild(db, settings, coll) == first  # one job, however often asked
        assert svc_rebuild.rebuild_state(db, coll) == "queued"
    ran = queue.run_pending(app, kinds=(svc_rebuild.REBUILD,))
    assert [state for _, state, _ in ran] == ["queued", "queued", "dead"] and len(calls) == 3
    with app.app_context():
        [job] = store.list_jobs(get_db(), kind=svc_rebuild.REBUILD)
        assert job["attempts"] == 3 and "MemoryError: no room for the new index" in job["error"]
        assert svc_rebuild.rebuild_state(get_db(), coll) is None  # dead: in `forecourt jobs list`, until retried
    monkeypatch.setattr(svc_rebuild, "rebuild_descriptors", real)
    with app.app_context():
        assert queue.retry_dead(get_db(), settings, [job["id"]]) == [job["id"]]
    [(_, state, result)] = queue.run_pending(app, kinds=(svc_rebuild.REBUILD,))
    assert state == "done" and result["status"] == "done"
    with app.app_context():
        assert svc_rebuild.rebuild_state(get_db(), coll) is None



def test_one_rebuild_of_a_collection_at_a_time_and_no_request_is_lost(app, client, admin, coll) -> None:  # type: ignore[no-untyped-def]
    from server.jobs import queue, store

    settings = app.extensions["forecourt.settings"]
    for i in range(1, 5):
        _upload(client, admin, coll, i)
    [job] = _rows(app, coll)
    with app.app_context():
        db = get_db()
        first = store.claim(db, job["id"], 600, ignore_backoff=True)  # a worker (this process, alive) takes it
        assert first is not None
        assert store.claim(db, job["id"], 60, ignore_backoff=True) is None  # a duplicate message, another worker
        assert svc_rebuild.run_pending_rebuilds() == []  # a second worker finds nothing queued
        assert svc_rebuild.rebuild_state(db, coll) == "running"
        with write_txn(db):  # an upload that outgrows the index asks again: the running job is the answer
            assert svc_rebuild.request_rebuild(db, settings, coll) == job["id"]
        # a second job of the collection made anyway (an old dead one retried) steps aside while one runs
        store.add(db, svc_rebuild.REBUILD, {"collection_id": coll}, unique_key=f"{svc_rebuild.REBUILD}:{coll}")
        assert svc_rebuild.run_pending_rebuilds() == [
            {"collection_id": coll, "status": "covered", "by_job": job["id"]}]
    late = _upload(client, admin, coll, 5)  # stored while it runs: in the new index
    assert [(r["id"], r["state"]) for r in _rows(app, coll)] == [(job["id"], "running")]
    with app.app_context():
        state, result = queue.run_claimed(get_db(), settings, first)
    assert state == "done" and result["status"] == "done" and result["kind"] == "ivfpq"
    assert _rows(app, coll) == []
    svc_index.forget_cached_indexes()
    assert _descriptors_per_image(_saved(app, coll)) == _stored(app, coll) and late in _stored(app, coll)

    # a request once the swap committed (its job is done then) is a new job, run afterwards
    asked = {}

    def ask_after_swap(cid: str) -> None:
        if "job" in asked:  # once: run_pending_rebuilds runs the job asked for too, and its swap would ask again
            return
        with write_txn(get_db()):
            asked["job"] = svc_rebuild.request_rebuild(get_db(), settings, cid)

    with app.app_context():
        with write_txn(get_db()):
            second = svc_rebuild.request_rebuild(get_db(), settings, coll)
        results = svc_rebuild.run_pending_rebuilds(after_swap=ask_after_swap)
    # the request made after the swap committed was a new job, and it ran next: not lost, not merged into the old one
    assert asked["job"] != second
    assert [r["status"] for r in results] == ["done", "done"]
    assert _rows(app, coll) == [] and _summary(client, admin, coll)["index"]["rebuild"] is None
