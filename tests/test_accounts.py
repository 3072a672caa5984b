"""Accounts: users, argon2 passwords, dashboard sign-in with CSRF, change password/e-mail, password resets."""

from __future__ import annotations

import re
from datetime import timedelta

import time_machine

from server.services import accounts
from server.store import get_db
from tests.helpers import assert_error_shape


def _csrf(client, path: str) -> str:
    page = client.get(path).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page[:500]
    return match.group(1)


def _login(client, email: str, password: str):
    token = _csrf(client, "/login")
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token})


def test_passwords_are_argon2_hashes(app, admin) -> None:
    with app.app_context():
        row = accounts.find_user(get_db(), admin.email)
    assert row["password_hash"].startswith("$argon2id$")
    assert admin.password not in row["password_hash"]


def test_login_logout_and_csrf(client, admin) -> None:
    assert client.get("/").status_code == 302
    # a form post without the CSRF token is refused
    resp = client.post("/login", data={"email": admin.email, "password": admin.password})
    assert resp.status_code == 400
    assert "forecourt_session" not in resp.headers.get("Set-Cookie", "") or "user_id" not in resp.get_data(as_text=True)
    wrong = _login(client, admin.email, "not the password")
    assert wrong.status_code == 401
    assert "Check the e-mail address and password" in wrong.get_data(as_text=True)
    ok = _login(client, admin.email, admin.password)
    assert ok.status_code == 302 and ok.headers["Location"] == "/"
    assert admin.email in client.get("/").get_data(as_text=True)
    cookie = ok.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    client.post("/logout", data={"csrf_token": _csrf(client, "/account")})
    assert client.get("/").status_code == 302


def test_login_redirect_ignores_foreign_next(client, admin) -> None:
    token = _csrf(client, "/login")
    resp = client.post("/login?next=//evil.example/x", data={"email": admin.email, "password": admin.password,
                                                              "csrf_token": token})
    assert resp.headers["Location"] == "/"


def test_change_password_on_dashboard_needs_current_and_ends_other_sessions(app, admin) -> None:
    c1, c2 = app.test_client(), app.test_client()
    _login(c1, admin.email, admin.password)
    _login(c2, admin.email, admin.password)
    token = _csrf(c1, "/account")
    bad = c1.post("/account", data={"action": "password", "current_password": "wrong one!", "new_password":
                                     "a brand new secret", "confirm_password": "a brand new secret",
                                     "csrf_token": token})
    assert bad.status_code == 400
    good = c1.post("/account", data={"action": "password", "current_password": admin.password, "new_password":
                                      "a brand new secret", "confirm_password": "a brand new secret",
                                      "csrf_token": token})
    assert good.status_code == 302
    assert c1.get("/").status_code == 200  # this session stays
    assert c2.get("/").status_code == 302  # the other session is signed out
    assert _login(app.test_client(), admin.email, "a brand new secret").status_code == 302


def test_change_email_asks_for_password(app, client, admin, member) -> None:
    _login(client, admin.email, admin.password)
    token = _csrf(client, "/account")
    resp = client.post("/account", data={"action": "email", "email": "boss@dealer.example", "password": "wrong pw!",
                                         "csrf_token": token})
    assert resp.status_code == 400
    resp = client.post("/account", data={"action": "email", "email": member.email, "password": admin.password,
                                         "csrf_token": token})
    assert resp.status_code == 400 and "exists" in resp.get_data(as_text=True)
    resp = client.post("/account", data={"action": "email", "email": "boss@dealer.example",
                                         "password": admin.password, "csrf_token": token})
    assert resp.status_code == 302
    assert "boss@dealer.example" in client.get("/account").get_data(as_text=True)


def test_api_password_and_email_change(client, member) -> None:
    resp = client.post("/v1/me/password", json={"current_password": "nope nope nope", "new_password": "x" * 12},
                       headers=member.headers)
    assert assert_error_shape(resp, 401)["code"] == "invalid_credentials"
    resp = client.post("/v1/me/password", json={"current_password": member.password, "new_password": "short"},
                       headers=member.headers)
    assert assert_error_shape(resp, 400)["code"] == "weak_password"
    resp = client.post("/v1/me/password", json={"current_password": member.password, "new_password": "y" * 12},
                       headers=member.headers)
    assert resp.status_code == 200
    resp = client.post("/v1/me/email", json={"password": "y" * 12, "email": "not-an-email"}, headers=member.headers)
    assert assert_error_shape(resp, 400)["code"] == "invalid_email"
    resp = client.post("/v1/me/email", json={"password": "y" * 12, "email": "New@Dealer.Example"},
                       headers=member.headers)
    assert resp.status_code == 200 and resp.get_json()["user"]["email"] == "new@dealer.example"


