"""Dashboard: the Usage page (a chart per metric over days or settlement periods, per API key) and its CSV export."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import Response, g, render_template, request

from licensing import ledger
from licensing.clock import now, period_bounds, period_of
from server.dashboard import bp
from server.dashboard.common import METRIC_LABELS, login_required
from server.services import accounts
from server.services import licensing as licensing_service

MONTHLY_METRICS = ("credits", "scans", "uploads")
DAYS = 30
PERIODS = 12
DASHBOARD_KEY = "none"  # charges made from the dashboard (Try it) carry no API key


def _buckets(view: str, t: float) -> tuple[list[str], float, float]:
    """The labels of the chart's x axis and the time range they cover."""
    if view == "days":
        today = datetime.fromtimestamp(t, UTC).date()
        days = [today - timedelta(days=i) for i in range(DAYS - 1, -1, -1)]
        start = datetime.combine(days[0], datetime.min.time(), UTC).timestamp()
        return [d.isoformat() for d in days], start, start + DAYS * 86400.0
    periods = [period_of(t)]
    while len(periods) < PERIODS:
        first = date.fromisoformat(periods[0] + "-01") - timedelta(days=1)
        periods.insert(0, first.strftime("%Y-%m"))
    return periods, period_bounds(periods[0])[0], period_bounds(periods[-1])[1]


def _key_names(user_id: int | None) -> dict[str, str]:
    names = {DASHBOARD_KEY: "Dashboard (Try it)"}
    for k in accounts.list_keys(licensing_service.box().db, user_id):
        names[k["id"]] = f"{k['name']} ({k['prefix']}…)" + (" (revoked)" if k["revoked_at"] else "")
    return names


def usage_data(view: str, key: str, t: float) -> dict[str, Any]:
    """Everything the Usage page and its CSV show, for the signed-in user (admins: the whole box)."""
    user_id = None if g.user.is_admin else g.user.user_id
    labels, since, until = _buckets(view, t)
    rows = ledger.charge_series(licensing_service.box().db, group=view, since=since, until=until, user_id=user_id,
                                no_key=DASHBOARD_KEY)
    names = _key_names(user_id)
    if key:
        rows = [r for r in rows if r["key_id"] == key]
    for r in rows:
        r["key_name"] = names.get(r["key_id"], f"Deleted key {r['key_id']}")
    index = {label: i for i, label in enumerate(labels)}
    charts = []
    for metric in MONTHLY_METRICS:
        mine = [r for r in rows if r["metric"] == metric and r["bucket"] in index]
        series: dict[str, list[float]] = {}
        requests = [0] * len(labels)
        totals = [0.0] * len(labels)
        for r in mine:
            i = index[r["bucket"]]
            series.setdefault(r["key_name"], [0.0] * len(labels))[i] += r["amount"]
            totals[i] += r["amount"]
            requests[i] += r["requests"]
        charts.append({"metric": metric, "label": METRIC_LABELS[metric], "labels": labels,
                       "series": [{"name": n, "data": [round(v, 4) for v in d]} for n, d in sorted(series.items())],
                       "table": [(labels[i], round(totals[i], 4), requests[i]) for i in range(len(labels))
                                 if requests[i]],
                       "total": round(sum(totals), 4), "requests": sum(requests)})
    return {"charts": charts, "rows": rows, "keys": names, "since": labels[0], "until": labels[-1]}


def _params() -> tuple[str, str]:
    view = request.args.get("view", "days")
    return (view if view in ("days", "periods") else "days"), request.args.get("key", "")


@bp.get("/usage")
@login_required
def usage() -> Any:
    """Charts of what was charged, per metric, over the last 30 days or 12 periods, per API key."""
    view, key = _params()
    data = usage_data(view, key, now())
    return render_template("usage.html", view=view, key=key, **data)


@bp.get("/usage.csv")
@login_required
def usage_csv() -> Response:
    """The same numbers as the Usage page, one row per day (or period), key and metric."""
    view, key = _params()
    data = usage_data(view, key, now())
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["day" if view == "days" else "period", "key_id", "key_name", "metric", "amount", "requests"])
    for r in data["rows"]:
        w.writerow([r["bucket"], r["key_id"], r["key_name"], r["metric"], f"{r['amount']:g}", r["requests"]])
    name = f"forecourt-usage-{view}-{data['since']}-to-{data['until']}.csv"
    return Response(out.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
