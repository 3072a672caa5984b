"""The job ledger: one `jobs` row per background job, the truth about its state, attempts and lease.

The queue library (huey, server/jobs/queue.py) only carries "run job N" messages. A message claims its row here
(queued -> running, in one write transaction), so a duplicate message, or two workers, never run a job twice; a
running job renews its lease while it works, and a job whose worker died (lease lapsed, or its process gone on
this host) is queued again by reap(); a job that failed max_attempts times is dead (the dead-letter state) until
`forecourt jobs retry`.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any

import sqlite_utils
from sqlite_utils.migrations import Migrations

from core.clock import now_iso
from core.process import owner_alive, owner_id
from core.sqlite import write_txn

migrations = Migrations("forecourt.jobs")
STATES = ("queued", "running", "done", "dead")
HELD = 253402300799.0  # run_after of a held job (9999-12-31): no worker claims it; run_pending (by hand) does


@migrations()
def m001_jobs(db: sqlite_utils.Database) -> None:
    """The job ledger (the queue's messages live in the queue's own store)."""
    db["jobs"].create(
        {"id": int, "kind": str, "args": str, "unique_key": str, "state": str, "attempts": int, "max_attempts": int,
         "run_after": float, "sent_at": float, "claimed_by": str, "lease_until": float, "error": str,
         "result": str, "created_at": str, "started_at": str, "finished_at": str},
        pk="id", not_null={"kind", "args", "state", "attempts", "max_attempts", "run_after", "created_at"})
    db["jobs"].create_index(["state", "lease_until"])
    db["jobs"].create_index(["kind", "state"])
    # at most one queued job per unique key (e.g. one index rebuild per collection); running ones may overlap it
    db.execute("CREATE UNIQUE INDEX jobs_one_queued ON jobs (unique_key) WHERE state = 'queued' "
               "AND unique_key IS NOT NULL")


@migrations()
def m002_recognition_rebuilds(db: sqlite_utils.Database) -> None:
    """Index rebuilds move onto the queue: each queued or running rec_rebuilds row becomes a queued
    recognition.rebuild job (due long ago, so the first maintenance tick sends it), and the table goes."""
    if not db["rec_rebuilds"].exists():
        return
    for row in db.query("SELECT collection_id, queued_at FROM rec_rebuilds ORDER BY queued_at, collection_id"):
        key = f"recognition.rebuild:{row['collection_id']}"
        if not db.execute("SELECT 1 FROM jobs WHERE unique_key = ? AND state IN ('queued', 'running')",
                          [key]).fetchone():
            db.execute("INSERT INTO jobs (kind, args, unique_key, state, attempts, max_attempts, run_after, "
                       "created_at) VALUES ('recognition.rebuild', ?, ?, 'queued', 0, 3, 0, ?)",
                       [json.dumps({"collection_id": row["collection_id"]}), key, row["queued_at"] or now_iso()])
    db["rec_rebuilds"].drop()


def migrate(db: sqlite_utils.Database) -> None:
    """Apply the job ledger's schema steps."""
    migrations.apply(db)


def owner_token() -> str:
    """Who claims a job: host, this process (core.process.owner_id: boot, pid, start time) and a random part."""
    return f"{socket.gethostname()}:{owner_id()}:{secrets.token_hex(4)}"


def owner_pid(claimed_by: str | None) -> int | None:
    """The process id in a claim (logs, tests)."""
    parts = (claimed_by or "").split(":")
    return int(parts[2]) if len(parts) == 5 and parts[2].isdigit() else None


def _owner_gone(claimed_by: str | None) -> bool:
    """True when the claim was made by a process of this host that no longer runs (a killed worker)."""
    parts = (claimed_by or "").split(":")
    if len(parts) != 5 or parts[0] != socket.gethostname():
        return False
    return not owner_alive(":".join(parts[1:4]))


def lapsed(claimed_by: str | None, lease_until: float | None) -> bool:
    """A running job's claim is void: its lease lapsed, or its process on this host is gone (reap queues it)."""
    return (lease_until or 0.0) < time.time() or _owner_gone(claimed_by)


@dataclass
class Claim:
    """A claimed job: what to run and the token that proves the claim is still ours."""

    id: int
    kind: str
    args: dict[str, Any]
    attempt: int
    max_attempts: int
    token: str

    @property
    def final(self) -> bool:
        """This is the last attempt: a failure makes the job dead."""
        return self.attempt >= self.max_attempts


