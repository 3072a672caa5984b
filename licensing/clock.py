"""Time for licensing: epoch seconds (so time-machine travels), settlement periods, ISO text."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from licensing.errors import LicensingError

DAY = 86400.0


class BadPeriod(LicensingError):
    code, title, status = "invalid_period", "Invalid period", 400


def now() -> float:
    """The wall clock, in epoch seconds."""
    return time.time()


def iso(ts: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC text."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_iso(text: str) -> float:
    """ISO 8601 text (Z or offset; a bare date means midnight UTC) as epoch seconds."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def period_of(ts: float) -> str:
    """The settlement period (calendar month, UTC) containing ts, as YYYY-MM."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m")


def period_bounds(period: str) -> tuple[float, float]:
    """Start and end (exclusive) of a YYYY-MM period in epoch seconds."""
    try:
        year, month = (int(p) for p in period.split("-"))
        start = datetime(year, month, 1, tzinfo=UTC)
        if year < 1970 or year > 9998:
            raise ValueError(period)
    except ValueError as exc:
        raise BadPeriod(f"Period {period!r} is not a month as YYYY-MM.") from exc
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return start.timestamp(), end.timestamp()


def next_period(period: str) -> str:
    """The period after a YYYY-MM period."""
    year, month = (int(p) for p in period.split("-"))
    return f"{year + (month == 12):04d}-{month % 12 + 1:02d}"


def periods_between(first: str, last: str) -> list[str]:
    """Periods strictly after first and strictly before last."""
    out = []
    p = next_period(first)
    while p < last:
        out.append(p)
        p = next_period(p)
    return out
