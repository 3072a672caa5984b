"""Small SQLite helpers: a write transaction that takes the lock up front, and the key/value table."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import sqlite_utils


@contextlib.contextmanager
def immediate(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """BEGIN IMMEDIATE ... COMMIT: one writer at a time across processes, so a balance check and its update agree."""
    conn = db.conn
    if conn.in_transaction:  # nested: the caller's transaction already holds the lock
        yield db
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")


def kv_get(db: sqlite_utils.Database, key: str, default: Any = None) -> Any:
    """A JSON value from lic_kv."""
    row = db.execute("SELECT value FROM lic_kv WHERE key = ?", [key]).fetchone()
    return json.loads(row[0]) if row else default


def kv_set(db: sqlite_utils.Database, key: str, value: Any) -> None:
    """Store a JSON value in lic_kv."""
    db.execute("INSERT INTO lic_kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
               [key, json.dumps(value)])
