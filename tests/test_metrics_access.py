"""/metrics is open only with [metrics] public = true; otherwise an admin's key, or a request from the box itself."""

from __future__ import annotations

import pytest

from server import create_app
from tests.helpers import assert_error_shape

REMOTE = {"REMOTE_ADDR": "203.0.113.7"}


def test_metrics_from_another_machine_need_an_admin_key(client, admin, member) -> None:
    resp = client.get("/metrics", environ_base=REMOTE)
    assert assert_error_shape(resp, 403)["code"] == "auth_failed"
    assert "forecourt_http_requests_total" not in resp.get_data(as_text=True)
    resp = client.get("/metrics", environ_base=REMOTE, headers=member.headers)
    assert assert_error_shape(resp, 403)["code"] == "admin_required"
    resp = client.get("/metrics", environ_base=REMOTE, headers={"Authorization": f"Bearer {admin.key}"})
    assert resp.status_code == 200 and "forecourt_http_requests_total" in resp.get_data(as_text=True)
    resp = client.get("/metrics", environ_base=REMOTE, headers=admin.headers)
    assert resp.status_code == 200


def test_metrics_from_this_machine_need_no_key_unless_forwarded_by_a_proxy(client) -> None:
    for addr in ("127.0.0.1", "::1"):
        resp = client.get("/metrics", environ_base={"REMOTE_ADDR": addr})
        assert resp.status_code == 200 and resp.content_type.startswith("text/plain")
    # a proxy on the box makes every client look local: what it forwards is treated as remote
    for header in ({"X-Forwarded-For": "198.51.100.4"}, {"Forwarded": "for=198.51.100.4"},
                   {"X-Real-IP": "198.51.100.4"}):
        resp = client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}, headers=header)
        assert assert_error_shape(resp, 403)["code"] == "auth_failed", header


@pytest.fixture
def public_client(settings_dict: dict):
    app = create_app({**settings_dict, "metrics": {"public": True}})
    app.config["TESTING"] = True
    return app.test_client()


def test_public_metrics_answer_anyone(public_client) -> None:
    resp = public_client.get("/metrics", environ_base=REMOTE)
    assert resp.status_code == 200 and "forecourt_http_request_duration_seconds" in resp.get_data(as_text=True)
    resp = public_client.get("/metrics", environ_base=REMOTE, headers={"X-Forwarded-For": "198.51.100.4"})
    assert resp.status_code == 200


def test_the_setting_defaults_to_private() -> None:
    from server.config import load_settings

    assert load_settings(environ={}).metrics.public is False
    assert load_settings(environ={"FORECOURT_METRICS__PUBLIC": "true"}).metrics.public is True
