"""Dashboard pages: sign in and out, account, forgotten password, overview; the other pages live in dashboard_*.py."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from apiflask import APIBlueprint
from flask import Flask, abort, flash, g, redirect, render_template, request, session, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from licensing import notices as notice_store
from licensing.clock import DAY, iso, now, parse_iso, period_bounds
from server.auth import session_principal, sign_in_guard
from server.blueprints import register
from server.blueprints.accounts import send_reset_link
from server.config import get_settings
from server.errors import ApiError
from server.redirects import local_path
from server.services import accounts
from server.services import licensing as licensing_service
from server.services.sign_in_throttle import TooManySignIns, wait_words
from server.store import get_db

log = logging.getLogger("forecourt.dashboard")
bp = APIBlueprint("dashboard", __name__, enable_openapi=False)
csrf = CSRFProtect()


def init_app(app: Flask) -> None:
    """The dashboard pages, with CSRF-protected forms and outside the API rate limit."""
    csrf.init_app(app)
    register(app, bp, rate_limited=False)

METRIC_LABELS = {"credits": "Background-removal credits", "scans": "Recognition scans",
                 "uploads": "Reference-image uploads", "stored_images": "Stored reference images"}

# Plain words for failures a salesperson may meet; anything else shows the error's own title and detail.
FRIENDLY = {
    "insufficient_credits": "There are not enough credits left for this. An admin can install a credit pack on the "
                            "License page, or wait for next month's credits.",
    "license_expired": "The license has expired, so this is switched off. An admin can install a new license on the "
                       "License page.",
    "license_restricted": "The box's clock seems to have gone back in time, so work is paused. Set the clock right "
                          "or install a new license.",
    "failed_to_read_image": "That file could not be read as a photo. Use a JPG, PNG or WebP photo.",
    "invalid_file_type": "That file is not a photo this box can read. Use a JPG, PNG or WebP photo.",
    "file_too_large": "The file is too large. Use a smaller photo (under {max_mb} MB).",
    "resolution_too_high": "The photo has too many pixels. Use a smaller photo.",
    "unknown_foreground": "No car or other subject was found in this photo. Try a photo where the car is clearly "
                          "visible.",
    "model_unavailable": "The background-removal model is not installed on this box. Ask your admin to check the "
                         "System page.",
    "model_corrupt": "The background-removal model file is damaged. Ask your admin to check the System page.",
    "license_bad_signature": "This file is damaged or was not issued by the vendor. Ask the vendor to send it again, "
                             "as an attachment.",
    "license_unknown_key": "This file was signed with a key this box does not know. Ask the vendor for a file for "
                           "this version of Forecourt.",
    "sam_not_installed": "Refining with Segment Anything is not installed on this box. Ask your admin to check the "
                         "System page.",
    "invalid_credentials": "The e-mail address or password is wrong. Check the e-mail address and password, then try "
                           "again.",
}


def friendly_message(exc: BaseException) -> str:
    """A failure in words a salesperson understands (never a traceback or a JSON body)."""
    code = str(getattr(exc, "code", "") or "")
    if code in FRIENDLY:
        return FRIENDLY[code].format(max_mb=get_settings().removebg.max_file_mb)
    detail = str(getattr(exc, "detail", "") or "")
    return detail or str(getattr(exc, "title", "") or "") or "Something went wrong."


@bp.before_request
def protect_forms() -> None:
    """Dashboard forms carry a CSRF token; the API (keys, no cookies) does not need one."""
    g.user = session_principal()
    csrf.protect()


@bp.after_request
def no_store(resp: Any) -> Any:
    """Dashboard pages show balances and one-time secrets: never cache them."""
    if resp.mimetype == "text/html":
        resp.headers.setdefault("Cache-Control", "no-store")
        resp.headers.setdefault("X-Frame-Options", "DENY")
    return resp


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Send signed-out visitors to the sign-in page."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if g.get("user") is None:
            return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapper


def admin_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Pages for admins only; members get a friendly 403 page."""

    @functools.wraps(view)
    @login_required
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not g.user.is_admin:
            abort(403)
        return view(*args, **kwargs)

    return wrapper


