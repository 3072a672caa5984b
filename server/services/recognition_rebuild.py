"""Background rebuilds of recognition indexes as `recognition.rebuild` jobs on the job queue (server/jobs): an
upload that outgrows a collection's index asks for one, a worker builds the new index from a snapshot without the
write lock, then swaps it in with what landed meanwhile.

One job per collection at a time: a request while one is queued or running is that job (the running one takes in
every image stored before its swap, and its swap transaction also ends the job, so a request after the swap makes a
new one); a second job of one collection that starts while another runs is settled as covered by it. With
[recognition] background_rebuild off, the jobs are held for `forecourt index rebuild --pending`."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import sqlite_utils
from flask import current_app

from server.config import Settings, get_settings
from server.jobs import queue, store
from server.jobs.store import Claim
from server.services.recognition_index import (
    index_gen,
    publish,
    rebuild_descriptors,
    stored_descriptors,
)
from server.store import get_db, write_txn

log = logging.getLogger("forecourt.recognition")
REBUILD = "recognition.rebuild"
_hooks = threading.local()  # before_swap / after_swap of run_pending_rebuilds, for the jobs it runs in this thread


def _key(collection_id: str) -> str:
    return f"{REBUILD}:{collection_id}"


def request_rebuild(db: sqlite_utils.Database, settings: Settings, collection_id: str) -> int:
    """Inside a write transaction: ask for a rebuild of a collection's index; a rebuild already queued or running
    is the answer (its job id comes back)."""
    return queue.enqueue(db, settings, REBUILD, {"collection_id": collection_id}, unique_key=_key(collection_id),
                         while_running=True)


def rebuild_state(db: sqlite_utils.Database, collection_id: str) -> str | None:
    """The collection's index rebuild: queued, running or None (one whose worker is gone counts as queued: the
    queue takes it over)."""
    jobs = [j for state in ("running", "queued")
            for j in store.list_jobs(db, state=state, kind=REBUILD, unique_key=_key(collection_id), limit=1)]
    if not jobs:
        return None
    job = jobs[0]
    return "running" if job["state"] == "running" and not store.lapsed(job["claimed_by"], job["lease_until"]) \
        else "queued"


def clear_queued_rebuild(db: sqlite_utils.Database, collection_id: str) -> None:
    """Settle a collection's queued (not running) rebuild: its index was just rebuilt in full."""
    store.cancel(db, REBUILD, unique_key=_key(collection_id), states=("queued",), reason="covered by a full rebuild")


def cancel_rebuilds(db: sqlite_utils.Database, collection_id: str | None = None) -> None:
    """Inside a write transaction: settle the queued and running rebuilds of a collection (or all): it was deleted
    or purged, and a running one's swap, finding its job settled, publishes nothing."""
    store.cancel(db, REBUILD, unique_key=_key(collection_id) if collection_id else None, reason="cancelled")


@queue.handler(REBUILD, max_attempts=3, held=lambda settings: not settings.recognition.background_rebuild)
def run_rebuild_job(args: dict[str, Any], claim: Claim) -> dict[str, Any]:
    """The job queue's handler: rebuild the collection's index, unless another rebuild of it runs (it covers this
    request). A failure is a failed attempt: retried after the queue's backoff, dead at the last one (with its
    error, until `forecourt jobs retry` or the next upload that finds the index outgrown)."""
    db, settings = get_db(), get_settings()
    cid = args["collection_id"]
    with write_txn(db):
        twin = store.live_twin(db, claim)
        if twin is not None:  # ended in the same transaction, so two twins never both step aside
            out = {"collection_id": cid, "status": "covered", "by_job": twin}
            store.finish(db, claim, out)
            return out
    return _rebuild_and_swap(db, settings, cid, claim)


def _collection_exists(db: sqlite_utils.Database, collection_id: str) -> bool:
    return db.execute("SELECT 1 FROM rec_collections WHERE id = ?", [collection_id]).fetchone() is not None


def _rebuild_and_swap(db: sqlite_utils.Database, settings: Settings, collection_id: str,
                      claim: Claim) -> dict[str, Any]:
    """Build a collection's index from a snapshot (the images up to the largest id at start) outside any write
    transaction, then swap it in within a short one that adds the images stored since, removes those deleted
    since, and ends the job."""
    start = time.perf_counter()
    out: dict[str, Any] = {"collection_id": collection_id, "status": "skipped"}
    if not _collection_exists(db, collection_id):
        return out  # deleted since it was asked for
    upto = int(db.execute("SELECT COALESCE(MAX(id), 0) FROM rec_images WHERE collection_id = ?",
                          [collection_id]).fetchone()[0])
    seen: set[int] = set()
    index = rebuild_descriptors(db, settings, collection_id, upto=upto, seen=seen)
    if (before_swap := getattr(_hooks, "before_swap", None)) is not None:
        before_swap(collection_id)
    with write_txn(db):
        if not store.still_ours(db, claim) or not _collection_exists(db, collection_id):
            return {**out, "status": "superseded"}  # cancelled (deleted, purged), or taken over after a lapsed lease
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
        seconds = time.perf_counter() - start
        out = {**out, "status": "done", "kind": index.kind, "descriptors": index.ntotal, "images": len(stored),
               "added_meanwhile": added, "removed_meanwhile": len(gone), "seconds": round(seconds, 1)}
        store.finish(db, claim, out)  # from here a request for this collection makes a new job
        if index.outgrown(settings.recognition.ivf_threshold):  # so many uploads landed meanwhile: go again
            request_rebuild(db, settings, collection_id)
    log.info("recognition index of %s rebuilt in the background as %s (%d descriptors, %d images added and %d "
             "removed meanwhile) in %.1f s", collection_id, index.kind, index.ntotal, added, len(gone), seconds)
    if (after_swap := getattr(_hooks, "after_swap", None)) is not None:
        after_swap(collection_id)
    return out


def run_pending_rebuilds(collection_id: str | None = None, *,
                         before_swap: Callable[[str], None] | None = None,
                         after_swap: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Run the queued rebuild jobs (held ones too, and those whose worker is gone) in this thread:
    `forecourt index rebuild --pending` and tests. before_swap(collection_id) runs between the build and the swap,
    after_swap once the swap committed. Returns one result per job run (status done, covered, skipped, superseded,
    or failed with the error; a failed job is retried at once, dead after its last attempt)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    queue.reap_once(app)  # a running rebuild whose worker is gone is queued again
    _hooks.before_swap, _hooks.after_swap = before_swap, after_swap
    try:
        ran = queue.run_pending(app, kinds=(REBUILD,), unique_key=_key(collection_id) if collection_id else None)
    finally:
        _hooks.before_swap = _hooks.after_swap = None
    results: dict[int, dict[str, Any]] = {}
    db = get_db()
    for job_id, state, result in ran:
        if state in ("done", "superseded") and result is not None:
            results[job_id] = result
        else:
            job = store.get(db, job_id) or {}
            results[job_id] = {"collection_id": json.loads(job.get("args") or "{}").get("collection_id"),
                               "status": "failed", "error": job.get("error")}
    return list(results.values())


def wait_for_rebuilds(timeout: float | None = None) -> bool:
    """Wait until no index rebuild job is queued or running (tests, shutdown); False on timeout."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    def idle() -> bool:
        db = get_db()
        return not any(store.list_jobs(db, state=s, kind=REBUILD, limit=1) for s in ("queued", "running"))

    return queue.wait_until(app, idle, 3600.0 if timeout is None else timeout)