def add(db: sqlite_utils.Database, kind: str, args: dict[str, Any], *, unique_key: str | None = None,
        max_attempts: int = 3, while_running: bool = False, held: bool = False) -> tuple[int, bool]:
    """Inside or outside a write transaction: record a queued job (held: until run by hand, see HELD); returns
    (id, to send). With a unique_key that already has a queued job (or a running one, while_running), that job's
    id comes back instead, to send only if it was held and is not wanted held now (then it is released)."""
    states = ("queued", "running") if while_running else ("queued",)
    with write_txn(db):
        if unique_key is not None:
            row = db.execute(f"SELECT id, state, run_after FROM jobs WHERE unique_key = ? AND state IN "
                             f"({','.join('?' * len(states))}) ORDER BY id LIMIT 1", [unique_key, *states]).fetchone()
            if row is not None:
                if held or row[1] != "queued" or row[2] < HELD:
                    return int(row[0]), False
                db.execute("UPDATE jobs SET run_after = ? WHERE id = ?", [time.time(), row[0]])
                return int(row[0]), True
        cur = db.execute(
            "INSERT INTO jobs (kind, args, unique_key, state, attempts, max_attempts, run_after, created_at) "
            "VALUES (?, ?, ?, 'queued', 0, ?, ?, ?)",
            [kind, json.dumps(args, sort_keys=True), unique_key, max_attempts, HELD if held else time.time(),
             now_iso()])
    return int(cur.lastrowid), not held


def mark_sent(db: sqlite_utils.Database, job_ids: list[int]) -> None:
    """Note that the queue now holds a message for these jobs (reap re-sends one only after resend_seconds)."""
    with write_txn(db):
        db.conn.executemany("UPDATE jobs SET sent_at = ? WHERE id = ?", [(time.time(), i) for i in job_ids])


def claim(db: sqlite_utils.Database, job_id: int, lease_seconds: float, *, ignore_backoff: bool = False
          ) -> Claim | None:
    """Take a queued job that is due (one writer at a time: a duplicate message or a second worker gets None)."""
    token = owner_token()
    with write_txn(db):
        cur = db.execute(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, claimed_by = ?, lease_until = ?, "
            "started_at = ?, finished_at = NULL WHERE id = ? AND state = 'queued' AND run_after <= ?",
            [token, time.time() + lease_seconds, now_iso(), job_id, float("inf") if ignore_backoff else time.time()])
        if cur.rowcount != 1:
            return None
        row = db.execute("SELECT kind, args, attempts, max_attempts FROM jobs WHERE id = ?", [job_id]).fetchone()
    return Claim(job_id, row[0], json.loads(row[1]), int(row[2]), int(row[3]), token)


def renew(db: sqlite_utils.Database, claim: Claim, lease_seconds: float) -> bool:
    """Extend a running job's lease; False when the job is no longer ours (reaped after a stall, or retried)."""
    with write_txn(db):
        cur = db.execute("UPDATE jobs SET lease_until = ? WHERE id = ? AND claimed_by = ? AND state = 'running'",
                         [time.time() + lease_seconds, claim.id, claim.token])
    return cur.rowcount == 1


def still_ours(db: sqlite_utils.Database, claim: Claim) -> bool:
    """Inside a write transaction, before a job makes its result visible: is the claim still in force?"""
    row = db.execute("SELECT claimed_by, state FROM jobs WHERE id = ?", [claim.id]).fetchone()
    return row is not None and row[0] == claim.token and row[1] == "running"


def live_twin(db: sqlite_utils.Database, claim: Claim) -> int | None:
    """Inside a write transaction: another running job of this claim's unique key whose worker is alive (its id),
    for kinds that must never run two jobs of one key at once."""
    rows = db.execute("SELECT t.id, t.claimed_by, t.lease_until FROM jobs j JOIN jobs t ON t.unique_key = j.unique_key "
                      "WHERE j.id = ? AND t.id != j.id AND t.state = 'running' ORDER BY t.id", [claim.id]).fetchall()
    return next((int(r[0]) for r in rows if not lapsed(r[1], r[2])), None)