def safe_next(target: str | None) -> str:
    """Where to go after signing in: the visitor's `next` when it is a path on this site, else the overview."""
    return local_path(target) or url_for("dashboard.home")


@bp.app_template_filter("fc_time")
def fc_time(ts: float | None) -> str:
    """Epoch seconds as 'YYYY-MM-DD HH:MM UTC' for pages."""
    return f"{(iso(ts) or '')[:16].replace('T', ' ')} UTC" if ts else ""


# --- error pages ---------------------------------------------------------------------------------------------------
ERROR_PAGES = {
    400: ("Something in the form was not right", "Go back, check the form and try again."),
    403: ("This page is for admins", "Your account cannot open this page. Ask an admin of this box if you need it."),
    404: ("Page not found", "There is nothing here. The link may be old, or the item was deleted."),
    405: ("That did not work", "This page cannot be used that way. Go back and use the buttons on the page."),
    413: ("The file is too large", "The upload is larger than this box accepts. Use a smaller file."),
    500: ("Something went wrong", "The box ran into a problem it did not expect. The error was logged; try again, "
                                  "and if it happens again tell your admin."),
}


def error_page(status: int, message: str | None = None, title: str | None = None) -> tuple[str, int]:
    """A friendly HTML error page."""
    default_title, default_message = ERROR_PAGES.get(status, ERROR_PAGES[500])
    return render_template("error.html", status=status, heading=title or default_title,
                           message=message or default_message), status


@bp.errorhandler(CSRFError)
def csrf_failed(exc: CSRFError) -> tuple[str, int]:
    return error_page(400, "The form had expired (the page was open a long time, or you signed in again "
                           "elsewhere). Go back, reload the page and try again.", "Please try that again")


@bp.errorhandler(Exception)
def dashboard_error(exc: Exception) -> tuple[str, int]:
    if isinstance(exc, HTTPException):
        status = exc.code or 500
        return error_page(status if status in ERROR_PAGES else 500 if status >= 500 else 400)
    status = getattr(exc, "status", None)
    if isinstance(status, int) and hasattr(exc, "code") and hasattr(exc, "detail"):
        return error_page(status if status in ERROR_PAGES else 400, friendly_message(exc), "That did not work")
    log.exception("dashboard error on %s %s", request.method, request.path)
    return error_page(500)


# --- sign in and account -------------------------------------------------------------------------------------------
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


