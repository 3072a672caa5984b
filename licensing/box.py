"""The box's licensing: install files, report status, balances, remove.bg's account view, usage and its report."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import sqlite_utils

from core.sqlite import write_txn
from licensing import files, integrity, keys, ledger, notices, seal
from licensing.clock import iso, now, parse_iso, period_bounds, period_of
from licensing.db import kv_get, kv_set
from licensing.errors import (
    InvalidLicenseFile,
    IssuedInFuture,
    LicenseFileExpired,
    NotApplicable,
    ReplayedPack,
    SupersededLicense,
    WrongBox,
)
from licensing.files import CreditPackPayload, LicensePayload, UpgradePayload
from licensing.metering import Bucket, Meter
from licensing.options import LicensingOptions
from licensing.plans import CAPS, METRICS, MONTHLY
from licensing.state import Policy, TrialNotRecorded, evaluate, set_clock_mark


class LicenseBox:
    """Licensing for one box: its database, options and clock."""

    def __init__(self, db: sqlite_utils.Database, options: LicensingOptions,
                 clock: Callable[[], float] = now) -> None:
        self.db = db
        self.options = options
        self.clock = clock
        self.meter = Meter(db, options, clock)

    # identity
    @property
    def fingerprint(self) -> str:
        """This box's fingerprint, for the vendor's license request."""
        return keys.fingerprint(self.options.state_dir)

    @property
    def install_public_key(self) -> str:
        """The public half of the box's install key (base64), for the vendor's license request."""
        return keys.public_key_b64(keys.install_key(self.options.licensing_dir).public_key())

    # state
    def policy(self, *, write: bool = False) -> Policy:
        """The license state now; write=True also starts the trial, advances the clock mark and records notices."""
        if not write:
            try:
                return evaluate(self.db, self.options, self.clock(), write=False)
            except TrialNotRecorded:
                pass  # the very first look starts the trial
        with write_txn(self.db):
            policy = evaluate(self.db, self.options, self.clock())
        notices.dispatch(policy.pending_notices)
        return policy

    def state(self) -> dict[str, Any]:
        """Whether the license is usable, and why not, for /readyz."""
        p = self.policy()
        return {"usable": p.usable, "state": p.state, "reasons": p.reasons, "expires_at": iso(p.expires_at)}

    def check(self, action: str) -> None:
        """Raise the LicensingError that stops this action, if any."""
        self.policy().check(action)

    # install
    def install(self, text: str) -> dict[str, Any]:
        """Verify and install a license, credit pack or upgrade authorisation; refusals leave all as it was."""
        t = self.clock()
        payload = files.read_signed(text, keys.trusted_keys(self.options.public_keys))
        fp = self.fingerprint
        if payload.box and payload.box != fp:
            raise WrongBox(f"This file is for box {payload.box}; this box is {fp}. Ask the vendor for a file for "
                           "this box (run `forecourt license fingerprint`).")
        issued = parse_iso(payload.issued_at)
        if issued > t + self.options.clock_tolerance_s:
            raise IssuedInFuture(f"The file was issued at {payload.issued_at}, after this box's clock "
                                 f"({iso(t)}). Check the clock.")
        if isinstance(payload, CreditPackPayload):
            self._refuse_pack_replayed_elsewhere(payload, t)
        pending: list[notices.Notice] = []
        with integrity.guarded(self.db, self.options.seal(), t) as found:
            if isinstance(payload, LicensePayload):
                result = self._install_license(payload, text, t, pending)
            elif isinstance(payload, CreditPackPayload):
                result = self._install_pack(payload, text, t, pending)
            else:
                assert isinstance(payload, UpgradePayload)
                result = self._install_upgrade(payload, text, t, pending)
        if isinstance(payload, CreditPackPayload):
            seal.note_packs(self.options.state_dir, [payload.pack_id])
        notices.dispatch(found + pending)
        return result

    def _refuse_pack_replayed_elsewhere(self, p: CreditPackPayload, t: float) -> None:
        """A pack this machine installed in another data folder counts once: refuse it, as a tamper event."""
        if p.pack_id not in seal.installed_packs(self.options.state_dir):
            return
        if self.db.execute("SELECT 1 FROM lic_packs WHERE id = ?", [p.pack_id]).fetchone():
            return  # installed here: the usual replay answer follows
        with write_txn(self.db):
            pending = integrity.record(self.db, self.options.seal(), [integrity.Finding(
                "credit_pack_replayed", f"credit pack {p.pack_id} ({p.credits:g} credits), installed before on this "
                "machine in another data folder, was offered again and refused", f"pack:{p.pack_id}")], t)
        notices.dispatch(pending)
        raise ReplayedPack(f"Credit pack {p.pack_id} was installed before on this machine (in another data folder); "
                           "each pack counts once.")

    def _in_force(self, t: float) -> Policy:
        return evaluate(self.db, self.options, t)

    def _install_license(self, p: LicensePayload, text: str, t: float, pending: list[notices.Notice]) -> dict[str, Any]:
        valid_from, valid_until = parse_iso(p.valid_from), parse_iso(p.valid_until)
        if valid_until <= valid_from:
            raise InvalidLicenseFile("The license ends before it starts.")
        if valid_until <= t:
            raise LicenseFileExpired(f"The license's validity ended on {p.valid_until}, before this box's clock "
                                     f"({iso(t)}); it was not installed and the license or trial in force stays. "
                                     "Ask the vendor for a current license.")
        same = self.db.execute("SELECT armored FROM lic_licenses WHERE id = ?", [p.license_id]).fetchone()
        if same is not None:
            if same[0] == text:
                return {"kind": "license", "id": p.license_id, "installed": False,
                        "message": f"License {p.license_id} is already installed."}
            raise SupersededLicense(f"Another file with license id {p.license_id} is already installed.")
        newest = self.db.execute("SELECT id, issued_at FROM lic_licenses ORDER BY issued_at DESC LIMIT 1").fetchone()
        issued = parse_iso(p.issued_at)
        if newest is not None and issued <= newest[1]:
            raise SupersededLicense(f"License {newest[0]}, issued {iso(newest[1])}, is newer than this one "
                                    f"(issued {p.issued_at}); it stays in force.")
        self.db.table("lic_licenses").insert({
            "id": p.license_id, "customer": p.customer, "issued_at": issued, "valid_from": valid_from,
            "valid_until": valid_until, "payload": json.dumps(p.model_dump()), "armored": text,
            "key_id": files.envelope_key_id(text), "installed_at": t,
        })
        set_clock_mark(self.db, self.options.seal(), t, force=True)  # a new license clears a restricted clock
        policy = self._in_force(t)
        if policy.license_id == p.license_id:
            self.meter.rebase(policy.plan, policy, t)
        ledger.append(self.db, "license", seal=self.options.seal(), at=t, period=period_of(t), ref=p.license_id,
                      data={"customer": p.customer, "plan": p.plan.name, "valid_from": p.valid_from,
                            "valid_until": p.valid_until, "box": p.box})
        n = notices.record(self.db, f"license:{p.license_id}", "license_installed", "License installed",
                           f"License {p.license_id} for {p.customer}, plan {p.plan.name}, valid {p.valid_from} to "
                           f"{p.valid_until}.", at=t, level="info")
        if n:
            pending.append(n)
        pending += policy.pending_notices
        return {"kind": "license", "id": p.license_id, "installed": True,
                "message": f"License {p.license_id} installed; plan {p.plan.name} until {p.valid_until}."}

    def _install_pack(self, p: CreditPackPayload, text: str, t: float, pending: list[notices.Notice]) -> dict[str, Any]:
        if self.db.execute("SELECT 1 FROM lic_packs WHERE id = ?", [p.pack_id]).fetchone():
            raise ReplayedPack(f"Credit pack {p.pack_id} was installed before; each pack counts once.")
        policy = self._in_force(t)
        if policy.license and policy.license.customer != p.customer:
            raise NotApplicable(f"The pack is for {p.customer}; the license in force is for "
                                f"{policy.license.customer}.")
        valid_until = parse_iso(p.valid_until)
        if valid_until <= t:
            raise InvalidLicenseFile(f"The credit pack expired on {p.valid_until}.")
        self.db.table("lic_packs").insert({"id": p.pack_id, "customer": p.customer, "credits": p.credits,
                                     "issued_at": parse_iso(p.issued_at), "valid_until": valid_until,
                                     "armored": text, "installed_at": t})
        self.db.table("lic_buckets").insert({"id": f"payg:{p.pack_id}", "metric": "credits", "kind": "payg",
                                       "allowance": p.credits, "granted": p.credits, "used": 0.0, "reserved": 0.0,
                                       "valid_until": valid_until, "created_at": t})
        ledger.append(self.db, "grant", seal=self.options.seal(), at=t, metric="credits", amount=p.credits,
                      bucket=f"payg:{p.pack_id}",
                      period=period_of(t), ref=p.pack_id, data={"payg": True, "valid_until": p.valid_until})
        return {"kind": "credit_pack", "id": p.pack_id, "installed": True,
                "message": f"Credit pack {p.pack_id}: {p.credits:g} credits until {p.valid_until}."}

    def _install_upgrade(self, p: UpgradePayload, text: str, t: float, pending: list[notices.Notice]) -> dict[str, Any]:
        if self.db.execute("SELECT 1 FROM lic_upgrades WHERE id = ?", [p.upgrade_id]).fetchone():
            raise ReplayedPack(f"Upgrade authorisation {p.upgrade_id} was installed before.",
                               code="upgrade_replayed", title="Upgrade already installed")
        policy = self._in_force(t)
        if policy.license_id != p.license_id:
            raise NotApplicable(f"The upgrade is for license {p.license_id}; the license in force is "
                                f"{policy.license_id or 'none (trial)'}.")
        self.db.table("lic_upgrades").insert({"id": p.upgrade_id, "license_id": p.license_id,
                                        "plan": json.dumps(p.plan.model_dump()), "issued_at": parse_iso(p.issued_at),
                                        "armored": text, "installed_at": t})
        old = policy.plan
        kv_set(self.db, f"plan:{p.license_id}", p.plan.model_dump())
        policy.plan = p.plan
        self.meter.rebase(p.plan, policy, t)
        ledger.append(self.db, "upgrade", seal=self.options.seal(), at=t, period=period_of(t), ref=p.license_id,
                      data={"from": old.name, "to": p.plan.name, "authorisation": p.upgrade_id, "auto": False})
        n = notices.record(self.db, f"upgrade:{p.upgrade_id}", "plan_upgraded", "Plan upgraded",
                           f"License {p.license_id} moved from plan {old.name} to {p.plan.name}.", at=t,
                           level="info")
        if n:
            pending.append(n)
        return {"kind": "upgrade", "id": p.upgrade_id, "installed": True,
                "message": f"Plan changed from {old.name} to {p.plan.name}."}

    # balances and views
    def balances(self) -> dict[str, Any]:
        """This period's balance per metric (read-only: a balance not made yet shows what it would be, one whose
        seal fails what the next check will set)."""
        t = self.clock()
        policy = self.policy()
        fixes = integrity.live_view(self.db, self.options.seal(), t)
        out: dict[str, Any] = {}
        for metric in METRICS:
            if metric in CAPS:
                b = self.meter.cap_bucket(policy, metric, t, write=False)
                b = _fixed(b, fixes)
                out[metric] = {"cap": b.granted, "stored": b.used, "reserved": b.reserved,
                               "remaining": None if b.granted is None else max(b.free, 0.0)}
                continue
            sub = self.meter.subscription_bucket(policy, metric, t, write=False)
            sub = _fixed(sub, fixes)
            entry: dict[str, Any] = {
                "period": sub.period, "allowance": sub.allowance, "granted": sub.granted, "used": sub.used,
                "reserved": sub.reserved, "remaining": None if sub.granted is None else max(sub.free, 0.0),
            }
            over = self.db.execute("SELECT granted, used FROM lic_buckets WHERE id = ?",
                                   [f"over:{metric}:{sub.period}"]).fetchone()
            entry["overage"] = {"policy": policy.overage.policy, "factor": policy.overage.factor,
                                "used": over[1] if over else 0.0}
            out[metric] = entry
        packs = [(r[0], *(fixes[r[0]][k] for k in ("granted", "used", "reserved")), r[4]) if r[0] in fixes else r
                 for r in self.db.execute("SELECT id, granted, used, reserved, valid_until FROM lic_buckets "
                                          "WHERE kind = 'payg' ORDER BY valid_until")]
        out["credits"]["payg"] = [
            {"pack_id": r[0].removeprefix("payg:"), "credits": r[1], "used": r[2], "reserved": r[3],
             "remaining": max(r[1] - r[2] - r[3], 0.0) if r[4] > t else 0.0, "valid_until": iso(r[4])}
            for r in packs
        ]
        return out

    def status(self) -> dict[str, Any]:
        """Everything an admin wants to see: state, license, plan, balances, box identity."""
        policy = self.policy(write=True)
        refused = policy.refusal("background_removal")
        return {**policy.as_dict(), "fingerprint": self.fingerprint, "install_key": self.install_public_key,
                "refusal": {"code": refused.code, "detail": refused.detail} if refused else None,
                "balances": self.balances(),
                "upgrade_path": [p.name for p in policy.license.upgrade_path] if policy.license else []}

    def account(self) -> dict[str, Any]:
        """remove.bg's GET /v1.0/account body: usable credits, so 0 while the box refuses background removal."""
        credits = self.balances()["credits"]
        refused = self.policy().refusal("background_removal") is not None
        sub = 0.0 if refused else credits["remaining"]
        payg = 0.0 if refused else sum(p["remaining"] for p in credits["payg"])
        subscription = round(sub, 4) if sub is not None else 0.0
        return {"data": {"attributes": {
            "credits": {"total": round(subscription + payg, 4), "subscription": subscription,
                        "payg": round(payg, 4), "enterprise": 0},
            "api": {"free_calls": 0, "sizes": "all"},
        }}}

    def usage(self, period: str | None = None, *, key_id: str | None = None) -> dict[str, Any]:
        """Charged amounts for a period from the ledger, per metric and per kind of balance (and per key)."""
        period = period or period_of(self.clock())
        period_bounds(period)  # validates YYYY-MM
        where, args = "kind = 'charge' AND period = ?", [period]
        if key_id:
            where += " AND key_id = ?"
            args.append(key_id)
        metrics: dict[str, Any] = {m: {"used": 0.0, "subscription": 0.0, "payg": 0.0, "overage": 0.0, "cap": 0.0}
                                   for m in METRICS}
        for metric, kind, total in self.db.execute(
                f"SELECT metric, json_extract(data, '$.kind'), sum(amount) FROM lic_ledger WHERE {where} "
                "GROUP BY metric, json_extract(data, '$.kind')", args):
            metrics[metric][kind] = round(total, 6)
            metrics[metric]["used"] = round(metrics[metric]["used"] + total, 6)
        rows = self.db.execute(f"SELECT key_id, metric, sum(amount), count(DISTINCT ref) FROM lic_ledger WHERE {where} "
                               "GROUP BY key_id, metric", args).fetchall()
        by_key: dict[str, dict[str, Any]] = {}
        for k, m, total, requests in rows:
            by_key.setdefault(k or "none", {})[m] = {"used": round(total, 6), "requests": requests}
        upgrades = [json.loads(d) for (d,) in self.db.execute(
            "SELECT data FROM lic_ledger WHERE kind = 'upgrade' AND period = ? ORDER BY seq", [period])]
        for m in MONTHLY:
            metrics[m].pop("cap", None)
        return {"period": period, "metrics": metrics, "by_key": by_key, "upgrades": upgrades}

    def integrity_check(self) -> list[dict[str, Any]]:
        """Check the ledger and every balance against it; record what was altered as tamper events (the ledger's
        figures win), note the installed packs and the ledger's head outside the data folder. Returns the events."""
        t = self.clock()
        s = self.options.seal()
        with write_txn(self.db):
            ledger.ensure_keyed(self.db, s)
            pending = integrity.check_all(self.db, s, t)
            ledger.checkpoint(self.db, s)  # what was found is recorded; watch from here
        notices.dispatch(pending)
        seal.note_packs(self.options.state_dir, [r[0] for r in self.db.execute("SELECT id FROM lic_packs")])
        return integrity.tamper_events(self.db)

    def usage_report(self, period: str) -> str:
        """The period's usage, signed with the box's install key, for the vendor's bill; with the ledger's check,
        every tamper event found so far and the credit packs installed (bound to this box or not)."""
        events = self.integrity_check()
        policy = self.policy()
        check = ledger.verify(self.db, self.options.seal())
        head = kv_get(self.db, "ledger_head") or {"seq": 0, "hash": ledger.GENESIS}
        packs = [{"pack_id": pid, "credits": credits, "installed_at": iso(at), "bound": _pack_box(armored) is not None}
                 for pid, credits, at, armored in self.db.execute(
                "SELECT id, credits, installed_at, armored FROM lic_packs ORDER BY installed_at")]
        payload = {
            "box": self.fingerprint, "install_key": self.install_public_key, "period": period,
            "generated_at": iso(self.clock()), "license_id": policy.license_id,
            "customer": policy.license.customer if policy.license else None, "plan": policy.plan.name,
            "usage": self.usage(period), "ledger": {"entries": check.entries, "verified": check.ok,
                                                    "problem": check.problem, "head": head["hash"]},
            "tamper_events": events, "credit_packs": packs,
        }
        return files.self_signed("usage_report", payload, keys.install_key(self.options.licensing_dir))


def _fixed(b: Bucket, fixes: dict[str, dict[str, float | None]]) -> Bucket:
    """A balance with the figures its failed seal's check will set."""
    f = fixes.get(b.id)
    return b if f is None else replace(b, used=float(f["used"] or 0.0), reserved=float(f["reserved"] or 0.0),
                                       granted=f["granted"])


def _pack_box(armored: str) -> str | None:
    """The box a stored credit pack is bound to (None: the vendor issued it unbound)."""
    payload = json.loads(base64.b64decode(files.unarmor(armored)[1]["payload"]))
    return payload.get("box")


def read_usage_report(text: str, install_key_b64: str | None = None) -> dict[str, Any]:
    """Verify a usage report (against the install key from the license request when given) and return it."""
    key = keys.load_public_key(install_key_b64) if install_key_b64 else None
    payload = files.read_self_signed(text, "usage_report", key)
    return payload
