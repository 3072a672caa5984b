"""Dashboard: the overview page (license state, this month's use, balances, notices)."""

from __future__ import annotations

from typing import Any

from flask import render_template

from licensing import notices as notice_store
from licensing.clock import DAY, iso, now, parse_iso, period_bounds
from server.dashboard import bp
from server.dashboard.common import METRIC_LABELS, login_required
from server.services import licensing as licensing_service


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
