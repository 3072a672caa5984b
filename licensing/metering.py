"""Metering: reserve a cost before the work, commit it after success, refund it on failure; stale ones are reaped.

Every step is one BEGIN IMMEDIATE transaction, so checks and updates of a balance are atomic across threads and
gunicorn workers. A reservation names its owner process; when that process is gone (kill -9) or the reservation
outlives its TTL, the reaper refunds it. Only commits are charges, and each commit appends to the hash-chained
ledger.
"""

from __future__ import annotations

import json
import math
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import sqlite_utils

from core.process import owner_alive, owner_id
from licensing import integrity, ledger, notices
from licensing.clock import now, period_of, periods_between
from licensing.db import kv_set
from licensing.errors import (
    InsufficientCredits,
    LicensingError,
    LimitExhausted,
    ReservationNotFound,
    UnknownMetric,
)
from licensing.options import LicensingOptions
from licensing.plans import CAPS, METRICS, ROLLOVER_CAP, ROLLOVER_METRICS, Plan
from licensing.state import METRIC_ACTIONS, Policy, evaluate

EPS = 1e-9
REAP_EVERY_S = 5.0
NOTICE_AT = 0.8

_reap_lock = threading.Lock()
_last_reap = 0.0


@dataclass
class Bucket:
    """A balance: subscription (per period), payg (a pack), overage (per period) or cap (stored images)."""

    id: str
    metric: str
    kind: str
    period: str | None
    allowance: float | None
    granted: float | None  # None: unlimited
    used: float
    reserved: float
    valid_until: float | None

    @property
    def free(self) -> float:
        return math.inf if self.granted is None else self.granted - self.used - self.reserved


_BUCKET_COLS = "id, metric, kind, period, allowance, granted, used, reserved, valid_until"


def _bucket(db: sqlite_utils.Database, bucket_id: str) -> Bucket | None:
    row = db.execute(f"SELECT {_BUCKET_COLS} FROM lic_buckets WHERE id = ?", [bucket_id]).fetchone()
    return Bucket(*row) if row else None


def _rebased_grant(b: Bucket, new: float | None) -> float | None:
    """A balance's grant moved to a new allowance: what was already used or carried stays counted."""
    if new is None or b.granted is None or b.allowance is None or b.kind == "cap":
        return new
    granted = max(b.granted + new - b.allowance, 0.0)
    if b.metric in ROLLOVER_METRICS:
        granted = min(granted, ROLLOVER_CAP * new)
    return granted


