"""The render queue: concurrent claims take each job once; jobs of a dead worker are retried, then failed."""

from __future__ import annotations

import threading

import pytest

from server.services import catalog_jobs
from server.store import open_db
from tests.test_catalog_api import fake_segmenter, new_vehicle, photo, upload  # noqa: F401 - autouse fake


@pytest.fixture
def settings_dict(settings_dict: dict) -> dict:
    return {**settings_dict, "catalog": {"render_workers": 0}}


def test_concurrent_claims_take_every_job_exactly_once(app, client, admin) -> None:
    v = new_vehicle(client, admin.headers)
    resp = upload(client, admin.headers, v["id"], [(photo(i), "detail") for i in range(10, 18)])
    assert len(resp.get_json()["photos"]) == 8
    settings = app.extensions["forecourt.settings"]
    taken: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        db = open_db(settings.db_path, 10000)
        while (job := catalog_jobs.claim(db)) is not None:
            with lock:
                taken.append(job["id"])
        db.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(taken) == list(range(1, 9))  # eight jobs, none twice


def test_a_lost_job_is_retried_then_failed(app, client, admin) -> None:
    v = new_vehicle(client, admin.headers)
    upload(client, admin.headers, v["id"], [(photo(1), "front")])
    db = open_db(app.extensions["forecourt.settings"].db_path)
    for attempt in (1, 2, 3):
        job = catalog_jobs.claim(db)
        assert job is not None and job["attempts"] == attempt
        db.execute("UPDATE catalog_jobs SET started_at = '2020-01-01T00:00:00Z' WHERE id = ?", [job["id"]])
        db.conn.commit()
    assert catalog_jobs.claim(db) is None
    row = db["catalog_jobs"].get(job["id"])
    assert row["status"] == "failed" and row["error"].startswith("worker_lost")
    db.close()


def test_an_older_job_finishing_last_does_not_replace_a_newer_render(app, client, admin) -> None:
    v = new_vehicle(client, admin.headers)
    upload(client, admin.headers, v["id"], [(photo(1), "front")])
    settings = app.extensions["forecourt.settings"]
    db = open_db(settings.db_path)
    old_job = catalog_jobs.claim(db)  # worker A takes version 1 ...
    client.patch(f"/v1/profiles/{v['profile_id']}", json={"bg_color": "000000"}, headers=admin.headers)
    new_job = catalog_jobs.claim(db)  # ... worker B takes version 2 and finishes first
    assert new_job["profile_version"] == 2
    with app.app_context():
        assert catalog_jobs.process(db, settings, new_job) == "done"
        db.execute("UPDATE catalog_profiles SET version = 1")  # make A's version look current to reach the race
        db.conn.commit()
        assert catalog_jobs.process(db, settings, old_job) == "superseded"
    renders = list(db["catalog_renders"].rows)
    assert [r["profile_version"] for r in renders] == [2]
    db.close()


def test_jobs_of_a_dead_worker_process_are_queued_again_at_once(app, client, admin) -> None:
    import os
    import socket
    import subprocess
    import sys

    from core.process import owner_id

    v = new_vehicle(client, admin.headers)
    upload(client, admin.headers, v["id"], [(photo(1), "front")])
    db = open_db(app.extensions["forecourt.settings"].db_path)
    job = catalog_jobs.claim(db)
    assert job["claimed_by"] == f"{socket.gethostname()}:{owner_id()}" and f":{os.getpid()}:" in job["claimed_by"]
    assert catalog_jobs.claim(db) is None  # our own running job stays ours
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    db.execute("UPDATE catalog_jobs SET claimed_by = ? WHERE id = ?",
               [f"{socket.gethostname()}:{gone.stdout.strip()}", job["id"]])  # a worker that has exited
    db.conn.commit()
    again = catalog_jobs.claim(db)
    assert again is not None and again["id"] == job["id"] and again["attempts"] == 2
    db.close()
