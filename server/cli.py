"""The `forecourt` command: init, serve, users, keys, backup, restore, config, version, models, and each area's
commands (server/areas.py)."""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click

from models.cli import models_group
from server.areas import AREAS
from server.config import ConfigError, Settings, iter_settings, load_settings
from server.version import __version__


@dataclass
class CliContext:
    """What every command gets: the settings and the folders they name."""

    settings: Settings
    config_path: str | None

    @property
    def models_dir(self) -> Path:
        return self.settings.models_dir

    @property
    def cache_dir(self) -> Path:
        return self.settings.cache_dir

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    def db(self):  # type: ignore[no-untyped-def]
        """The database, created and migrated if needed."""
        from server import prepare_data_dir
        from server.store import open_db

        prepare_data_dir(self.settings)
        return open_db(self.settings.db_path, self.settings.storage.busy_timeout_ms)


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


@contextlib.contextmanager
def _api_errors() -> Iterator[None]:
    """A service's refusal (no such user, a weak password) ends the command with its detail, exit code 2."""
    from server.errors import ApiError

    try:
        yield
    except ApiError as exc:
        _fail(exc.detail)


@click.group()
@click.option("--config", "config_path", envvar="FORECOURT_CONFIG", type=click.Path(dir_okay=False),
              help="TOML config file (default: embedded defaults; env FORECOURT_CONFIG).")
@click.version_option(__version__, prog_name="forecourt")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """Forecourt: self-hosted background removal, recognition and vehicle images for dealerships."""
    try:
        settings = load_settings(config_path)
    except ConfigError as exc:
        _fail(str(exc))
    ctx.obj = CliContext(settings=settings, config_path=config_path)


def _print_once(title: str, lines: list[str]) -> None:
    click.echo("")
    click.secho(title, bold=True)
    for line in lines:
        click.echo(f"  {line}")
    click.secho("  These are shown once; store them now.", fg="yellow")
    click.echo("")


@cli.command()
@click.option("--admin-email", default="admin@localhost.localdomain", show_default=True, help="First admin's e-mail.")
@click.pass_obj
def init(obj: CliContext, admin_email: str) -> None:
    """Create the data folder and database; on first run a first admin and an API key, printed once."""
    from server.services import accounts

    db = obj.db()
    if db["users"].count:
        click.echo(f"Data folder {obj.data_dir} is ready ({db['users'].count} users); nothing to create.")
        return
    password = secrets.token_urlsafe(12)
    user = accounts.create_user(db, admin_email, password, "admin")
    key, _ = accounts.create_key(db, user["id"], "first key")
    _print_once(f"Forecourt is set up in {obj.data_dir}", [
        f"dashboard admin: {admin_email}", f"password:        {password}", f"API key:         {key}",
        f'try: curl -H "X-Api-Key: {key}" http://127.0.0.1:{obj.settings.server.port}/v1/me',
    ])


@cli.command()
@click.option("--bind", default=None, help="host:port (default from [server]).")
@click.option("--workers", type=int, default=None, help="Worker processes (default from [server]).")
@click.option("--threads", type=int, default=None, help="Threads per worker (default from [server]).")
@click.pass_obj
def serve(obj: CliContext, bind: str | None, workers: int | None, threads: int | None) -> None:
    """Run the server under gunicorn."""
    obj.db().close()
    env = dict(os.environ)
    if obj.config_path:
        env["FORECOURT_CONFIG"] = str(Path(obj.config_path).resolve())
    if bind:
        host, _, port = bind.rpartition(":")
        env["FORECOURT_SERVER__HOST"], env["FORECOURT_SERVER__PORT"] = host or "127.0.0.1", port
    if workers:
        env["FORECOURT_SERVER__WORKERS"] = str(workers)
    if threads:
        env["FORECOURT_SERVER__THREADS"] = str(threads)
    if obj.settings.models.device == "cuda":  # asked in a child: this process becomes gunicorn's master (no CUDA)
        import subprocess

        check = subprocess.run([sys.executable, "-m", "models.placement", "--device", "cuda", "--models-dir",
                                str(obj.models_dir), "--segmenter", obj.settings.models.segmenter, "--sam",
                                obj.settings.models.sam_model], env=env, capture_output=True, text=True)
        if check.returncode != 0:
            _fail("device = \"cuda\" cannot be honoured, so the server does not start:\n" + check.stdout.strip())
    conf = Path(__file__).with_name("gunicorn_conf.py")
    args = [sys.executable, "-m", "gunicorn", "-c", str(conf), "server.wsgi:app"]
    os.execve(sys.executable, args, env)


