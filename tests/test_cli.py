"""The `forecourt` command: init, users, keys, version and config check, with their exit codes and messages."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from server.cli import cli
from server.version import __version__

KEY_RE = re.compile(r"\bfc_[A-Za-z0-9_-]{40,}\b")


@pytest.fixture
def run(cli_runner):  # type: ignore[no-untyped-def]
    """Invoke the CLI on the temporary data folder; returns click's Result."""
    runner, env = cli_runner

    def invoke(*args: str, input: str | None = None):  # type: ignore[no-untyped-def]
        return runner.invoke(cli, list(args), env=env, input=input, catch_exceptions=False)

    return invoke


def test_init_creates_folder_db_admin_and_a_key_once(run, data_dir: Path) -> None:
    data_dir.rmdir()  # init makes the folder itself
    first = run("init", "--admin-email", "boss@dealer.example")
    assert first.exit_code == 0, first.output
    assert (data_dir / "forecourt.db").is_file()
    for sub in ("images", "indexes", "tmp"):
        assert (data_dir / sub).is_dir()
    keys = KEY_RE.findall(first.output)
    assert len(keys) == 2  # the key itself and the curl line that uses it
    assert keys[0] == keys[1]
    assert "boss@dealer.example" in first.output and "shown once" in first.output
    with sqlite3.connect(data_dir / "forecourt.db") as db:
        assert db.execute("SELECT email, role FROM users").fetchall() == [("boss@dealer.example", "admin")]
        assert db.execute("SELECT count(*) FROM api_keys").fetchone() == (1,)
        stored = db.execute("SELECT key_hash, prefix FROM api_keys").fetchone()
        assert keys[0] not in stored and stored[1] == keys[0][:10]  # hashed, only the prefix kept
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)

    second = run("init")
    assert second.exit_code == 0
    assert "nothing to create" in second.output
    assert not KEY_RE.search(second.output)
    with sqlite3.connect(data_dir / "forecourt.db") as db:
        assert db.execute("SELECT count(*) FROM users").fetchone() == (1,)
        assert db.execute("SELECT count(*) FROM api_keys").fetchone() == (1,)


def test_users_create_list_set_role_reset_and_delete(run) -> None:
    made = run("users", "create", "Sales@Dealer.example", "--password", "long enough password")
    assert made.exit_code == 0 and "created user" in made.output and "(member)" in made.output
    generated = run("users", "create", "lot@dealer.example", "--role", "admin")
    assert generated.exit_code == 0 and "Password" in generated.output and "shown once" in generated.output

    listing = run("users", "list")
    assert listing.exit_code == 0
    rows = [line.split("\t") for line in listing.output.strip().splitlines()]
    assert [(r[1], r[2]) for r in rows] == [("sales@dealer.example", "member"), ("lot@dealer.example", "admin")]

    dup = run("users", "create", "sales@dealer.example", "--password", "long enough password")
    assert dup.exit_code == 2 and "exists" in dup.output
    weak = run("users", "create", "new@dealer.example", "--password", "short")
    assert weak.exit_code == 2 and "at least 10 characters" in weak.output
    bad = run("users", "create", "not-an-email", "--password", "long enough password")
    assert bad.exit_code == 2 and "not an e-mail" in bad.output
    wrong_role = run("users", "create", "x@dealer.example", "--role", "owner")
    assert wrong_role.exit_code == 2 and "owner" in wrong_role.output

    promoted = run("users", "set-role", "sales@dealer.example", "admin")
    assert promoted.exit_code == 0 and "is now admin" in promoted.output
    assert "sales@dealer.example\tadmin" in run("users", "list").output
    missing = run("users", "set-role", "ghost@dealer.example", "admin")
    assert missing.exit_code == 2 and "No user with e-mail ghost@dealer.example" in missing.output

    reset = run("users", "reset-password", "sales@dealer.example", "--password", "another long password")
    assert reset.exit_code == 0 and "reset" in reset.output
    shown = run("users", "reset-password", "sales@dealer.example")
    assert shown.exit_code == 0 and "New password" in shown.output
    assert run("users", "reset-password", "ghost@dealer.example").exit_code == 2
    assert run("users", "reset-password", "sales@dealer.example", "--password", "short").exit_code == 2

    link = run("users", "reset-link", "sales@dealer.example")
    assert link.exit_code == 0
    assert re.search(r"http://127\.0\.0\.1:8080/reset/[A-Za-z0-9_-]{30,}\s+\(valid 60 minutes, once\)", link.output)
    assert run("users", "reset-link", "ghost@dealer.example").exit_code == 2

    refused = run("users", "delete", "lot@dealer.example", input="n\n")
    assert refused.exit_code == 1 and "lot@dealer.example" in run("users", "list").output
    deleted = run("users", "delete", "lot@dealer.example", "--yes")
    assert deleted.exit_code == 0 and "deleted lot@dealer.example" in deleted.output
    assert "lot@dealer.example" not in run("users", "list").output
    assert run("users", "delete", "lot@dealer.example", "--yes").exit_code == 2


