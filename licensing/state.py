"""The license state machine: trial, active, grace, expired, restricted; and what each state lets run."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from licensing import files, integrity, keys, notices, trial
from licensing.clock import DAY, iso, parse_iso
from licensing.db import kv_get, kv_set
from licensing.errors import (
    CollectionLocked,
    InvalidLicenseFile,
    LicenseExpired,
    LicenseRestricted,
    LicensingError,
)
from licensing.files import LicensePayload, Overage
from licensing.options import GRACE_DAYS, TRIAL_DAYS, LicensingOptions
from licensing.plans import TRIAL, Plan
from licensing.seal import Seal

ACTIONS = ("background_removal", "recognition", "collection_manage", "collection_read", "admin",
           "license", "account", "export")
ALWAYS = frozenset({"license", "account", "export"})
METRIC_ACTIONS = {"credits": "background_removal", "scans": "recognition", "uploads": "collection_manage",
                  "stored_images": "collection_manage"}

_payload_cache: dict[str, LicensePayload] = {}


class TrialNotRecorded(Exception):
    """A read-only evaluation found no trial record yet; evaluate again with write=True to start the trial."""


@dataclass
class Policy:
    """What the license allows right now."""

    state: str  # trial | active | grace | expired | restricted
    now: float
    plan: Plan
    license: LicensePayload | None = None
    expires_at: float | None = None  # valid_until, or the trial's end
    overage: Overage = field(default_factory=Overage)
    reasons: list[str] = field(default_factory=list)
    pending_notices: list[notices.Notice] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        """Whether the box can do its work (trial, active or grace)."""
        return self.state in ("trial", "active", "grace")

    @property
    def license_id(self) -> str | None:
        return self.license.license_id if self.license else None

    @property
    def no_trial(self) -> str:
        """Why there is no trial (its record does not verify), for refusals and the notice."""
        return f"No trial on this box: {'; '.join(self.reasons)}."

    @property
    def grace_until(self) -> float | None:
        """The end of a license's grace week; a trial has no grace."""
        return self.expires_at + GRACE_DAYS * DAY if self.expires_at is not None and self.license else None

    def refusal(self, action: str) -> LicensingError | None:
        """The error that stops this action now, if any."""
        try:
            self.check(action)
        except LicensingError as exc:
            return exc
        return None

    def next_plan(self) -> Plan | None:
        """The next package on the license's upgrade path, if auto-upgrade is on."""
        if not self.license or not self.license.auto_upgrade:
            return None
        path = list(self.license.upgrade_path)
        names = [p.name for p in path]
        if self.plan.name == self.license.plan.name and self.plan == self.license.plan:
            return path[0] if path else None
        if self.plan.name in names:
            i = names.index(self.plan.name)
            return path[i + 1] if i + 1 < len(path) else None
        return None

    def check(self, action: str) -> None:
        """Raise the LicensingError that stops this action, if any."""
        if action not in ACTIONS:
            raise LicensingError(f"Unknown action {action!r}.", code="unknown_action")
        if action in ALWAYS or self.state in ("trial", "active"):
            return
        if self.state == "restricted":
            raise LicenseRestricted(" ".join(self.reasons) or "The clock was set back.")
        if self.state == "grace":
            if action == "collection_manage":
                raise CollectionLocked(
                    f"The license expired on {iso(self.expires_at)}; until {iso(self.grace_until)} recognition "
                    "keeps working but uploads, edits and deletes are locked. Install a new license.")
            return
        if self.expires_at is None:  # no trial at all: its record does not verify
            raise LicenseExpired(f"{self.no_trial} Only license install, status, account and data export work.")
        what = "trial" if self.license is None else "license"
        raise LicenseExpired(f"The {what} expired on {iso(self.expires_at)}; only license install, status, "
                             "account and data export work. Install a new license.")

    def as_dict(self) -> dict[str, Any]:
        """For status pages and /readyz."""
        return {
            "state": self.state, "usable": self.usable, "reasons": self.reasons,
            "license_id": self.license_id, "customer": self.license.customer if self.license else None,
            "plan": self.plan.model_dump(), "expires_at": iso(self.expires_at), "grace_until": iso(self.grace_until),
            "overage": self.overage.model_dump(), "clock": iso(self.now),
        }


def verified_payload(armored: str, trusted: dict[str, Any], fingerprint: str) -> LicensePayload:
    """Re-verify a stored license (cached per process), so editing the database cannot extend it."""
    digest = hashlib.sha256(armored.encode()).hexdigest()
    cached = _payload_cache.get(digest)
    if cached is None:
        payload = files.read_signed(armored, trusted)
        if not isinstance(payload, LicensePayload):
            raise InvalidLicenseFile("The stored license is not a license.")
        if payload.box and payload.box != fingerprint:
            raise InvalidLicenseFile("The stored license belongs to another box.")
        cached = _payload_cache[digest] = payload
    return cached


def current_plan(db: sqlite_utils.Database, payload: LicensePayload) -> Plan:
    """The license's plan, or the one an upgrade moved it to."""
    moved = kv_get(db, f"plan:{payload.license_id}")
    return Plan.model_validate(moved) if moved else payload.plan