# --- users --------------------------------------------------------------------------------------------------------


@cli.group()
def users() -> None:
    """Manage users."""


@users.command("list")
@click.pass_obj
def users_list(obj: CliContext) -> None:
    """List users."""
    from server.services import accounts

    for u in accounts.list_users(obj.db()):
        click.echo(f"{u['id']}\t{u['email']}\t{u['role']}\t{u['created_at']}")


@users.command("create")
@click.argument("email")
@click.option("--role", type=click.Choice(["admin", "member"]), default="member", show_default=True)
@click.option("--password", default=None, help="Password (default: generated and printed once).")
@click.pass_obj
def users_create(obj: CliContext, email: str, role: str, password: str | None) -> None:
    """Create a user."""
    from server.services import accounts

    shown = password or secrets.token_urlsafe(12)
    with _api_errors():
        user = accounts.create_user(obj.db(), email, shown, role, obj.settings.auth.min_password_length)
    click.echo(f"created user {user['id']} {user['email']} ({user['role']})")
    if not password:
        _print_once("Password", [shown])


@users.command("reset-password")
@click.argument("email")
@click.option("--password", default=None, help="New password (default: generated and printed once).")
@click.pass_obj
def users_reset_password(obj: CliContext, email: str, password: str | None) -> None:
    """Set a user's password (admin reset)."""
    from server.services import accounts

    db = obj.db()
    shown = password or secrets.token_urlsafe(12)
    with _api_errors():
        user = accounts.find_user(db, email)
        accounts.set_password(db, user["id"], shown, obj.settings.auth.min_password_length)
    click.echo(f"password of {email} reset")
    if not password:
        _print_once("New password", [shown])


@users.command("reset-link")
@click.argument("email")
@click.pass_obj
def users_reset_link(obj: CliContext, email: str) -> None:
    """Print a single-use password-reset link for a user."""
    from server.services import accounts

    db = obj.db()
    with _api_errors():
        user = accounts.find_user(db, email)
    token = accounts.create_reset_token(db, user["id"], obj.settings.auth.reset_token_minutes)
    base = obj.settings.server.public_url.rstrip("/") or f"http://{obj.settings.server.host}:{obj.settings.server.port}"
    click.echo(f"{base}/reset/{token}  (valid {obj.settings.auth.reset_token_minutes} minutes, once)")


@users.command("set-role")
@click.argument("email")
@click.argument("role", type=click.Choice(["admin", "member"]))
@click.pass_obj
def users_set_role(obj: CliContext, email: str, role: str) -> None:
    """Make a user admin or member."""
    from server.services import accounts

    db = obj.db()
    with _api_errors():
        accounts.set_role(db, accounts.find_user(db, email)["id"], role)
    click.echo(f"{email} is now {role}")


@users.command("delete")
@click.argument("email")
@click.confirmation_option(prompt="Delete this user and their keys?")
@click.pass_obj
def users_delete(obj: CliContext, email: str) -> None:
    """Delete a user and their keys."""
    from server.services import accounts

    db = obj.db()
    with _api_errors():
        accounts.delete_user(db, accounts.find_user(db, email)["id"])
    click.echo(f"deleted {email}")