# --- the meter --------------------------------------------------------------------------------------------
class Meter:
    """Reserve, commit and refund metered amounts against the license's allowances."""

    def __init__(self, db: sqlite_utils.Database, options: LicensingOptions,
                 clock: Callable[[], float] = now) -> None:
        self.db = db
        self.options = options
        self.clock = clock

    # public API
    def reserve(self, metric: str, amount: float, *, key_id: str | None, user_id: int | None,
                request_id: str) -> str:
        """Hold amount of metric for one request; raise 402/403 LicensingErrors when it may not run."""
        if metric not in METRICS:
            raise UnknownMetric(f"Unknown metric {metric!r}; one of {', '.join(METRICS)}.")
        if not amount > 0:
            raise LicensingError("The amount to reserve must be positive.", code="invalid_amount")
        self.maybe_reap()
        t = self.clock()
        pending: list[notices.Notice] = []
        refusal: LicensingError | None = None
        rid = "rsv_" + uuid.uuid4().hex
        with integrity.guarded(self.db, self.options.seal(), t) as found:
            policy = evaluate(self.db, self.options, t)
            pending += policy.pending_notices
            try:
                policy.check(METRIC_ACTIONS[metric])
                splits = self._allocate(policy, metric, amount, t, pending)
            except LicensingError as exc:
                refusal = exc  # commit what evaluation wrote (clock mark, notices), then refuse
            else:
                for s in splits:
                    self.db.execute("UPDATE lic_buckets SET reserved = reserved + ? WHERE id = ?",
                                    [s["amount"], s["bucket"]])
                self.db.execute(
                    "INSERT INTO lic_reservations (id, metric, amount, splits, key_id, user_id, request_id, owner, "
                    "status, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                    [rid, metric, float(amount), json.dumps(splits), key_id, user_id, request_id, owner_id(), t,
                     t + self.options.reservation_ttl_s])
        notices.dispatch(found + pending)
        if refusal is not None:
            raise refusal
        return rid

    def commit(self, reservation_id: str) -> None:
        """Charge a reservation: it becomes ledger entries; committing twice charges once."""
        t = self.clock()
        pending: list[notices.Notice] = []
        row = self._reservation(reservation_id)
        splits = json.loads(row["splits"])
        seal = self.options.seal()
        with integrity.guarded(self.db, seal, t, tuple(s["bucket"] for s in splits)) as found:
            row = self._reservation(reservation_id)
            if row["status"] == "committed":
                return
            if row["status"] != "pending":
                raise ReservationNotFound(f"Reservation {reservation_id} was {row['status']} and cannot be charged.")
            period = period_of(t)
            for s in json.loads(row["splits"]):
                self.db.execute("UPDATE lic_buckets SET reserved = reserved - ?, used = used + ? WHERE id = ?",
                                [s["amount"], s["amount"], s["bucket"]])
                bucket = _bucket(self.db, s["bucket"])
                assert bucket is not None
                ledger.append(self.db, "charge", seal=seal, at=t, metric=row["metric"], amount=s["amount"],
                              bucket=bucket.id,
                              period=bucket.period or period, ref=reservation_id, key_id=row["key_id"],
                              user_id=row["user_id"], request_id=row["request_id"],
                              data={"kind": bucket.kind})
                self._after_charge(bucket, s["amount"], t, pending)
            self.db.execute("UPDATE lic_reservations SET status = 'committed', settled_at = ? WHERE id = ?",
                            [t, reservation_id])
        notices.dispatch(found + pending)

    def refund(self, reservation_id: str) -> None:
        """Give a reservation back; refunding twice, or after a commit, changes nothing."""
        row = self._reservation(reservation_id)
        extra = tuple(s["bucket"] for s in json.loads(row["splits"]))
        with integrity.guarded(self.db, self.options.seal(), self.clock(), extra) as found:
            row = self._reservation(reservation_id)
            if row["status"] == "pending":
                self._release_reservation(row, "refunded")
        notices.dispatch(found)

    def release(self, metric: str, amount: float) -> None:
        """Lower a capped gauge (stored_images) when images are deleted."""
        if metric not in CAPS:
            raise UnknownMetric(f"Only capped metrics ({', '.join(CAPS)}) can be released.")
        t = self.clock()
        seal = self.options.seal()
        with integrity.guarded(self.db, seal, t) as found:
            self.db.execute("UPDATE lic_buckets SET used = MAX(used - ?, 0) WHERE id = ?", [amount, f"cap:{metric}"])
            ledger.append(self.db, "release", seal=seal, at=t, metric=metric, amount=-amount, bucket=f"cap:{metric}",
                          period=period_of(t))
        notices.dispatch(found)

    def reap(self) -> int:
        """Refund pending reservations whose process died or whose TTL passed; return how many."""
        t = self.clock()
        rows = self.db.execute("SELECT id, owner, expires_at FROM lic_reservations WHERE status = 'pending'").fetchall()
        alive: dict[str, bool] = {}
        stale = []
        for rid, owner, expires_at in rows:
            if owner not in alive:
                alive[owner] = owner_alive(owner)
            if expires_at < t or not alive[owner]:
                stale.append(rid)
        if not stale:
            return 0
        count = 0
        extra = tuple({s["bucket"] for rid in stale for s in json.loads(self._reservation(rid)["splits"])})
        with integrity.guarded(self.db, self.options.seal(), t, extra) as found:
            for rid in stale:
                row = self._reservation(rid)
                if row["status"] == "pending":
                    self._release_reservation(row, "expired")
                    count += 1
        notices.dispatch(found)
        return count

    def maybe_reap(self) -> None:
        """Reap at most every few seconds per process (cheap enough to call before each reservation)."""
        global _last_reap
        t = now()
        if t - _last_reap < REAP_EVERY_S or not _reap_lock.acquire(blocking=False):
            return
        try:
            _last_reap = t
            self.reap()
        finally:
            _reap_lock.release()

    def pending(self) -> int:
        """Reservations not settled yet."""
        return int(self.db.execute("SELECT count(*) FROM lic_reservations WHERE status = 'pending'").fetchone()[0])

    # plan changes
    def rebase(self, plan: Plan, policy: Policy, t: float) -> None:
        """Move the current period's balances to a new plan's allowances (inside a write transaction)."""
        period = period_of(t)
        for metric in METRICS:
            new = plan.allowance(metric)
            bucket_id = f"cap:{metric}" if metric in CAPS else f"sub:{metric}:{period}"
            b = _bucket(self.db, bucket_id)
            if b is None:
                continue
            granted = _rebased_grant(b, new)
            self.db.execute("UPDATE lic_buckets SET allowance = ?, granted = ? WHERE id = ?", [new, granted, b.id])
            if b.kind == "subscription" and granted != b.granted:
                ledger.append(self.db, "regrant", seal=self.options.seal(), at=t, metric=metric, amount=granted,
                              bucket=b.id, period=period, ref=policy.license_id or "trial",
                              data={"plan": plan.name, "allowance": new, "was": b.granted})
            ob = _bucket(self.db, f"over:{metric}:{period}")
            if ob is not None:
                og = None if new is None else (policy.overage.factor - 1) * new
                self.db.execute("UPDATE lic_buckets SET allowance = ?, granted = ? WHERE id = ?", [new, og, ob.id])

    # internals
    def _reservation(self, reservation_id: str) -> dict[str, Any]:
        cur = self.db.execute("SELECT * FROM lic_reservations WHERE id = ?", [reservation_id])
        row = cur.fetchone()
        if row is None:
            raise ReservationNotFound(f"No reservation {reservation_id}.")
        return dict(zip([c[0] for c in cur.description], row, strict=True))

    def _release_reservation(self, row: dict[str, Any], status: str) -> None:
        for s in json.loads(row["splits"]):
            self.db.execute("UPDATE lic_buckets SET reserved = MAX(reserved - ?, 0) WHERE id = ?",
                            [s["amount"], s["bucket"]])
        self.db.execute("UPDATE lic_reservations SET status = ?, settled_at = ? WHERE id = ?",
                        [status, self.clock(), row["id"]])

    def _allocate(self, policy: Policy, metric: str, amount: float, t: float,
                  pending: list[notices.Notice]) -> list[dict[str, Any]]:
        if metric in CAPS:
            b = self.cap_bucket(policy, metric, t)
            if b.free + EPS < amount:
                raise LimitExhausted(f"The plan stores at most {b.granted:g} reference images; delete some or "
                                     "upgrade.")
            return [{"bucket": b.id, "amount": amount}]
        while True:
            splits, remaining = self._take(self._spend_order(policy, metric, t), amount)
            if remaining <= EPS:
                return splits
            nxt = policy.next_plan() if metric == "scans" else None
            if nxt is None:
                break
            self._auto_upgrade(policy, nxt, t, pending)
        # overage last
        if policy.overage.policy == "allow" and policy.plan.allowance(metric) is not None:
            over = self._overage_bucket(policy, metric, t)
            splits, remaining = self._take([*self._spend_order(policy, metric, t), over], amount)
            if remaining <= EPS:
                return splits
        sub = self.subscription_bucket(policy, metric, t)
        if metric == "credits":
            raise InsufficientCredits(
                f"This needs {amount:g} credits; {max(sum(b.free for b in self._spend_order(policy, metric, t)), 0):g}"
                " are left (subscription and pay-as-you-go). Buy a credit pack or wait for the next period.")
        raise LimitExhausted(f"The {metric} allowance of {sub.granted:g} for {sub.period} is used up; it renews "
                             "next period, or upgrade the plan.")

    @staticmethod
    def _take(buckets: list[Bucket], amount: float) -> tuple[list[dict[str, Any]], float]:
        splits, remaining = [], amount
        for b in buckets:
            if remaining <= EPS:
                break
            take = min(b.free, remaining)
            if take > EPS:
                splits.append({"bucket": b.id, "amount": take})
                remaining -= take
        return splits, remaining

    def _spend_order(self, policy: Policy, metric: str, t: float) -> list[Bucket]:
        """Subscription first, then pay-as-you-go packs (soonest to expire first)."""
        order = [self.subscription_bucket(policy, metric, t)]
        if metric == "credits":
            rows = self.db.execute(f"SELECT {_BUCKET_COLS} FROM lic_buckets WHERE kind = 'payg' AND metric = ? "
                                   "AND valid_until > ? AND granted > used + reserved ORDER BY valid_until, id",
                                   [metric, t]).fetchall()
            order += [Bucket(*r) for r in rows]
        return order

    def subscription_bucket(self, policy: Policy, metric: str, t: float, *, write: bool = True) -> Bucket:
        """This period's subscription balance for a metric, made on first use with roll-over (capped);
        write=False: what it is or would be, changing nothing."""
        period = period_of(t)
        bucket_id = f"sub:{metric}:{period}"
        b = _bucket(self.db, bucket_id)
        allowance = policy.plan.allowance(metric)
        if b is not None:
            if b.allowance != allowance:  # the plan changed (new license, upgrade, a license becoming valid)
                if not write:
                    return replace(b, allowance=allowance, granted=_rebased_grant(b, allowance))
                self.rebase(policy.plan, policy, t)
                b = _bucket(self.db, bucket_id)
                assert b is not None
            return b
        granted, carried = allowance, 0.0
        if allowance is not None and metric in ROLLOVER_METRICS:
            cap = ROLLOVER_CAP * allowance
            prev = self.db.execute(f"SELECT {_BUCKET_COLS} FROM lic_buckets WHERE kind = 'subscription' AND "
                                   "metric = ? AND period < ? ORDER BY period DESC LIMIT 1",
                                   [metric, period]).fetchone()
            if prev is not None:
                pb = Bucket(*prev)
                balance = max(pb.free, 0.0) if pb.granted is not None else 0.0
                for _ in periods_between(pb.period or period, period):  # months nobody used keep accruing
                    balance = min(balance + allowance, cap)
                carried = balance
                granted = min(balance + allowance, cap)
        if not write:
            return Bucket(bucket_id, metric, "subscription", period, allowance, granted, 0.0, 0.0, None)
        self.db.table("lic_buckets").insert({
            "id": bucket_id, "metric": metric, "kind": "subscription", "period": period, "allowance": allowance,
            "granted": granted, "used": 0.0, "reserved": 0.0, "created_at": t,
        })
        ledger.append(self.db, "grant", seal=self.options.seal(), at=t, metric=metric, amount=granted,
                      bucket=bucket_id, period=period,
                      ref=policy.license_id or "trial",
                      data={"plan": policy.plan.name, "allowance": allowance, "rolled_over": carried})
        b = _bucket(self.db, bucket_id)
        assert b is not None
        return b

    def cap_bucket(self, policy: Policy, metric: str, t: float, *, write: bool = True) -> Bucket:
        """The stored-images gauge, its ceiling kept at the plan's cap; write=False changes nothing."""
        cap = policy.plan.allowance(metric)
        b = _bucket(self.db, f"cap:{metric}")
        if not write:
            if b is None:
                return Bucket(f"cap:{metric}", metric, "cap", None, cap, cap, 0.0, 0.0, None)
            return replace(b, allowance=cap, granted=cap)
        if b is None:
            self.db.table("lic_buckets").insert({"id": f"cap:{metric}", "metric": metric, "kind": "cap", "allowance": cap,
                                          "granted": cap, "used": 0.0, "reserved": 0.0, "created_at": t})
        elif b.granted != cap:
            self.db.execute("UPDATE lic_buckets SET allowance = ?, granted = ? WHERE id = ?", [cap, cap, b.id])
        b = _bucket(self.db, f"cap:{metric}")
        assert b is not None
        return b

    def _overage_bucket(self, policy: Policy, metric: str, t: float) -> Bucket:
        period = period_of(t)
        bucket_id = f"over:{metric}:{period}"
        b = _bucket(self.db, bucket_id)
        if b is None:
            allowance = policy.plan.allowance(metric)
            granted = (policy.overage.factor - 1) * allowance if allowance is not None else None
            self.db.table("lic_buckets").insert({"id": bucket_id, "metric": metric, "kind": "overage", "period": period,
                                          "allowance": allowance, "granted": granted, "used": 0.0, "reserved": 0.0,
                                          "created_at": t})
            b = _bucket(self.db, bucket_id)
        assert b is not None
        return b

    def _auto_upgrade(self, policy: Policy, plan: Plan, t: float, pending: list[notices.Notice]) -> None:
        old = policy.plan
        kv_set(self.db, f"plan:{policy.license_id}", plan.model_dump())
        policy.plan = plan
        self.rebase(plan, policy, t)
        ledger.append(self.db, "upgrade", seal=self.options.seal(), at=t, period=period_of(t), ref=policy.license_id,
                      data={"from": old.name, "to": plan.name, "reason": "scan limit reached", "auto": True})
        n = notices.record(self.db, f"upgrade:{policy.license_id}:{plan.name}", "plan_upgraded", "Plan upgraded",
                           f"The scan limit of plan {old.name} was reached; the box moved to plan {plan.name} "
                           "as the license allows. The upgrade is recorded for billing.", at=t, level="info",
                           data={"from": old.name, "to": plan.name})
        if n:
            pending.append(n)

    def _after_charge(self, bucket: Bucket, amount: float, t: float, pending: list[notices.Notice]) -> None:
        if bucket.kind == "subscription" and bucket.granted:
            before = bucket.used - amount
            if before < NOTICE_AT * bucket.granted <= bucket.used:
                n = notices.record(
                    self.db, f"budget80:{bucket.metric}:{bucket.period}", "budget_80", "80% of the budget used",
                    f"{bucket.used:g} of {bucket.granted:g} {bucket.metric} for {bucket.period} are used.",
                    at=t, data={"metric": bucket.metric, "period": bucket.period, "used": bucket.used,
                                "granted": bucket.granted})
                if n:
                    pending.append(n)
        elif bucket.kind == "payg":
            period = period_of(t)
            n = notices.record(self.db, f"payg:{period}", "payg_started", "Pay-as-you-go credits in use",
                               f"The subscription credits for {period} are spent; pay-as-you-go credits are now "
                               f"being used (pack {bucket.id.removeprefix('payg:')}).", at=t, level="info",
                               data={"period": period, "pack": bucket.id.removeprefix("payg:")})
            if n:
                pending.append(n)
        elif bucket.kind == "overage":
            n = notices.record(self.db, f"overage:{bucket.metric}:{bucket.period}", "overage_started", "Overage",
                               f"The {bucket.metric} allowance for {bucket.period} is used up; further use is "
                               "counted as overage for the vendor's bill.", at=t,
                               data={"metric": bucket.metric, "period": bucket.period})
            if n:
                pending.append(n)

