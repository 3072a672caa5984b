"""Health: /livez, /readyz and /metrics."""

from __future__ import annotations

import ipaddress

from apiflask import APIBlueprint
from flask import Flask, Response, jsonify, request

from server import metrics
from server.auth import API_KEY_SECURITY, key_principal
from server.blueprints import register
from server.config import get_settings
from server.errors import Forbidden, Unauthorized
from server.readiness import CheckResult, register_check, run_checks
from server.store import get_db

bp = APIBlueprint("health", __name__, tag="Health")


def init_app(app: Flask) -> None:
    """The probes (never rate limited) and the database's readiness check."""
    register(app, bp, rate_limited=False)
    register_check(app, _database_check)


def _database_check() -> CheckResult:
    get_db().execute("SELECT 1").fetchone()
    return CheckResult("database", True, "reachable")


@bp.get("/livez")
@bp.doc(summary="Process is up", responses={200: "The process answers."})
def livez() -> Response:
    """The process is up."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
@bp.doc(summary="Ready to serve", responses={200: "Database, models and license are usable.",
                                             503: "Not ready; the reasons are listed."})
def readyz() -> Response:
    """Database reachable, models loaded, license usable; 503 with the reasons otherwise."""
    results = run_checks()
    ready = all(r.ok for r in results if r.required)
    body = {"status": "ready" if ready else "not_ready",
            "checks": [{"name": r.name, "ok": r.ok, "detail": r.detail, "required": r.required,
                        **({"warning": r.warning} if r.warning else {})} for r in results]}
    warnings = [f"{r.name}: {r.warning}" for r in results if r.warning]
    if warnings:
        body["warnings"] = warnings
    if not ready:
        failed = [f"{r.name}: {r.detail}" for r in results if r.required and not r.ok]
        body["errors"] = [{"code": "not_ready", "title": "Not ready", "detail": "; ".join(failed)}]
    resp = jsonify(body)
    resp.status_code = 200 if ready else 503
    return resp


def _from_this_machine() -> bool:
    """A loopback client that no proxy forwarded (a proxy on the box would make every client look local)."""
    if any(h in request.headers for h in ("X-Forwarded-For", "Forwarded", "X-Real-Ip")):
        return False
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


@bp.get("/metrics")
@bp.doc(summary="Prometheus metrics", security=API_KEY_SECURITY,
        responses={200: {"description": "Prometheus text format",
                         "content": {"text/plain": {"schema": {"type": "string"}}}},
                   403: "Not public ([metrics] public = false): send an admin's API key"})
def metrics_view() -> Response:
    """Prometheus exposition, merged over all workers. Open only with [metrics] public = true; otherwise an
    admin's API key, or a request from this machine itself."""
    if not get_settings().metrics.public and not _from_this_machine():
        principal = key_principal()
        if principal is None:
            raise Unauthorized("/metrics is not public on this server: send an admin's API key in X-Api-Key or "
                               "Authorization: Bearer (or set [metrics] public = true).")
        if not principal.is_admin:
            raise Forbidden("/metrics needs an admin's API key.", code="admin_required", title="Admin only")
    data, content_type = metrics.render()
    return Response(data, content_type=content_type)
