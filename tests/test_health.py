"""Health: livez, readyz with reasons, metrics."""

from __future__ import annotations

from server.readiness import CheckResult, register_check


def test_livez_and_readyz(client) -> None:
    assert client.get("/livez").get_json() == {"status": "ok"}
    body = client.get("/readyz").get_json()
    assert {c["name"] for c in body["checks"]} >= {"database"}
    db = next(c for c in body["checks"] if c["name"] == "database")
    assert db["ok"] is True


def test_readyz_is_503_with_reasons_when_a_required_check_fails(app, client) -> None:
    register_check(app, lambda: CheckResult("license", False, "license expired on 2026-01-01"))
    register_check(app, lambda: CheckResult("sam", False, "not installed (optional)", required=False))
    resp = client.get("/readyz")
    assert resp.status_code == 503
    body = resp.get_json()
    assert body["status"] == "not_ready"
    assert "license: license expired on 2026-01-01" in body["errors"][0]["detail"]
    assert "sam" not in body["errors"][0]["detail"]


def test_readyz_reports_a_crashing_check_as_failed(app, client) -> None:
    def broken() -> CheckResult:
        raise OSError("disk gone")

    register_check(app, broken)
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert "disk gone" in resp.get_json()["errors"][0]["detail"]


def test_metrics_count_requests_by_route_and_status(client, member) -> None:
    client.get("/v1/me", headers=member.headers)
    client.get("/v1/me")
    text = client.get("/metrics").get_data(as_text=True)
    assert 'forecourt_http_requests_total{method="GET",route="/v1/me",status="200"}' in text
    assert 'forecourt_http_requests_total{method="GET",route="/v1/me",status="403"}' in text
    assert "forecourt_http_request_duration_seconds_bucket" in text
