"""Licensing API: remove.bg's account view, license install and status, usage, notices, and a metering probe."""

from __future__ import annotations

import re
import time
from typing import Any, Literal

from apiflask import APIBlueprint
from flask import Flask, Response, g
from pydantic import BaseModel, ConfigDict, Field

from licensing import ledger
from licensing import notices as notice_store
from server.auth import API_KEY_SECURITY, require_admin_key, require_key
from server.blueprints import register
from server.errors import BadRequest
from server.services import licensing as service
from server.services.metering import charge

bp = APIBlueprint("licensing", __name__, tag="Licensing")
PERIOD_RE = re.compile(r"^(19|2\d)\d\d-(0[1-9]|1[0-2])$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreditsOut(BaseModel):
    total: float
    subscription: float
    payg: float
    enterprise: float


class ApiOut(BaseModel):
    free_calls: int
    sizes: str


class AccountAttributes(BaseModel):
    credits: CreditsOut
    api: ApiOut


class AccountData(BaseModel):
    attributes: AccountAttributes


class AccountOut(BaseModel):
    """remove.bg's account answer."""

    data: AccountData


class LicenseIn(_Strict):
    model_config = ConfigDict(extra="forbid", strict=True)

    license: str = Field(min_length=1, max_length=200_000,
                         description="The armoured file text: a license, credit pack or upgrade authorisation.")


class InstallOut(BaseModel):
    kind: str
    id: str
    installed: bool
    message: str
    status: dict[str, Any]


class StatusOut(BaseModel):
    state: str
    usable: bool
    reasons: list[str]
    license_id: str | None
    customer: str | None
    plan: dict[str, Any]
    expires_at: str | None
    grace_until: str | None
    overage: dict[str, Any]
    clock: str | None
    fingerprint: str
    install_key: str
    balances: dict[str, Any]
    upgrade_path: list[str]
    refusal: dict[str, str] | None = Field(None, description="Why background removal is refused now (code, "
                                                              "detail); null while the box does its work.")


class PeriodQuery(_Strict):
    period: str | None = Field(None, pattern=r"^(19|2\d)\d\d-(0[1-9]|1[0-2])$", description="YYYY-MM; default: now.")


class UsageOut(BaseModel):
    period: str
    metrics: dict[str, dict[str, float]]
    by_key: dict[str, dict[str, Any]]
    upgrades: list[dict[str, Any]]


class NoticeOut(BaseModel):
    id: int
    kind: str
    level: str | None
    title: str
    body: str | None
    data: dict[str, Any]
    created_at: float
    read_at: float | None


class NoticeListOut(BaseModel):
    notices: list[NoticeOut]


class LedgerOut(BaseModel):
    ok: bool
    entries: int
    problem: str


class ProbeIn(_Strict):
    model_config = ConfigDict(extra="forbid", strict=True)

    metric: Literal["credits", "scans", "uploads"] = "credits"
    amount: float = Field(1.0, gt=0, le=1000)
    hold_ms: int = Field(0, ge=0, le=10_000, description="Sleep this long while the charge is reserved.")
    fail: bool = Field(False, description="Fail after reserving (the charge is refunded).")
    metered: bool = Field(True, description="False: the same request without a charge (for benchmarks).")


class ProbeOut(BaseModel):
    reservation_id: str
    metric: str
    amount: float
    request_id: str


def _account() -> dict[str, Any]:
    return service.box().account()


@bp.get("/v1.0/account")
@bp.output(AccountOut)
@bp.doc(security=API_KEY_SECURITY, responses=[403, 429])
@require_key
def account_v10() -> dict[str, Any]:
    """Credit balance, in remove.bg's shape."""
    return _account()


@bp.get("/v1/account")
@bp.output(AccountOut)
@bp.doc(security=API_KEY_SECURITY, responses=[403, 429])
@require_key
def account() -> dict[str, Any]:
    """Credit balance, in remove.bg's shape."""
    return _account()


@bp.get("/v1/licensing/status")
@bp.output(StatusOut)
@bp.doc(security=API_KEY_SECURITY, responses=[403, 429])
@require_admin_key
def status() -> dict[str, Any]:
    """License state, plan, balances and this box's fingerprint and install key."""
    return service.box().status()


@bp.post("/v1/licensing/license")
@bp.input(LicenseIn, location="json")
@bp.output(InstallOut)
@bp.doc(security=API_KEY_SECURITY, responses=[400, 403, 409, 429])
@require_admin_key
def install(json_data: LicenseIn) -> dict[str, Any]:
    """Install a license file, credit pack or upgrade authorisation (refusals keep the license in force)."""
    b = service.box()
    result = b.install(json_data.license)
    return {**result, "status": b.status()}


@bp.get("/v1/usage")
@bp.input(PeriodQuery, location="query")
@bp.output(UsageOut)
@bp.doc(security=API_KEY_SECURITY, responses=[400, 403, 429])
@require_key
def usage(query_data: PeriodQuery) -> dict[str, Any]:
    """Charged usage per metric for a period; admins see the box, members their own keys."""
    key_id = None if g.principal.is_admin else (g.principal.key_id or "-")
    return service.box().usage(query_data.period, key_id=key_id)


@bp.get("/v1/usage/report")
@bp.input(PeriodQuery, location="query")
@bp.doc(security=API_KEY_SECURITY, responses={
    200: {"description": "The period's usage report, signed with this box's install key (armoured text).",
          "content": {"text/plain": {"schema": {"type": "string"}}}},
    400: "Bad request", 403: "Forbidden", 429: "Too many requests"})
@require_admin_key
def usage_report(query_data: PeriodQuery) -> Response:
    """Signed usage report for the vendor's bill."""
    b = service.box()
    period = query_data.period or time.strftime("%Y-%m", time.gmtime())
    if not PERIOD_RE.match(period):
        raise BadRequest("period must be YYYY-MM.")
    return Response(b.usage_report(period), mimetype="text/plain")


@bp.get("/v1/licensing/notices")
@bp.output(NoticeListOut)
@bp.doc(security=API_KEY_SECURITY, responses=[403, 429])
@require_admin_key
def list_notices() -> dict[str, Any]:
    """Licensing notices (80% budget, pay-as-you-go, expiry, purge, upgrades), newest first."""
    return {"notices": notice_store.list_notices(service.box().db)}


@bp.get("/v1/licensing/ledger")
@bp.output(LedgerOut)
@bp.doc(security=API_KEY_SECURITY, responses=[403, 429])
@require_admin_key
def verify_ledger() -> dict[str, Any]:
    """Check the usage ledger's hash chain."""
    b = service.box()
    v = ledger.verify(b.db, b.options.seal())
    return {"ok": v.ok, "entries": v.entries, "problem": v.problem}


@bp.post("/v1/metering/probe")
@bp.input(ProbeIn, location="json")
@bp.output(ProbeOut)
@bp.doc(security=API_KEY_SECURITY, responses=[400, 402, 403, 429])
@require_admin_key
def metering_probe(json_data: ProbeIn) -> dict[str, Any]:
    """Admin diagnostic: a metered request that does no work (charges real allowance; used to test metering)."""
    def work() -> None:
        if json_data.hold_ms:
            time.sleep(json_data.hold_ms / 1000)
        if json_data.fail:
            raise BadRequest("The probe failed as asked; its charge was refunded.", code="probe_failed")

    if not json_data.metered:
        work()
        return {"reservation_id": "", "metric": json_data.metric, "amount": 0.0,
                "request_id": g.get("request_id", "")}
    with charge(json_data.metric, json_data.amount) as c:
        work()
    return {"reservation_id": c.reservation_id, "metric": c.metric, "amount": c.amount,
            "request_id": g.get("request_id", "")}


def init_app(app: Flask) -> None:
    """The licensing API, and licensing's trial start, notices, readiness check, API guard and scheduled ticks."""
    register(app, bp)
    service.init_app(app)
