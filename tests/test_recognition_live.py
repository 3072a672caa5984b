"""Recognition under real gunicorn (2 workers x 4 threads): concurrent uploads and scans, then a restart with the
index file corrupted in between."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.helpers import start_live_server, stop_live_server
from tests.recognition_synth import jpeg, pattern, scene

pytestmark = pytest.mark.slow
OBJECTS = 8


def _key(server) -> str:  # type: ignore[no-untyped-def]
    made = server.cli("users", "create", "sales@dealer.example", "--password", "long enough password")
    assert made.returncode == 0, made.stderr
    key = server.cli("keys", "create", "sales@dealer.example", "--name", "recognition")
    assert key.returncode == 0, key.stderr
    return key.stdout.strip()


def _scan(url: str, headers: dict, cid: str, i: int, seed: int) -> str | None:
    body = {"image_file_b64": base64.b64encode(jpeg(scene(pattern(i), seed=seed))).decode()}
    r = requests.post(f"{url}/v1/collections/{cid}/recognize", json=body, headers=headers, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["results"][0]["object_id"] if r.json()["results"] else None


def test_concurrent_uploads_and_scans_then_restart_with_a_corrupt_index(live_server) -> None:  # type: ignore[no-untyped-def]
    url = live_server.url
    headers = {"X-Api-Key": _key(live_server)}
    cid = requests.post(f"{url}/v1/collections", json={"name": "Signs"}, headers=headers, timeout=30).json()["id"]
    for i in range(OBJECTS):
        r = requests.put(f"{url}/v1/collections/{cid}/objects/obj-{i}", json={"name": f"Object {i}"},
                         headers=headers, timeout=30)
        assert r.status_code == 201
    first = requests.post(f"{url}/v1/collections/{cid}/objects/obj-0/images", headers=headers, timeout=120,
                          files={"image_file": ("0.jpg", jpeg(scene(pattern(0), seed=0)), "image/jpeg")})
    assert first.json()["images"][0]["status"] == "added"

    def upload(i: int) -> str:
        r = requests.post(f"{url}/v1/collections/{cid}/objects/obj-{i}/images", headers=headers, timeout=120,
                          files={"image_file": (f"{i}.jpg", jpeg(scene(pattern(i), seed=i)), "image/jpeg")})
        assert r.status_code == 200, r.text
        return r.json()["images"][0]["status"]

    with ThreadPoolExecutor(8) as pool:
        uploads = pool.map(upload, range(1, OBJECTS))
        scans = [pool.submit(_scan, url, headers, cid, 0, 100 + n) for n in range(8)]
        assert list(uploads) == ["added"] * (OBJECTS - 1)
        assert [s.result() for s in scans] == ["obj-0"] * 8
    # Every worker (several scans per object land on both) sees every upload.
    with ThreadPoolExecutor(4) as pool:
        found = list(pool.map(lambda n: _scan(url, headers, cid, n % OBJECTS, 200 + n), range(3 * OBJECTS)))
    assert found == [f"obj-{n % OBJECTS}" for n in range(3 * OBJECTS)]
    summary = requests.get(f"{url}/v1/collections/{cid}/summary", headers=headers, timeout=30).json()
    assert (summary["objects"], summary["images"], summary["scans_this_month"]) == (OBJECTS, OBJECTS, 32)

    stop_live_server(live_server)
    index_file = Path(live_server.data_dir) / "indexes" / f"{cid}.faiss"
    assert index_file.stat().st_size > 10_000
    index_file.write_bytes(b"\0" * 100)
    again = start_live_server(live_server.data_dir)
    try:
        assert [_scan(again.url, headers, cid, i, 300 + i) for i in range(OBJECTS)] == \
            [f"obj-{i}" for i in range(OBJECTS)]
        assert index_file.stat().st_size > 10_000
        assert "unreadable; rebuilding" in again.log()
    finally:
        stop_live_server(again)
