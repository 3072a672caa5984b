"""Consistent backups while the server runs: the SQLite backup API plus the data folder's files."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from core.clock import now_iso
from core.files import sha256_file
from server.version import __version__

DB_NAME = "forecourt.db"
SKIP = {DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", "tmp", "prometheus", "ratelimit.db", "ratelimit.db-wal",
        "ratelimit.db-shm", ".migrate.lock", "scheduler.lock", "backups",
        # the job queue's messages: the jobs table in the database is the record; queued jobs are sent again
        "queue.db", "queue.db-wal", "queue.db-shm"}


class BackupError(Exception):
    """A backup or restore could not be done; the message says why."""


def _data_files(data_dir: Path, models_dir: Path | None) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(data_dir):
        rel_root = Path(root).relative_to(data_dir)
        dirs[:] = [d for d in dirs if not (rel_root == Path(".") and d in SKIP)
                   and not (models_dir and (Path(root) / d).resolve() == models_dir)]
        for name in names:
            if rel_root == Path(".") and name in SKIP:
                continue
            if name.endswith(".tmp") or name.endswith(".lock"):
                continue
            files.append(Path(root) / name)
    return files


def backup(data_dir: Path, dest: Path, *, models_dir: Path | None = None) -> dict:
    """Write a snapshot folder at dest: database (online backup), files, and a manifest with sha256s."""
    db_path = data_dir / DB_NAME
    if not db_path.exists():
        raise BackupError(f"no database at {db_path}; run `forecourt init` first")
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} exists and is not empty")
    work = Path(tempfile.mkdtemp(prefix=".backup-", dir=dest.parent if dest.parent.exists() else None))
    try:
        src = sqlite3.connect(str(db_path), timeout=30)
        out = sqlite3.connect(str(work / DB_NAME))
        with out:
            src.backup(out)
        out.close()
        src.close()
        entries = {DB_NAME: sha256_file(work / DB_NAME)}
        # Files are written before their database rows point at them, so copying after the snapshot is consistent.
        for path in _data_files(data_dir, models_dir.resolve() if models_dir else None):
            rel = path.relative_to(data_dir)
            target = work / "files" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copy2(path, target)
            except FileNotFoundError:
                continue  # deleted while we copied
            entries[f"files/{rel}"] = sha256_file(target)
        manifest = {"forecourt_version": __version__, "created_at": now_iso(),
                    "files": entries}
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2))
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():
            dest.rmdir()
        work.rename(dest)
        return manifest
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def verify_backup(src: Path) -> dict:
    """Check a snapshot against its manifest; raise BackupError on any mismatch."""
    manifest_path = src / "manifest.json"
    if not manifest_path.exists():
        raise BackupError(f"{src} is not a Forecourt backup (no manifest.json)")
    manifest = json.loads(manifest_path.read_text())
    for rel, digest in manifest["files"].items():
        path = src / rel
        if not path.exists() or sha256_file(path) != digest:
            raise BackupError(f"backup file {rel} is missing or damaged")
    return manifest


def restore(src: Path, data_dir: Path) -> dict:
    """Bring a snapshot back into the data folder (stop the server first); the old database is kept aside."""
    manifest = verify_backup(src)
    data_dir.mkdir(parents=True, exist_ok=True)
    db_path = data_dir / DB_NAME
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    if db_path.exists():
        shutil.copy2(db_path, data_dir / f"{DB_NAME}.before-restore-{stamp}")
    tmp = data_dir / f".{DB_NAME}.restore.tmp"
    shutil.copy2(src / DB_NAME, tmp)
    for suffix in ("-wal", "-shm"):
        (data_dir / f"{DB_NAME}{suffix}").unlink(missing_ok=True)
    os.replace(tmp, db_path)
    files_root = src / "files"
    if files_root.exists():
        for path in files_root.rglob("*"):
            if path.is_file():
                target = data_dir / path.relative_to(files_root)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
    return manifest
