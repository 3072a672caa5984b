"""Admin API: users and their keys."""

from __future__ import annotations

from typing import Any

from apiflask import APIBlueprint
from flask import Flask

from server.auth import API_KEY_SECURITY, require_admin_key
from server.blueprints import register
from server.config import get_settings
from server.schemas import KeyListOut, ResetLinkOut, UserIn, UserListOut, UserOut, UserPatchIn
from server.services import accounts
from server.store import get_db

bp = APIBlueprint("admin", __name__, tag="Admin", url_prefix="/v1/admin")


def init_app(app: Flask) -> None:
    """The admin API."""
    register(app, bp)


@bp.get("/users")
@bp.output(UserListOut)
@bp.doc(security=API_KEY_SECURITY, responses=[403, 429])
@require_admin_key
def list_users() -> dict[str, Any]:
    """All users."""
    return {"users": accounts.list_users(get_db())}


@bp.post("/users")
@bp.input(UserIn, location="json")
@bp.output(UserOut, status_code=201)
@bp.doc(security=API_KEY_SECURITY, responses=[400, 403, 409, 429])
@require_admin_key
def create_user(json_data: UserIn) -> dict[str, Any]:
    """Create a user."""
    return accounts.create_user(get_db(), json_data.email, json_data.password, json_data.role,
                                get_settings().auth.min_password_length)


@bp.patch("/users/<int:user_id>")
@bp.input(UserPatchIn, location="json")
@bp.output(UserOut)
@bp.doc(security=API_KEY_SECURITY, responses=[400, 403, 404, 429])
@require_admin_key
def update_user(user_id: int, json_data: UserPatchIn) -> dict[str, Any]:
    """Change a user's role."""
    return accounts.set_role(get_db(), user_id, json_data.role)


@bp.delete("/users/<int:user_id>")
@bp.output({}, status_code=204)
@bp.doc(security=API_KEY_SECURITY, responses=[403, 404, 429])
@require_admin_key
def delete_user(user_id: int) -> tuple[str, int]:
    """Delete a user and their keys."""
    accounts.delete_user(get_db(), user_id)
    return "", 204


@bp.get("/users/<int:user_id>/keys")
@bp.output(KeyListOut)
@bp.doc(security=API_KEY_SECURITY, responses=[403, 404, 429])
@require_admin_key
def user_keys(user_id: int) -> dict[str, Any]:
    """A user's API keys."""
    accounts.get_user(get_db(), user_id)
    return {"keys": accounts.list_keys(get_db(), user_id)}


@bp.post("/users/<int:user_id>/reset-link")
@bp.output(ResetLinkOut, status_code=201)
@bp.doc(security=API_KEY_SECURITY, responses=[403, 404, 429])
@require_admin_key
def reset_link(user_id: int) -> dict[str, Any]:
    """A single-use password-reset link for a user, for the admin to pass on."""
    from server.blueprints.accounts import reset_url

    minutes = get_settings().auth.reset_token_minutes
    token = accounts.create_reset_token(get_db(), user_id, minutes)
    return {"url": reset_url(token), "expires_minutes": minutes}
