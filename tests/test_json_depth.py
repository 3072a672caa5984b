"""Deeply nested JSON is a 400 invalid_parameters on every route, before any work, never a RecursionError 500."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from PIL import Image

from server import json_limits
from tests.helpers import assert_error_shape
from tests.test_errors import _concrete

BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def body_routes(app) -> list[tuple[str, str, str]]:
    """(method, concrete path, endpoint) of every route that takes a body, from the URL map (new routes included)."""
    out = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        for method in sorted((rule.methods or set()) & BODY_METHODS):
            out.append((method, _concrete(rule.rule), rule.endpoint))
    return out


def test_the_walk_covers_every_json_route_of_the_openapi_description(app, client) -> None:
    """Every operation the OpenAPI description gives a JSON body is among the routes the depth test walks."""
    walked = {(m, app.url_map.bind("").match(p, method=m)[0]) for m, p, _ in body_routes(app)}
    spec = client.get("/openapi.json").get_json()
    json_ops = 0
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if "application/json" in (op.get("requestBody") or {}).get("content", {}):
                json_ops += 1
                concrete = _concrete(path.replace("{", "<").replace("}", ">"))
                endpoint = app.url_map.bind("").match(concrete, method=method.upper())[0]
                assert (method.upper(), endpoint) in walked, (method, path)
    assert json_ops >= 15
    for must in ("/v1/password-reset", "/v1/vehicles", "/v1/collections", "/v1.0/removebg", "/v1/keys",
                 "/v1/licensing/license"):
        assert ("POST", app.url_map.bind("").match(must, method="POST")[0]) in walked


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_every_body_route_refuses_deep_json_with_or_without_a_key(app, client, admin, caplog, depth: int) -> None:
    caplog.set_level(logging.ERROR)
    routes = body_routes(app)
    assert len(routes) > 40
    for method, path, endpoint in routes:
        for headers in ({}, admin.headers):
            resp = client.open(path, method=method, data=nested(depth), content_type="application/json",
                               headers=headers)
            if endpoint.startswith("dashboard.") and not resp.is_json:  # pages for browsers answer in HTML
                assert resp.status_code == 400 and f"nested {depth} levels" in resp.get_data(as_text=True)
                continue
            err = assert_error_shape(resp, 400)
            assert err["code"] == "invalid_parameters", (method, path, err)
            assert f"nested {depth} levels" in err["detail"], (method, path, err)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no traceback logged


def test_deep_json_is_refused_before_any_work(app, client, admin) -> None:
    """Nothing is created: the key list is what it was."""
    before = client.get("/v1/keys", headers=admin.headers).get_json()
    body = b'{"name": "k", "x": ' + nested(5000) + b"}"
    resp = client.post("/v1/keys", data=body, content_type="application/json", headers=admin.headers)
    assert assert_error_shape(resp, 400)["code"] == "invalid_parameters"
    assert client.get("/v1/keys", headers=admin.headers).get_json() == before


def test_deep_json_in_a_vendor_json_type_is_refused(client) -> None:
    resp = client.post("/v1/password-reset", data=nested(1000), content_type="application/merge-patch+json")
    assert assert_error_shape(resp, 400)["code"] == "invalid_parameters"


def test_nesting_up_to_the_limit_is_accepted(client, admin) -> None:
    """Metadata nested to the limit is stored and read back (the limit refuses hostility, not structure)."""
    value: object = "deep"
    for _ in range(json_limits.MAX_DEPTH - 1):  # the body object adds one level
        value = [value]
    resp = client.post("/v1/collections", json={"name": "deep", "metadata": {"x": "[[[[ in a string"}},
                       headers=admin.headers)
    assert resp.status_code in (200, 201), resp.get_data(as_text=True)
    resp = client.post("/v1/vehicles", json={"vin": "1HGCM82633A004352", "metadata": {"v": value[0]}},
                       headers=admin.headers)
    assert resp.status_code == 201, resp.get_data(as_text=True)
    assert resp.get_json()["metadata"]["v"] == value[0]
    one_more = b'{"vin": "1FTFW1ET9DFC10312", "metadata": {"v": ' + nested(json_limits.MAX_DEPTH) + b"}}"
    resp = client.post("/v1/vehicles", data=one_more, content_type="application/json", headers=admin.headers)
    assert assert_error_shape(resp, 400)["code"] == "invalid_parameters"


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_deep_json_in_form_fields_is_a_400(client, admin) -> None:
    """JSON carried in multipart fields (refine_points, plate_regions, segment prompts) is bounded too."""
    resp = client.post("/v1.0/removebg", headers=admin.headers, content_type="multipart/form-data",
                       data={"image_file": (io.BytesIO(_png()), "a.png"), "refine_points": nested(100_000).decode()})
    assert assert_error_shape(resp, 400)["code"] == "invalid_refine_points"
    resp = client.post("/v1/segment", headers=admin.headers, content_type="multipart/form-data",
                       data={"image_file": (io.BytesIO(_png()), "a.png"), "points": nested(100_000).decode()})
    assert assert_error_shape(resp, 400)["code"] == "invalid_prompt"
    vehicle = client.post("/v1/vehicles", json={"vin": "1HGCM82633A004352"}, headers=admin.headers).get_json()
    resp = client.post(f"/v1/vehicles/{vehicle['id']}/photos", headers=admin.headers,
                       content_type="multipart/form-data",
                       data={"photo": (io.BytesIO(_png()), "p.png"), "angle": "front",
                             "plate_regions": nested(100_000).decode()})
    assert assert_error_shape(resp, 400)["code"] == "invalid_plate_region"


def test_depth_ignores_brackets_inside_strings() -> None:
    assert json_limits.depth('{"a": "[[[[", "b": ["]]]]", [1]]}') == 3
    assert json_limits.depth(r'["\"[[[", [[]]]') == 3
    assert json_limits.too_deep(b'"' + b"[" * 500 + b'"') is None
    assert json_limits.too_deep(nested(65)) is not None and json_limits.too_deep(nested(64)) is None
    with pytest.raises(ValueError):
        json_limits.loads(nested(100_000))
