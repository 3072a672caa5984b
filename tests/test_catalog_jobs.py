"""Catalog renders on the job queue: each render job is claimed once, retried with backoff, dead (failed in the
API) after its attempts, a lost worker's render runs again; an older render finishing last changes nothing."""

from __future__ import annotations

import threading
import time

import pytest

from core.process import owner_id
from server.jobs import queue, store
from server.services import catalog_jobs
from server.store import open_db
from tests.test_catalog_api import (  # noqa: F401 - autouse fake
    break_renders,
    fake_segmenter,
    new_vehicle,
    photo,
    upload,
)


@pytest.fixture
def settings_dict(settings_dict: dict) -> dict:
    return {**settings_dict, "queue": {"threads": 0}}


def _render_jobs(db) -> list[dict]:  # noqa: ANN001
    return list(db.query("SELECT * FROM jobs WHERE kind = ? ORDER BY id", [catalog_jobs.RENDER]))


def test_each_upload_queues_one_render_job_and_concurrent_claims_take_each_once(app, client, admin) -> None:
    v = new_vehicle(client, admin.headers)
    resp = upload(client, admin.headers, v["id"], [(photo(i), "detail") for i in range(10, 18)])
    assert len(resp.get_json()["photos"]) == 8
    settings = app.extensions["forecourt.settings"]
    db = open_db(settings.db_path)
    jobs = _render_jobs(db)
    assert len(jobs) == 8 and {j["state"] for j in jobs} == {"queued"} and all(j["sent_at"] for j in jobs)
    taken: list[int] = []
    lock = threading.Lock()

    def worker() -> None:  # every thread tries every job, as duplicate messages would
        own = open_db(settings.db_path, 10000)
        for job in jobs:
            if store.claim(own, job["id"], 60) is not None:
                with lock:
                    taken.append(job["id"])
        own.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(taken) == [j["id"] for j in jobs]  # eight jobs, none twice
    db.close()


def test_a_failing_render_is_retried_with_backoff_then_dead_and_failed_in_the_api(app, client, admin,
                                                                                monkeypatch) -> None:
    calls = break_renders(monkeypatch, RuntimeError("segmenter crashed"))
    v = new_vehicle(client, admin.headers)
    upload(client, admin.headers, v["id"], [(photo(1), "front")])
    db = open_db(app.extensions["forecourt.settings"].db_path)
    [job] = _render_jobs(db)
    with app.app_context():
        first = store.claim(db, job["id"], 60)
        assert first is not None and first.attempt == 1
        assert queue.run_claimed(db, app.extensions["forecourt.settings"], first)[0] == "queued"
    row = store.get(db, job["id"])
    assert row["state"] == "queued" and "segmenter crashed" in row["error"]
    assert row["run_after"] > time.time() + 5
    assert store.claim(db, job["id"], 60) is None  # not before its backoff (10 s, then 20 s)
    photos = client.get(f"/v1/vehicles/{v['id']}/photos", headers=admin.headers).get_json()
    assert photos["data"][0]["job"]["status"] == "queued"  # the API says it will be tried again
    assert catalog_jobs.run_pending(app) == 2  # the drain runs the two attempts left at once
    assert len(calls) == 3
    row = store.get(db, job["id"])
    assert row["state"] == "dead" and row["attempts"] == 3
    photos = client.get(f"/v1/vehicles/{v['id']}/photos", headers=admin.headers).get_json()
    assert photos["progress"]["failed"] == 1
    assert photos["data"][0]["job"]["status"] == "failed" and "segmenter crashed" in photos["data"][0]["job"]["error"]
    db.close()


def test_backoff_doubles() -> None:
    assert [store.backoff_seconds(a, 10) for a in (1, 2, 3, 4)] == [10, 20, 40, 80]


def test_a_dead_render_listed_and_retried_from_the_cli_renders(app, client, admin, monkeypatch, cli_runner) -> None:
    from server.cli import cli

    real = catalog_jobs.remove_background
    break_renders(monkeypatch, OSError("disk full"))
    v = new_vehicle(client, admin.headers)
    upload(client, admin.headers, v["id"], [(photo(1), "front")])
    catalog_jobs.run_pending(app)
    runner, env = cli_runner
    listed = runner.invoke(cli, ["jobs", "list", "--state", "dead"], env=env)
    assert listed.exit_code == 0, listed.output
    assert "catalog.render\tdead\t3/3" in listed.output and "OSError: disk full" in listed.output
    # the photo's catalog.reference job (a reference image for POST /v1/vehicles/identify) waits in the queue
    assert listed.output.startswith("queued: 1  running: 0  done: 0  dead: 1")
    monkeypatch.setattr(catalog_jobs, "remove_background", real)
    job_id = _render_jobs(open_db(app.extensions["forecourt.settings"].db_path))[0]["id"]
    again = runner.invoke(cli, ["jobs", "retry", str(job_id)], env=env)
    assert again.exit_code == 0 and f"queued again: 1 ({job_id})" in again.output
    assert runner.invoke(cli, ["jobs", "retry", str(job_id)], env=env).exit_code == 1  # not dead any more
    assert catalog_jobs.run_pending(app) == 1
    photos = client.get(f"/v1/vehicles/{v['id']}/photos", headers=admin.headers).get_json()
    assert photos["data"][0]["job"]["status"] == "done" and photos["data"][0]["render"] is not None


