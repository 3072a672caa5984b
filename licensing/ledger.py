"""The usage ledger: append-only rows, each hashing its content and the previous row's hash."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from licensing.db import kv_get, kv_set

GENESIS = "0" * 64
FIELDS = ("seq", "at", "kind", "metric", "amount", "bucket", "period", "ref", "key_id", "user_id", "request_id",
          "data")


def entry_hash(entry: dict[str, Any], prev_hash: str) -> str:
    """SHA-256 over the previous hash and the entry's fields in canonical JSON."""
    body = json.dumps({k: entry.get(k) for k in FIELDS}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256((prev_hash + "\n" + body).encode()).hexdigest()


def append(db: sqlite_utils.Database, kind: str, *, at: float, metric: str | None = None,
           amount: float | None = None, bucket: str | None = None, period: str | None = None,
           ref: str | None = None, key_id: str | None = None, user_id: int | None = None,
           request_id: str | None = None, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Add one entry; call inside a write transaction so the chain head cannot move underneath."""
    head = db.execute("SELECT seq, hash FROM lic_ledger ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
    entry: dict[str, Any] = {
        "seq": seq, "at": float(at), "kind": kind, "metric": metric,
        "amount": None if amount is None else float(amount), "bucket": bucket,
        "period": period, "ref": ref, "key_id": key_id,
        "user_id": None if user_id is None else int(user_id), "request_id": request_id,
        "data": json.dumps(data, sort_keys=True) if data is not None else None,
    }
    entry["prev_hash"] = prev
    entry["hash"] = entry_hash(entry, prev)
    cols = list(entry)
    db.execute(f"INSERT INTO lic_ledger ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
               [entry[c] for c in cols])
    kv_set(db, "ledger_head", {"seq": seq, "hash": entry["hash"]})
    return entry


@dataclass
class Verification:
    """What verify() found: ok, entries checked, and the first problem."""

    ok: bool
    entries: int
    problem: str = ""


def verify(db: sqlite_utils.Database) -> Verification:
    """Walk the whole chain: every hash recomputes, every link holds, no gap, and the head matches the record."""
    prev, expected_seq, count = GENESIS, 1, 0
    cols = ", ".join((*FIELDS, "prev_hash", "hash"))
    for row in db.execute(f"SELECT {cols} FROM lic_ledger ORDER BY seq"):
        entry = dict(zip((*FIELDS, "prev_hash", "hash"), row, strict=True))
        if entry["seq"] != expected_seq:
            return Verification(False, count, f"entry {expected_seq} is missing (next is {entry['seq']})")
        if entry["prev_hash"] != prev:
            return Verification(False, count, f"entry {entry['seq']} does not link to entry {expected_seq - 1}")
        if entry_hash(entry, prev) != entry["hash"]:
            return Verification(False, count, f"entry {entry['seq']} was altered")
        prev, expected_seq, count = entry["hash"], expected_seq + 1, count + 1
    head = kv_get(db, "ledger_head")
    if head is None and count:
        return Verification(False, count, "the ledger head record is missing")
    if head is not None and (head["seq"] != count or head["hash"] != prev):
        return Verification(False, count, f"entries after {count} were removed (head says {head['seq']})")
    return Verification(True, count)


def charge_series(db: sqlite_utils.Database, *, group: str, since: float, until: float,
                  user_id: int | None = None, no_key: str = "none") -> list[dict[str, Any]]:
    """Charged amount and request count per day (group="days") or settlement period, API key and metric.

    Charges made without an API key (the dashboard's own) are reported under `no_key`."""
    bucket = "date(at, 'unixepoch')" if group == "days" else "period"
    where, args = "kind = 'charge' AND at >= ? AND at < ?", [since, until]
    if user_id is not None:
        where += " AND user_id = ?"
        args.append(user_id)
    rows = db.execute(f"SELECT {bucket}, coalesce(key_id, ?), metric, sum(amount), count(DISTINCT ref) "
                      f"FROM lic_ledger WHERE {where} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3", [no_key, *args])
    return [{"bucket": b, "key_id": k, "metric": m, "amount": round(a, 6), "requests": n} for b, k, m, a, n in rows]
