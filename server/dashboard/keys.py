"""Dashboard: my API keys (create, shown once, revoke)."""

from __future__ import annotations

from typing import Any

from flask import flash, g, redirect, render_template, request, url_for

from server.dashboard import bp
from server.dashboard.common import login_required
from server.errors import ApiError
from server.services import accounts
from server.store import get_db


def _keys_page(new_key: dict[str, Any] | None = None, error: str | None = None, status: int = 200) -> Any:
    keys = accounts.list_keys(get_db(), g.user.user_id)
    keys.sort(key=lambda k: (k["revoked_at"] is not None, k["created_at"]), reverse=False)
    return render_template("keys.html", keys=keys, new_key=new_key, error=error), status


@bp.get("/keys")
@login_required
def keys() -> Any:
    """My API keys."""
    return _keys_page()


@bp.post("/keys")
@login_required
def create_key() -> Any:
    """Make a key; its secret is on this page once and never again."""
    secret, row = accounts.create_key(get_db(), g.user.user_id, request.form.get("name", ""))
    return _keys_page({**row, "key": secret}, status=201)


@bp.post("/keys/<key_id>/revoke")
@login_required
def revoke_key(key_id: str) -> Any:
    """Revoke one of my keys."""
    try:
        row = accounts.revoke_key(get_db(), key_id, g.user.user_id)
    except ApiError:
        return _keys_page(error="That key was not found. It may belong to someone else or was deleted.",
                          status=404)
    flash(f"The key “{row['name']}” ({row['prefix']}…) is revoked. Programs that use it stop working now.")
    return redirect(url_for("dashboard.keys"))