# --- keys ---------------------------------------------------------------------------------------------------------


@cli.group()
def keys() -> None:
    """Manage API keys."""


@keys.command("create")
@click.argument("email")
@click.option("--name", default="", help="A label for the key.")
@click.pass_obj
def keys_create(obj: CliContext, email: str, name: str) -> None:
    """Create an API key for a user; the key is printed once."""
    from server.services import accounts

    db = obj.db()
    with _api_errors():
        secret, row = accounts.create_key(db, accounts.find_user(db, email)["id"], name)
    if sys.stdout.isatty():
        _print_once(f"API key {row['id']} for {email}", [secret])
    else:
        click.echo(secret)


@keys.command("list")
@click.argument("email", required=False)
@click.pass_obj
def keys_list(obj: CliContext, email: str | None) -> None:
    """List keys (of one user, or all)."""
    from server.services import accounts

    db = obj.db()
    with _api_errors():
        user_id = accounts.find_user(db, email)["id"] if email else None
    for k in accounts.list_keys(db, user_id):
        state = "revoked" if k["revoked_at"] else "active"
        click.echo(f"{k['id']}\t{k['prefix']}...\tuser {k['user_id']}\t{k['name']}\t{state}")


@keys.command("revoke")
@click.argument("key_id")
@click.pass_obj
def keys_revoke(obj: CliContext, key_id: str) -> None:
    """Revoke a key."""
    from server.services import accounts

    with _api_errors():
        accounts.revoke_key(obj.db(), key_id)
    click.echo(f"revoked {key_id}")


# --- backup, config, version --------------------------------------------------------------------------------------


@cli.command("backup")
@click.argument("path", type=click.Path(file_okay=False, path_type=Path))
@click.pass_obj
def backup_cmd(obj: CliContext, path: Path) -> None:
    """Write a consistent snapshot (database + files) to PATH, also while the server runs."""
    from server.backup import BackupError, backup

    try:
        manifest = backup(obj.data_dir, path.resolve(), models_dir=obj.models_dir)
    except BackupError as exc:
        _fail(str(exc))
    click.echo(f"backup written to {path} ({len(manifest['files'])} files)")


@cli.command("restore")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--yes", is_flag=True, help="Do not ask; the server must be stopped.")
@click.pass_obj
def restore_cmd(obj: CliContext, path: Path, yes: bool) -> None:
    """Bring back a snapshot made by `forecourt backup` (stop the server first)."""
    from server.backup import BackupError, restore

    if not yes:
        click.confirm(f"Replace the database in {obj.data_dir} with the backup in {path}?", abort=True)
    try:
        manifest = restore(path.resolve(), obj.data_dir)
    except BackupError as exc:
        _fail(str(exc))
    click.echo(f"restored {len(manifest['files'])} files from {path} (made {manifest['created_at']})")


@cli.group("config")
def config_group() -> None:
    """Inspect settings."""


@config_group.command("check")
@click.pass_obj
def config_check(obj: CliContext) -> None:
    """Validate the config (a bad value already stopped us with the key's name)."""
    click.echo(f"config OK ({obj.config_path or 'embedded defaults'}); data folder {obj.data_dir}")


@config_group.command("show")
@click.pass_obj
def config_show(obj: CliContext) -> None:
    """Print every setting's effective value."""
    for name, _default, _help in iter_settings():
        section, _, key = name.partition(".")
        value = getattr(getattr(obj.settings, section), key)
        click.echo(f"{name} = {value!r}")


@cli.command()
def version() -> None:
    """Print the version."""
    click.echo(f"forecourt {__version__}")


# The vision engine's `models` group, then each area's commands (server/areas.py).
cli.add_command(models_group)
for area in AREAS:
    for command in area.commands:
        cli.add_command(command)


def main() -> None:
    """Entry point for the console script."""
    cli()


if __name__ == "__main__":
    main()
