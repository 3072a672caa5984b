"""Dashboard: sign in and out, the account page (password, e-mail), forgotten password and reset links."""

from __future__ import annotations

from typing import Any

from flask import flash, g, redirect, render_template, request, session, url_for

from server.auth import sign_in_guard
from server.blueprints.accounts import send_reset_link
from server.config import get_settings
from server.dashboard import bp
from server.dashboard.common import friendly_message, login_required, safe_next
from server.errors import ApiError
from server.services import accounts
from server.services.sign_in_throttle import TooManySignIns, wait_words
from server.store import get_db


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """Sign in with e-mail and password."""
    error = None
    target = safe_next(request.args.get("next"))  # a tampered `next` is a 400 before anything else
    if request.method == "GET" and g.user is not None:
        return redirect(target)
    if request.method == "POST":
        try:
            user = accounts.authenticate(get_db(), request.form.get("email", ""), request.form.get("password", ""),
                                         sign_in_guard())
        except TooManySignIns as exc:
            return _throttled("login.html", exc, email=request.form.get("email", ""))
        except ApiError as exc:
            error = exc.detail if exc.detail == "This account is disabled." else friendly_message(exc)
        else:
            session.clear()
            session.permanent = True
            session["user_id"] = user["id"]
            session["pw"] = user["password_hash"][-16:]
            return redirect(target)
    return render_template("login.html", error=error, email=request.form.get("email", "")), (401 if error else 200)


def _throttled(template: str, exc: TooManySignIns, **context: Any) -> tuple[str, int, dict[str, str]]:
    """The form again with the pause in plain words, 429 and Retry-After."""
    error = (f"Too many wrong passwords, so signing in is paused for a while. Try again in "
             f"{wait_words(exc.retry_after)}. If you have forgotten your password, ask for a reset link.")
    return render_template(template, error=error, **context), 429, {"Retry-After": str(exc.retry_after)}


@bp.post("/logout")
def logout() -> Any:
    """Sign out."""
    session.clear()
    flash("You are signed out.")
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
                    raise ApiError("The two new passwords differ. Type the same new password twice.",
                                   code="password_mismatch")
                accounts.change_password(get_db(), g.user.user_id, request.form.get("current_password", ""),
                                         request.form.get("new_password", ""), settings.auth.min_password_length,
                                         sign_in_guard())
                user = accounts.get_user(get_db(), g.user.user_id)
                session["pw"] = user["password_hash"][-16:]
                flash("Your password was changed.")
            elif action == "email":
                accounts.change_email(get_db(), g.user.user_id, request.form.get("password", ""),
                                      request.form.get("email", ""), sign_in_guard())
                flash("Your e-mail address was changed.")
            else:
                raise ApiError("Use one of the two forms on this page.", code="bad_request")
            return redirect(url_for("dashboard.account"))
        except TooManySignIns as exc:
            return _throttled("account.html", exc, user=accounts.public_user(accounts.get_user(get_db(), g.user.user_id)),
                              min_password=settings.auth.min_password_length)
        except ApiError as exc:
            error = "The password you typed is wrong." if exc.code == "invalid_credentials" else exc.detail
    user = accounts.public_user(accounts.get_user(get_db(), g.user.user_id))
    return render_template("account.html", user=user, error=error,
                           min_password=settings.auth.min_password_length), (400 if error else 200)


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
    min_password = get_settings().auth.min_password_length
    if request.method == "POST":
        try:
            if request.form.get("new_password") != request.form.get("confirm_password"):
                raise ApiError("The two passwords differ. Type the same new password twice.",
                               code="password_mismatch")
            accounts.use_reset_token(get_db(), token, request.form.get("new_password", ""), min_password)
            session.clear()
            flash("Your password was changed. Sign in with the new one.")
            return redirect(url_for("dashboard.login"))
        except ApiError as exc:
            error = exc.detail
    return render_template("reset.html", error=error, min_password=min_password), (400 if error else 200)
