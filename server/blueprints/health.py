"""Health: /livez, /readyz and /metrics."""

from __future__ import annotations

from apiflask import APIBlueprint
from flask import Response, jsonify

from server import metrics
from server.readiness import run_checks

bp = APIBlueprint("health", __name__, tag="Health")
bp.rate_limited = False  # type: ignore[attr-defined]


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
            "checks": [{"name": r.name, "ok": r.ok, "detail": r.detail, "required": r.required} for r in results]}
    if not ready:
        failed = [f"{r.name}: {r.detail}" for r in results if r.required and not r.ok]
        body["errors"] = [{"code": "not_ready", "title": "Not ready", "detail": "; ".join(failed)}]
    resp = jsonify(body)
    resp.status_code = 200 if ready else 503
    return resp


@bp.get("/metrics")
@bp.doc(summary="Prometheus metrics", responses={200: {"description": "Prometheus text format",
                                                       "content": {"text/plain": {"schema": {"type": "string"}}}}})
def metrics_view() -> Response:
    """Prometheus exposition, merged over all workers."""
    data, content_type = metrics.render()
    return Response(data, content_type=content_type)
