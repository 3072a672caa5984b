"""Background rebuilds of recognition indexes: queued by uploads that outgrow an index, run as a job on the job
queue (server/jobs), claimed under a lease, built from a snapshot without the write lock, then swapped in with
what landed meanwhile."""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import sqlite_utils
from flask import Flask, current_app

from core.clock import now_iso
from core.process import owner_alive, owner_id
from server.config import Settings, get_settings
from server.jobs import queue
from server.jobs.store import Claim
from server.services.recognition_index import (
    index_gen,
    publish,
    rebuild_descriptors,
    stored_descriptors,
)
from server.store import close_thread_connections, get_db, write_txn

log = logging.getLogger("forecourt.recognition")



# --- background rebuilds -----------------------------------------------------------------------------------------
# An upload that outgrows the index queues a rebuild (one rec_rebuilds row per collection, shared by every worker).
# A thread of the worker that claims it builds a new index from a snapshot (the images up to the largest id at
# start) without holding the write lock, then swaps it in within a short write transaction that adds the images
# stored since and removes those deleted since.
REBUILD_LEASE_SECONDS = 120.0  # a running rebuild renews its lease every quarter of this; a lapsed one is taken over


def _owner_token() -> str:
    return f"{socket.gethostname()}:{owner_id()}:{secrets.token_hex(4)}"


def _owner_gone(claimed_by: str | None) -> bool:
    """True when the claim was made by a process of this host that no longer runs (a killed worker)."""
    host, _, rest = (claimed_by or "").partition(":")
    return host == socket.gethostname() and not owner_alive(rest.rsplit(":", 1)[0])


def _claimable(row: dict[str, Any]) -> bool:
    return (row["state"] == "queued" or (row["lease_until"] or 0.0) < time.time()
            or _owner_gone(row["claimed_by"]))


def queue_rebuild(db: sqlite_utils.Database, collection_id: str) -> None:
    """Inside a write transaction: ask for a rebuild of a collection's index; a request already queued or running
    stays as it is."""
    db.execute("INSERT OR IGNORE INTO rec_rebuilds (collection_id, state, queued_at) VALUES (?, 'queued', ?)",
               [collection_id, now_iso()])


def rebuild_state(db: sqlite_utils.Database, collection_id: str) -> str | None:
    """The collection's index rebuild: queued, running or None (a running one whose worker is gone is queued)."""
    rows = list(db.query("SELECT * FROM rec_rebuilds WHERE collection_id = ?", [collection_id]))
    if not rows:
        return None
    return "queued" if _claimable(rows[0]) else "running"


def clear_queued_rebuild(db: sqlite_utils.Database, collection_id: str) -> None:
    """Drop a collection's queued (not running) rebuild request: its index was just rebuilt in full."""
    with write_txn(db):
        db.execute("DELETE FROM rec_rebuilds WHERE collection_id = ? AND state = 'queued'", [collection_id])


def _claim_rebuild(db: sqlite_utils.Database, only: str | None, skip: set[str]) -> tuple[str, str] | None:
    """Take a queued rebuild, or a running one whose lease lapsed or whose process is gone: (collection, token)."""
    with write_txn(db):
        rows = [r for r in db.query("SELECT * FROM rec_rebuilds ORDER BY queued_at, collection_id")
                if _claimable(r) and r["collection_id"] not in skip and only in (None, r["collection_id"])]
        if not rows:
            return None
        collection_id, token = rows[0]["collection_id"], _owner_token()
        db.execute("UPDATE rec_rebuilds SET state = 'running', started_at = ?, claimed_by = ?, lease_until = ? "
                   "WHERE collection_id = ?", [now_iso(), token, time.time() + REBUILD_LEASE_SECONDS, collection_id])
    return collection_id, token


