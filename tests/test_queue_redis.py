"""The job queue on Redis: a real redis-server, an API box (gunicorn, no queue threads) and two `forecourt worker`
processes sharing the work; a worker killed with SIGKILL mid-render loses nothing and nothing is done twice.

redis-server is Debian's package (scripts/install_redis.sh, run by `make test`); renders use the real model.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from server.jobs.store import owner_pid
from tests.helpers import REPO, free_port, start_live_server, stop_live_server, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # 12 real renders on two worker processes
PHOTOS = ["01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12"]


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A private redis-server on a free port, stopped after the test."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is missing: run `bash scripts/install_redis.sh` (make test does)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client = redis.Redis(port=port)
    try:
        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_for("redis-server to answer PING", answers, 30)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(30)


def _jobs(db_path: Path) -> list[dict]:
    with sqlite3.connect(db_path, timeout=30) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM jobs WHERE kind = 'catalog.render' ORDER BY id")]


def _all_jobs(db_path: Path) -> list[dict]:
    """Every job of every kind (a stored photo also queues its catalog.reference job)."""
    with sqlite3.connect(db_path, timeout=30) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM jobs ORDER BY id")]


def _pid(job: dict) -> int | None:
    return owner_pid(job["claimed_by"])


def test_two_workers_on_redis_share_renders_and_a_killed_workers_job_runs_again_once(
        tmp_path: Path, shared_data: Path, redis_url: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    queue_env = {"FORECOURT_QUEUE__URL": redis_url, "FORECOURT_QUEUE__WORKERS_IN_SERVER": "false",
                 "FORECOURT_QUEUE__REAP_SECONDS": "0.5", "FORECOURT_QUEUE__RETRY_DELAY_SECONDS": "1",
                 "FORECOURT_CATALOG__RENDER_SIZE": "preview"}
    server = start_live_server(data, workers=1, threads=4, extra_env=queue_env)
    workers: dict[int, subprocess.Popen] = {}
    logs = []
    try:
        h = server.admin_headers()
        v = server.vehicle_with_profile(h)
        folder = shared_data / "carvana" / "images"
        up = server.upload_photos(h, v["id"], [(folder / f"0ce66b539f52_{n}.jpg", "detail") for n in PHOTOS],
                                  width=400, timeout=120)
        photo_ids = sorted(p["id"] for p in up.json()["photos"])
        assert len(photo_ids) == len(PHOTOS)
        db_path = data / "forecourt.db"
        assert [j["state"] for j in _jobs(db_path)] == ["queued"] * len(PHOTOS)  # the API box runs none itself
        queued = _all_jobs(db_path)
        assert {j["state"] for j in queued} == {"queued"}
        assert redis.Redis.from_url(redis_url).llen("huey.redis.forecourt") == len(queued)  # one message a job

        env = {**server.env, **queue_env}
        for i in range(2):
            log = open(tmp_path / f"worker-{i}.log", "w")
            logs.append(tmp_path / f"worker-{i}.log")
            proc = subprocess.Popen([sys.executable, "-m", "server.cli", "worker", "--threads", "1"], env=env,
                                    cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            workers[proc.pid] = proc
        a, b = list(workers)

        # both workers finish renders, then A is killed while it holds one
        def a_running_after_both_did_one() -> dict | None:
            jobs = _jobs(db_path)
            done_by = {_pid(j) for j in jobs if j["state"] == "done"}
            held = [j for j in jobs if j["state"] == "running" and _pid(j) == a]
            return held[0] if {a, b} <= done_by and held else None

        victim = wait_for("both workers to render and A to hold a job", a_running_after_both_did_one)
        os.kill(a, signal.SIGKILL)
        workers[a].wait(30)

        def all_settled() -> bool:
            return all(j["state"] in ("done", "dead") for j in _jobs(db_path))

        wait_for("every render job to settle", all_settled)
        jobs = {j["id"]: j for j in _jobs(db_path)}
        assert {j["state"] for j in jobs.values()} == {"done"}
        again = jobs[victim["id"]]
        assert again["attempts"] == 2 and _pid(again) == b  # the killed worker's job ran again, on B
        assert again["error"].startswith("worker_lost")
        assert all(j["attempts"] == 1 for i, j in jobs.items() if i != victim["id"])
        by_worker = {}
        for j in jobs.values():
            by_worker[_pid(j)] = by_worker.get(_pid(j), 0) + 1
        assert set(by_worker) == {a, b} and min(by_worker.values()) >= 1, by_worker  # split between them

        with sqlite3.connect(db_path) as db:  # nothing done twice: one render per photo, every catalog job done
            per_photo = dict(db.execute("SELECT photo_id, count(*) FROM catalog_renders GROUP BY photo_id"))
            statuses = [r[0] for r in db.execute("SELECT status FROM catalog_jobs")]
        assert per_photo == dict.fromkeys(photo_ids, 1)
        assert statuses == ["done"] * len(PHOTOS)
        progress = requests.get(f"{server.url}/v1/vehicles/{v['id']}", headers=h, timeout=30).json()["renders"]
        assert progress["done"] == len(PHOTOS) and progress["failed"] == 0
        wait_for("every job of every kind to settle",
                 lambda: all(j["state"] in ("done", "dead") for j in _all_jobs(db_path)))
        everything = _all_jobs(db_path)
        assert {j["state"] for j in everything} == {"done"}
        listed = server.cli("jobs", "list", "--state", "done")
        assert listed.returncode == 0 and listed.stdout.startswith(f"queued: 0  running: 0  done: {len(everything)}")
    finally:
        for proc in workers.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
        stop_live_server(server)
    survivor = workers[b]
    assert survivor.returncode == 0, logs[1].read_text()[-3000:]  # SIGTERM: a graceful stop
    assert "Traceback" not in logs[1].read_text()
