"""Tamper checks: balances against the ledger, the ledger's sealed chain, and the tamper events found so far.

Every write to the live balances runs in guarded(): first each balance's seal is checked (an HMAC over its figures
and the last ledger entry that touched it, so an edited or an older copied row fails), and a balance whose seal
fails is summed again from the ledger; then what changed is sealed again. The full sums run at start-up and in the
usage report. A finding becomes a tamper event once (a sealed `tamper` ledger entry and an error notice for the
admin), and where the ledger knows better, the ledger's figure wins: the balance is set back to what the ledger says.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from core.sqlite import write_txn
from licensing import ledger, notices
from licensing.clock import iso, period_of
from licensing.seal import Seal

log = logging.getLogger("forecourt.licensing.integrity")
EPS = 1e-6


@dataclass
class Finding:
    """One thing that was altered: a code, a sentence, a key that makes it one event, and the repair."""

    what: str
    detail: str
    dedupe: str
    repair: list[tuple[str, list[Any]]] = field(default_factory=list)


def _ledger_used(db: sqlite_utils.Database, bucket_id: str, kind: str) -> float:
    """A balance's use as the ledger tells it."""
    if kind != "cap":
        row = db.execute("SELECT total(amount) FROM lic_ledger WHERE bucket = ? AND kind = 'charge'",
                         [bucket_id]).fetchone()
        return float(row[0])
    # the stored-images gauge: charges add, releases subtract (never below 0), a purge of images empties it
    last_purge = db.execute("SELECT max(seq) FROM lic_ledger WHERE kind = 'purge' AND ref = 'reference_images'"
                            ).fetchone()[0] or 0
    used = 0.0
    for (amount,) in db.execute("SELECT amount FROM lic_ledger WHERE bucket = ? AND seq > ? AND kind IN "
                                "('charge', 'release') ORDER BY seq", [bucket_id, last_purge]):
        used = max(used + (amount or 0.0), 0.0)
    return used


def _ledger_granted(db: sqlite_utils.Database, bucket_id: str) -> tuple[float | None, bool]:
    """The last grant the ledger holds for a balance, and whether that entry is sealed (a grant recorded before
    the ledger was keyed may have been changed by a plan change that was not recorded then)."""
    row = db.execute("SELECT amount, mac FROM lic_ledger WHERE bucket = ? AND kind IN ('grant', 'regrant') "
                     "ORDER BY seq DESC LIMIT 1", [bucket_id]).fetchone()
    return (None, False) if row is None else (row[0], row[1] is not None)


def _pending_reserved(db: sqlite_utils.Database) -> dict[str, float]:
    out: dict[str, float] = {}
    for (splits,) in db.execute("SELECT splits FROM lic_reservations WHERE status = 'pending'"):
        for s in json.loads(splits):
            out[s["bucket"]] = out.get(s["bucket"], 0.0) + float(s["amount"])
    return out


def balance_findings(db: sqlite_utils.Database, bucket_ids: list[str] | None = None, *,
                     ledger_ok: bool = True) -> list[Finding]:
    """Balances whose use, grant or reservations disagree with the ledger and the open reservations. The ledger's
    figure wins; when the ledger itself does not verify, the figure less favourable to the box wins (more used,
    less granted), so a rewritten ledger cannot hand credits back."""
    where, args = ("", []) if bucket_ids is None else (
        f"WHERE id IN ({', '.join('?' * len(bucket_ids))})", list(bucket_ids))
    rows = db.execute(f"SELECT id, kind, granted, used, reserved FROM lic_buckets {where}", args).fetchall()
    if not rows:
        return []
    reserved_by = _pending_reserved(db)
    seq = ledger.head(db)[0]
    wins = "the ledger's figure" if ledger_ok else "the higher figure, since the ledger does not verify"
    out = []
    for bucket_id, kind, granted, used, reserved in rows:
        said = used or 0.0
        expected = _ledger_used(db, bucket_id, kind)
        if abs(said - expected) > EPS and (ledger_ok or expected > said):
            out.append(Finding("balance_altered", f"balance {bucket_id} said {said:g} used; the ledger says "
                               f"{expected:g} (set to {wins})", f"balance:{bucket_id}:{seq}",
                               [("UPDATE lic_buckets SET used = ? WHERE id = ?", [expected, bucket_id])]))
        if kind in ("payg", "subscription"):
            grant, sealed = _ledger_granted(db, bucket_id)
            if grant is not None and (sealed or kind == "payg") and (
                    granted is None or (abs(granted - grant) > EPS and (ledger_ok or grant < granted))):
                out.append(Finding("balance_altered", f"balance {bucket_id} granted {granted}; the ledger granted "
                                   f"{grant:g} (set back to the ledger's figure)", f"grant:{bucket_id}:{seq}",
                                   [("UPDATE lic_buckets SET granted = ? WHERE id = ?", [grant, bucket_id])]))
        held = reserved_by.get(bucket_id, 0.0)
        if abs((reserved or 0.0) - held) > EPS:
            out.append(Finding("balance_altered", f"balance {bucket_id} said {reserved or 0:g} reserved; open "
                               f"requests hold {held:g} (set back)", f"reserved:{bucket_id}:{seq}",
                               [("UPDATE lic_buckets SET reserved = ? WHERE id = ?", [held, bucket_id])]))
    return out


_LIVE = ("SELECT id, granted, used, reserved, seal FROM lic_buckets WHERE period = ? OR kind = 'cap' "
         "OR (kind = 'payg' AND valid_until > ?)")


