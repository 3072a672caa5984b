"""Structured JSON logs on stdout, each line carrying the request id."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or _current_request_id()
        if request_id:
            out["request_id"] = request_id
        for key in ("method", "path", "status", "duration_ms", "key_id", "remote"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def _current_request_id() -> str | None:
    try:
        from flask import g, has_request_context

        if has_request_context():
            return getattr(g, "request_id", None)
    except Exception:  # noqa: BLE001 - logging must never fail
        return None
    return None


def setup_logging(level: str = "INFO", as_json: bool = True) -> None:
    """Send the root logger to stdout, as JSON unless told otherwise."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if as_json else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_forecourt", False):
            root.removeHandler(h)
    handler._forecourt = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
