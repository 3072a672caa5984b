"""Purging after expiry: reference images at 45 days, accounts at 90, notices 7 days before each.

Engines register what to delete with register_purge_hook(); run_due() does what is due and is idempotent. A new
license (the box active again) stops it. The server runs run_due() from an apscheduler job on one process per box.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from core.sqlite import write_txn
from licensing import integrity, ledger, notices
from licensing.clock import DAY, iso, now, period_of
from licensing.db import kv_get, kv_set
from licensing.metering import Meter
from licensing.options import PURGE_ACCOUNTS_DAYS, PURGE_IMAGES_DAYS, PURGE_NOTICE_DAYS, LicensingOptions
from licensing.state import Policy, evaluate

log = logging.getLogger("forecourt.licensing.purge")

PURGE_KINDS = {"reference_images": PURGE_IMAGES_DAYS, "accounts": PURGE_ACCOUNTS_DAYS}
PurgeHook = Callable[[], int]  # deletes what it owns, returns how many items went
_hooks: dict[str, list[PurgeHook]] = {k: [] for k in PURGE_KINDS}
_hooks_lock = threading.Lock()


def register_purge_hook(kind: str, hook: PurgeHook) -> None:
    """Add a function that deletes data of a kind ("reference_images" or "accounts") when its purge is due."""
    if kind not in PURGE_KINDS:
        raise ValueError(f"unknown purge kind {kind!r}; one of {', '.join(PURGE_KINDS)}")
    with _hooks_lock:
        if hook not in _hooks[kind]:
            _hooks[kind].append(hook)


def unregister_purge_hook(kind: str, hook: PurgeHook) -> None:
    """Remove a hook (tests)."""
    with _hooks_lock:
        if hook in _hooks.get(kind, []):
            _hooks[kind].remove(hook)


@dataclass(frozen=True)
class PurgeStep:
    """One scheduled step: a notice or a purge of a kind, at a time, for one expiry."""

    action: str  # "notice" | "purge"
    kind: str
    at: float
    expired_at: float

    @property
    def key(self) -> str:
        return f"purge:{self.action}:{self.kind}:{int(self.expired_at)}"


def schedule(policy: Policy) -> list[PurgeStep]:
    """The steps that apply in this state: none while the box is usable or the clock is in doubt."""
    if policy.state != "expired" or policy.expires_at is None:
        return []
    steps = []
    for kind, days in PURGE_KINDS.items():
        at = policy.expires_at + days * DAY
        steps.append(PurgeStep("notice", kind, at - PURGE_NOTICE_DAYS * DAY, policy.expires_at))
        steps.append(PurgeStep("purge", kind, at, policy.expires_at))
    return steps


def registered_hooks() -> dict[str, list[PurgeHook]]:
    """The process-wide hooks, by kind."""
    with _hooks_lock:
        return {k: list(v) for k, v in _hooks.items()}


def run_due(db: sqlite_utils.Database, options: LicensingOptions, clock: Callable[[], float] = now,
            hooks: dict[str, list[PurgeHook]] | None = None) -> list[dict[str, Any]]:
    """Do the notices and purges that are due and not done yet; return what was done.

    hooks: what deletes each kind (default: the process-wide registry)."""
    hooks = registered_hooks() if hooks is None else hooks
    t = clock()
    with write_txn(db):
        policy = evaluate(db, options, t)
    notices.dispatch(policy.pending_notices)
    done: list[dict[str, Any]] = []
    for step in schedule(policy):
        if step.at > t or kv_get(db, step.key):
            continue
        if step.action == "notice":
            what = "Reference images" if step.kind == "reference_images" else "Accounts"
            purge_at = step.at + PURGE_NOTICE_DAYS * DAY
            with write_txn(db):
                n = notices.record(db, step.key, f"purge_soon_{step.kind}", f"{what} will be deleted",
                                   f"{what} will be deleted on {iso(purge_at)}, {PURGE_KINDS[step.kind]} days after "
                                   f"the license expired ({iso(step.expired_at)}). Install a new license to keep "
                                   "them; export what you need.", at=t, level="error",
                                   data={"kind": step.kind, "purge_at": iso(purge_at)})
                kv_set(db, step.key, {"at": t})
            notices.dispatch([n] if n else [])
            done.append({"action": "notice", "kind": step.kind})
            continue
        deleted = 0
        kind_hooks = hooks.get(step.kind, [])
        if not kind_hooks:  # nothing could delete anything yet (an area not started): not done, tried next time
            log.warning("the purge of %s is due but nothing is registered to run it; it waits", step.kind)
            continue
        for hook in kind_hooks:
            deleted += int(hook() or 0)
        with integrity.guarded(db, options.seal(), t) as found:
            if step.kind == "reference_images":
                db.execute("UPDATE lic_buckets SET used = 0 WHERE kind = 'cap' AND metric = 'stored_images'")
            ledger.append(db, "purge", seal=options.seal(), at=t, period=period_of(t), ref=step.kind,
                          data={"deleted": deleted, "expired_at": iso(step.expired_at), "hooks": len(kind_hooks)})
            n = notices.record(db, step.key, f"purged_{step.kind}", "Data purged",
                               f"{deleted} {step.kind.replace('_', ' ')} were deleted, {PURGE_KINDS[step.kind]} "
                               f"days after the license expired.", at=t, level="error",
                               data={"kind": step.kind, "deleted": deleted})
            kv_set(db, step.key, {"at": t, "deleted": deleted})
        notices.dispatch(found + ([n] if n else []))
        log.warning("purged %s %s", deleted, step.kind)
        done.append({"action": "purge", "kind": step.kind, "deleted": deleted})
    return done


def tick(db: sqlite_utils.Database, options: LicensingOptions, clock: Callable[[], float] = now,
         hooks: dict[str, list[PurgeHook]] | None = None) -> dict[str, Any]:
    """The periodic job: refund stale reservations, note the ledger's head outside the data folder (a full check
    first when the last one noted is gone), re-evaluate the state (notices), run due purges."""
    reaped = Meter(db, options, clock).reap()
    seal = options.seal()
    with integrity.guarded(db, seal, clock()) as found:  # the live balances' seals, even with no traffic
        pass
    notices.dispatch(found)
    if ledger.checkpoint_holds(db, seal):
        with write_txn(db):
            ledger.checkpoint(db, seal)
    else:
        from licensing.box import LicenseBox

        LicenseBox(db, options, clock).integrity_check()
    done = run_due(db, options, clock, hooks)
    return {"reaped": reaped, "purge": done}
