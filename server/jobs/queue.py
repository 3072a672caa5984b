"""The task queue: huey carries "run job N" messages, in SQLite in the data folder by default or in Redis
([queue] url), to consumer threads in each gunicorn worker ([queue] workers_in_server) and/or in `forecourt
worker` processes. Handlers register by kind; retries back off; a dead job waits for `forecourt jobs retry`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlite_utils
from flask import Flask
from huey import RedisHuey, SqliteHuey
from huey.api import Huey
from huey.consumer import Consumer

from core.errors import DomainError
from core.sqlite import after_commit, write_txn
from server.config import Settings
from server.jobs import store
from server.store import close_thread_connections, get_db

log = logging.getLogger("forecourt.jobs")
QUEUE_NAME = "forecourt"
Handler = Callable[[dict[str, Any], store.Claim], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Kind:
    """A kind of job: its handler, how often it may fail before it is dead, what to tell its owner then, and
    when its jobs are held for a run by hand (held(settings) true: no worker thread or process runs them)."""

    name: str
    handler: Handler
    max_attempts: int
    on_dead: Callable[[dict[str, Any], str], None] | None = None
    held: Callable[[Settings], bool] | None = None


_kinds: dict[str, Kind] = {}
_QueueKey = tuple[int, str, str]  # (process, queue url, data folder): one huey each
_hueys: dict[_QueueKey, tuple[Huey, Any]] = {}  # key -> (huey, its run_job task)
_apps: dict[_QueueKey, Flask] = {}  # key -> the app whose context its jobs run in
_state_lock = threading.Lock()


def handler(kind: str, *, max_attempts: int = 3, on_dead: Callable[[dict[str, Any], str], None] | None = None,
            held: Callable[[Settings], bool] | None = None) -> Callable[[Handler], Handler]:
    """Register the function that runs jobs of a kind: handler(args, claim) -> result dict or None; an exception
    is a failed attempt (retried after a backoff, dead at max_attempts, when on_dead(args, error) runs in an app
    context, also for a job whose worker was lost on its last attempt). While held(settings) is true the kind's
    jobs wait, queued, for run_pending (`forecourt jobs run`, or the area's own command)."""

    def register(fn: Handler) -> Handler:
        _kinds[kind] = Kind(kind, fn, max_attempts, on_dead, held)
        return fn

    return register


# --- the huey instance -------------------------------------------------------------------------------------------
def build_huey(settings: Settings) -> Huey:
    """A huey on the configured store: SQLite file <data_dir>/queue.db, or Redis for queue.url redis://..."""
    url = settings.queue.url
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisHuey(QUEUE_NAME, url=url, results=False, utc=True)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return SqliteHuey(QUEUE_NAME, filename=str(settings.data_dir / "queue.db"), results=False, utc=True,
                      timeout=settings.storage.busy_timeout_ms / 1000)


def _key(settings: Settings) -> _QueueKey:
    return (os.getpid(), settings.queue.url, str(settings.data_dir))


def get_huey(settings: Settings) -> Huey:
    """This process's huey for these settings (made once; after a fork each process makes its own), with the
    two tasks Forecourt sends: run_job(job_id) and the hourly trigger of periodic jobs."""
    from huey import crontab

    key = _key(settings)
    with _state_lock:
        if key not in _hueys:
            huey = build_huey(settings)

            def run_job(job_id: int) -> None:
                _run_job_message(key, job_id)

            def hourly() -> None:
                _hourly(key)

            task = huey.task(name="run_job")(run_job)
            huey.periodic_task(crontab(minute="7"), name="hourly")(hourly)
            _hueys[key] = (huey, task)
        return _hueys[key][0]


def _send(settings: Settings, job_id: int, delay: float = 0.0) -> None:
    get_huey(settings)
    task = _hueys[_key(settings)][1]
    if delay > 0:
        task.schedule(args=(job_id,), delay=delay)
    else:
        task(job_id)


def _bind_app(app: Flask) -> None:
    """Jobs arriving on this app's queue run in this app's context."""
    with _state_lock:
        _apps[_key(app.extensions["forecourt.settings"])] = app


def enqueue(db: sqlite_utils.Database, settings: Settings, kind: str, args: dict[str, Any], *,
            unique_key: str | None = None, while_running: bool = False) -> int:
    """Record a job and send its message once the surrounding write transaction commits (a held kind's job is
    recorded only); returns the job id. A unique_key that already has a queued job (or a running one,
    while_running) returns that job instead, released if it was held and the kind no longer is."""
    spec = _kinds.get(kind)
    if spec is None:
        raise KeyError(f"no handler registered for job kind {kind!r}")
    job_id, to_send = store.add(db, kind, args, unique_key=unique_key, max_attempts=spec.max_attempts,
                                while_running=while_running, held=is_held(spec, settings))
    if to_send:
        after_commit(db, lambda: _send_logged(db, settings, [job_id]))
    return job_id


def is_held(spec: Kind | str, settings: Settings) -> bool:
    """Whether jobs of this kind wait for a run by hand under these settings."""
    kind = _kinds.get(spec) if isinstance(spec, str) else spec
    return bool(kind is not None and kind.held is not None and kind.held(settings))


def _send_logged(db: sqlite_utils.Database, settings: Settings, job_ids: list[int], delay: float = 0.0) -> None:
    try:
        for job_id in job_ids:
            _send(settings, job_id, delay)
        store.mark_sent(db, job_ids)
    except Exception:  # noqa: BLE001 - the job stays queued; reap() sends it again later
        log.exception("could not send job(s) %s to the queue", job_ids)


def retry_dead(db: sqlite_utils.Database, settings: Settings, job_ids: list[int] | None = None) -> list[int]:
    """Queue dead jobs again (fresh attempts) and send them; returns their ids."""
    again = store.retry(db, job_ids)
    _send_logged(db, settings, again)
    return again


# --- running jobs ------------------------------------------------------------------------------------------------
def run_claimed(db: sqlite_utils.Database, settings: Settings, claim: store.Claim
                ) -> tuple[str, dict[str, Any] | None]:
    """Run a claimed job with its lease kept alive; record done, a retry (sent after its backoff) or dead.
    Returns the job's new state and the handler's result."""
    spec = _kinds.get(claim.kind)
    try:
        if spec is None:
            raise LookupError(f"no handler for job kind {claim.kind!r} in this process")
        with _LeaseKeeper(settings, claim):
            result = spec.handler(claim.args, claim)
    except Exception as exc:  # noqa: BLE001 - a failed attempt is recorded on its job, never lost
        detail = f"{getattr(exc, 'code', type(exc).__name__)}: {getattr(exc, 'detail', exc)}"[:2000]
        log.warning("job %s (%s) attempt %d/%d failed: %s", claim.id, claim.kind, claim.attempt,
                    claim.max_attempts, detail)
        # a domain error (a photo that does not decode, bad options) fails the same way every time: dead at once
        delay = store.fail(db, claim, detail, settings.queue.retry_delay_seconds,
                           final=isinstance(exc, DomainError))
        if delay is None:
            log.error("job %s (%s) is dead after %d attempts: %s", claim.id, claim.kind, claim.attempt, detail)
            _tell_dead(claim.kind, claim.args, detail)
            return "dead", None
        _send_logged(db, settings, [claim.id], delay)
        return "queued", None
    if not store.finish(db, claim, result):
        log.warning("job %s (%s) finished after another worker took it over", claim.id, claim.kind)
        return "superseded", result
    return "done", result


def _tell_dead(kind: str, args: dict[str, Any], error: str) -> None:
    spec = _kinds.get(kind)
    if spec is not None and spec.on_dead is not None:
        try:
            spec.on_dead(args, error)
        except Exception:  # noqa: BLE001 - the job is dead either way
            log.exception("on_dead of job kind %s failed", kind)


class _LeaseKeeper:
    """Renew a running job's lease from a side thread while the handler works (long renders, FAISS training)."""

    def __init__(self, settings: Settings, claim: store.Claim) -> None:
        self.settings, self.claim = settings, claim
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def __enter__(self) -> _LeaseKeeper:
        self.thread = threading.Thread(target=self._beat, name=f"job-lease-{self.claim.id}", daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()

    def _beat(self) -> None:
        lease = self.settings.queue.lease_seconds
        db = store_db(self.settings)
        try:
            while not self.stop.wait(lease / 4):
                try:
                    store.renew(db, self.claim, lease)
                except Exception as exc:  # noqa: BLE001 - a busy database: try again at the next beat
                    log.warning("could not renew the lease of job %s: %s", self.claim.id, exc)
        finally:
            db.close()


def store_db(settings: Settings) -> sqlite_utils.Database:
    """A connection of its own (side threads)."""
    from server.store import open_db

    return open_db(settings.db_path, settings.storage.busy_timeout_ms)


def _run_job_message(key: _QueueKey, job_id: int) -> None:
    """What a huey worker runs for a message: claim the job (or drop a duplicate), run it in the app."""
    app = _apps.get(key)
    if app is None:
        raise RuntimeError("the job queue's consumer was started without an app")
    with app.app_context():
        settings = app.extensions["forecourt.settings"]
        db = get_db()
        claim = store.claim(db, job_id, settings.queue.lease_seconds)
        if claim is None:
            return  # done, dead, already running elsewhere, or an early duplicate of a delayed retry
        if is_held(claim.kind, settings):
            store.hold(db, claim)  # e.g. a rebuild reaped or retried while [recognition] background_rebuild is off
            return
        run_claimed(db, settings, claim)


def run_pending(app: Flask, *, kinds: tuple[str, ...] | None = None, limit: int | None = None,
                unique_key: str | None = None) -> list[tuple[int, str, dict[str, Any] | None]]:
    """Run queued jobs (of these kinds, of this unique key) in this thread until none are left (tests, `forecourt
    jobs run`, bench), held ones too; retries run at once instead of after their backoff. Returns (job id, new
    state, result) per attempt run."""
    ran: list[tuple[int, str, dict[str, Any] | None]] = []
    with app.app_context():
        settings, db = app.extensions["forecourt.settings"], get_db()
        while limit is None or len(ran) < limit:
            where = "state = 'queued'" + (f" AND kind IN ({','.join('?' * len(kinds))})" if kinds else "") + \
                (" AND unique_key = ?" if unique_key else "")
            row = db.execute(f"SELECT id FROM jobs WHERE {where} ORDER BY id LIMIT 1",
                             [*(kinds or ()), *([unique_key] if unique_key else [])]).fetchone()
            if row is None:
                break
            claim = store.claim(db, int(row[0]), settings.queue.lease_seconds, ignore_backoff=True)
            if claim is None:
                continue  # taken by a consumer thread meanwhile
            ran.append((claim.id, *run_claimed(db, settings, claim)))
    return ran


# --- consumers -----------------------------------------------------------------------------------------------------
class _EmbeddedConsumer(Consumer):  # type: ignore[misc]
    """huey's consumer without its signal handlers: inside gunicorn the worker's own handlers stay in charge."""

    def _set_signal_handlers(self) -> None:
        return None


class _Maintenance:
    """A side thread of every consumer: queue lost jobs again (reap) every reap_seconds."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._main, name="jobs-maintenance", daemon=True)

    def _main(self) -> None:
        settings = self.app.extensions["forecourt.settings"]
        while not self.stop.wait(settings.queue.reap_seconds):
            if not settings.db_path.exists():
                return  # a removed data folder (tests)
            try:
                reap_once(self.app)
            except Exception:  # noqa: BLE001 - a locked database: try at the next tick
                log.exception("job queue maintenance failed")
        close_thread_connections()


def reap_once(app: Flask) -> tuple[list[int], list[int]]:
    """Queue again jobs whose worker died and re-send messages that may be lost; returns their ids."""
    with app.app_context():
        settings, db = app.extensions["forecourt.settings"], get_db()
        again, lost, dead = store.reap(db, settings.queue.retry_delay_seconds, settings.queue.resend_seconds)
        for kind, args, error in dead:
            log.error("job kind %s lost its worker on its last attempt; dead: %s", kind, error)
            _tell_dead(kind, args, error)
        for job_id, delay in again:
            log.warning("job %s lost its worker; queued again (in %.0f s)", job_id, delay)
            _send_logged(db, settings, [job_id], delay)
        if lost:
            _send_logged(db, settings, lost)
        return [j for j, _ in again], lost


def _hourly(key: _QueueKey) -> None:
    """Queue each `*.hourly` job kind (e.g. catalog.prune.hourly); unique keys keep one queued at a time however
    many consumers ask."""
    app = _apps.get(key)
    if app is None:
        return
    with app.app_context():
        settings, db = app.extensions["forecourt.settings"], get_db()
        for kind in [k for k in _kinds if k.endswith(".hourly")]:
            with write_txn(db):
                enqueue(db, settings, kind, {}, unique_key=kind)


def start_consumer(app: Flask, threads: int, *, embedded: bool) -> tuple[Consumer, _Maintenance]:
    """Start huey's consumer threads (and the maintenance thread) for this app; returns them to stop later."""
    settings = app.extensions["forecourt.settings"]
    _bind_app(app)
    huey = get_huey(settings)
    cls = _EmbeddedConsumer if embedded else Consumer
    consumer = cls(huey, workers=threads, worker_type="thread", periodic=True, initial_delay=0.1,
                   max_delay=settings.queue.poll_seconds, backoff=1.5, check_worker_health=not embedded,
                   graceful_signal="TERM")
    maintenance = _Maintenance(app)
    maintenance.thread.start()
    if embedded:
        consumer.start()
    return consumer, maintenance


def start_in_server(app: Flask) -> None:
    """Start this gunicorn worker's consumer threads once (on the first request, so after the fork), when
    queue.workers_in_server is on and queue.threads > 0."""
    settings = app.extensions["forecourt.settings"]
    if not settings.queue.workers_in_server or not settings.queue.threads or \
            app.extensions.get("forecourt.jobs.consumer"):
        return  # off, or started already (the common case: every request after the first)
    with _state_lock:
        if app.extensions.get("forecourt.jobs.consumer"):
            return
        app.extensions["forecourt.jobs.consumer"] = True
    consumer, maintenance = start_consumer(app, settings.queue.threads, embedded=True)
    app.extensions["forecourt.jobs.consumer"] = (consumer, maintenance)
    import atexit

    # a worker that exits (gunicorn's graceful stop) lets the job in hand finish; one cut off anyway (kill -9)
    # is queued again by another process's maintenance thread once its lease lapses
    atexit.register(stop_in_server, app, settings.server.graceful_timeout * 0.8)
    log.info("started %d job queue thread(s) in process %d", settings.queue.threads, os.getpid())


def stop_in_server(app: Flask, timeout: float = 30) -> None:
    """Stop this process's consumer threads, letting the jobs in hand finish (tests, shutdown)."""
    entry = app.extensions.get("forecourt.jobs.consumer")
    if not isinstance(entry, tuple):
        return
    consumer, maintenance = entry
    app.extensions["forecourt.jobs.consumer"] = None
    maintenance.stop.set()
    consumer.shutdown_timeout = timeout
    consumer.stop(graceful=True)
    busy = sum(t.is_alive() for _, t in consumer.worker_threads)
    log.info("job queue threads stopped in process %d (%d still busy)", os.getpid(), busy)


def wait_until(app: Flask, predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll predicate (in an app context) until true or timeout: for tests and the CLI waiting on job states."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with app.app_context():
            if predicate():
                return True
        time.sleep(0.1)
    return False