def finish(db: sqlite_utils.Database, claim: Claim, result: dict[str, Any] | None) -> bool:
    """Record success (only while the claim holds; an earlier attempt's error stays as history); False when another
    worker took the job over meanwhile. A handler may call it inside the transaction that makes its work visible
    (a request deduplicated against the running job then either came before that work or finds it done); the
    queue's own call afterwards leaves that result as it is."""
    with write_txn(db):
        cur = db.execute("UPDATE jobs SET state = 'done', result = ?, finished_at = ?, lease_until = NULL "
                         "WHERE id = ? AND claimed_by = ? AND state = 'running'",
                         [json.dumps(result) if result is not None else None, now_iso(), claim.id, claim.token])
        if cur.rowcount == 1:
            return True
        row = db.execute("SELECT state, claimed_by FROM jobs WHERE id = ?", [claim.id]).fetchone()
    return row is not None and row[0] == "done" and row[1] == claim.token


def hold(db: sqlite_utils.Database, claim: Claim) -> None:
    """Put a claimed job back, held (see HELD), without counting the attempt: a kind this process must not run
    (settled instead when a queued job of its unique key does the same work)."""
    with write_txn(db):
        key = db.execute("SELECT unique_key FROM jobs WHERE id = ?", [claim.id]).fetchone()
        twin = _queued_twin(db, key[0] if key else None)
        if twin is not None:
            finish(db, claim, {"status": "covered", "by_job": twin})
            return
        db.execute("UPDATE jobs SET state = 'queued', attempts = attempts - 1, run_after = ?, claimed_by = NULL, "
                   "lease_until = NULL, started_at = NULL WHERE id = ? AND claimed_by = ? AND state = 'running'",
                   [HELD, claim.id, claim.token])


def cancel(db: sqlite_utils.Database, kind: str, *, unique_key: str | None = None,
           states: tuple[str, ...] = ("queued", "running"), reason: str = "cancelled") -> list[int]:
    """Inside or outside a write transaction: settle a kind's queued (and running) jobs, of one unique key or all,
    as done without running them (a running one's handler finds its claim gone); returns their ids."""
    where = f"kind = ? AND state IN ({','.join('?' * len(states))})" + (" AND unique_key = ?" if unique_key else "")
    params = [kind, *states, *([unique_key] if unique_key else [])]
    with write_txn(db):
        ids = [int(r[0]) for r in db.execute(f"SELECT id FROM jobs WHERE {where}", params)]
        db.execute(f"UPDATE jobs SET state = 'done', result = ?, finished_at = ?, claimed_by = NULL, "
                   f"lease_until = NULL WHERE {where}",
                   [json.dumps({"status": reason}), now_iso(), *params])
    return ids


def backoff_seconds(attempt: int, base: float) -> float:
    """Delay before retry number `attempt` (1 after the first failure): base, 2x base, 4x base, ..."""
    return base * 2 ** max(0, attempt - 1)


def fail(db: sqlite_utils.Database, claim: Claim, error: str, retry_base_seconds: float, *, final: bool = False
         ) -> float | None:
    """Record a failed attempt: queued again after a backoff (returns its delay) or, at max_attempts (or when
    final), dead (None)."""
    with write_txn(db):
        if claim.final or final:
            db.execute("UPDATE jobs SET state = 'dead', error = ?, finished_at = ?, lease_until = NULL "
                       "WHERE id = ? AND claimed_by = ? AND state = 'running'",
                       [error, now_iso(), claim.id, claim.token])
            return None
        delay = backoff_seconds(claim.attempt, retry_base_seconds)
        db.execute("UPDATE jobs SET state = 'queued', error = ?, run_after = ?, claimed_by = NULL, "
                   "lease_until = NULL WHERE id = ? AND claimed_by = ? AND state = 'running'",
                   [error, time.time() + delay, claim.id, claim.token])
    return delay


