"""Sign-in throttling (issue 13): wrong passwords pause the account and the client address with growing pauses,
on every route that checks a password; the failures are kept and shown to the admin. The clock moves with
time-machine, never by sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from tests.helpers import Account, assert_error_shape, csrf_token, make_account, sign_in

UA = "Mozilla/5.0 (X11; Linux x86_64) Guesser/1.0"


@pytest.fixture
def clock():  # type: ignore[no-untyped-def]
    """A stopped clock a day ahead (the trial started today; a clock set back would restrict the box)."""
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    with time_machine.travel(start, tick=False) as traveller:
        yield traveller


def _login(client, token: str, email: str, password: str, address: str = "127.0.0.1",  # type: ignore[no-untyped-def]
           forwarded_for: str | None = None):
    headers = {"User-Agent": UA} | ({"X-Forwarded-For": forwarded_for} if forwarded_for else {})
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token},
                       environ_base={"REMOTE_ADDR": address}, headers=headers)


def test_forty_wrong_passwords_then_the_right_one_is_refused_until_the_pause_ends(client, admin: Account,
                                                                                  clock) -> None:
    token = csrf_token(client)
    statuses = [_login(client, token, admin.email, f"guess {i}").status_code for i in range(40)]
    assert statuses == [401] * 5 + [429] * 35
    right = _login(client, token, admin.email, admin.password)
    assert right.status_code == 429  # the right password does not get through a pause
    assert right.headers["Retry-After"] == "30"
    page = right.get_data(as_text=True)
    assert "Too many wrong passwords" in page and "Try again in 30 seconds" in page
    assert '"errors"' not in page
    clock.shift(29)
    assert _login(client, token, admin.email, admin.password).headers["Retry-After"] == "1"
    clock.shift(1)
    assert _login(client, token, admin.email, admin.password).status_code == 302  # the pause is over


def test_each_further_wrong_password_doubles_the_pause_up_to_the_cap(client, admin: Account, clock) -> None:
    token = csrf_token(client)
    for _ in range(5):
        assert _login(client, token, admin.email, "wrong").status_code == 401
    waits = []
    for _ in range(8):
        refused = _login(client, token, admin.email, admin.password)
        assert refused.status_code == 429
        waits.append(int(refused.headers["Retry-After"]))
        clock.shift(waits[-1])
        assert _login(client, token, admin.email, "wrong again").status_code == 401  # one more guess, once paused
    assert waits == [30, 60, 120, 240, 480, 900, 900, 900]
    clock.shift(900)
    assert _login(client, token, admin.email, admin.password).status_code == 302
    # the right password starts the account afresh: five wrong ones pass again before the next pause
    other = client.application.test_client()
    token = csrf_token(other)
    assert [_login(other, token, admin.email, "wrong").status_code for _ in range(6)] == [401] * 5 + [429]


def test_wrong_passwords_are_forgotten_after_an_hour_without_one(client, admin: Account, clock) -> None:
    token = csrf_token(client)
    assert [_login(client, token, admin.email, "wrong").status_code for _ in range(4)] == [401] * 4
    clock.shift(timedelta(minutes=61))
    assert [_login(client, token, admin.email, "wrong").status_code for _ in range(4)] == [401] * 4
    assert _login(client, token, admin.email, admin.password).status_code == 302


def test_one_address_guessing_many_accounts_is_paused_but_others_are_not(client, app, admin: Account,
                                                                         clock) -> None:
    token = csrf_token(client)
    guesser = "203.0.113.7"
    statuses = [_login(client, token, f"user{i}@dealer.example", "password1", guesser).status_code for i in range(20)]
    assert statuses == [401] * 20  # one guess per account: no account pause, but the address has had its 20
    refused = _login(client, token, admin.email, admin.password, guesser)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "30"
    # the admin, from their own desk, is not affected
    desk = app.test_client()
    assert _login(desk, csrf_token(desk), admin.email, admin.password, "198.51.100.2").status_code == 302


def test_without_trusted_proxies_a_forged_forwarded_for_does_not_escape_the_address_pause(client, app,
                                                                                       admin: Account, clock) -> None:
    """[server] trusted_proxies = 0 (the default): X-Forwarded-For is the client's own word, so it is not read."""
    assert app.extensions["forecourt.settings"].server.trusted_proxies == 0
    token = csrf_token(client)
    guesser = "203.0.113.7"
    statuses = [_login(client, token, f"user{i}@dealer.example", "password1", guesser,
                       forwarded_for=f"198.51.100.{i}").status_code for i in range(20)]
    assert statuses == [401] * 20
    refused = _login(client, token, admin.email, admin.password, guesser, forwarded_for="192.0.2.200")
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "30"


def test_behind_one_trusted_proxy_the_pause_and_the_rate_limit_key_on_the_forwarded_address(settings_dict: dict,
                                                                                           clock) -> None:
    """With trusted_proxies = 1, every request comes from the proxy's address, and the throttle counts the client the
    proxy names last in X-Forwarded-For: entries a client adds in front of it do not move it."""
    from server import create_app

    settings_dict["server"] = {"trusted_proxies": 1}
    settings_dict["rate_limit"] = {"default": "5 per minute"}
    app = create_app(settings_dict)
    admin = make_account(app, "admin@dealer.example", "admin")
    proxy, guesser, desk = "127.0.0.1", "203.0.113.7", "198.51.100.2"
    client = app.test_client()
    token = csrf_token(client)
    statuses = [_login(client, token, f"user{i}@dealer.example", "password1", proxy,
                       forwarded_for=f"192.0.2.{i}, {guesser}").status_code for i in range(20)]
    assert statuses == [401] * 20
    refused = _login(client, token, admin.email, admin.password, proxy, forwarded_for=guesser)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "30"
    other = app.test_client()  # another visitor behind the same proxy is not paused
    assert _login(other, csrf_token(other), admin.email, admin.password, proxy, forwarded_for=desk).status_code == 302
    # flask-limiter's per-address window (calls without a key) counts each forwarded client on its own
    remaining = [int(client.get("/v1/me", environ_base={"REMOTE_ADDR": proxy},
                                headers={"X-Forwarded-For": addr}).headers["X-RateLimit-Remaining"])
                 for addr in (guesser, guesser, desk)]
    assert remaining == [4, 3, 4]