def _last_entry(db: sqlite_utils.Database, bucket_id: str) -> int:
    return int(db.execute("SELECT max(seq) FROM lic_ledger WHERE bucket = ?", [bucket_id]).fetchone()[0] or 0)


def _bucket_seal(seal: Seal, bucket_id: str, granted: float | None, used: float | None, reserved: float | None,
                 last: int) -> str:
    return f"{last}:{seal.mac('bucket', bucket_id, granted, used, reserved, last)}"


def reseal(db: sqlite_utils.Database, seal: Seal, rows: list[tuple[Any, ...]]) -> None:
    """Seal balances again after a change (rows: id, granted, used, reserved, seal)."""
    for bucket_id, granted, used, reserved, old in rows:
        new = _bucket_seal(seal, bucket_id, granted, used, reserved, _last_entry(db, bucket_id))
        if new != old:
            db.execute("UPDATE lic_buckets SET seal = ? WHERE id = ?", [new, bucket_id])


def unsealed(db: sqlite_utils.Database, seal: Seal, rows: list[tuple[Any, ...]]) -> list[str]:
    """The balances whose seal fails: edited, copied from an older state, or never sealed."""
    out = []
    for bucket_id, granted, used, reserved, tag in rows:
        last = int(str(tag).split(":", 1)[0]) if tag and str(tag).split(":", 1)[0].isdigit() else -1
        if last < 0 or tag != _bucket_seal(seal, bucket_id, granted, used, reserved, last) or \
                _last_entry(db, bucket_id) != last:
            out.append(bucket_id)
    return out


@contextlib.contextmanager
def guarded(db: sqlite_utils.Database, seal: Seal, t: float,
            extra: tuple[str, ...] = ()) -> Iterator[list[notices.Notice]]:
    """A write transaction over the live balances (and extra ones): check their seals first (a failing one is
    summed again from the ledger, and a mismatch is a tamper event, repaired), seal what changed at the end.
    Yields the notices to dispatch after the commit."""
    pending: list[notices.Notice] = []
    query, args = _LIVE, [period_of(t), t]
    if extra:
        query += f" OR id IN ({', '.join('?' * len(extra))})"
        args += list(extra)
    with write_txn(db):
        suspect = unsealed(db, seal, db.execute(query, args).fetchall())
        if suspect:  # rare: then the whole ledger is checked too, to know whether its figures can win
            found = ledger_findings(db, seal)
            pending += record(db, seal, found + balance_findings(db, suspect, ledger_ok=not found), t)
        yield pending
        reseal(db, seal, db.execute(query, args).fetchall())


def check_all(db: sqlite_utils.Database, seal: Seal, t: float) -> list[notices.Notice]:
    """The full check (inside a write transaction): the ledger, every balance summed from it; then every balance
    sealed."""
    found = ledger_findings(db, seal)
    pending = record(db, seal, found + balance_findings(db, ledger_ok=not found), t)
    reseal(db, seal, db.execute("SELECT id, granted, used, reserved, seal FROM lic_buckets").fetchall())
    return pending


def ledger_findings(db: sqlite_utils.Database, seal: Seal) -> list[Finding]:
    """The ledger's own check, as a finding when it fails."""
    v = ledger.verify(db, seal)
    if v.ok:
        return []
    return [Finding("ledger_altered", f"the usage ledger does not verify: {v.problem}", f"ledger:{v.problem}")]


def record(db: sqlite_utils.Database, seal: Seal, findings: list[Finding], t: float) -> list[notices.Notice]:
    """Make each new finding a tamper event and repair what the ledger knows (inside a write transaction);
    return the new notices to dispatch after the commit."""
    pending = []
    for f in findings:
        for sql, args in f.repair:
            db.execute(sql, args)
        n = notices.record(db, f"tamper:{f.dedupe}", "tamper", "Tampering detected", f.detail, at=t, level="error",
                           data={"what": f.what})
        if n is None:
            continue
        ledger.append(db, "tamper", seal=seal, at=t, period=period_of(t), ref=f.what,
                      data={"what": f.what, "detail": f.detail})
        log.error("licensing tamper event: %s", f.detail)
        pending.append(n)
    return pending


def live_view(db: sqlite_utils.Database, seal: Seal, t: float) -> dict[str, dict[str, float | None]]:
    """For the balance views (read-only): the live balances whose seal fails, with the figures the next check
    will set (used and reserved no lower, granted no higher than the ledger and the open requests say), so a page
    never shows credits an edit made up."""
    out: dict[str, dict[str, float | None]] = {}
    suspect = unsealed(db, seal, db.execute(_LIVE, [period_of(t), t]).fetchall())
    if not suspect:
        return out
    held = _pending_reserved(db)
    rows = db.execute(f"SELECT id, kind, granted, used, reserved FROM lic_buckets WHERE id IN "
                      f"({', '.join('?' * len(suspect))})", suspect).fetchall()
    for bucket_id, kind, granted, used, reserved in rows:
        grant, sealed = _ledger_granted(db, bucket_id)
        if grant is not None and (sealed or kind == "payg"):
            granted = grant if granted is None else min(granted, grant)
        out[bucket_id] = {"used": max(used or 0.0, _ledger_used(db, bucket_id, kind)), "granted": granted,
                          "reserved": max(reserved or 0.0, held.get(bucket_id, 0.0))}
    return out


def tamper_events(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Every tamper event in the ledger, oldest first: what and when."""
    out = []
    for at, data in db.execute("SELECT at, data FROM lic_ledger WHERE kind = 'tamper' ORDER BY seq"):
        d = json.loads(data or "{}")
        out.append({"at": iso(at), "what": d.get("what"), "detail": d.get("detail")})
    return out
