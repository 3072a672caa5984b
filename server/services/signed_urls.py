"""HMAC-signed public image URLs: a path and its query, valid until an expiry, checked in constant time."""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlencode

from server.errors import ApiError


class InvalidSignature(ApiError):
    code, title, status = "invalid_signature", "Invalid or expired link", 403


def _canonical(path: str, params: dict[str, str], expires: int) -> bytes:
    items = sorted((k, str(v)) for k, v in params.items() if k not in ("expires", "signature") and v != "")
    return f"{path}\n{expires}\n{urlencode(items)}".encode()


def sign(secret: str, path: str, params: dict[str, str], ttl_seconds: int, now: float | None = None) -> str:
    """The path with its parameters, `expires` and `signature` as a query string."""
    expires = int((now if now is not None else time.time()) + ttl_seconds)
    sig = hmac.new(secret.encode(), _canonical(path, params, expires), hashlib.sha256).hexdigest()
    query = {k: str(v) for k, v in params.items() if v != ""} | {"expires": str(expires), "signature": sig}
    return f"{path}?{urlencode(sorted(query.items()))}"


def verify(secret: str, path: str, params: dict[str, str], now: float | None = None) -> int:
    """Check a signed request's query; return its expiry (epoch seconds) or raise InvalidSignature."""
    try:
        expires = int(params.get("expires", ""))
    except ValueError as exc:
        raise InvalidSignature("The link has no valid expiry.") from exc
    expected = hmac.new(secret.encode(), _canonical(path, params, expires), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, str(params.get("signature", ""))):
        raise InvalidSignature("The link's signature does not match; it was altered or signed with another key.")
    if expires < (now if now is not None else time.time()):
        raise InvalidSignature("The link has expired; ask for a new one.", code="link_expired")
    return expires