def evaluate(db: sqlite_utils.Database, options: LicensingOptions, now: float, *, write: bool = True) -> Policy:
    """Work out the state; with write=True (inside a write transaction) also advance the clock mark,
    start the trial on first use and record the expiry notice."""
    trusted = keys.trusted_keys(options.public_keys)
    fp = keys.fingerprint(options.state_dir)
    reasons: list[str] = []
    payload: LicensePayload | None = None
    rows = db.execute("SELECT id, armored FROM lic_licenses WHERE valid_from <= ? ORDER BY issued_at DESC",
                      [now]).fetchall()
    for _id, armored in rows:
        try:
            payload = verified_payload(armored, trusted, fp)
            break
        except InvalidLicenseFile as exc:
            reasons.append(f"license {_id} is not valid any more: {exc.detail}")
    if payload is not None:
        plan = current_plan(db, payload)
        until = parse_iso(payload.valid_until)
        state = "active" if now <= until else "grace" if now <= until + GRACE_DAYS * DAY else "expired"
        policy = Policy(state, now, plan, payload, until, payload.overage, reasons)
    else:
        if write:
            key = keys.install_key(options.licensing_dir)
            start, problem = trial.trial_start(db, options.licensing_dir, options.state_dir, key, fp, now,
                                               options.seal())
        else:
            text = kv_get(db, "trial_record")
            if not text:
                raise TrialNotRecorded
            start, problem = trial._read(text, keys.install_key(options.licensing_dir)), ""
        if problem:
            reasons.append(problem)
        expires_at = start + TRIAL_DAYS * DAY
        state = "trial" if now < expires_at and not problem else "expired"
        policy = Policy(state, now, TRIAL, None, expires_at, Overage(), reasons)
        if problem:  # no trial: no end date either, so no purge is scheduled from one
            policy.expires_at = None
            if write:
                policy.pending_notices += integrity.record(db, options.seal(), [integrity.Finding(
                    "trial_record_altered", problem, "trial:" + problem)], now)

    seal = options.seal()
    hwm, clock_problems = clock_mark(db, seal)
    if clock_problems:
        policy.reasons.append("the clock record " + "; ".join(clock_problems) + ": install a new license")
        policy.state = "restricted"
    elif hwm is not None and now < hwm - options.clock_tolerance_s:
        policy.reasons.append(f"the clock reads {iso(now)}, before {iso(hwm)} seen earlier: set the clock right "
                              "or install a new license")
        policy.state = "restricted"
    if write:
        if not clock_problems and (hwm is None or now > hwm):
            set_clock_mark(db, seal, now)
        if clock_problems:
            policy.pending_notices += integrity.record(db, seal, [integrity.Finding(
                "clock_record_altered", "the clock record " + "; ".join(clock_problems),
                "clock:" + "; ".join(clock_problems))], now)
        if policy.state == "restricted":
            _note(policy, db, f"clock:{int(hwm or 0) // 3600}", "clock_set_back", "Clock set back",
                  policy.reasons[-1])
        if policy.expires_at is not None and now > policy.expires_at and policy.state != "restricted":
            what = f"license {policy.license_id}" if policy.license else "trial"
            _note(policy, db, f"expired:{policy.license_id or 'trial'}:{int(policy.expires_at)}", "license_expired",
                  "License expired",
                  f"The {what} expired on {iso(policy.expires_at)}. Recognition keeps working until "
                  f"{iso(policy.grace_until)}; collection management is locked. Install a new license."
                  if policy.license else f"The {what} expired on {iso(policy.expires_at)}. Install a license.")
        elif policy.license is None and policy.state == "expired":
            _note(policy, db, "trial:record", "license_expired", "No trial", policy.no_trial)
    return policy


CLOCK_OUTSIDE_EVERY_S = 60.0


def clock_mark(db: sqlite_utils.Database, seal: Seal) -> tuple[float | None, list[str]]:
    """The latest time the box has seen: the higher of its sealed marks in the database and outside the data
    folder; and the marks that fail to verify (then the box stays restricted until a new license)."""
    outside, problem = seal.outside.read()
    problems = [f"outside the data folder ({problem})"] if problem else []
    out_t = (outside or {}).get("clock_hwm")
    marks = [float(out_t)] if out_t is not None else []
    raw = kv_get(db, "clock_hwm")
    if isinstance(raw, dict) and seal.valid(raw.get("mac"), "clock_hwm", raw.get("t")):
        marks.append(float(raw["t"]))
    elif isinstance(raw, int | float) and not isinstance(raw, bool) and out_t is None and not problem:
        marks.append(float(raw))  # a mark from before marks were sealed: taken once, then sealed
    elif raw is not None:
        problems.append("in the database was altered")
    return (max(marks) if marks else None), problems


def set_clock_mark(db: sqlite_utils.Database, seal: Seal, t: float, *, force: bool = False) -> None:
    """Seal the clock mark in the database, and outside the data folder when it moved a minute or more
    (force: a new license sets it, also lower, and replaces an altered record)."""
    kv_set(db, "clock_hwm", {"t": t, "mac": seal.mac("clock_hwm", t)})
    outside, _ = seal.outside.read()
    out_t = (outside or {}).get("clock_hwm")
    if force or out_t is None or t - float(out_t) >= CLOCK_OUTSIDE_EVERY_S:
        seal.outside.write(force=force, clock_hwm=t)


def _note(policy: Policy, db: sqlite_utils.Database, dedupe: str, kind: str, title: str, body: str) -> None:
    n = notices.record(db, dedupe, kind, title, body, at=policy.now, level="error")
    if n:
        policy.pending_notices.append(n)

