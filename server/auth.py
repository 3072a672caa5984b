"""Who is calling: API keys (X-Api-Key or Authorization: Bearer) for the API, a session cookie for the dashboard."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import g, request, session

from server.errors import Forbidden, Unauthorized
from server.services import accounts
from server.services.accounts import Principal
from server.services.sign_in_throttle import SignInGuard, ThrottlePolicy
from server.store import get_db

F = TypeVar("F", bound=Callable[..., Any])

API_KEY_SECURITY = [{"ApiKey": []}, {"Bearer": []}]
SECURITY_SCHEMES = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
    "Bearer": {"type": "http", "scheme": "bearer"},
}


def presented_key() -> str | None:
    """The API key the request carries, if any."""
    key = request.headers.get("X-Api-Key")
    if key:
        return key.strip()
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return None


def key_principal() -> Principal | None:
    """The principal behind the request's API key (cached for the request)."""
    if "key_principal" not in g:
        secret = presented_key()
        g.key_principal = accounts.principal_for_key(get_db(), secret) if secret else None
    return g.key_principal


def session_principal() -> Principal | None:
    """The dashboard user signed in with the session cookie."""
    user_id = session.get("user_id")
    if not user_id:
        return None
    row = get_db()["users"].get(user_id) if get_db()["users"].count_where("id = ?", [user_id]) else None
    if row is None or row.get("disabled") or session.get("pw") != row["password_hash"][-16:]:
        session.clear()
        return None
    return Principal(user_id=row["id"], email=row["email"], role=row["role"])


def require_key(view: F) -> F:
    """API views: a valid key or 403 (remove.bg's answer for a missing or wrong key)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        principal = key_principal()
        if principal is None:
            if presented_key():
                raise Unauthorized("The API key is not valid or was revoked.")
            raise Unauthorized("Send your API key in the X-Api-Key header (or Authorization: Bearer).")
        g.principal = principal
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def require_admin_key(view: F) -> F:
    """API views for admins only."""

    @require_key
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not g.principal.is_admin:
            raise Forbidden("This needs an admin's API key.", code="admin_required", title="Admin only")
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def rate_limit_key() -> str:
    """Rate limits count per API key; unauthenticated calls count per address."""
    try:
        principal = key_principal()
    except Exception:  # noqa: BLE001 - a broken key lookup must not break limiting
        principal = None
    if principal is not None:
        return f"key:{principal.key_id}"
    return f"addr:{request.remote_addr or 'unknown'}"


def sign_in_guard() -> SignInGuard:
    """The throttle for a request that checks a password: this client's address and browser, this route."""
    from server.config import get_settings

    return SignInGuard(ThrottlePolicy.from_settings(get_settings().auth), address=request.remote_addr or "unknown",
                       user_agent=request.user_agent.string or "", route=f"{request.method} {request.path}")