def test_reset_link_from_the_cli_sets_a_new_password_once(run, app, client) -> None:
    run("users", "create", "sales@dealer.example", "--password", "long enough password")
    url = run("users", "reset-link", "sales@dealer.example").output.split()[0]
    token = url.rsplit("/", 1)[1]
    resp = client.post("/v1/password-reset/confirm", json={"token": token, "new_password": "a brand new password"})
    assert resp.status_code == 200, resp.get_json()
    again = client.post("/v1/password-reset/confirm", json={"token": token, "new_password": "a brand new password"})
    assert again.status_code == 400 and again.get_json()["errors"][0]["code"] == "invalid_token"


def test_keys_create_list_revoke_and_the_key_works_over_the_api(run, app, client) -> None:
    run("users", "create", "sales@dealer.example", "--password", "long enough password")
    made = run("keys", "create", "sales@dealer.example", "--name", "website")
    assert made.exit_code == 0
    secret = made.output.strip()
    assert KEY_RE.fullmatch(secret), made.output  # not a terminal: only the key, for scripts

    me = client.get("/v1/me", headers={"X-Api-Key": secret})
    assert me.status_code == 200
    assert me.get_json()["user"]["email"] == "sales@dealer.example"
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    key_id = me.get_json()["key_id"]

    listing = run("keys", "list", "sales@dealer.example")
    assert listing.exit_code == 0
    row = listing.output.strip().split("\t")
    assert row[0] == key_id and row[1] == secret[:10] + "..." and row[3] == "website" and row[4] == "active"
    assert key_id in run("keys", "list").output
    assert run("keys", "list", "ghost@dealer.example").exit_code == 2
    assert run("keys", "create", "ghost@dealer.example").exit_code == 2

    revoked = run("keys", "revoke", key_id)
    assert revoked.exit_code == 0 and f"revoked {key_id}" in revoked.output
    assert run("keys", "list", "sales@dealer.example").output.strip().endswith("revoked")
    denied = client.get("/v1/me", headers={"X-Api-Key": secret})
    assert denied.status_code == 403 and denied.get_json()["errors"][0]["code"] == "auth_failed"
    unknown = run("keys", "revoke", "key_0000000000000000")
    assert unknown.exit_code == 2 and "No API key key_0000000000000000" in unknown.output


def test_version(run) -> None:
    result = run("version")
    assert result.exit_code == 0 and result.output.strip() == f"forecourt {__version__}"
    flag = run("--version")
    assert flag.exit_code == 0 and __version__ in flag.output


def test_config_check_accepts_a_good_file_and_names_the_bad_key(tmp_path: Path, data_dir: Path) -> None:
    runner = CliRunner()
    good = tmp_path / "good.toml"
    good.write_text(f'[storage]\ndata_dir = "{data_dir}"\n[server]\nport = 9000\n')
    ok = runner.invoke(cli, ["--config", str(good), "config", "check"], env={"FORECOURT_CONFIG": None})
    assert ok.exit_code == 0 and "config OK" in ok.output and str(good) in ok.output

    bad = tmp_path / "bad.toml"
    bad.write_text("[server]\nport = 70000\n")
    failed = runner.invoke(cli, ["--config", str(bad), "config", "check"])
    assert failed.exit_code == 2
    assert "server.port" in failed.output and "65535" in failed.output

    typo = tmp_path / "typo.toml"
    typo.write_text("[server]\nworkerz = 3\n")
    failed = runner.invoke(cli, ["--config", str(typo), "config", "check"])
    assert failed.exit_code == 2 and "server.workerz" in failed.output

    env_bad = runner.invoke(cli, ["config", "check"], env={"FORECOURT_SERVER__TIMEOUT": "30",
                                                           "FORECOURT_CONFIG": None})
    assert env_bad.exit_code == 2 and "server.timeout" in env_bad.output

    absent = runner.invoke(cli, ["--config", str(tmp_path / "nope.toml"), "config", "check"])
    assert absent.exit_code == 2 and "config file not found" in absent.output

    garbled = tmp_path / "garbled.toml"
    garbled.write_text("[server\n")
    failed = runner.invoke(cli, ["--config", str(garbled), "config", "check"])
    assert failed.exit_code == 2 and "not valid TOML" in failed.output
