"""One clock: epoch seconds from time.time() (so time-machine travels) and one text form, ISO 8601 UTC with Z."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now() -> float:
    """The wall clock, in epoch seconds."""
    return time.time()


def iso(ts: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC text to the second, e.g. 2026-01-31T12:00:00Z (None stays None)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def now_iso() -> str:
    """The current time as ISO 8601 UTC text, the form every stored timestamp takes."""
    return iso(now()) or ""


def parse_iso(text: str) -> float:
    """ISO 8601 text (Z or an offset; no zone means UTC) as epoch seconds."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
