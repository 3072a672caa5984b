"""One blueprint per API area; create_app registers every blueprint in BLUEPRINTS."""

from __future__ import annotations

import importlib

# Module paths, each exposing `bp`. Engineers add their own line here.
BLUEPRINTS: list[str] = [
    "server.blueprints.health",
    "server.blueprints.accounts",
    "server.blueprints.admin",
    "server.blueprints.dashboard",
    "server.blueprints.licensing",
    "server.blueprints.removebg",
    "server.blueprints.catalog",
    "server.blueprints.recognition",
]


def load_blueprints() -> list:  # type: ignore[type-arg]
    """Import each blueprint module and return its `bp`."""
    return [importlib.import_module(path).bp for path in BLUEPRINTS]
