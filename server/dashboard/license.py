"""Dashboard: the License page (box fingerprint, install a license file or credit pack, the plan's terms)."""

from __future__ import annotations

from typing import Any

from flask import flash, redirect, render_template, request, url_for

from licensing import integrity
from licensing.clock import now
from licensing.errors import LicensingError
from licensing.plans import ROLLOVER_CAP
from server.dashboard import bp
from server.dashboard.common import METRIC_LABELS, admin_required, friendly_message
from server.dashboard.overview import license_summary
from server.services import licensing as licensing_service

MAX_LICENSE_BYTES = 200_000

# What a refused file means and what to do, beyond the licensing engine's own sentence.
REFUSAL_HINTS = {
    "license_wrong_box": "Send the vendor the fingerprint shown on this page and ask for a file for this box.",
    "license_issued_in_future": "Check that the box's date and time are right.",
    "credit_pack_replayed": "Each credit pack counts once; nothing was added.",
    "license_superseded": "The license in force stays in force.",
    "license_not_applicable": "Check that the file is meant for this dealership's license.",
    "license_expired": "Ask the vendor for a license that is still valid.",
}


def _license_page(error: str | None = None, status_code: int = 200) -> Any:
    b = licensing_service.box()
    status = b.status()
    plan = status["plan"]
    terms = [{"metric": m, "label": METRIC_LABELS[m], "value": plan.get(m)} for m in METRIC_LABELS]
    return render_template("license.html", status=status, summary=license_summary(status, now()), terms=terms,
                           packs=status["balances"]["credits"].get("payg", []), error=error,
                           tamper_events=list(reversed(integrity.tamper_events(b.db))),
                           rollover_cap=ROLLOVER_CAP), status_code


@bp.get("/license")
@admin_required
def license_page() -> Any:
    """The license in force, this box's fingerprint, and the form to install a file."""
    return _license_page()


@bp.post("/license")
@admin_required
def install_license() -> Any:
    """Install a license file, credit pack or upgrade authorisation (uploaded or pasted)."""
    upload = request.files.get("license_file")
    data = upload.read(MAX_LICENSE_BYTES + 1) if upload and upload.filename else b""
    text = data.decode("utf-8", errors="replace") if data else request.form.get("license_text", "")
    if not text.strip():
        return _license_page("Choose the license file the vendor sent, or paste its text, then press Install file.", 400)
    if len(text) > MAX_LICENSE_BYTES:
        return _license_page("That file is far too large to be a license file. Check that you picked the file the "
                             "vendor sent.", 400)
    try:
        result = licensing_service.box().install(text)
    except LicensingError as exc:
        message = friendly_message(exc)
        hint = REFUSAL_HINTS.get(exc.code)
        if exc.code == "invalid_license_file" and "BEGIN FORECOURT" not in text:
            message = ("That is not a Forecourt license file. Pick the file the vendor sent (its text starts with "
                       "-----BEGIN FORECOURT ...).")
        return _license_page(f"The file was not installed. {message}" + (f" {hint}" if hint else ""),
                             exc.status if exc.status < 500 else 400)
    flash(result["message"] if result["installed"] else f"Nothing changed: {result['message']}")
    return redirect(url_for("dashboard.license_page"))
