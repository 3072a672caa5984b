"""The catalog under real gunicorn: job queue threads start in the worker (never in the master, which must not touch
CUDA), render real photos with the real model, and stop cleanly on a graceful shutdown."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.helpers import start_catalog_server, stop_live_server, wait_for

pytestmark = pytest.mark.slow


def log_events(text: str) -> list[dict]:
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            events.append({"msg": line})
    return events


def test_render_threads_live_in_workers_and_stop_cleanly(tmp_path: Path, shared_data: Path) -> None:
    server = start_catalog_server(tmp_path)
    try:
        h = server.admin_headers("catalog")
        v = server.vehicle_with_profile(h)
        assert v["make"] == "BMW" and v["year"] == 2012
        folder = shared_data / "carvana" / "images"
        server.upload_photos(h, v["id"], [(folder / "0ce66b539f52_01.jpg", "front"),
                                          (folder / "0ce66b539f52_05.jpg", "left")])

        def settled() -> dict | None:
            progress = requests.get(f"{server.url}/v1/vehicles/{v['id']}", headers=h, timeout=30).json()["renders"]
            return progress if progress["done"] + progress["failed"] == 2 else None

        progress = wait_for("both renders to settle", settled, 300, interval=0.5)
        assert progress["done"] == 2, progress
        images = requests.get(f"{server.url}/v1/vehicles/{v['id']}/images", headers=h, timeout=30).json()["data"]
        served = requests.get(server.url + images[0]["url"] + "?width=150&format=webp", headers=h, timeout=30)
        assert served.status_code == 200 and Image.open(io.BytesIO(served.content)).size == (150, 100)
    finally:
        master = server.proc.pid
        stop_live_server(server)
    assert server.proc.returncode == 0  # exited on its own, within the graceful timeout
    events = log_events(server.log())
    started = [e for e in events if "job queue thread(s) in process" in str(e.get("msg", ""))]
    stopped = [e for e in events if "job queue threads stopped in process" in str(e.get("msg", ""))]
    assert started and stopped, server.log()[-3000:]
    pids = {int(str(e["msg"]).split("process ")[1].split()[0]) for e in started}
    assert master not in pids and os.getpid() not in pids  # only gunicorn's worker ran render threads
    assert "(0 still busy)" in str(stopped[-1]["msg"])
    assert "Traceback" not in server.log()
