"""Licensing's key/value table (write transactions are core.sqlite.write_txn)."""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils


def kv_get(db: sqlite_utils.Database, key: str, default: Any = None) -> Any:
    """A JSON value from lic_kv."""
    row = db.execute("SELECT value FROM lic_kv WHERE key = ?", [key]).fetchone()
    return json.loads(row[0]) if row else default


def kv_set(db: sqlite_utils.Database, key: str, value: Any) -> None:
    """Store a JSON value in lic_kv."""
    db.execute("INSERT INTO lic_kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
               [key, json.dumps(value)])