def test_a_render_whose_worker_died_runs_again_once(app, client, admin) -> None:
    import socket
    import subprocess
    import sys

    v = new_vehicle(client, admin.headers)
    upload(client, admin.headers, v["id"], [(photo(1), "front")])
    db = open_db(app.extensions["forecourt.settings"].db_path)
    [job] = _render_jobs(db)
    claim = store.claim(db, job["id"], 60)
    assert claim is not None
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    boot = owner_id().split(":")[0]
    db.execute("UPDATE jobs SET claimed_by = ? WHERE id = ?",  # a worker of this boot that has exited
               [f"{socket.gethostname()}:{boot}:{gone.stdout.strip()}:-:dead", job["id"]])
    db.conn.commit()
    again, _ = queue.reap_once(app)
    assert again == [job["id"]]
    row = store.get(db, job["id"])
    assert row["state"] == "queued" and row["error"].startswith("worker_lost")
    assert catalog_jobs.run_pending(app) == 1
    assert store.get(db, job["id"])["state"] == "done" and store.get(db, job["id"])["attempts"] == 2
    assert db["catalog_renders"].count == 1
    assert queue.reap_once(app) == ([], [])
    db.close()


def test_an_older_job_finishing_last_does_not_replace_a_newer_render(app, client, admin) -> None:
    v = new_vehicle(client, admin.headers)
    upload(client, admin.headers, v["id"], [(photo(1), "front")])
    settings = app.extensions["forecourt.settings"]
    db = open_db(settings.db_path)
    client.patch(f"/v1/profiles/{v['profile_id']}", json={"bg_color": "000000"}, headers=admin.headers)
    old_job, new_job = list(db.query("SELECT * FROM catalog_jobs ORDER BY id"))
    assert new_job["profile_version"] == 2
    db.execute("UPDATE catalog_jobs SET status = 'running'")  # two workers hold one each
    db.conn.commit()
    with app.app_context():
        assert catalog_jobs.process(db, settings, new_job) == "done"
        db.execute("UPDATE catalog_profiles SET version = 1")  # make A's version look current to reach the race
        db.conn.commit()
        assert catalog_jobs.process(db, settings, old_job) == "superseded"
    renders = list(db["catalog_renders"].rows)
    assert [r["profile_version"] for r in renders] == [2]
    db.close()


def test_dead_jobs_show_on_the_system_page_and_an_admin_retries_them(app, client, admin, member,
                                                                      monkeypatch) -> None:
    import server.dashboard.system as system_page
    from tests.helpers import csrf_token, sign_in

    monkeypatch.setattr(system_page, "placements", list)  # where models run: not this fake's business
    break_renders(monkeypatch, RuntimeError("segmenter crashed"))
    v = new_vehicle(client, admin.headers)
    upload(client, admin.headers, v["id"], [(photo(1), "front"), (photo(2), "rear")])
    catalog_jobs.run_pending(app)
    sign_in(client, admin)
    page = client.get("/system").get_data(as_text=True)
    assert 'data-state="dead">2<' in page and page.count('data-job="') == 2
    assert "RuntimeError: segmenter crashed" in page
    db = open_db(app.extensions["forecourt.settings"].db_path)
    first = _render_jobs(db)[0]["id"]
    refused = client.post("/system/jobs/retry", data={"job_id": str(first)})  # no CSRF token: nothing changes
    assert refused.status_code == 400 and store.get(db, first)["state"] == "dead"
    done = client.post("/system/jobs/retry", data={"job_id": str(first), "csrf_token": csrf_token(client, "/system")})
    assert done.status_code == 302 and store.get(db, first)["state"] == "queued"
    assert [j["state"] for j in _render_jobs(db)] == ["queued", "dead"]
    client.post("/logout", data={"csrf_token": csrf_token(client, "/system")})
    sign_in(client, member)
    assert client.post("/system/jobs/retry", data={"csrf_token": csrf_token(client, "/keys")}).status_code == 403
    assert [j["state"] for j in _render_jobs(db)] == ["queued", "dead"]
    db.close()


def test_the_hourly_trigger_queues_one_prune_however_many_consumers_ask(app) -> None:
    settings = app.extensions["forecourt.settings"]
    queue._bind_app(app)
    queue.get_huey(settings)
    for _ in range(3):  # every consumer's scheduler fires it at :07
        queue._hourly(queue._key(settings))
    db = open_db(settings.db_path)
    assert [r["state"] for r in db.query("SELECT state FROM jobs WHERE kind = ?", [catalog_jobs.PRUNE])] == ["queued"]
    [(job_id, state, result)] = queue.run_pending(app, kinds=(catalog_jobs.PRUNE,))
    assert state == "done" and result == {"pruned": 0}
    queue._hourly(queue._key(settings))  # the next hour queues the next one
    assert [r["state"] for r in db.query("SELECT state FROM jobs WHERE kind = ? ORDER BY id",
                                         [catalog_jobs.PRUNE])] == ["done", "queued"]
    db.close()
