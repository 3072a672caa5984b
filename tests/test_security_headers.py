"""Security headers on every response: a strict CSP (all assets local), nosniff, Referrer-Policy, no framing; the
dashboard's templates carry nothing inline that such a policy would block."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from server.security_headers import inline_hashes
from tests.test_errors import _concrete

TEMPLATES = Path(__file__).resolve().parents[1] / "server" / "templates"
REQUIRED = {"default-src": "'self'", "script-src": "'self'", "style-src": "'self'", "object-src": "'none'",
            "base-uri": "'self'", "form-action": "'self'", "frame-ancestors": "'none'"}


def directives(resp) -> dict[str, str]:
    text = resp.headers.get("Content-Security-Policy", "")
    return {d.split()[0]: " ".join(d.split()[1:]) for d in text.split(";") if d.strip()}


def assert_secure(resp, what: str) -> dict[str, str]:
    csp = directives(resp)
    for name, value in REQUIRED.items():
        assert csp.get(name, "").startswith(value), (what, name, csp)
    assert "'unsafe-inline'" not in str(csp) and "'unsafe-eval'" not in str(csp) and "http" not in str(csp), what
    assert resp.headers.get("X-Content-Type-Options") == "nosniff", what
    assert resp.headers.get("Referrer-Policy") == "same-origin", what
    assert resp.headers.get("X-Frame-Options") == "DENY", what
    return csp


def test_every_get_route_sends_the_headers_signed_in_or_not(app, client, admin) -> None:
    from tests.test_dashboard_forms import sign_in

    walked = 0
    for signed_in in (False, True):
        if signed_in:
            sign_in(client, admin)
        for rule in app.url_map.iter_rules():
            if "GET" not in (rule.methods or set()) or rule.endpoint == "static":
                continue
            path = _concrete(rule.rule)
            for headers in ({}, admin.headers):
                resp = client.get(path, headers=headers)
                assert_secure(resp, f"{path} {resp.status_code}")
                walked += 1
    assert walked > 60
    for extra in ("/static/forecourt.css", "/no/such/page", "/v1/keys"):
        assert_secure(client.get(extra), extra)
    assert_secure(client.post("/v1/keys", json={"name": 7}, headers=admin.headers), "a 400")


def test_the_api_docs_page_allows_exactly_its_own_inline_blocks(client) -> None:
    resp = client.get("/docs")
    assert resp.status_code == 200
    csp = assert_secure(resp, "/docs")
    html = resp.get_data()
    blocks = re.findall(rb"<(script|style)>(.*?)</\1>", html, re.DOTALL)
    assert {tag for tag, _ in blocks} == {b"script", b"style"}
    for tag, body in blocks:
        digest = "'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode() + "'"
        assert digest in csp[f"{tag.decode()}-src"].split()
    assert "sha256" not in client.get("/login").headers["Content-Security-Policy"]  # only that page
    assert inline_hashes(b"<p>no inline</p>") == {}


def test_templates_have_no_inline_script_style_or_handlers() -> None:
    """A strict policy blocks these in the browser; keep them out of the templates (static files instead)."""
    problems = []
    for path in sorted(TEMPLATES.glob("*.html")):
        text = path.read_text()
        for m in re.finditer(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", text):
            problems.append(f"{path.name}: inline script {m.group(0)}")
        for m in re.finditer(r"<style\b|\sstyle=|\son[a-z]+=|javascript:", text):
            problems.append(f"{path.name}: {m.group(0).strip()}")
    assert not problems, problems
