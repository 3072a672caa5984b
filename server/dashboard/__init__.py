"""The dashboard: server-rendered pages for the people at the dealership, one module per page group.

`bp` is the blueprint every page module adds its routes to; init_app imports those modules (so their routes
exist), then registers it. common.py holds what the pages share. Templates are in server/templates/."""

from __future__ import annotations

from apiflask import APIBlueprint
from flask import Flask
from flask_wtf.csrf import CSRFProtect

from server.blueprints import register

bp = APIBlueprint("dashboard", __name__, enable_openapi=False)
csrf = CSRFProtect()


def init_app(app: Flask) -> None:
    """The dashboard pages, with CSRF-protected forms and outside the API rate limit."""
    from server.dashboard import (  # noqa: F401 - each adds its pages to bp
        account,
        collections,
        common,
        improve,
        keys,
        license,
        overview,
        system,
        tryit,
        usage,
        users,
        vehicles,
    )

    csrf.init_app(app)
    register(app, bp, rate_limited=False)