def reap(db: sqlite_utils.Database, retry_base_seconds: float, resend_seconds: float
         ) -> tuple[list[tuple[int, float]], list[int], list[tuple[str, dict[str, Any], str]]]:
    """Queue again the running jobs whose worker is gone (lease lapsed, or its process on this host died), or
    make them dead at max_attempts; returns (job, delay) pairs to send, and queued jobs whose message may be lost
    (sent longer than resend_seconds ago, e.g. a restored backup or a wiped queue store) to send again, and the
    (kind, args, error) of jobs that died so."""
    now = time.time()
    again: list[tuple[int, float]] = []
    dead: list[tuple[str, dict[str, Any], str]] = []
    with write_txn(db):
        rows = db.execute("SELECT id, claimed_by, lease_until, attempts, max_attempts, kind, args, unique_key "
                          "FROM jobs WHERE state = 'running'").fetchall()
        for job_id, owner, lease_until, attempts, max_attempts, kind, args, unique_key in rows:
            if not lapsed(owner, lease_until):
                continue
            error = f"worker_lost: {owner} stopped while running attempt {attempts}"
            twin = _queued_twin(db, unique_key)
            if twin is not None:  # a queued job of the same key does the same work: this one is settled by it
                db.execute("UPDATE jobs SET state = 'done', error = ?, result = ?, finished_at = ?, "
                           "claimed_by = NULL, lease_until = NULL WHERE id = ?",
                           [error, json.dumps({"status": "covered", "by_job": twin}), now_iso(), job_id])
                continue
            if attempts >= max_attempts:
                db.execute("UPDATE jobs SET state = 'dead', error = ?, finished_at = ?, lease_until = NULL "
                           "WHERE id = ?", [error, now_iso(), job_id])
                dead.append((kind, json.loads(args), error))
                continue
            delay = backoff_seconds(attempts, retry_base_seconds)
            db.execute("UPDATE jobs SET state = 'queued', error = ?, run_after = ?, claimed_by = NULL, "
                       "lease_until = NULL, sent_at = ? WHERE id = ?", [error, now + delay, now, job_id])
            again.append((int(job_id), delay))
        lost = [int(r[0]) for r in db.execute(
            "SELECT id FROM jobs WHERE state = 'queued' AND COALESCE(sent_at, 0) < ? AND run_after < ?",
            [now - resend_seconds, now - resend_seconds]).fetchall()]
        db.conn.executemany("UPDATE jobs SET sent_at = ? WHERE id = ?", [(now, i) for i in lost])
    return again, lost, dead


def _queued_twin(db: sqlite_utils.Database, unique_key: str | None) -> int | None:
    if unique_key is None:
        return None
    row = db.execute("SELECT id FROM jobs WHERE unique_key = ? AND state = 'queued'", [unique_key]).fetchone()
    return None if row is None else int(row[0])


def retry(db: sqlite_utils.Database, job_ids: list[int] | None = None) -> list[int]:
    """Queue dead jobs again with fresh attempts (the given ones, or every dead job; not one whose unique key has a
    queued job already, which does the same work); returns their ids."""
    with write_txn(db):
        if job_ids is None:
            job_ids = [int(r[0]) for r in db.execute("SELECT id FROM jobs WHERE state = 'dead' ORDER BY id")]
        done = []
        for job_id in job_ids:
            cur = db.execute("UPDATE jobs SET state = 'queued', attempts = 0, run_after = ?, claimed_by = NULL, "
                             "finished_at = NULL WHERE id = ? AND state = 'dead' AND (unique_key IS NULL OR NOT "
                             "EXISTS (SELECT 1 FROM jobs t WHERE t.unique_key = jobs.unique_key AND "
                             "t.state = 'queued'))", [time.time(), job_id])
            if cur.rowcount == 1:
                done.append(job_id)
    return done


def list_jobs(db: sqlite_utils.Database, *, state: str | None = None, kind: str | None = None,
              unique_key: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The newest jobs (of a state, of a kind, of a unique key), newest first."""
    where, args = [], []
    if unique_key:
        where.append("unique_key = ?")
        args.append(unique_key)
    if state:
        where.append("state = ?")
        args.append(state)
    if kind:
        where.append("kind = ?")
        args.append(kind)
    sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?"
    return [dict(r) for r in db.query(sql, [*args, limit])]


def counts(db: sqlite_utils.Database) -> dict[str, int]:
    """Jobs per state."""
    out = dict.fromkeys(STATES, 0)
    for state, n in db.execute("SELECT state, count(*) FROM jobs GROUP BY state"):
        out[state] = n
    return out


def get(db: sqlite_utils.Database, job_id: int) -> dict[str, Any] | None:
    """One job's row, or None."""
    rows = list(db.query("SELECT * FROM jobs WHERE id = ?", [job_id]))
    return rows[0] if rows else None
