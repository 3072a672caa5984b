"""The feature areas, in the order the app wires them: create_app, prepare_data_dir and the `forecourt` command
all read AREAS, so adding an area is one line here (and a failing import fails the start, loudly).

An area's init_app(app) registers its blueprint, its readiness checks and its background work. Its schema steps
and its `forecourt` subcommands sit beside it in the table, because prepare_data_dir and the CLI need them before
(or without) an app. The server's own schema (users, keys, meta) is server/store.py's and always applies first."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import click
from flask import Flask
from sqlite_utils.migrations import Migrations

from licensing import schema as licensing_schema
from server import dashboard
from server.blueprints import (
    accounts,
    admin,
    catalog,
    health,
    improve,
    licensing,
    recognition,
    removebg,
)
from server.cli_improve import improve_group
from server.cli_index import index_group
from server.cli_license import license_group, usage_group
from server.cli_removebg import removebg_command
from server.jobs import init_app as jobs_init_app
from server.jobs import store as jobs_store
from server.jobs.cli import jobs_group, worker_command
from server.services import catalog as catalog_service
from server.services import catalog_recognition as catalog_recognition_service
from server.services import recognition as recognition_service


@dataclass(frozen=True)
class Area:
    """What one feature area adds to the app, the database and the command line."""

    name: str
    init_app: Callable[[Flask], None]
    migrations: tuple[Migrations, ...] = ()
    commands: tuple[click.Command, ...] = ()


AREAS: tuple[Area, ...] = (
    Area("health", health.init_app),
    Area("accounts", accounts.init_app),  # its `users` and `keys` commands are forecourt's own (server/cli.py)
    Area("admin", admin.init_app),
    Area("dashboard", dashboard.init_app),
    Area("licensing", licensing.init_app, (licensing_schema.migrations,), (license_group, usage_group)),
    Area("removebg", removebg.init_app, (), (removebg_command,)),
    Area("improve", improve.init_app, (), (improve_group,)),  # remove.bg's Improvement Program, kept for review
    Area("catalog", catalog.init_app, (catalog_service.migrations,)),
    Area("recognition", recognition.init_app,
         (recognition_service.migrations, catalog_recognition_service.migrations), (index_group,)),
    # background work of every area; no routes of its own (its page is the dashboard's System page)
    Area("jobs", jobs_init_app, (jobs_store.migrations,), (jobs_group, worker_command)),
)
