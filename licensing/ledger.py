"""The usage ledger: append-only rows, each hashing its content and the previous row's hash, each hash sealed with
the box's secret (an HMAC, licensing.seal) from the point the box started keying its ledger.

Rows before that point (ledgers written before keying) still verify by their plain hash chain; the point is kept
sealed in the database and outside the data folder, so it cannot be moved later to unseal rows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from licensing.db import kv_get, kv_set
from licensing.seal import Seal

GENESIS = "0" * 64
FIELDS = ("seq", "at", "kind", "metric", "amount", "bucket", "period", "ref", "key_id", "user_id", "request_id",
          "data")


def entry_hash(entry: dict[str, Any], prev_hash: str) -> str:
    """SHA-256 over the previous hash and the entry's fields in canonical JSON."""
    body = json.dumps({k: entry.get(k) for k in FIELDS}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256((prev_hash + "\n" + body).encode()).hexdigest()


def keyed_from(db: sqlite_utils.Database, seal: Seal) -> tuple[int | None, list[str]]:
    """Where sealing starts (the lowest valid record in the database or outside it), and records that fail."""
    found, problems = [], []
    rec = kv_get(db, "ledger_keyed")
    if rec is not None:
        if isinstance(rec, dict) and seal.valid(rec.get("mac"), "keyed_from", rec.get("from")):
            found.append(int(rec["from"]))
        else:
            problems.append("the ledger's keyed-from record in the database was altered")
    outside, problem = seal.outside.read()
    if problem:
        problems.append(problem)
    elif outside and outside.get("keyed_from") is not None:
        found.append(int(outside["keyed_from"]))
    return (min(found) if found else None), problems


def ensure_keyed(db: sqlite_utils.Database, seal: Seal) -> int:
    """Record where sealing starts, once: the next entry of a ledger written before keying (inside a write
    transaction); heal a missing copy from the other."""
    start, _ = keyed_from(db, seal)
    if start is None:
        head = db.execute("SELECT max(seq) FROM lic_ledger").fetchone()[0]
        start = (head or 0) + 1
    if kv_get(db, "ledger_keyed") is None:
        kv_set(db, "ledger_keyed", {"from": start, "mac": seal.mac("keyed_from", start)})
    outside, problem = seal.outside.read()
    if not problem and (outside is None or outside.get("keyed_from") is None):
        seal.outside.write(keyed_from=start)
    return start


def head(db: sqlite_utils.Database) -> tuple[int, str]:
    """The last entry's seq and hash (0 and GENESIS when empty)."""
    row = db.execute("SELECT seq, hash FROM lic_ledger ORDER BY seq DESC LIMIT 1").fetchone()
    return (row[0], row[1]) if row else (0, GENESIS)


def checkpoint(db: sqlite_utils.Database, seal: Seal) -> None:
    """Note the ledger's head outside the data folder, so a database cut short or put back is caught (inside a
    write transaction, so it is committed data and no other writer of the record runs meanwhile)."""
    seq, hash_ = head(db)
    seal.outside.write(ledger_seq=[seq, hash_])


def checkpoint_holds(db: sqlite_utils.Database, seal: Seal) -> bool:
    """Whether the head noted outside the data folder is still in the ledger (cheap: one row)."""
    outside, problem = seal.outside.read()
    seen = (outside or {}).get("ledger_seq")
    if problem:
        return False
    if not seen or seen[0] == 0:
        return True
    row = db.execute("SELECT hash FROM lic_ledger WHERE seq = ?", [seen[0]]).fetchone()
    return row is not None and row[0] == seen[1]


def append(db: sqlite_utils.Database, kind: str, *, seal: Seal, at: float, metric: str | None = None,
           amount: float | None = None, bucket: str | None = None, period: str | None = None,
           ref: str | None = None, key_id: str | None = None, user_id: int | None = None,
           request_id: str | None = None, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Add one entry, sealed; call inside a write transaction so the chain head cannot move underneath."""
    if kv_get(db, "ledger_keyed") is None:
        ensure_keyed(db, seal)
    last, prev = head(db)
    seq = last + 1
    entry: dict[str, Any] = {
        "seq": seq, "at": float(at), "kind": kind, "metric": metric,
        "amount": None if amount is None else float(amount), "bucket": bucket,
        "period": period, "ref": ref, "key_id": key_id,
        "user_id": None if user_id is None else int(user_id), "request_id": request_id,
        "data": json.dumps(data, sort_keys=True) if data is not None else None,
    }
    entry["prev_hash"] = prev
    entry["hash"] = entry_hash(entry, prev)
    entry["mac"] = seal.mac("ledger", entry["hash"])
    cols = list(entry)
    db.execute(f"INSERT INTO lic_ledger ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
               [entry[c] for c in cols])
    kv_set(db, "ledger_head", {"seq": seq, "hash": entry["hash"], "mac": seal.mac("head", seq, entry["hash"])})
    return entry


@dataclass
class Verification:
    """What verify() found: ok, entries checked, and the first problem."""

    ok: bool
    entries: int
    problem: str = ""


def verify(db: sqlite_utils.Database, seal: Seal) -> Verification:
    """Walk the whole chain: every hash recomputes, every link holds, no gap, every entry from the keyed-from point
    carries the box's seal, the head matches its sealed record, and the head seen outside the data folder is there."""
    start, problems = keyed_from(db, seal)
    if problems:
        return Verification(False, 0, problems[0])
    prev, expected_seq, count = GENESIS, 1, 0
    names = (*FIELDS, "prev_hash", "hash", "mac")
    for row in db.execute(f"SELECT {', '.join(names)} FROM lic_ledger ORDER BY seq"):
        entry = dict(zip(names, row, strict=True))
        if entry["seq"] != expected_seq:
            return Verification(False, count, f"entry {expected_seq} is missing (next is {entry['seq']})")
        if entry["prev_hash"] != prev:
            return Verification(False, count, f"entry {entry['seq']} does not link to entry {expected_seq - 1}")
        if entry_hash(entry, prev) != entry["hash"]:
            return Verification(False, count, f"entry {entry['seq']} was altered")
        if (start is not None and entry["seq"] >= start) or entry["mac"] is not None:
            if start is None:
                return Verification(False, count, "the ledger's keyed-from record is missing")
            if not seal.valid(entry["mac"], "ledger", entry["hash"]):
                return Verification(False, count, f"entry {entry['seq']} does not carry this box's seal "
                                                  "(rewritten without the box's secret)")
        prev, expected_seq, count = entry["hash"], expected_seq + 1, count + 1
    rec = kv_get(db, "ledger_head")
    if rec is None and count:
        return Verification(False, count, "the ledger head record is missing")
    if rec is not None and (rec["seq"] != count or rec["hash"] != prev):
        return Verification(False, count, f"entries after {count} were removed (head says {rec['seq']})")
    if rec is not None and start is not None and count >= start and not seal.valid(rec.get("mac"), "head",
                                                                                     count, prev):
        return Verification(False, count, "the ledger head record was altered")
    outside, _ = seal.outside.read()
    seen = (outside or {}).get("ledger_seq")
    if seen and seen[0] > 0:
        row = db.execute("SELECT hash FROM lic_ledger WHERE seq = ?", [seen[0]]).fetchone()
        if row is None:
            return Verification(False, count, f"the ledger has {count} entries but entry {seen[0]} was seen "
                                              "before (the database was cut short or an older copy put back)")
        if row[0] != seen[1]:
            return Verification(False, count, f"entry {seen[0]} differs from the one seen before (the database "
                                              "was replaced)")
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
