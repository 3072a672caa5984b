"""`forecourt backup` while the server writes gives a consistent snapshot; `forecourt restore` brings it back."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import requests

from server.backup import BackupError, backup, restore, verify_backup
from tests.helpers import start_live_server, stop_live_server

pytestmark = pytest.mark.slow


def _integrity(db_path: Path) -> str:
    with sqlite3.connect(db_path) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def _key_ids(db_path: Path) -> set[str]:
    with sqlite3.connect(db_path) as db:
        return {row[0] for row in db.execute("SELECT id FROM api_keys")}


def test_backup_while_writing_then_restore(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    # the writer posts as fast as the box answers: on a quiet box that passes the per-key limit (600 a minute),
    # which is not what this test is about
    server = start_live_server(data, extra_env={"FORECOURT_RATE_LIMIT__ENABLED": "false"})
    try:
        assert server.cli("users", "create", "sales@dealer.example", "--password", "long enough password").returncode == 0
        made = server.cli("keys", "create", "sales@dealer.example")
        assert made.returncode == 0, made.stderr
        headers = {"X-Api-Key": made.stdout.strip()}
        photo = data / "images" / "stock-1234" / "front.jpg"
        photo.parent.mkdir(parents=True)
        photo.write_bytes(b"\xff\xd8 a photo before the backup")

        written: list[tuple[float, float, str, str]] = []  # (sent, answered, key id, secret)
        failures: list[str] = []
        stop = threading.Event()

        def writer() -> None:
            with requests.Session() as http:
                i = 0
                while not stop.is_set() and i < 2000:
                    sent = time.monotonic()
                    resp = http.post(server.url + "/v1/keys", json={"name": f"loop {i}"}, headers=headers, timeout=60)
                    if resp.status_code != 201:
                        failures.append(f"{resp.status_code} {resp.text[:200]}")
                        continue
                    written.append((sent, time.monotonic(), resp.json()["id"], resp.json()["key"]))
                    i += 1

        thread = threading.Thread(target=writer)
        thread.start()
        deadline = time.monotonic() + 60
        while len(written) < 30 and time.monotonic() < deadline:
            time.sleep(0.05)
        dest = tmp_path / "backups" / "snap"
        backup_started = time.monotonic()
        result = server.cli("backup", str(dest))
        backup_done = time.monotonic()
        deadline = time.monotonic() + 60
        while sum(1 for w in written if w[0] > backup_done) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        photo.write_bytes(b"changed after the backup")
        stop.set()
        thread.join(timeout=60)
        assert result.returncode == 0, result.stderr
        assert "backup written to" in result.stdout
        assert not failures, failures[:3]
    finally:
        stop_live_server(server)

    before = {w[2] for w in written if w[1] < backup_started}
    after = {w[2] for w in written if w[0] > backup_done}
    print(f"\nbackup: {len(written)} keys written, {len(before)} before the backup, {len(after)} after it, "
          f"backup took {backup_done - backup_started:.2f}s")
    assert len(before) >= 30 and len(after) >= 20

    # The snapshot: a sound database, a manifest whose digests hold, the files beside it.
    assert _integrity(dest / "forecourt.db") == "ok"
    manifest = verify_backup(dest)
    assert "forecourt.db" in manifest["files"] and "files/images/stock-1234/front.jpg" in manifest["files"]
    assert not [name for name in manifest["files"] if "ratelimit" in name or "prometheus" in name
                or "queue.db" in name or name.endswith(("-wal", "-shm"))]
    snapshot = _key_ids(dest / "forecourt.db")
    assert before <= snapshot and not (after & snapshot)

    # Restore (server stopped): later keys are gone, earlier ones back, the photo back as it was.
    assert len(_key_ids(data / "forecourt.db")) > len(snapshot)
    restored = server.cli("restore", str(dest), "--yes")
    assert restored.returncode == 0, restored.stderr
    assert "restored" in restored.stdout
    assert _key_ids(data / "forecourt.db") == snapshot
    assert _integrity(data / "forecourt.db") == "ok"
    assert photo.read_bytes() == b"\xff\xd8 a photo before the backup"
    assert list(data.glob("forecourt.db.before-restore-*")), "the replaced database is kept aside"

    # And the server starts on it: a key from before the backup works, one from after does not.
    server = start_live_server(data)
    try:
        secrets = {w[2]: w[3] for w in written}
        early = next(iter(before))
        late = next(iter(after))
        assert requests.get(server.url + "/v1/me", headers={"X-Api-Key": secrets[early]}, timeout=10).status_code == 200
        resp = requests.get(server.url + "/v1/me", headers={"X-Api-Key": secrets[late]}, timeout=10)
        assert resp.status_code == 403
    finally:
        stop_live_server(server)


@pytest.fixture
def snapshot(tmp_path: Path, app, admin) -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    """A data folder with an admin, and a backup of it."""
    from server.config import get_settings

    with app.app_context():
        data = get_settings().data_dir
    (data / "images" / "a.jpg").write_bytes(b"photo")
    dest = tmp_path / "snap"
    backup(data, dest)
    return data, dest


def test_damaged_backup_is_refused_and_leaves_the_data_alone(snapshot, cli_runner) -> None:  # type: ignore[no-untyped-def]
    from server.cli import cli

    data, dest = snapshot
    runner, env = cli_runner
    original = (data / "forecourt.db").read_bytes()
    db = dest / "forecourt.db"
    good = db.read_bytes()
    raw = bytearray(good)
    raw[len(raw) // 2] ^= 0xFF
    db.write_bytes(bytes(raw))
    result = runner.invoke(cli, ["restore", str(dest), "--yes"], env=env)
    assert result.exit_code == 2
    assert "backup file forecourt.db is missing or damaged" in result.output
    assert (data / "forecourt.db").read_bytes() == original
    assert not list(data.glob("forecourt.db.before-restore-*"))

    db.write_bytes(good)
    verify_backup(dest)
    (dest / "files" / "images" / "a.jpg").unlink()
    with pytest.raises(BackupError, match="files/images/a.jpg is missing or damaged"):
        verify_backup(dest)

    (dest / "manifest.json").unlink()
    result = runner.invoke(cli, ["restore", str(dest), "--yes"], env=env)
    assert result.exit_code == 2 and "is not a Forecourt backup (no manifest.json)" in result.output


def test_backup_refuses_a_non_empty_target_and_a_missing_database(snapshot, tmp_path: Path, cli_runner) -> None:  # type: ignore[no-untyped-def]
    from server.cli import cli

    data, dest = snapshot
    runner, env = cli_runner
    result = runner.invoke(cli, ["backup", str(dest)], env=env)
    assert result.exit_code == 2 and "exists and is not empty" in result.output
    with pytest.raises(BackupError, match="no database"):
        backup(tmp_path / "empty", tmp_path / "snap2")
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["forecourt_version"] and manifest["created_at"]
    assert set(manifest["files"]) == {"forecourt.db", "files/images/a.jpg", "files/secret_key"} | {
        name for name in manifest["files"] if name.startswith("files/licensing/")}


def test_restore_asks_before_replacing(snapshot, cli_runner) -> None:  # type: ignore[no-untyped-def]
    from server.cli import cli

    data, dest = snapshot
    runner, env = cli_runner
    result = runner.invoke(cli, ["restore", str(dest)], env=env, input="n\n")
    assert result.exit_code == 1 and "Aborted" in result.output
    assert restore(dest, data)["files"]