def test_reset_token_is_single_use_and_expires_after_an_hour(app, client, member) -> None:
    with app.app_context():
        token = accounts.create_reset_token(get_db(), member.user_id, 60)
        stale = accounts.create_reset_token(get_db(), member.user_id, 60)
    resp = client.post("/v1/password-reset/confirm", json={"token": token, "new_password": "reset password 1"})
    assert resp.status_code == 200
    again = client.post("/v1/password-reset/confirm", json={"token": token, "new_password": "reset password 2"})
    assert assert_error_shape(again, 400)["code"] == "invalid_token"
    # setting a password invalidates other outstanding links
    other = client.post("/v1/password-reset/confirm", json={"token": stale, "new_password": "reset password 3"})
    assert assert_error_shape(other, 400)["code"] == "invalid_token"
    with app.app_context():
        assert accounts.authenticate(get_db(), member.email, "reset password 1")
        late = accounts.create_reset_token(get_db(), member.user_id, 60)
    with time_machine.travel(timedelta(minutes=61), tick=False):
        resp = client.post("/v1/password-reset/confirm", json={"token": late, "new_password": "reset password 4"})
    assert assert_error_shape(resp, 400)["code"] == "invalid_token"
    assert "expired" in resp.get_json()["errors"][0]["detail"]


def test_forgot_password_without_smtp_gives_the_admin_the_link(app, client, admin, member) -> None:
    resp = client.post("/v1/password-reset", json={"email": member.email})
    assert resp.status_code == 202
    # same answer for an unknown address (no user enumeration)
    assert client.post("/v1/password-reset", json={"email": "ghost@x.example"}).get_json() == resp.get_json()
    link = client.post(f"/v1/admin/users/{member.user_id}/reset-link", headers=admin.headers)
    assert link.status_code == 201
    url = link.get_json()["url"]
    path = url.split("://", 1)[1].split("/", 1)[1]
    page_token = _csrf(client, "/" + path)
    done = client.post("/" + path, data={"new_password": "from the link!", "confirm_password": "from the link!",
                                         "csrf_token": page_token})
    assert done.status_code == 302
    assert _login(app.test_client(), member.email, "from the link!").status_code == 302


def test_admin_manages_users_and_members_cannot(client, admin, member) -> None:
    resp = client.get("/v1/admin/users", headers=member.headers)
    assert assert_error_shape(resp, 403)["code"] == "admin_required"
    resp = client.post("/v1/admin/users", json={"email": "new@dealer.example", "password": "long enough pw"},
                       headers=admin.headers)
    assert resp.status_code == 201 and resp.get_json()["role"] == "member"
    dup = client.post("/v1/admin/users", json={"email": "new@dealer.example", "password": "long enough pw"},
                      headers=admin.headers)
    assert assert_error_shape(dup, 409)["code"] == "user_exists"
    uid = resp.get_json()["id"]
    assert client.patch(f"/v1/admin/users/{uid}", json={"role": "admin"}, headers=admin.headers).get_json()["role"] == "admin"
    bad_role = client.patch(f"/v1/admin/users/{uid}", json={"role": "owner"}, headers=admin.headers)
    assert assert_error_shape(bad_role, 400)["code"] == "invalid_parameters"
    assert client.delete(f"/v1/admin/users/{uid}", headers=admin.headers).status_code == 204
    assert assert_error_shape(client.delete(f"/v1/admin/users/{uid}", headers=admin.headers), 404)
    emails = [u["email"] for u in client.get("/v1/admin/users", headers=admin.headers).get_json()["users"]]
    assert emails == [admin.email, member.email]


def test_cli_admin_reset_password(cli_runner, app, member) -> None:
    from server.cli import cli

    runner, env = cli_runner
    result = runner.invoke(cli, ["users", "reset-password", member.email, "--password", "set by the admin"], env=env)
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert accounts.authenticate(get_db(), member.email, "set by the admin")
    missing = runner.invoke(cli, ["users", "reset-password", "ghost@x.example"], env=env)
    assert missing.exit_code == 2 and "No user" in missing.output
