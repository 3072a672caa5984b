"""One blueprint per API area; each area's init_app registers its own with `register` (server/areas.py lists them)."""

from __future__ import annotations

from flask import Blueprint, Flask

from server.auth import rate_limit_key


def register(app: Flask, bp: Blueprint, *, rate_limited: bool = True) -> None:
    """Register an area's blueprint; its routes share the default rate limit when [rate_limit] is on."""
    limiter = app.extensions.get("forecourt.limiter")
    if rate_limited and limiter is not None:
        settings = app.extensions["forecourt.settings"]
        limiter.limit(lambda: settings.rate_limit.default, key_func=rate_limit_key)(bp)
    app.register_blueprint(bp)
