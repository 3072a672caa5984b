"""Forecourt's Flask app: create_app(settings) builds it."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import secrets
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from apiflask import APIFlask
from flask import Response, g, has_app_context, request
from flask_limiter import Limiter
from werkzeug.middleware.proxy_fix import ProxyFix

from server import errors, json_limits, metrics, security_headers
from server.auth import SECURITY_SCHEMES, rate_limit_key
from server.config import Settings, load_settings
from server.logs import setup_logging
from server.store import migrate, open_db, pending_migrations, register_migrations
from server.version import __version__

log = logging.getLogger("forecourt.access")
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _secret_key(settings: Settings) -> str:
    """The configured secret, or one made once and kept in the data folder."""
    if settings.server.secret_key:
        return settings.server.secret_key
    path = settings.data_dir / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
        tmp.write_text(secrets.token_hex(32))
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)  # atomic: the first worker wins, the others read its key
        except FileExistsError:
            pass
        tmp.unlink()
    return path.read_text().strip()


def prepare_data_dir(settings: Settings) -> None:
    """Create the data folder and the database, and apply migrations (once, under a file lock)."""
    from server.areas import AREAS

    for area in AREAS:
        for steps in area.migrations:
            register_migrations(steps)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("images", "indexes", "tmp"):
        (settings.data_dir / sub).mkdir(exist_ok=True)
    with open(settings.data_dir / ".migrate.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        existed = settings.db_path.exists()
        db = open_db(settings.db_path, settings.storage.busy_timeout_ms)
        try:
            if existed and settings.storage.backup_before_migrate:
                backup_if_upgrading(settings, db)
            migrate(db)
        finally:
            db.close()


def backup_if_upgrading(settings: Settings, db: Any) -> Path | None:
    """Before an upgrade's schema changes touch a data folder that holds data, write a backup of it (as
    `forecourt backup` does); returns where, or None when nothing is pending."""
    from server.backup import backup

    pending = pending_migrations(db)
    if not pending or not db["_sqlite_migrations"].exists():
        return None  # up to date, or a brand-new database
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = (settings.storage.backup_dir or settings.data_dir / "backups").expanduser().resolve() / \
        f"before-upgrade-{stamp}"
    backup(settings.data_dir, dest, models_dir=settings.models_dir)
    logging.getLogger("forecourt.store").warning(
        "backed up the data folder to %s before applying %d schema change(s): %s", dest, len(pending),
        ", ".join(pending))
    return dest


def create_app(settings: Settings | dict[str, Any] | None = None) -> APIFlask:
    """Build the app from settings (a Settings, a dict of sections, or None to load the config file and env)."""
    if settings is None:
        settings = load_settings()
    elif isinstance(settings, dict):
        settings = Settings.model_validate(settings)
    setup_logging(settings.logging.level, settings.logging.format == "json")

    app = APIFlask(
        __name__,
        title="Forecourt API",
        version=__version__,
        spec_path="/openapi.json",
        docs_path="/docs",
        docs_ui="swagger-ui",
    )
    app.extensions["forecourt.settings"] = settings
    app.security_schemes = SECURITY_SCHEMES
    app.config.update(
        SECRET_KEY=_secret_key(settings),
        MAX_CONTENT_LENGTH=settings.server.max_request_mb * 1024 * 1024,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.auth.session_hours),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.server.session_cookie_secure,
        SESSION_COOKIE_NAME="forecourt_session",
        WTF_CSRF_CHECK_DEFAULT=False,
        WTF_CSRF_TIME_LIMIT=None,
        VALIDATION_ERROR_STATUS_CODE=400,
        VALIDATION_ERROR_DESCRIPTION="Invalid parameters",
        OPENAPI_VERSION="3.1.0",
        AUTO_404_RESPONSE=True,
        INFO={"description": "Forecourt: background removal (remove.bg-compatible), recognition and a vehicle "
                             "image catalog, self-hosted and offline."},
        SWAGGER_UI_CSS="/static/vendor/swagger-ui/swagger-ui.css",
        SWAGGER_UI_BUNDLE_JS="/static/vendor/swagger-ui/swagger-ui-bundle.js",
        SWAGGER_UI_STANDALONE_PRESET_JS="/static/vendor/swagger-ui/swagger-ui-standalone-preset.js",
        DOCS_FAVICON="/static/favicon.svg",
    )

    @app.spec_processor
    def add_error_schema(spec: dict[str, Any]) -> dict[str, Any]:
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        schemas["ErrorBody"] = schemas["HTTPError"] = schemas["ValidationError"] = {
            "type": "object", "required": ["errors"],
            "properties": {"errors": {"type": "array", "items": {
                "type": "object", "required": ["code", "title", "detail"],
                "properties": {"code": {"type": "string"}, "title": {"type": "string"},
                               "detail": {"type": "string"}}}}},
        }
        for ops in spec.get("paths", {}).values():  # a JSON input is always parsed, so its body is required
            for op in ops.values():
                if isinstance(op, dict) and "application/json" in op.get("requestBody", {}).get("content", {}):
                    op["requestBody"]["required"] = True
        return spec

    if settings.server.trusted_proxies:  # the client's address and scheme as the nearest N proxies saw them
        n = settings.server.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)  # type: ignore[method-assign]
    prepare_data_dir(settings)
    errors.init_app(app)
    security_headers.init_app(app)
    _init_request_hooks(app)

    from server.areas import AREAS

    _init_limiter(app, settings)
    for area in AREAS:  # health, accounts, admin, dashboard, licensing, removebg, catalog, recognition
        area.init_app(app)
    from server.services.licensing import start_jobs

    start_jobs(app)  # after every area registered its purge hooks
    return app


def _init_limiter(app: APIFlask, settings: Settings) -> Limiter | None:
    if not settings.rate_limit.enabled:
        return None
    import server.ratelimit_store  # noqa: F401 - registers the sqlite:// storage scheme

    uri = settings.rate_limit.storage_uri or f"sqlite:///{settings.data_dir / 'ratelimit.db'}"
    limiter = Limiter(key_func=rate_limit_key, app=app, storage_uri=uri, headers_enabled=True,
                      strategy="fixed-window", swallow_errors=True)
    app.extensions["forecourt.limiter"] = limiter
    return limiter


def _route_label() -> str:
    rule = request.url_rule
    return rule.rule if rule is not None else "<unmatched>"


def _retry_after_on_429_only(resp: Response) -> Response:
    """flask-limiter writes Retry-After on every response, 0 or below as a window ends: keep it on 429 only, >= 1 s."""
    value = resp.headers.get("Retry-After")
    if value is None:
        return resp
    if resp.status_code == 429 and has_app_context() and g.get("retry_after"):  # an error's own wait (a sign-in pause), not the window's
        resp.headers["Retry-After"] = g.retry_after
        return resp
    if resp.status_code != 429:
        del resp.headers["Retry-After"]
    elif value.lstrip("-").isdigit() and int(value) < 1:
        resp.headers["Retry-After"] = "1"
    return resp


def _init_request_hooks(app: APIFlask) -> None:
    # registered before the limiter's own hook, so it runs after it (Flask runs after_request hooks last-first)
    app.after_request(_retry_after_on_429_only)

    @app.before_request
    def start_request() -> None:
        incoming = request.headers.get("X-Request-Id", "")
        g.request_id = incoming if REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        g.started = time.perf_counter()
        if request.is_json:  # before any parser recurses into it, and before auth: no work for a hostile body
            why = json_limits.too_deep(request.get_data(cache=True))
            if why:
                raise errors.BadRequest(why, code="invalid_parameters", title="Invalid parameters")
        # APIFlask reads a JSON `null` body as {}; the spec says a body is an object, so refuse it here.
        if request.is_json and (request.content_length or 99) <= 16 and request.get_data().strip() == b"null":
            raise errors.BadRequest("The JSON body must be an object, not null.", code="invalid_parameters",
                                    title="Invalid parameters")

    @app.after_request
    def finish_request(resp: Response) -> Response:
        resp.headers["X-Request-Id"] = g.get("request_id", "")
        started = g.get("started")
        duration = time.perf_counter() - started if started else 0.0
        route = _route_label()
        if route not in ("/metrics",):
            metrics.REQUESTS.labels(route=route, method=request.method, status=str(resp.status_code)).inc()
            metrics.LATENCY.labels(route=route, method=request.method).observe(duration)
        principal = g.get("principal")
        log.info("%s %s %s", request.method, request.path, resp.status_code,
                 extra={"method": request.method, "path": request.path, "status": resp.status_code,
                        "duration_ms": round(duration * 1000, 2), "remote": request.remote_addr,
                        "key_id": getattr(principal, "key_id", None)})
        return resp


__all__ = ["create_app", "prepare_data_dir", "Path"]
