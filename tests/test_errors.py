"""One error shape for every failure, on every route."""

from __future__ import annotations

import re

import pytest

from tests.helpers import assert_error_shape


def _concrete(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", lambda m: "1" if "id" in m.group(1) else "x", rule)


def test_every_api_route_answers_failures_in_the_one_shape(app, client) -> None:
    """Walk the URL map: unauthenticated calls, wrong keys and wrong methods all answer in the error shape."""
    walked = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint in ("static", "openapi.spec", "openapi.docs") or rule.rule.startswith("/static"):
            continue
        path = _concrete(rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            for headers in ({}, {"X-Api-Key": "fc_wrong"}):
                resp = client.open(path, method=method, headers=headers, json={"bogus": True})
                if resp.status_code >= 400 and resp.is_json:
                    assert_error_shape(resp)
                    walked += 1
                elif resp.status_code >= 400:
                    # only dashboard pages may answer in HTML (they are for browsers)
                    assert rule.endpoint.startswith("dashboard."), (method, path, resp.status_code)
        unused = sorted({"GET", "POST", "PUT", "PATCH", "DELETE"} - (rule.methods or set()))
        if unused:
            resp = client.open(path, method=unused[0])
            if resp.status_code == 405:
                assert_error_shape(resp, 405)
    assert walked > 15


def test_404_405_413_and_bad_json(client, admin) -> None:
    assert assert_error_shape(client.get("/no/such/thing"), 404)["code"] == "not_found"
    assert assert_error_shape(client.delete("/livez"), 405)["code"] == "method_not_allowed"
    big = b"x" * (41 * 1024 * 1024)
    resp = client.post("/v1/keys", data=big, headers={**admin.headers, "Content-Type": "application/octet-stream"})
    assert assert_error_shape(resp, 413)["code"] == "file_too_large"
    resp = client.post("/v1/keys", data="{not json", headers={**admin.headers, "Content-Type": "application/json"})
    assert assert_error_shape(resp, 400)["code"] == "invalid_parameters"
    resp = client.post("/v1/keys", json={"name": 7}, headers=admin.headers)
    err = assert_error_shape(resp, 400)
    assert "name" in err["detail"]


def test_unexpected_exception_is_a_500_in_the_shape_without_traceback(app, client) -> None:
    @app.get("/boom-for-test")
    def boom():
        raise RuntimeError("secret internals")

    resp = client.get("/boom-for-test")
    err = assert_error_shape(resp, 500)
    assert err["code"] == "internal_error"
    assert "secret internals" not in resp.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/v1/me", "/v1/keys"])
def test_missing_and_wrong_key_are_403(client, path: str) -> None:
    assert assert_error_shape(client.get(path), 403)["code"] == "auth_failed"
    assert assert_error_shape(client.get(path, headers={"X-Api-Key": "fc_nope"}), 403)["code"] == "auth_failed"
    assert assert_error_shape(client.get(path, headers={"Authorization": "Bearer nope"}), 403)["code"] == "auth_failed"
