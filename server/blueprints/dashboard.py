"""Dashboard pages: sign in and out, account (password, e-mail), forgotten password, overview."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from apiflask import APIBlueprint
from flask import abort, flash, g, redirect, render_template, request, session, url_for
from flask_wtf.csrf import CSRFProtect

from server.auth import session_principal
from server.blueprints.accounts import send_reset_link
from server.config import get_settings
from server.errors import ApiError
from server.services import accounts
from server.store import get_db

bp = APIBlueprint("dashboard", __name__, enable_openapi=False)
bp.rate_limited = False  # type: ignore[attr-defined]
csrf = CSRFProtect()


@bp.before_request
def protect_forms() -> None:
    """Dashboard forms carry a CSRF token; the API (keys, no cookies) does not need one."""
    csrf.protect()
    g.user = session_principal()


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Send signed-out visitors to the sign-in page."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if g.get("user") is None:
            return redirect(url_for("dashboard.login", next=request.path))
        return view(*args, **kwargs)

    return wrapper


def admin_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Pages for admins only."""

    @functools.wraps(view)
    @login_required
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not g.user.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapper


def _safe_next(target: str | None) -> str:
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("dashboard.home")


@bp.get("/")
@login_required
def home() -> str:
    """Overview."""
    return render_template("home.html")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """Sign in with e-mail and password."""
    error = None
    if request.method == "POST":
        try:
            user = accounts.authenticate(get_db(), request.form.get("email", ""), request.form.get("password", ""))
        except ApiError as exc:
            error = exc.detail
        else:
            session.clear()
            session.permanent = True
            session["user_id"] = user["id"]
            session["pw"] = user["password_hash"][-16:]
            return redirect(_safe_next(request.args.get("next")))
    return render_template("login.html", error=error), (401 if error else 200)


@bp.post("/logout")
def logout() -> Any:
    """Sign out."""
    session.clear()
    return redirect(url_for("dashboard.login"))


@bp.route("/account", methods=["GET", "POST"])
@login_required
def account() -> Any:
    """Change password or e-mail."""
    error = None
    settings = get_settings()
    if request.method == "POST":
        action = request.form.get("action")
        try:
            if action == "password":
                if request.form.get("new_password") != request.form.get("confirm_password"):
                    raise ApiError("The two new passwords differ.", code="password_mismatch")
                accounts.change_password(get_db(), g.user.user_id, request.form.get("current_password", ""),
                                         request.form.get("new_password", ""), settings.auth.min_password_length)
                user = accounts.get_user(get_db(), g.user.user_id)
                session["pw"] = user["password_hash"][-16:]
                flash("Your password was changed.")
            elif action == "email":
                accounts.change_email(get_db(), g.user.user_id, request.form.get("password", ""),
                                      request.form.get("email", ""))
                flash("Your e-mail address was changed.")
            else:
                raise ApiError("Unknown action.", code="bad_request")
            return redirect(url_for("dashboard.account"))
        except ApiError as exc:
            error = exc.detail
    user = accounts.public_user(accounts.get_user(get_db(), g.user.user_id))
    return render_template("account.html", user=user, error=error), (400 if error else 200)


@bp.route("/forgot", methods=["GET", "POST"])
def forgot() -> Any:
    """Ask for a reset link."""
    sent = False
    if request.method == "POST":
        send_reset_link(request.form.get("email", ""))
        sent = True
    return render_template("forgot.html", sent=sent)


@bp.route("/reset/<token>", methods=["GET", "POST"])
def reset(token: str) -> Any:
    """Set a new password with a reset link."""
    error = None
    if request.method == "POST":
        try:
            if request.form.get("new_password") != request.form.get("confirm_password"):
                raise ApiError("The two passwords differ.", code="password_mismatch")
            accounts.use_reset_token(get_db(), token, request.form.get("new_password", ""),
                                     get_settings().auth.min_password_length)
            flash("Your password was changed. Sign in with the new one.")
            return redirect(url_for("dashboard.login"))
        except ApiError as exc:
            error = exc.detail
    return render_template("reset.html", error=error), (400 if error else 200)