def test_the_api_password_and_email_routes_are_throttled_with_the_error_shape(client, admin: Account,
                                                                                clock) -> None:
    for i in range(5):
        resp = client.post("/v1/me/password", headers=admin.headers,
                           json={"current_password": f"guess {i}", "new_password": "a brand new password"})
        assert resp.status_code == 401, resp.json
    for path, body in (("/v1/me/password", {"current_password": admin.password,
                                            "new_password": "a brand new password"}),
                       ("/v1/me/email", {"password": admin.password, "email": "boss@dealer.example"})):
        resp = client.post(path, headers=admin.headers, json=body)
        assert resp.status_code == 429, path
        assert_error_shape(resp, 429)
        assert resp.json["errors"][0]["code"] == "too_many_sign_ins"
        assert resp.headers["Retry-After"] == "30"  # the pause's, not the rate limiter's window
    # the same account is paused on the dashboard too: one count per account, whatever the route
    token = csrf_token(client)
    assert _login(client, token, admin.email, admin.password).status_code == 429
    clock.shift(30)
    resp = client.post("/v1/me/email", headers=admin.headers, json={"password": admin.password,
                                                                     "email": "boss@dealer.example"})
    assert resp.status_code == 200 and resp.json["user"]["email"] == "boss@dealer.example"


def test_the_dashboard_account_page_is_throttled(client, member: Account, clock) -> None:
    sign_in(client, member)
    token = csrf_token(client, "/account")
    for _ in range(5):
        resp = client.post("/account", data={"action": "password", "current_password": "wrong",
                                             "new_password": "a brand new password",
                                             "confirm_password": "a brand new password", "csrf_token": token})
        assert resp.status_code == 400
    resp = client.post("/account", data={"action": "email", "password": member.password,
                                         "email": "new@dealer.example", "csrf_token": token})
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "30"
    assert "Too many wrong passwords" in resp.get_data(as_text=True)


def test_pauses_hold_across_workers(settings_dict: dict, clock) -> None:
    """Two apps on one data folder stand for two gunicorn workers: the count is in the database."""
    from server import create_app

    worker_a, worker_b = create_app(settings_dict), create_app(settings_dict)
    user = make_account(worker_a, "sales@dealer.example", "member")
    client_a, client_b = worker_a.test_client(), worker_b.test_client()
    token_a, token_b = csrf_token(client_a), csrf_token(client_b)
    for i in range(5):
        client, token = (client_a, token_a) if i % 2 else (client_b, token_b)
        assert _login(client, token, user.email, "wrong").status_code == 401
    assert _login(client_a, token_a, user.email, user.password).status_code == 429
    assert _login(client_b, token_b, user.email, user.password).status_code == 429


def test_the_admin_sees_failed_sign_ins_and_can_lift_a_pause(client, app, admin: Account, member: Account,
                                                             clock) -> None:
    other = app.test_client()
    token = csrf_token(other)
    for _ in range(5):
        _login(other, token, member.email, "wrong", "192.0.2.44")
    _login(other, token, "nobody@dealer.example", "wrong", "192.0.2.44")
    sign_in(client, admin)
    page = client.get("/users").get_data(as_text=True)
    section = page.split('id="failed-sign-ins"', 1)[1]
    assert section.count('class="failure"') == 6
    for text in (member.email, "nobody@dealer.example", "192.0.2.44", UA, "wrong password", "no such user",
                 "POST /login"):
        assert text in section, text
    assert f'data-pause="account:{member.email}"' in section
    assert _login(other, token, member.email, member.password, "192.0.2.44").status_code == 429
    resp = client.post("/users/sign-in-pauses/lift", data={"key": f"account:{member.email}",
                                                           "csrf_token": csrf_token(client, "/users")})
    assert resp.status_code == 302
    assert f"data-pause=\"account:{member.email}\"" not in client.get("/users").get_data(as_text=True)
    assert _login(other, token, member.email, member.password, "192.0.2.44").status_code == 302


def test_members_cannot_see_or_lift_pauses(client, member: Account) -> None:
    sign_in(client, member)
    assert client.get("/users").status_code == 403
    resp = client.post("/users/sign-in-pauses/lift", data={"key": "address:127.0.0.1",
                                                           "csrf_token": csrf_token(client, "/keys")})
    assert resp.status_code == 403


@pytest.mark.parametrize("settings_key", ["sign_in_attempts"])
def test_the_allowance_is_a_setting(settings_dict: dict, settings_key: str, clock) -> None:
    from server import create_app

    settings_dict["auth"] = {settings_key: 2, "sign_in_delay_seconds": 7}
    app = create_app(settings_dict)
    user = make_account(app, "sales@dealer.example", "member")
    client = app.test_client()
    token = csrf_token(client)
    assert [_login(client, token, user.email, "wrong").status_code for _ in range(3)] == [401, 401, 429]
    assert _login(client, token, user.email, user.password).headers["Retry-After"] == "7"