# --- overview ------------------------------------------------------------------------------------------------------
def days_left(until_iso: str | None, t: float) -> int | None:
    """Whole days from t to an ISO time (rounded up; 0 once passed)."""
    if not until_iso:
        return None
    return max(0, int(-(-(parse_iso(until_iso) - t) // DAY)))


def license_summary(status: dict[str, Any], t: float) -> dict[str, Any]:
    """The license state as a headline, a tone (ok, warn, bad) and a sentence, for the Overview and License pages."""
    state = status["state"]
    plan = status["plan"]["name"]
    exhausted = [METRIC_LABELS[m] for m, b in status["balances"].items()
                 if m != "stored_images" and b.get("granted") is not None and b["remaining"] <= 0
                 and not (m == "credits" and any(p["remaining"] > 0 for p in b.get("payg", [])))]
    if state == "trial":
        left = days_left(status["expires_at"], t)
        out = {"headline": f"Trial: {left} day{'s' if left != 1 else ''} left", "tone": "warn" if left <= 5 else "ok",
               "text": f"Full access with the trial's limits until {status['expires_at'][:10]}. Install a license "
                       "before then to keep working."}
    elif state == "active":
        left = days_left(status["expires_at"], t)
        out = {"headline": "Licensed", "tone": "ok",
               "text": f"Plan {plan} for {status['customer']}, valid until {status['expires_at'][:10]} "
                       f"({left} days)."}
    elif state == "grace":
        left = days_left(status["grace_until"], t)
        out = {"headline": f"License expired: {left} day{'s' if left != 1 else ''} of grace left", "tone": "bad",
               "text": f"The license ended on {status['expires_at'][:10]}. Recognition keeps working until "
                       f"{status['grace_until'][:10]}; uploads, edits and deletes are locked. Install a new "
                       "license."}
    elif state == "restricted" and any(r.startswith("the clock record") for r in status["reasons"]):
        out = {"headline": "Paused: the clock record was altered", "tone": "bad",
               "text": "The box's record of the latest time it has seen was changed outside Forecourt. Install a "
                       "new license from the vendor to go on."}
    elif state == "restricted":
        out = {"headline": "Paused: the clock went back", "tone": "bad",
               "text": "The box's clock reads earlier than a time it has already seen. Set the clock right or "
                       "install a new license."}
    elif status["expires_at"] is None:  # no trial: its record does not verify
        out = {"headline": "No trial", "tone": "bad",
               "text": f"No trial on this box: {'; '.join(status['reasons'])}. Only signing in, the license and data "
                       "export work."}
    else:
        out = {"headline": "Expired", "tone": "bad",
               "text": f"The {'trial' if not status['license_id'] else 'license'} ended on "
                       f"{status['expires_at'][:10]}. Only signing in, the license and data export work. "
                       "Install a new license."}
    if exhausted and state in ("trial", "active", "grace"):
        period = status["balances"]["credits"].get("period")
        renews = period_bounds(period)[1] if period else None
        out["exhausted"] = exhausted
        out["headline"] = "Limits exhausted" if state != "grace" else out["headline"]
        out["tone"] = "bad"
        when = f" They renew on {_date(renews)}." if renews else ""
        out["text"] += f" Used up this month: {', '.join(exhausted)}.{when}"
    return out


def _date(ts: float | None) -> str:
    return (iso(ts) or "")[:10]


def usage_bars(balances: dict[str, Any]) -> list[dict[str, Any]]:
    """Per monthly metric: used against this period's budget, in percent, with the 80% notice mark."""
    bars = []
    for metric in ("credits", "scans", "uploads"):
        b = balances.get(metric)
        if not b:
            continue
        granted = b.get("granted")
        used = float(b.get("used") or 0.0)
        pct = None if not granted else min(100.0, 100.0 * used / granted)
        bars.append({"metric": metric, "label": METRIC_LABELS[metric], "used": used, "granted": granted,
                     "allowance": b.get("allowance"), "remaining": b.get("remaining"), "pct": pct,
                     "over80": pct is not None and pct >= 80.0, "rollover":
                     max(0.0, (granted or 0.0) - (b.get("allowance") or 0.0)) if granted is not None else 0.0,
                     "overage": b.get("overage", {})})
    cap = balances.get("stored_images")
    if cap:
        granted = cap.get("cap")
        used = float(cap.get("stored") or 0.0)
        bars.append({"metric": "stored_images", "label": METRIC_LABELS["stored_images"], "used": used,
                     "granted": granted, "allowance": granted, "remaining": cap.get("remaining"),
                     "pct": None if not granted else min(100.0, 100.0 * used / granted),
                     "over80": bool(granted) and used >= 0.8 * granted, "rollover": 0.0, "overage": {}})
    return bars


@bp.get("/")
@login_required
def home() -> str:
    """Overview: license state, this period's usage against the allowance, balances and notices."""
    b = licensing_service.box()
    status = b.status()
    t = now()
    credits = status["balances"]["credits"]
    payg = [p for p in credits.get("payg", []) if p["remaining"] > 0]
    return render_template(
        "home.html", status=status, summary=license_summary(status, t), bars=usage_bars(status["balances"]),
        payg=payg, payg_total=sum(p["remaining"] for p in payg), notices=notice_store.list_notices(b.db, limit=20),
        period=credits.get("period"))


# The other pages register their routes on `bp` when imported.
from server.blueprints import (  # noqa: E402,F401
    dashboard_collections,
    dashboard_improve,
    dashboard_keys,
    dashboard_license,
    dashboard_system,
    dashboard_tryit,
    dashboard_usage,
)
