"""Licensing's calendar: settlement periods (UTC months); the clock itself is core.clock."""

from __future__ import annotations

from datetime import UTC, datetime

from core.clock import iso, now, parse_iso
from licensing.errors import LicensingError

DAY = 86400.0


class BadPeriod(LicensingError):
    code, title, status = "invalid_period", "Invalid period", 400


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


__all__ = ["DAY", "BadPeriod", "iso", "next_period", "now", "parse_iso", "period_bounds", "period_of",
           "periods_between"]
