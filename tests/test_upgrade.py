"""Upgrades keep data: a data folder written by an older release (41e69bc) is migrated in place by today's code,
with a backup first, and its vehicles, renders, collections, keys, ledger and license all survive."""

from __future__ import annotations

import base64
import io
import json
import shutil
import sqlite3
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from server.backup import verify_backup
from tests.helpers import MODELS_DIR, REPO
from tests.recognition_synth import jpeg, pattern, scene

OLD_RELEASE = "41e69bc"  # main before the job queue and the one migration set


@pytest.fixture(scope="module")
def old_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A data folder (and its licensing state folder) written by the old release's own code, with its facts."""
    root = tmp_path_factory.mktemp("upgrade")
    tree = root / "old-code"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", OLD_RELEASE],
                             capture_output=True, timeout=120)
    if archive.returncode != 0:
        pytest.fail(f"git cannot give commit {OLD_RELEASE} (a full clone is needed): {archive.stderr.decode()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tree, filter="data")
    shutil.copy(REPO / "tests" / "upgrade_source.py", tree / "tests" / "upgrade_source.py")
    facts = root / "facts.json"
    built = subprocess.run([sys.executable, "-m", "tests.upgrade_source", str(root / "data"), str(root / "state"),
                            str(MODELS_DIR), str(facts)], cwd=tree, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    return root, json.loads(facts.read_text())


def _copy(old: Path, dest: Path) -> tuple[Path, Path]:
    shutil.copytree(old / "data", dest / "data")
    shutil.copytree(old / "state", dest / "state")
    return dest / "data", dest / "state"


def _migrations(db_path: Path) -> set[str]:
    with sqlite3.connect(db_path) as db:
        return {f"{s}.{n}" for s, n in db.execute("SELECT migration_set, name FROM _sqlite_migrations")}


@pytest.mark.slow
def test_an_old_data_folder_is_upgraded_in_place_and_keeps_everything(old_folder, tmp_path) -> None:
    from server import create_app
    from server.store import close_thread_connections

    old, facts = old_folder
    data, state = _copy(old, tmp_path)
    with sqlite3.connect(data / "forecourt.db") as db:  # an index rebuild the old release had queued
        db.execute("INSERT INTO rec_rebuilds (collection_id, state, queued_at) VALUES (?, 'queued', ?)",
                   [facts["collection"], "2026-12-01T00:00:00Z"])
    before = _migrations(data / "forecourt.db")
    app = create_app({"storage": {"data_dir": str(data)}, "models": {"dir": str(MODELS_DIR), "require": False},
                      "logging": {"level": "WARNING"}, "queue": {"threads": 0},
                      "licensing": {"state_dir": str(state), "public_keys": [facts["vendor_public_key"]]}})
    app.config["TESTING"] = True
    client = app.test_client()
    h = {"X-Api-Key": facts["admin_key"]}
    try:
        after = _migrations(data / "forecourt.db")
        assert before <= after  # nothing the old release applied is forgotten (or re-run under a new name)
        assert "forecourt.jobs.m001_jobs" in after - before  # this upgrade brings schema changes (the job ledger)
        # ... so a verified backup of the old folder was written before any of them
        [made] = sorted((data / "backups").glob("before-upgrade-*"))
        verify_backup(made)
        assert _migrations(made / "forecourt.db") == before
        with sqlite3.connect(made / "forecourt.db") as db:
            assert db.execute("SELECT count(*) FROM catalog_renders").fetchone()[0] == len(facts["renders"])

        # keys: the admin's and the member's still work, the revoked one stays revoked
        me = client.get("/v1/me", headers=h)
        assert me.status_code == 200, me.get_json()
        assert client.get("/v1/me", headers={"X-Api-Key": facts["member_key"]}).status_code == 200
        assert client.get("/v1/me", headers={"X-Api-Key": facts["revoked_key"]}).status_code == 403

        # vehicles and their renders, byte for byte the size the old release served
        vehicles = client.get("/v1/vehicles", headers=h).get_json()["data"]
        assert sorted(v["id"] for v in vehicles) == sorted(facts["vehicles"])
        served = {}
        for vid in facts["vehicles"]:
            for p in client.get(f"/v1/vehicles/{vid}/photos", headers=h).get_json()["data"]:
                assert p["job"]["status"] == "done"
                body = client.get(p["render"]["url"], headers=h)
                assert body.status_code == 200
                served[p["render"]["id"]] = {"photo_id": p["id"], "vehicle_id": vid, "bytes": len(body.data)}
        assert served == facts["renders"]

        # the recognition collection, its index and a scan that still finds the object
        assert [c["id"] for c in client.get("/v1/collections", headers=h).get_json()["collections"]] == \
            [facts["collection"]]
        scan = client.post(f"/v1/collections/{facts['collection']}/recognize", headers=h,
                           json={"image_file_b64": base64.b64encode(jpeg(scene(pattern(1), seed=7))).decode()})
        assert scan.status_code == 200 and scan.get_json()["results"][0]["object_id"] == "sign-1"

        # the old release's queued index rebuild is a queued job on the one queue, shown in the summary
        with sqlite3.connect(data / "forecourt.db") as db:
            assert db.execute("SELECT kind, args, state FROM jobs WHERE kind = 'recognition.rebuild'").fetchall() == \
                [("recognition.rebuild", json.dumps({"collection_id": facts["collection"]}), "queued")]
            assert not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'rec_rebuilds'").fetchone()
        summary = client.get(f"/v1/collections/{facts['collection']}/summary", headers=h).get_json()
        assert summary["index"]["rebuild"] == "queued" and summary["pending_index_work"] >= 1

        # the ledger verifies (one entry more: the scan just charged), the license is as it was
        ledger = client.get("/v1/licensing/ledger", headers=h).get_json()
        assert ledger["ok"] is True and ledger["entries"] > facts["ledger"]["entries"]
        status = client.get("/v1/licensing/status", headers=h).get_json()
        assert {k: status[k] for k in facts["license"]} == facts["license"]
        usage = client.get("/v1/usage", headers=h).get_json()["metrics"]
        assert usage["credits"]["used"] == facts["usage"]["credits"]["used"]
        assert usage["scans"]["used"] == facts["usage"]["scans"]["used"] + 1
    finally:
        close_thread_connections()


def test_a_pending_migration_backs_the_folder_up_first(tmp_path, monkeypatch) -> None:
    from sqlite_utils.migrations import Migrations

    from server import prepare_data_dir, store
    from server.config import Settings

    settings = Settings.model_validate({"storage": {"data_dir": str(tmp_path / "data")}})
    prepare_data_dir(settings)  # a brand-new folder: nothing to back up
    assert not (settings.data_dir / "backups").exists()
    (settings.data_dir / "images" / "stock.jpg").write_bytes(b"a photo")

    later = Migrations("forecourt.test_later_release")

    @later()
    def m001_new_table(db) -> None:  # noqa: ANN001
        db["later_table"].create({"id": int}, pk="id")

    monkeypatch.setattr(store, "_extra_migrations", [*store._extra_migrations, later])
    prepare_data_dir(settings)
    [made] = list((settings.data_dir / "backups").iterdir())
    manifest = verify_backup(made)
    assert "files/images/stock.jpg" in manifest["files"]
    with sqlite3.connect(made / "forecourt.db") as db:  # the backup is of the folder before the change
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'later_table'").fetchone()[0] == 0
    with sqlite3.connect(settings.db_path) as db:
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'later_table'").fetchone()[0] == 1
    prepare_data_dir(settings)  # up to date now: no second backup
    assert len(list((settings.data_dir / "backups").iterdir())) == 1


@pytest.mark.slow
def test_forecourt_init_on_an_old_folder_backs_it_up_then_upgrades_it(old_folder, tmp_path) -> None:
    import os

    old, facts = old_folder
    data, state = _copy(old, tmp_path)
    before = _migrations(data / "forecourt.db")
    env = {**os.environ, "FORECOURT_STORAGE__DATA_DIR": str(data), "FORECOURT_LICENSING__STATE_DIR": str(state),
           "FORECOURT_MODELS__DIR": str(MODELS_DIR), "FORECOURT_LICENSING__PUBLIC_KEYS": json.dumps(
               [facts["vendor_public_key"]])}
    done = subprocess.run([sys.executable, "-m", "server.cli", "init"], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "is ready (2 users); nothing to create" in done.stdout
    [made] = sorted((data / "backups").glob("before-upgrade-*"))
    assert f"backed up the data folder to {made}" in done.stdout + done.stderr
    assert _migrations(made / "forecourt.db") == before and _migrations(data / "forecourt.db") > before
