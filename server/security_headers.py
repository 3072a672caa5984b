"""Security headers on every response: a strict Content-Security-Policy (every asset is served from the box),
nosniff, a same-origin Referrer-Policy and no framing."""

from __future__ import annotations

import base64
import hashlib
import re

from flask import Flask, Response, request

POLICY: dict[str, str] = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data: blob:",  # scan previews are data: URLs; Try it previews the chosen file as a blob:
    "font-src": "'self'",
    "connect-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}
# APIFlask renders the API docs page (Swagger UI, served locally) with one inline <style> and one inline <script>:
# that page alone allows exactly those blocks, by their hashes, and nothing else inline.
INLINE_HASHED_ENDPOINTS = {"openapi.docs"}
_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.DOTALL)


def policy_text(extra: dict[str, list[str]] | None = None) -> str:
    """The Content-Security-Policy value, with extra sources per directive."""
    parts = []
    for directive, sources in POLICY.items():
        more = " ".join((extra or {}).get(directive, []))
        parts.append(f"{directive} {sources}{' ' + more if more else ''}")
    return "; ".join(parts)


def inline_hashes(html: bytes) -> dict[str, list[str]]:
    """'sha256-...' sources for each inline <script> and <style> block of a page."""
    out: dict[str, list[str]] = {}
    for tag, body in _INLINE.findall(html):
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        out.setdefault(f"{tag.decode()}-src", []).append(f"'sha256-{digest}'")
    return out


def init_app(app: Flask) -> None:
    """Add the headers to every response (error pages, static files and API answers included)."""

    @app.after_request
    def add_security_headers(resp: Response) -> Response:
        extra = None
        if request.endpoint in INLINE_HASHED_ENDPOINTS and resp.mimetype == "text/html" and not resp.direct_passthrough:
            extra = inline_hashes(resp.get_data())
        resp.headers["Content-Security-Policy"] = policy_text(extra)
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "same-origin"
        resp.headers["X-Frame-Options"] = "DENY"  # frame-ancestors for browsers that predate it
        return resp
