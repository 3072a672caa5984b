"""API keys: shown once, stored hashed, fc_ prefix, X-Api-Key or Bearer, revocation, per-key rate limits."""

from __future__ import annotations

import hashlib

from server.store import get_db
from tests.helpers import assert_error_shape


def test_create_list_revoke(app, client, member) -> None:
    created = client.post("/v1/keys", json={"name": "website"}, headers=member.headers)
    assert created.status_code == 201
    body = created.get_json()
    secret = body["key"]
    assert secret.startswith("fc_") and len(secret) > 40
    assert body["prefix"] == secret[:10]
    listed = client.get("/v1/keys", headers=member.headers).get_json()["keys"]
    assert {k["name"] for k in listed} == {"member key", "website"}
    assert all("key" not in k and "key_hash" not in k for k in listed)
    assert secret not in client.get("/v1/keys", headers=member.headers).get_data(as_text=True)
    with app.app_context():
        stored = [r["key_hash"] for r in get_db()["api_keys"].rows]
    assert hashlib.sha256(secret.encode()).hexdigest() in stored
    assert all(secret not in h for h in stored)
    # the new key works as X-Api-Key and as Bearer
    assert client.get("/v1/me", headers={"X-Api-Key": secret}).get_json()["key_id"] == body["id"]
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    revoked = client.delete(f"/v1/keys/{body['id']}", headers=member.headers)
    assert revoked.status_code == 200 and revoked.get_json()["revoked_at"]
    assert assert_error_shape(client.get("/v1/me", headers={"X-Api-Key": secret}), 403)["code"] == "auth_failed"
    assert client.get("/v1/me", headers=member.headers).status_code == 200


def test_members_cannot_revoke_others_keys_admins_can(client, admin, member) -> None:
    resp = client.delete(f"/v1/keys/{admin.key_id}", headers=member.headers)
    assert assert_error_shape(resp, 404)["code"] == "key_not_found"
    assert client.delete(f"/v1/keys/{member.key_id}", headers=admin.headers).status_code == 200
    assert client.get("/v1/me", headers=member.headers).status_code == 403


def test_cli_key_works_over_http(cli_runner, app, client, member) -> None:
    from server.cli import cli

    runner, env = cli_runner
    result = runner.invoke(cli, ["keys", "create", member.email, "--name", "from cli"], env=env)
    assert result.exit_code == 0, result.output
    secret = result.output.strip().splitlines()[-1].strip()
    assert secret.startswith("fc_")
    assert client.get("/v1/me", headers={"X-Api-Key": secret}).get_json()["user"]["email"] == member.email


def test_rate_limit_per_key_with_headers(settings_dict) -> None:
    from server import create_app

    settings_dict["rate_limit"] = {"default": "3 per minute"}
    application = create_app(settings_dict)
    from tests.helpers import make_account

    a = make_account(application, "a@dealer.example", "member")
    b = make_account(application, "b@dealer.example", "member")
    c = application.test_client()
    seen = []
    for _ in range(3):
        resp = c.get("/v1/me", headers=a.headers)
        assert resp.status_code == 200
        seen.append(int(resp.headers["X-RateLimit-Remaining"]))
        assert resp.headers["X-RateLimit-Limit"] == "3"
        assert int(resp.headers["X-RateLimit-Reset"]) > 0
    assert seen == [2, 1, 0]
    limited = c.get("/v1/me", headers=a.headers)
    err = assert_error_shape(limited, 429)
    assert err["code"] == "rate_limit_exceeded"
    assert 0 < int(limited.headers["Retry-After"]) <= 60
    # another key has its own budget; health is not limited
    assert c.get("/v1/me", headers=b.headers).status_code == 200
    assert all(c.get("/livez").status_code == 200 for _ in range(5))
