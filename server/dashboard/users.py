"""Dashboard, for admins: users (create, role, delete, reset link) and sign-in pauses."""

from __future__ import annotations

from typing import Any

from flask import flash, g, redirect, render_template, request, url_for

from server.blueprints.accounts import reset_url
from server.config import get_settings
from server.dashboard import bp
from server.dashboard.common import admin_required
from server.errors import ApiError
from server.services import accounts, sign_in_throttle
from server.store import get_db


def _users_page(error: str | None = None, status: int = 200, reset_link: dict[str, Any] | None = None,
                form: dict[str, str] | None = None) -> Any:
    db = get_db()
    users = accounts.list_users(db)
    active = {}
    for k in accounts.list_keys(db):
        if not k["revoked_at"]:
            active[k["user_id"]] = active.get(k["user_id"], 0) + 1
    return render_template("users.html", users=users, active_keys=active, error=error, reset_link=reset_link,
                           form=form or {}, roles=accounts.ROLES, failures=sign_in_throttle.recent_failures(db),
                           pauses=sign_in_throttle.current_pauses(db), throttle=get_settings().auth,
                           min_password=get_settings().auth.min_password_length), status


@bp.get("/users")
@admin_required
def users() -> Any:
    """Everyone who can sign in."""
    return _users_page()


@bp.post("/users")
@admin_required
def create_user() -> Any:
    """Add a user with a first password (they can change it under Account)."""
    form = {"email": request.form.get("email", ""), "role": request.form.get("role", "member")}
    try:
        user = accounts.create_user(get_db(), form["email"], request.form.get("password", ""), form["role"],
                                    get_settings().auth.min_password_length)
    except ApiError as exc:
        message = f"The first password is too short. {exc.detail}" if exc.code == "weak_password" else exc.detail
        return _users_page(message, 400, form=form)
    flash(f"{user['email']} was added as {user['role']}. Give them their password, or a reset link below.")
    return redirect(url_for("dashboard.users"))


def _not_me(user_id: int, what: str) -> str | None:
    if user_id == g.user.user_id:
        return f"You cannot {what} your own account here; ask another admin."
    return None


@bp.post("/users/<int:user_id>/role")
@admin_required
def set_role(user_id: int) -> Any:
    """Make a user admin or member."""
    problem = _not_me(user_id, "change the role of")
    if problem:
        return _users_page(problem, 400)
    try:
        user = accounts.set_role(get_db(), user_id, request.form.get("role", ""))
    except ApiError as exc:
        return _users_page(exc.detail, exc.status)
    flash(f"{user['email']} is now {'an admin' if user['role'] == 'admin' else 'a member'}.")
    return redirect(url_for("dashboard.users"))


@bp.post("/users/<int:user_id>/delete")
@admin_required
def delete_user(user_id: int) -> Any:
    """Delete a user and their API keys."""
    problem = _not_me(user_id, "delete")
    if problem:
        return _users_page(problem, 400)
    try:
        email = accounts.get_user(get_db(), user_id)["email"]
        accounts.delete_user(get_db(), user_id)
    except ApiError:
        return _users_page("That user was not found; maybe someone deleted them already.", 404)
    flash(f"{email} was deleted, with their API keys.")
    return redirect(url_for("dashboard.users"))


@bp.post("/users/<int:user_id>/reset-link")
@admin_required
def reset_link(user_id: int) -> Any:
    """A single-use link for a user to set a new password, for the admin to pass on."""
    minutes = get_settings().auth.reset_token_minutes
    try:
        user = accounts.get_user(get_db(), user_id)
        token = accounts.create_reset_token(get_db(), user_id, minutes)
    except ApiError:
        return _users_page("That user was not found; maybe someone deleted them already.", 404)
    return _users_page(reset_link={"email": user["email"], "url": reset_url(token), "minutes": minutes})


@bp.post("/users/sign-in-pauses/lift")
@admin_required
def lift_sign_in_pause() -> Any:
    """Let a paused account or address try to sign in again now (after checking who it was)."""
    key = request.form.get("key", "")
    if sign_in_throttle.lift_pause(get_db(), key):
        flash(f"{key.partition(':')[2]} may try to sign in again now.")
    else:
        flash("That pause had already ended.")
    return redirect(url_for("dashboard.users"))
