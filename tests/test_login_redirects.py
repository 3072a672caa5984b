"""Where sign-in sends a visitor: only to a path on this site, whatever the link's `next` holds (issue 13)."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from server.redirects import BadRedirect, local_path
from tests.helpers import Account, csrf_token, sign_in

# Raw query strings as an attacker would write them in a link: (query value, what a signed-in visitor gets).
# "home" means the hostile value was dropped and the visitor lands on the overview; 400 means the link was refused.
HOSTILE = [
    ("//evil.example/x", "home"),
    ("/%5C/evil.example/x", "home"),  # /\/evil.example: browsers read a backslash as a slash
    ("/%5Cevil.example", "home"),
    ("%5C%5Cevil.example", "home"),
    ("%2F%2Fevil.example", "home"),  # decoded once by the server: //evil.example
    ("/%252F%252Fevil.example", "home"),  # decoded twice: ///evil.example
    ("/%255Cevil.example", "home"),  # decoded twice: /\evil.example
    ("https://evil.example/x", "home"),
    ("https:/evil.example", "home"),
    ("HTTPS://evil.example", "home"),
    ("javascript:alert(1)", "home"),
    ("%20//evil.example", "home"),
    ("evil.example", "home"),
    ("/%09/evil.example/x", 400),  # tab: browsers drop it, leaving //evil.example/x
    ("/%0A/evil.example/x", 400),
    ("/x%0d%0aInjected:%20yes", 400),  # CRLF: header injection
    ("/x%250d%250aInjected:%20yes", 400),  # the same, encoded twice
    ("/%00/evil.example", 400),
    ("/%E2%80%A8/evil.example", 400),  # U+2028 line separator
]
GOOD = ["/keys", "/vehicles?q=A-17&status=active", "/collections/3", "/usage?unit=months&key=key_1",
        "/vehicles/F-150%2F9"]


def _outcome(resp) -> object:
    """400, or where a 302 sends the visitor ('home' for the overview)."""
    if resp.status_code == 400:
        assert "Location" not in resp.headers and "return address" in resp.get_data(as_text=True)
        return 400
    assert resp.status_code == 302, resp.status_code
    return "home" if resp.headers["Location"] == "/" else resp.headers["Location"]


def test_signed_in_hostile_next_never_leaves_the_site(client, admin: Account) -> None:
    sign_in(client, admin)
    got = {value: _outcome(client.get(f"/login?next={value}")) for value, _ in HOSTILE}
    assert got == dict(HOSTILE)


def _sign_in_with_next(app, admin: Account, query: str):  # type: ignore[no-untyped-def]
    """POST the sign-in form from a fresh browser (signing in renews the session, and so the CSRF token)."""
    client = app.test_client()
    return client.post(f"/login?next={query}", data={"email": admin.email, "password": admin.password,
                                                     "csrf_token": csrf_token(client)})


def test_signing_in_with_a_hostile_next_never_leaves_the_site(app, admin: Account) -> None:
    got = {value: _outcome(_sign_in_with_next(app, admin, value)) for value, _ in HOSTILE}
    assert got == dict(HOSTILE)


def test_signed_out_visitor_with_a_crlf_next_gets_400_not_500(client) -> None:
    resp = client.get("/login?next=/x%0d%0aInjected:%20yes")
    assert resp.status_code == 400
    assert "Injected" not in str(resp.headers)


def test_a_path_on_this_site_is_kept(app, client, admin: Account) -> None:
    sign_in(client, admin)
    for value in GOOD:
        query = quote(value, safe="/")
        resp = _sign_in_with_next(app, admin, query)
        assert (resp.status_code, resp.headers["Location"]) == (302, value)
        assert client.get(f"/login?next={query}").headers["Location"] == value  # already signed in


def test_the_sign_in_link_a_page_makes_brings_the_visitor_back(client, admin: Account) -> None:
    resp = client.get("/vehicles?q=A-17")
    assert resp.status_code == 302
    login_url = resp.headers["Location"]
    token = csrf_token(client, login_url)
    resp = client.post(login_url, data={"email": admin.email, "password": admin.password, "csrf_token": token})
    assert resp.headers["Location"] == "/vehicles?q=A-17"


@pytest.mark.parametrize("value", ["", None, "//x", "/\\x", "https://x", "x"])
def test_local_path_refuses_what_is_not_a_local_path(value) -> None:
    assert local_path(value) is None


@pytest.mark.parametrize("value", ["/x\r\nSet-Cookie: a=b", "/\t/evil", "/%0d%0a", "/%250d", "/\u2028x", "/\x00"])
def test_local_path_raises_on_control_characters(value: str) -> None:
    with pytest.raises(BadRedirect):
        local_path(value)
