"""server/areas.py: one list wires every feature area into the app, the database and the command line."""

from __future__ import annotations

from server.areas import AREAS
from server.cli import cli
from server.store import pending_migrations


def test_every_area_registers_its_blueprint_checks_and_schema(app) -> None:
    assert [a.name for a in AREAS] == ["health", "accounts", "admin", "dashboard", "licensing", "removebg", "improve",
                                       "catalog", "recognition", "jobs"]
    # openapi: APIFlask's spec and docs; jobs has no routes (its page is the dashboard's)
    assert set(app.blueprints) - {"openapi"} == {a.name for a in AREAS} - {"jobs"}
    checks = [c.__name__ for c in app.extensions["forecourt.ready_checks"]]
    assert checks == ["_database_check", "license", "_segmenter_check", "_sam_check", "device_check"]
    from server.store import open_db

    db = open_db(app.extensions["forecourt.settings"].db_path)
    assert pending_migrations(db) == []  # every area's schema applied by create_app
    tables = set(db.table_names())
    assert {"users", "lic_buckets", "catalog_vehicles", "rec_objects", "jobs"} <= tables
    db.close()


def test_every_area_command_is_on_the_forecourt_command() -> None:
    for area in AREAS:
        for command in area.commands:
            assert cli.commands[command.name] is command
    assert {"models", "license", "usage", "removebg", "index", "improve", "jobs", "worker"} <= set(cli.commands)


def test_api_areas_are_rate_limited_and_probes_are_not(client, admin) -> None:
    assert "X-RateLimit-Limit" in client.get("/v1/me", headers=admin.headers).headers
    assert "X-RateLimit-Limit" not in client.get("/livez").headers


def test_dashboard_pages_import_without_a_cycle() -> None:
    """server/dashboard/__init__.py holds the blueprint and imports no page at import time; pages import it and
    common.py, never the other way round."""
    import ast
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "server" / "dashboard"
    graph: dict[str, set[str]] = {}
    for path in folder.glob("*.py"):
        name = "server.dashboard" if path.stem == "__init__" else f"server.dashboard.{path.stem}"
        graph[name] = {n.module for n in ast.parse(path.read_text()).body
                       if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("server.dashboard")}
    assert graph["server.dashboard"] == set()
    assert graph["server.dashboard.common"] == {"server.dashboard"}

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        return any(dep == target or (dep not in seen and reaches(dep, target, seen | {dep}))
                   for dep in graph.get(start, ()))

    assert not [m for m in graph if reaches(m, m, set())]