@contextlib.contextmanager
def _lease_kept(app: Flask, collection_id: str, token: str) -> Iterator[None]:
    """Renew a claimed rebuild's lease from another thread while the body runs (FAISS training holds this one)."""
    stop = threading.Event()

    def renew() -> None:
        with app.app_context():
            db = get_db()
            try:
                while not stop.wait(REBUILD_LEASE_SECONDS / 4):
                    try:
                        with write_txn(db):
                            db.execute("UPDATE rec_rebuilds SET lease_until = ? WHERE collection_id = ? AND "
                                       "claimed_by = ?", [time.time() + REBUILD_LEASE_SECONDS, collection_id, token])
                    except sqlite3.Error as exc:  # a busy database: try again at the next beat
                        log.warning("could not renew the rebuild lease of %s: %s", collection_id, exc)
            finally:
                close_thread_connections()

    beat = threading.Thread(target=renew, name=f"recognition-lease-{collection_id}", daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()


def _rebuild_and_swap(db: sqlite_utils.Database, settings: Settings, collection_id: str, token: str,
                      before_swap: Callable[[str], None] | None) -> dict[str, Any]:
    """Build a collection's index from a snapshot outside any write transaction, then swap it in (see above)."""
    start = time.perf_counter()
    upto = int(db.execute("SELECT COALESCE(MAX(id), 0) FROM rec_images WHERE collection_id = ?",
                          [collection_id]).fetchone()[0])
    seen: set[int] = set()
    index = rebuild_descriptors(db, settings, collection_id, upto=upto, seen=seen)
    if before_swap is not None:
        before_swap(collection_id)
    out: dict[str, Any] = {"collection_id": collection_id, "status": "superseded"}
    with write_txn(db):
        row = db.execute("SELECT claimed_by FROM rec_rebuilds WHERE collection_id = ?", [collection_id]).fetchone()
        if row is None or row[0] != token:
            return out  # cleared (collection deleted, purge), or taken over by another worker after a lapsed lease
        stored = {int(r[0]) for r in db.execute("SELECT id FROM rec_images WHERE collection_id = ?",
                                                [collection_id])}
        gone = sorted(seen - stored)  # ids are never reused: every image stored since has an id above upto
        index.remove(gone)
        added = 0
        for image_id, blob in db.execute("SELECT id, descriptors FROM rec_images WHERE collection_id = ? AND id > ? "
                                         "ORDER BY id", [collection_id, upto]):
            index.add(int(image_id), stored_descriptors(settings, blob))
            added += 1
        publish(db, settings, collection_id, index_gen(db, collection_id) + 1, index)
        if index.outgrown(settings.recognition.ivf_threshold):  # so many uploads landed meanwhile: go again
            db.execute("UPDATE rec_rebuilds SET state = 'queued', claimed_by = NULL, lease_until = NULL, "
                       "queued_at = ? WHERE collection_id = ?", [now_iso(), collection_id])
        else:
            db.execute("DELETE FROM rec_rebuilds WHERE collection_id = ?", [collection_id])
    seconds = time.perf_counter() - start
    log.info("recognition index of %s rebuilt in the background as %s (%d descriptors, %d images added and %d "
             "removed meanwhile) in %.1f s", collection_id, index.kind, index.ntotal, added, len(gone), seconds)
    return {**out, "status": "done", "kind": index.kind, "descriptors": index.ntotal, "images": len(stored),
            "added_meanwhile": added, "removed_meanwhile": len(gone), "seconds": round(seconds, 1)}


def run_pending_rebuilds(collection_id: str | None = None, *,
                         before_swap: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Run the queued index rebuilds (and lapsed running ones) in this thread, each collection at most once; the
    background thread calls this, as do `forecourt index rebuild --pending` and tests. before_swap(collection_id)
    runs between the build and the swap. Returns one result per rebuild (status done, superseded or failed)."""
    db, settings = get_db(), get_settings()
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    done: list[dict[str, Any]] = []
    while (claim := _claim_rebuild(db, collection_id, {d["collection_id"] for d in done})) is not None:
        cid, token = claim
        try:
            with _lease_kept(app, cid, token):
                done.append(_rebuild_and_swap(db, settings, cid, token, before_swap))
        except Exception as exc:  # noqa: BLE001 - the next upload that finds the index outgrown queues it again
            log.exception("background rebuild of the recognition index of %s failed", cid)
            with write_txn(db):
                db.execute("DELETE FROM rec_rebuilds WHERE collection_id = ? AND claimed_by = ?", [cid, token])
            done.append({"collection_id": cid, "status": "failed", "error": f"{type(exc).__name__}: {exc}"})
    return done


REBUILD = "recognition.rebuild"


@queue.handler(REBUILD, max_attempts=3)
def run_rebuild_job(args: dict[str, Any], claim: Claim) -> dict[str, Any]:
    """The job queue's handler: run the collection's pending rebuild (a lapsed one is taken over). A failed
    rebuild is asked for again and the attempt fails, so the queue retries it after its backoff (dead at the
    last attempt, with the error, until `forecourt jobs retry` or the next upload that outgrows the index)."""
    results = run_pending_rebuilds(args["collection_id"])
    db, settings = get_db(), get_settings()
    failed = [r for r in results if r["status"] == "failed"]
    if failed:
        with write_txn(db):
            queue_rebuild(db, args["collection_id"])
        raise RuntimeError(f"index rebuild of {args['collection_id']} failed: {failed[0]['error']}")
    if rebuild_state(db, args["collection_id"]) == "queued":  # re-queued: uploads outgrew the new index too
        with write_txn(db):
            _enqueue(db, settings, args["collection_id"])
    return {"rebuilds": results}


def _enqueue(db: sqlite_utils.Database, settings: Settings, collection_id: str) -> int:
    return queue.enqueue(db, settings, REBUILD, {"collection_id": collection_id},
                         unique_key=f"{REBUILD}:{collection_id}")


def start_claimable_rebuild(db: sqlite_utils.Database, settings: Settings, collection_id: str) -> str | None:
    """Put the collection's waiting rebuild on the job queue (recognition.background_rebuild); returns the
    rebuild's state as read (rebuild_state)."""
    state = rebuild_state(db, collection_id)
    if settings.recognition.background_rebuild and state == "queued":
        with write_txn(db):
            _enqueue(db, settings, collection_id)
    return state


def wait_for_rebuilds(timeout: float | None = None) -> bool:
    """Wait until no index rebuild job is queued or running (tests, shutdown); False on timeout."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def idle() -> bool:
        return not get_db().execute("SELECT 1 FROM jobs WHERE kind = ? AND state IN ('queued', 'running') LIMIT 1",
                                    [REBUILD]).fetchone()

    return queue.wait_until(app, idle, 3600.0 if timeout is None else timeout)
