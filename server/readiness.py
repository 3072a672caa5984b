"""Readiness checks that engines register; /readyz runs them all."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, current_app


@dataclass
class CheckResult:
    """One check's outcome."""

    name: str
    ok: bool
    detail: str = ""
    required: bool = True
    warning: str | None = None  # ok, but something an admin should know (a GPU left unused)


Check = Callable[[], CheckResult]


def register_check(app: Flask, check: Check) -> None:
    """Add a check to /readyz."""
    app.extensions.setdefault("forecourt.ready_checks", []).append(check)


def run_checks() -> list[CheckResult]:
    """Run every check; a check that raises counts as failed with its message."""
    results = []
    for check in current_app.extensions.get("forecourt.ready_checks", []):
        try:
            results.append(check())
        except Exception as exc:  # noqa: BLE001 - a failing check is a result, not a crash
            results.append(CheckResult(getattr(check, "__name__", "check"), False, f"{type(exc).__name__}: {exc}"))
    return results
