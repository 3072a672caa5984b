"""Notices for the admin: stored for the dashboard (deduplicated), logged, and sent to webhook and e-mail sinks."""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from collections.abc import Callable
from typing import Any

import sqlite_utils

log = logging.getLogger("forecourt.licensing.notices")

Notice = dict[str, Any]
Sink = Callable[[Notice], None]
_sinks: list[Sink] = []
_lock = threading.Lock()


def record(db: sqlite_utils.Database, dedupe: str, kind: str, title: str, body: str, *, at: float,
           level: str = "warning", data: dict[str, Any] | None = None) -> Notice | None:
    """Store a notice once per dedupe key; return it when it is new (then dispatch it after the commit)."""
    cur = db.execute(
        "INSERT OR IGNORE INTO lic_notices (dedupe, kind, level, title, body, data, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [dedupe, kind, level, title, body, json.dumps(data or {}), at],
    )
    if cur.rowcount != 1:
        return None
    return {"id": cur.lastrowid, "kind": kind, "level": level, "title": title, "body": body,
            "data": data or {}, "created_at": at}


def list_notices(db: sqlite_utils.Database, limit: int = 100) -> list[Notice]:
    """The newest notices first, for the dashboard."""
    rows = db.execute("SELECT id, kind, level, title, body, data, created_at, read_at FROM lic_notices "
                      "ORDER BY id DESC LIMIT ?", [limit]).fetchall()
    keys = ("id", "kind", "level", "title", "body", "data", "created_at", "read_at")
    out = [dict(zip(keys, row, strict=True)) for row in rows]
    for n in out:
        n["data"] = json.loads(n["data"] or "{}")
    return out


def set_sinks(sinks: list[Sink]) -> None:
    """Where notices go besides the log (webhook, e-mail); the server sets this at start-up."""
    with _lock:
        _sinks[:] = sinks


def dispatch(notices: list[Notice]) -> None:
    """Log each notice now and hand it to the sinks on a background thread (never blocks a request)."""
    for n in notices:
        log.warning("licensing notice: %s: %s", n["title"], n["body"], extra={"notice_kind": n["kind"]})
    with _lock:
        sinks = list(_sinks)
    if notices and sinks:
        threading.Thread(target=_deliver, args=(notices, sinks), name="licensing-notices", daemon=True).start()


def _deliver(notices: list[Notice], sinks: list[Sink]) -> None:
    for n in notices:
        for sink in sinks:
            try:
                sink(n)
            except Exception as exc:  # noqa: BLE001 - a failing sink must not stop the others
                log.warning("notice sink %s failed: %s", getattr(sink, "__name__", sink), exc)


def webhook_sink(url: str, timeout: float = 10.0) -> Sink:
    """A sink that POSTs each notice as JSON to url."""

    def post(notice: Notice) -> None:
        body = json.dumps({"event": f"licensing.{notice['kind']}", "notice": notice}).encode()
        req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - the admin configures the URL
            resp.read()

    post.__name__ = "webhook"
    return post
