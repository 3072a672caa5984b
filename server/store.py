"""The SQLite store: one file in WAL mode through sqlite-utils, migrations applied at start-up."""

from __future__ import annotations

import contextlib
import sqlite3
import sys
import threading
from pathlib import Path

import sqlite_utils
from sqlite_utils.migrations import Migrations

from core.sqlite import write_txn

migrations = Migrations("forecourt")

_local = threading.local()


def open_db(path: Path, busy_timeout_ms: int = 10000) -> sqlite_utils.Database:
    """Open the database file with WAL, a busy timeout and foreign keys on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=busy_timeout_ms / 1000, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    db = sqlite_utils.Database(conn)
    if db.journal_mode != "wal":
        db.enable_wal()
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("PRAGMA synchronous = NORMAL")
    return db


def migrate(db: sqlite_utils.Database) -> None:
    """Apply the server's pending migrations, then each engine's own."""
    migrations.apply(db)
    for hook in _extra_migrations:
        hook.apply(db) if isinstance(hook, Migrations) else hook(db)


_extra_migrations: list = []


def _migration_sets() -> list[Migrations]:
    """The server's migration set and each registered engine's (its module's `migrations`)."""
    sets = [migrations]
    for hook in _extra_migrations:
        found = hook if isinstance(hook, Migrations) else getattr(hook, "__self__", None)
        if not isinstance(found, Migrations):  # a module's migrate(db) hook: that module's `migrations` set
            found = getattr(sys.modules.get(hook.__module__), "migrations", None)
        if isinstance(found, Migrations) and found not in sets:
            sets.append(found)
    return sets


def pending_migrations(db: sqlite_utils.Database) -> list[str]:
    """Names of the schema steps not yet applied to this database (read only)."""
    return [f"{s.name}.{m.name}" for s in _migration_sets() for m in s.pending(db)]


def register_migrations(hook) -> None:  # type: ignore[no-untyped-def]
    """Let an engine (licensing, recognition, ...) add its own schema steps (a Migrations set or a migrate(db)
    function of a module with a `migrations` set), run after the server's."""
    if hook not in _extra_migrations:
        _extra_migrations.append(hook)


@migrations()
def m001_accounts(db: sqlite_utils.Database) -> None:
    """Users, API keys and password-reset tokens."""
    db["users"].create(
        {"id": int, "email": str, "password_hash": str, "role": str, "created_at": str, "disabled": int},
        pk="id",
        not_null={"email", "password_hash", "role", "created_at"},
        defaults={"disabled": 0},
    )
    db["users"].create_index(["email"], unique=True)
    db["api_keys"].create(
        {"id": str, "user_id": int, "name": str, "prefix": str, "key_hash": str, "created_at": str,
         "last_used_at": str, "revoked_at": str},
        pk="id",
        foreign_keys=[("user_id", "users", "id")],
        not_null={"user_id", "key_hash", "prefix", "created_at"},
    )
    db["api_keys"].create_index(["key_hash"], unique=True)
    db["api_keys"].create_index(["user_id"])
    db["reset_tokens"].create(
        {"token_hash": str, "user_id": int, "created_at": str, "expires_at": str, "used_at": str},
        pk="token_hash",
        foreign_keys=[("user_id", "users", "id")],
    )


@migrations()
def m002_meta(db: sqlite_utils.Database) -> None:
    """Box-level key/value facts (install id, secret key)."""
    db["meta"].create({"key": str, "value": str}, pk="key")


@migrations()
def m003_sign_in_throttle(db: sqlite_utils.Database) -> None:
    """Failed sign-ins (shown to admins) and the pauses they cause, per account and per client address."""
    db["failed_sign_ins"].create(
        {"id": int, "at": str, "email": str, "address": str, "user_agent": str, "route": str, "reason": str},
        pk="id", not_null={"at", "email", "address"},
    )
    db["failed_sign_ins"].create_index(["at"])
    db["sign_in_throttle"].create({"key": str, "failures": int, "last_failure": float, "locked_until": float},
                                  pk="key", not_null={"failures", "last_failure", "locked_until"})


def get_db() -> sqlite_utils.Database:
    """This thread's connection to the running app's database (opened on first use)."""
    from flask import current_app

    settings = current_app.extensions["forecourt.settings"]
    key = str(settings.db_path)
    conns: dict[str, sqlite_utils.Database] = getattr(_local, "conns", None) or {}
    _local.conns = conns
    db = conns.get(key)
    if db is None:
        db = open_db(settings.db_path, settings.storage.busy_timeout_ms)
        conns[key] = db
    return db


def close_thread_connections() -> None:
    """Close this thread's connections (tests, restore)."""
    for db in (getattr(_local, "conns", None) or {}).values():
        with contextlib.suppress(Exception):
            db.close()
    _local.conns = {}


__all__ = ["close_thread_connections", "get_db", "migrate", "migrations", "open_db", "register_migrations",
           "write_txn"]
