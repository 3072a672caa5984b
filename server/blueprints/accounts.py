"""Accounts API: who am I, my API keys, my password and e-mail, password reset."""

from __future__ import annotations

import logging
from typing import Any

from apiflask import APIBlueprint
from flask import Flask, g, request

from server.auth import API_KEY_SECURITY, require_key, sign_in_guard
from server.blueprints import register
from server.config import get_settings
from server.errors import NotFound
from server.mailer import send_mail, smtp_enabled
from server.schemas import (
    EmailChangeIn,
    KeyCreatedOut,
    KeyIn,
    KeyListOut,
    KeyOut,
    MeOut,
    MessageOut,
    PasswordChangeIn,
    ResetConfirmIn,
    ResetRequestIn,
)
from server.services import accounts
from server.store import get_db

log = logging.getLogger(__name__)
bp = APIBlueprint("accounts", __name__, tag="Accounts", url_prefix="/v1")


def init_app(app: Flask) -> None:
    """The accounts API."""
    register(app, bp)


@bp.get("/me")
@bp.output(MeOut)
@bp.doc(security=API_KEY_SECURITY, responses=[403, 429])
@require_key
def me() -> dict[str, Any]:
    """The user and key making this call."""
    user = accounts.public_user(accounts.get_user(get_db(), g.principal.user_id))
    return {"user": user, "key_id": g.principal.key_id}


@bp.get("/keys")
@bp.output(KeyListOut)
@bp.doc(security=API_KEY_SECURITY, responses=[403, 429])
@require_key
def list_keys() -> dict[str, Any]:
    """My API keys (never their secrets)."""
    return {"keys": accounts.list_keys(get_db(), g.principal.user_id)}


@bp.post("/keys")
@bp.input(KeyIn, location="json")
@bp.output(KeyCreatedOut, status_code=201)
@bp.doc(security=API_KEY_SECURITY, responses=[400, 403, 429])
@require_key
def create_key(json_data: KeyIn) -> dict[str, Any]:
    """Create an API key; the secret is in this answer only."""
    secret, row = accounts.create_key(get_db(), g.principal.user_id, json_data.name)
    return {**row, "key": secret}


@bp.delete("/keys/<key_id>")
@bp.output(KeyOut)
@bp.doc(security=API_KEY_SECURITY, responses=[403, 404, 429])
@require_key
def revoke_key(key_id: str) -> dict[str, Any]:
    """Revoke one of my keys (admins: any key)."""
    owner = None if g.principal.is_admin else g.principal.user_id
    return accounts.revoke_key(get_db(), key_id, owner)


@bp.post("/me/password")
@bp.input(PasswordChangeIn, location="json")
@bp.output(MessageOut)
@bp.doc(security=API_KEY_SECURITY, responses=[400, 401, 403, 429])
@require_key
def change_password(json_data: PasswordChangeIn) -> dict[str, Any]:
    """Change my password (the current one is required; repeated wrong ones pause it: 429, Retry-After)."""
    accounts.change_password(get_db(), g.principal.user_id, json_data.current_password, json_data.new_password,
                             get_settings().auth.min_password_length, sign_in_guard())
    return {"message": "Password changed."}


@bp.post("/me/email")
@bp.input(EmailChangeIn, location="json")
@bp.output(MeOut)
@bp.doc(security=API_KEY_SECURITY, responses=[400, 401, 403, 409, 429])
@require_key
def change_email(json_data: EmailChangeIn) -> dict[str, Any]:
    """Change my e-mail (asks for the password; repeated wrong ones pause it: 429, Retry-After)."""
    user = accounts.change_email(get_db(), g.principal.user_id, json_data.password, json_data.email,
                                 sign_in_guard())
    return {"user": user, "key_id": g.principal.key_id}


def reset_url(token: str) -> str:
    """The link a user follows to set a new password."""
    base = get_settings().server.public_url.rstrip("/") or request.host_url.rstrip("/")
    return f"{base}/reset/{token}"


def send_reset_link(email: str) -> str | None:
    """Make a reset token for the user and e-mail it; returns the link when there is no SMTP (for the admin)."""
    settings = get_settings()
    db = get_db()
    try:
        user = accounts.find_user(db, email)
    except NotFound:
        return None
    token = accounts.create_reset_token(db, user["id"], settings.auth.reset_token_minutes)
    url = reset_url(token)
    body = (f"Someone asked to reset the Forecourt password for {user['email']}.\n\n"
            f"Set a new password within {settings.auth.reset_token_minutes} minutes:\n{url}\n\n"
            "If it was not you, ignore this message.")
    if smtp_enabled(settings.smtp) and send_mail(settings.smtp, user["email"], "Reset your Forecourt password", body):
        return None
    log.warning("password reset requested for %s; no e-mail sent, an admin can create a link with "
                "`forecourt users reset-link %s`", user["email"], user["email"])
    return url


@bp.post("/password-reset")
@bp.input(ResetRequestIn, location="json")
@bp.output(MessageOut, status_code=202)
@bp.doc(responses=[400, 429])
def request_reset(json_data: ResetRequestIn) -> dict[str, Any]:
    """Ask for a reset link by e-mail (same answer whether or not the address exists)."""
    send_reset_link(json_data.email)
    return {"message": "If the address belongs to a user, a reset link is on its way (or with your admin)."}


@bp.post("/password-reset/confirm")
@bp.input(ResetConfirmIn, location="json")
@bp.output(MessageOut)
@bp.doc(responses=[400, 429])
def confirm_reset(json_data: ResetConfirmIn) -> dict[str, Any]:
    """Set a new password with a single-use reset token."""
    accounts.use_reset_token(get_db(), json_data.token, json_data.new_password,
                             get_settings().auth.min_password_length)
    return {"message": "Password changed; sign in with the new one."}
