"""Licensing for the server: options from settings, the box's LicenseBox per request, notice sinks, the
once-per-box scheduler, purge hooks in an app context, the /readyz check and the API guard."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app, request

from licensing import notices, purge
from licensing.box import LicenseBox
from licensing.options import LicensingOptions
from licensing.scheduler import BoxScheduler
from licensing.state import Policy
from server.config import Settings, get_settings
from server.readiness import CheckResult, register_check
from server.store import get_db, open_db

log = logging.getLogger("forecourt.licensing")
TICK_SECONDS = 60
# API paths that keep working when the license is expired or restricted.
ALWAYS_OPEN = ("/v1/licensing", "/v1/account", "/v1.0/account", "/v1/usage", "/v1/export", "/v1/me")


def options_from(settings: Settings) -> LicensingOptions:
    """LicensingOptions from the [licensing] section."""
    lic = settings.licensing
    return LicensingOptions(
        data_dir=settings.data_dir, state_dir=lic.state_dir.expanduser().resolve(),
        public_keys=tuple(lic.public_keys), clock_tolerance_s=lic.clock_tolerance_minutes * 60.0,
        reservation_ttl_s=float(lic.reservation_ttl_seconds), notice_webhook=lic.notice_webhook,
    )


def licensing_options() -> LicensingOptions:
    """The running app's licensing options (built once per app)."""
    ext = current_app.extensions
    if "forecourt.licensing.options" not in ext:
        ext["forecourt.licensing.options"] = options_from(get_settings())
    return ext["forecourt.licensing.options"]


def box() -> LicenseBox:
    """The box's licensing on this thread's database connection."""
    return LicenseBox(get_db(), licensing_options())


def policy() -> Policy:
    """The license state now (read-only)."""
    return box().policy()


def on_purge(kind: str) -> Callable[[Callable[[], int]], Callable[[], int]]:
    """Decorator for engines: `@on_purge("reference_images")` on a function that deletes and returns a count.
    It runs inside an app context on the process that runs licensing's jobs."""

    if kind not in purge.PURGE_KINDS:
        raise ValueError(f"unknown purge kind {kind!r}; one of {', '.join(purge.PURGE_KINDS)}")

    def decorator(fn: Callable[[], int]) -> Callable[[], int]:
        hooks = current_app.extensions.setdefault("forecourt.licensing.purge_hooks", {})
        if fn not in hooks.setdefault(kind, []):
            hooks[kind].append(fn)
        return fn

    return decorator


def _purge_member_accounts() -> int:
    """The 90-day purge of accounts: members and their keys go; admins stay so a license can still be installed
    and data exported."""
    from server.services import accounts

    db = get_db()
    ids = [r[0] for r in db.execute("SELECT id FROM users WHERE role != 'admin'")]
    for user_id in ids:
        accounts.delete_user(db, user_id)
    return len(ids)


def run_tick(app: Flask) -> dict[str, Any]:
    """One run of licensing's periodic job for this app: reap, notices, due purges (hooks in an app context)."""
    with app.app_context():
        options = licensing_options()

        def in_context(fn: Callable[[], int]) -> Callable[[], int]:
            def hook() -> int:
                with app.app_context():
                    return int(fn() or 0)

            return hook

        mine = app.extensions.get("forecourt.licensing.purge_hooks", {})
        hooks = purge.registered_hooks()
        for kind, fns in mine.items():
            hooks.setdefault(kind, []).extend(in_context(f) for f in fns)
        return purge.tick(get_db(), options, hooks=hooks)


def _email_sink(settings: Settings) -> notices.Sink:
    from server.mailer import send_mail

    def email(notice: notices.Notice) -> None:
        db = open_db(settings.db_path, settings.storage.busy_timeout_ms)
        try:
            admins = [r[0] for r in db.execute("SELECT email FROM users WHERE role = 'admin' AND disabled = 0")]
        finally:
            db.close()
        for to in admins:
            send_mail(settings.smtp, to, f"Forecourt: {notice['title']}", notice["body"])

    return email


def _start_scheduler(app: Flask, settings: Settings, options: LicensingOptions) -> None:
    mode = settings.licensing.scheduler
    if mode == "off" or (mode == "auto" and "gunicorn" not in sys.modules):
        return

    def job() -> None:
        try:
            run_tick(app)
        except Exception:  # noqa: BLE001 - a failed tick is logged and retried next minute
            log.exception("licensing tick failed")

    def add_jobs(scheduler: Any) -> None:
        scheduler.add_job(job, "interval", seconds=TICK_SECONDS, id="licensing_tick")
        scheduler.add_job(job, "date", id="licensing_tick_now")

    sched = BoxScheduler(options.licensing_dir / "scheduler.lock", add_jobs)
    sched.start()
    app.extensions["forecourt.licensing.scheduler"] = sched


def init_app(app: Flask) -> None:
    """Trial start, notice sinks, readiness check, API guard and the jobs (tables come from prepare_data_dir)."""
    settings: Settings = app.extensions["forecourt.settings"]
    options = options_from(settings)
    app.extensions["forecourt.licensing.options"] = options
    with app.app_context():
        box().policy(write=True)  # starts the trial on the first start, records notices
        box().integrity_check()  # balances against the ledger, the ledger's seal: tamper events
    sinks: list[notices.Sink] = []
    if options.notice_webhook:
        sinks.append(notices.webhook_sink(options.notice_webhook))
    if settings.smtp.host:
        sinks.append(_email_sink(settings))
    notices.set_sinks(sinks)

    def license_check() -> CheckResult:
        state = box().state()
        detail = state["state"] if state["usable"] else f"{state['state']}: " + "; ".join(state["reasons"] or [
            f"expired {state['expires_at']}"])
        return CheckResult("license", state["usable"], detail)

    license_check.__name__ = "license"
    register_check(app, license_check)

    @app.before_request
    def license_guard() -> None:
        path = request.path
        if not (path.startswith("/v1/") or path.startswith("/v1.0/")) or path.startswith(ALWAYS_OPEN):
            return
        p = policy()
        if p.state in ("expired", "restricted"):
            p.check("admin")  # raises license_expired / license_restricted

    with app.app_context():
        on_purge("accounts")(_purge_member_accounts)


def start_jobs(app: Flask) -> None:
    """Start licensing's jobs; create_app calls this once every area has registered its purge hooks, since the
    first tick runs at once and may find a purge already due."""
    _start_scheduler(app, app.extensions["forecourt.settings"], app.extensions["forecourt.licensing.options"])
