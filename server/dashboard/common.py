"""What every dashboard page shares: sign-in checks (login_required, admin_required), failures in plain words
(friendly_message), the time filter, error pages, the hooks that protect forms and keep pages out of caches, and a
photo scanned from a page (charged_scan, drawn_scan)."""

from __future__ import annotations

import base64
import functools
import io
import logging
from collections.abc import Callable
from typing import Any

from flask import abort, g, redirect, render_template, request, url_for
from flask_wtf.csrf import CSRFError
from PIL import Image
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import HTTPException

from licensing.clock import iso
from server.auth import session_principal
from server.config import get_settings
from server.dashboard import bp, csrf
from server.redirects import local_path
from server.services import recognition as rec
from server.services.metering import charge, check

log = logging.getLogger("forecourt.dashboard")

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


# --- a photo scanned from a page ----------------------------------------------------------------------------------
SCAN_PREVIEW_SIDE = 1000


def scan_preview(image: Image.Image) -> tuple[str, float, tuple[int, int]]:
    """The scanned photo as a small JPEG data URL, the factor from photo pixels to preview pixels, and its size."""
    preview = image.convert("RGB")
    preview.thumbnail((SCAN_PREVIEW_SIDE, SCAN_PREVIEW_SIDE))
    buf = io.BytesIO()
    preview.save(buf, "JPEG", quality=80)
    return ("data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode(), preview.width / image.width,
            preview.size)


def charged_scan(upload: FileStorage, scan: Callable[[Image.Image], dict[str, Any]]) -> tuple[Image.Image, dict]:
    """Read the uploaded photo and scan it: one scan, charged to the signed-in user as the API charges it."""
    check("recognition")
    image = rec.decode_image(get_settings(), upload.read(), "photo")
    g.principal = g.user  # the scan is charged to the signed-in user, without an API key
    with charge("scans", 1):
        out = scan(image)
    return image, out


def drawn_scan(image: Image.Image, out: dict[str, Any], matches: str, filename: str | None) -> dict[str, Any]:
    """A scan's answer as the page draws it: the photo as a small preview, each match's polygon in its pixels."""
    src, factor, size = scan_preview(image)
    for match in out[matches]:
        match["points"] = " ".join(f"{x * factor:.1f},{y * factor:.1f}" for x, y in (match.get("polygon") or []))
    return {**out, "src": src, "size": size, "filename": filename}


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
