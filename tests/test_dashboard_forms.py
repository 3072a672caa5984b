"""Dashboard access control and CSRF with the Flask test client: who may open or post what, and a form without a
valid token changes nothing."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime, timedelta

import pytest

from licensing.testing import ThrowawayVendor
from tests.helpers import Account, csrf_token, make_account, sign_in

PAGES = ["/", "/keys", "/users", "/license", "/try", "/usage", "/usage.csv", "/system", "/account", "/collections",
         "/vehicles"]
ADMIN_PAGES = ["/users", "/license", "/system"]


@pytest.fixture
def vendor() -> ThrowawayVendor:
    return ThrowawayVendor()


@pytest.fixture
def settings_dict(settings_dict: dict, vendor: ThrowawayVendor) -> dict:
    """The test app trusts a throwaway vendor's key."""
    settings_dict["licensing"]["public_keys"] = [vendor.public_key]
    return settings_dict


def keys_of(app, user_id: int | None = None) -> list[dict]:
    from server.services import accounts
    from server.store import get_db

    with app.app_context():
        return accounts.list_keys(get_db(), user_id)


def user_emails(app) -> list[str]:
    from server.services import accounts
    from server.store import get_db

    with app.app_context():
        return sorted(u["email"] for u in accounts.list_users(get_db()))


def role_of(app, user_id: int) -> str:
    from server.services import accounts
    from server.store import get_db

    with app.app_context():
        return accounts.get_user(get_db(), user_id)["role"]


def license_state(app) -> str:
    from server.services import licensing

    with app.app_context():
        return licensing.box().state()["state"]


def test_signed_out_visitors_are_sent_to_sign_in(client) -> None:
    for path in PAGES:
        resp = client.get(path)
        assert resp.status_code == 302, path
        assert resp.headers["Location"].startswith("/login?next="), path


def test_signed_out_posts_change_nothing(client, app, admin: Account) -> None:
    token = csrf_token(client)
    assert client.post("/keys", data={"name": "x", "csrf_token": token}).status_code == 302
    assert client.post("/users", data={"email": "n@dealer.example", "password": "correct horse battery",
                                       "csrf_token": token}).status_code == 302
    assert [k["name"] for k in keys_of(app)] == ["admin key"]
    assert user_emails(app) == [admin.email]


def test_members_get_a_friendly_403_html_page_on_admin_pages(client, member: Account) -> None:
    sign_in(client, member)
    for path in ADMIN_PAGES:
        resp = client.get(path)
        assert resp.status_code == 403, path
        assert resp.mimetype == "text/html", path
        assert "<html" in resp.get_data(as_text=True) and '"errors"' not in resp.get_data(as_text=True)
    for path in set(PAGES) - set(ADMIN_PAGES):
        assert client.get(path).status_code == 200, path
    overview = client.get("/").get_data(as_text=True)
    assert 'href="/keys"' in overview and 'href="/users"' not in overview and 'href="/system"' not in overview


def test_admin_opens_every_page(client, admin: Account) -> None:
    sign_in(client, admin)
    for path in PAGES:
        assert client.get(path).status_code == 200, path


def test_members_cannot_post_admin_forms(client, app, member: Account, admin: Account,
                                         vendor: ThrowawayVendor) -> None:
    sign_in(client, member)
    token = csrf_token(client, "/keys")
    posts = [
        ("/users", {"email": "n@dealer.example", "password": "correct horse battery", "role": "admin"}),
        (f"/users/{member.user_id}/role", {"role": "admin"}),
        (f"/users/{admin.user_id}/delete", {}),
        (f"/users/{admin.user_id}/reset-link", {}),
        ("/license", {"license_text": vendor.license(None)}),
    ]
    for path, data in posts:
        assert client.post(path, data={**data, "csrf_token": token}).status_code == 403, path
    assert role_of(app, member.user_id) == "member"
    assert user_emails(app) == sorted([admin.email, member.email])
    assert license_state(app) == "trial"


def test_members_cannot_revoke_someone_elses_key(client, app, member: Account) -> None:
    other = make_account(app, "boss@dealer.example", "admin")
    sign_in(client, member)
    resp = client.post(f"/keys/{other.key_id}/revoke", data={"csrf_token": csrf_token(client, "/keys")})
    assert resp.status_code == 404
    assert client.get("/v1/account", headers=other.headers).status_code == 200


def _forms(admin: Account, member: Account, vendor: ThrowawayVendor) -> list[tuple[str, dict]]:
    """Every form the dashboard posts, with fields that would succeed given a valid token."""
    return [
        ("/keys", {"name": "sneaky"}),
        (f"/keys/{admin.key_id}/revoke", {}),
        ("/users", {"email": "n@dealer.example", "password": "correct horse battery", "role": "member"}),
        (f"/users/{member.user_id}/role", {"role": "admin"}),
        (f"/users/{member.user_id}/delete", {}),
        (f"/users/{member.user_id}/reset-link", {}),
        ("/license", {"license_text": vendor.license(None)}),
        ("/try", {"photo": (io.BytesIO(b"\xff\xd8 not really"), "car.jpg")}),
        ("/try/abc/refine", {"points": "[]"}),
        ("/account", {"action": "email", "email": "z@dealer.example", "password": admin.password}),
        ("/collections", {"name": "Sneaky lot"}),
        ("/collections/col_x/objects", {"object_id": "x", "photos": (io.BytesIO(b"x"), "x.jpg")}),
        ("/collections/col_x/scan", {"photo": (io.BytesIO(b"x"), "x.jpg")}),
        ("/vehicles", {"vin": "1HGCM82633A004352"}),
        ("/vehicles/1/photos", {"angle": "front", "photos": (io.BytesIO(b"x"), "x.jpg")}),
        ("/logout", {}),
    ]


@pytest.mark.parametrize("bad_token", [None, "forged"])
def test_every_form_refuses_a_missing_or_wrong_csrf_token(client, app, admin: Account, member: Account,
                                                          vendor: ThrowawayVendor, bad_token: str | None) -> None:
    sign_in(client, admin)
    for path, data in _forms(admin, member, vendor):
        extra = {} if bad_token is None else {"csrf_token": bad_token}
        resp = client.post(path, data={**data, **extra}, content_type="multipart/form-data")
        assert resp.status_code == 400, path
        assert resp.mimetype == "text/html", path
    # Nothing happened: no key made or revoked, no user added, changed or deleted, no license, still signed in.
    assert [(k["name"], k["revoked_at"]) for k in keys_of(app)] == [("admin key", None), ("member key", None)]
    assert user_emails(app) == sorted([admin.email, member.email])
    assert role_of(app, member.user_id) == "member"
    assert license_state(app) == "trial"
    assert "Sneaky lot" not in client.get("/collections").get_data(as_text=True)
    assert "1HGCM82633A004352" not in client.get("/vehicles").get_data(as_text=True)
    assert client.get("/").status_code == 200


def test_forms_with_the_token_do_their_work(client, app, admin: Account, member: Account,
                                            vendor: ThrowawayVendor) -> None:
    """The same forms succeed with a valid token (so the refusals above are the token's doing)."""
    sign_in(client, admin)
    token = csrf_token(client, "/keys")
    resp = client.post("/keys", data={"name": "Website uploader", "csrf_token": token})
    assert resp.status_code == 201
    secret = re.search(r"fc_[A-Za-z0-9_-]{20,}", resp.get_data(as_text=True))
    assert secret, "the new key's secret is shown once"
    assert client.get("/v1/account", headers={"X-Api-Key": secret.group(0)}).status_code == 200
    assert secret.group(0) not in client.get("/keys").get_data(as_text=True)
    new_key = [k for k in keys_of(app) if k["name"] == "Website uploader"][0]
    assert client.post(f"/keys/{new_key['id']}/revoke", data={"csrf_token": token}).status_code == 302
    assert client.get("/v1/account", headers={"X-Api-Key": secret.group(0)}).status_code == 403

    assert client.post("/users", data={"email": "n@dealer.example", "password": "correct horse battery",
                                       "role": "member", "csrf_token": token}).status_code == 302
    assert client.post(f"/users/{member.user_id}/role", data={"role": "admin",
                                                              "csrf_token": token}).status_code == 302
    assert role_of(app, member.user_id) == "admin"
    resp = client.post(f"/users/{member.user_id}/reset-link", data={"csrf_token": token})
    assert resp.status_code == 200 and re.search(r"/reset/[\w-]{20,}", resp.get_data(as_text=True))
    assert client.post(f"/users/{member.user_id}/delete", data={"csrf_token": token}).status_code == 302
    assert user_emails(app) == sorted([admin.email, "n@dealer.example"])

    fingerprint = re.search(r"FC(?:-[A-Z0-9]{4}){5}", client.get("/license").get_data(as_text=True)).group(0)
    resp = client.post("/license", data={"license_text": vendor.license(fingerprint), "csrf_token": token})
    assert resp.status_code == 302
    assert license_state(app) == "active"


def test_admins_cannot_demote_or_delete_themselves(client, app, admin: Account) -> None:
    sign_in(client, admin)
    token = csrf_token(client, "/users")
    assert client.post(f"/users/{admin.user_id}/role", data={"role": "member",
                                                             "csrf_token": token}).status_code == 400
    assert client.post(f"/users/{admin.user_id}/delete", data={"csrf_token": token}).status_code == 400
    assert role_of(app, admin.user_id) == "admin"


def test_collections_browse_and_scan_draws_the_match(client, app, admin: Account, shared_data) -> None:
    """A collection stocked through the API; the dashboard lists it, and scanning the same photo outlines the match
    and charges one scan to the signed-in user."""
    photo = (shared_data / "carvana/images/0ce66b539f52_01.jpg").read_bytes()
    cid = client.post("/v1/collections", json={"name": "Lot A", "object_type": "generic"},
                      headers=admin.headers).json["id"]
    assert client.put(f"/v1/collections/{cid}/objects/stock-123", json={"name": "Silver sedan"},
                      headers=admin.headers).status_code == 201
    added = client.post(f"/v1/collections/{cid}/objects/stock-123/images",
                        data={"image_file": (io.BytesIO(photo), "ref.jpg")}, headers=admin.headers)
    assert added.json["images"][0]["status"] == "added", added.json
    sign_in(client, admin)
    page = client.get("/collections").get_data(as_text=True)
    assert "Lot A" in page and f'data-collection="{cid}"' in page
    page = client.get(f"/collections/{cid}").get_data(as_text=True)
    assert 'data-object="stock-123"' in page and "Silver sedan" in page
    token = csrf_token(client, f"/collections/{cid}")
    resp = client.post(f"/collections/{cid}/scan", data={"photo": (io.BytesIO(photo), "lot.jpg"), "mode": "single",
                                                         "csrf_token": token})
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200, html[-2000:]
    assert "1 match;" in html and "Silver sedan" in html
    points = re.search(r'<polygon class="match match-0" points="([^"]+)"', html)
    assert points and len(points.group(1).split()) >= 4  # the outline, in the preview's pixels
    with app.app_context():
        from server.services import licensing

        assert licensing.box().usage()["metrics"]["scans"]["used"] == 1
    # a file that is not a photo: plain words, nothing charged
    resp = client.post(f"/collections/{cid}/scan", data={"photo": (io.BytesIO(b"not a photo"), "x.jpg"),
                                                         "csrf_token": token})
    assert resp.status_code == 400 and "not a photo this box can read" in resp.get_data(as_text=True)
    with app.app_context():
        assert licensing.box().usage()["metrics"]["scans"]["used"] == 1
    assert client.get("/collections/col_missing").status_code == 404


def test_vehicles_browse_and_search(client, admin: Account) -> None:
    made = client.post("/v1/vehicles", json={"vin": "1HGCM82633A004352", "model": "Accord", "color": "Blue",
                                             "stock_number": "A-17"}, headers=admin.headers)
    assert made.status_code == 201, made.json
    vid = made.json["id"]
    sign_in(client, admin)
    page = client.get("/vehicles").get_data(as_text=True)
    assert f'data-vehicle="{vid}"' in page and "Accord" in page
    assert f'data-vehicle="{vid}"' in client.get("/vehicles?q=A-17").get_data(as_text=True)
    assert "No vehicle matches" in client.get("/vehicles?q=nothing-like-this").get_data(as_text=True)
    page = client.get(f"/vehicles/{vid}").get_data(as_text=True)
    assert "1HGCM82633A004352" in page and "No photos yet" in page
    assert client.get("/vehicles/999999").status_code == 404
    assert client.get("/vehicles/images/nope").status_code == 404


@pytest.fixture
def sam_checkpoint(tmp_path):  # type: ignore[no-untyped-def]
    """A tiny randomly initialised Segment Anything checkpoint, biased to predict some foreground."""
    from tests.fakes_sam import save_tiny_sam

    return save_tiny_sam(tmp_path)


def test_try_it_refine_with_clicks_passes_the_points_to_segment_anything(client, app, admin: Account,
                                                                          monkeypatch, sam_checkpoint) -> None:
    """Try it, then refine with two clicks: Segment Anything (a tiny real predictor) gets them as keep/remove
    points in photo pixels, and each run charges its credits; without SAM the refine says so in plain words."""
    from server.services import segmentation
    from tests.fakes_removebg import FakeSegmenter, photo

    monkeypatch.setattr(segmentation, "segmenter", lambda settings: FakeSegmenter())
    sign_in(client, admin)
    token = csrf_token(client, "/try")
    resp = client.post("/try", data={"photo": (io.BytesIO(photo(400, 300)), "car.jpg"), "type": "auto",
                                     "size": "preview", "background": "transparent", "format": "png",
                                     "csrf_token": token})
    assert resp.status_code == 302, resp.get_data(as_text=True)[-1500:]
    result = resp.headers["Location"]
    assert re.fullmatch(r"/try/[A-Za-z0-9_-]{20,}", result)
    points = "[[0.5, 0.5, 1], [0.02, 0.02, 0]]"
    # no checkpoint installed: a plain sentence, nothing charged
    before = used_credits(app)
    resp = client.post(f"{result}/refine", data={"points": points, "csrf_token": token})
    assert resp.status_code == 503 and "Segment Anything is not installed" in resp.get_data(as_text=True)
    assert used_credits(app) == before
    from models import sam as sam_module
    from tests.fakes_sam import RecordingSam, tiny_sam

    sam = RecordingSam(sam_checkpoint, tiny_sam, device="cpu", name="sam-tiny")
    monkeypatch.setattr(sam_module, "get_sam", lambda *a, **kw: sam)
    resp = client.post(f"{result}/refine", data={"points": points, "csrf_token": token})
    assert resp.status_code == 302, resp.get_data(as_text=True)[-1500:]
    refined = resp.headers["Location"]
    assert refined != result and sam.prompts[-1]["labels"] == [1, 0]
    assert sam.prompts[-1]["points"][0] == pytest.approx([199.5, 149.5])
    assert used_credits(app) == pytest.approx(before + 0.25)
    assert "refined with 2 clicks" in client.get(refined).get_data(as_text=True)
    download = client.get(f"{refined}/download")
    assert download.mimetype == "image/png" and "car-no-bg.png" in download.headers["Content-Disposition"]


def used_credits(app) -> float:
    from server.services import licensing

    with app.app_context():
        return licensing.box().usage()["metrics"]["credits"]["used"]


def overview_state(client) -> tuple[str, str]:
    """(data-state, headline) of the Overview's license card."""
    html = client.get("/").get_data(as_text=True)
    match = re.search(r'id="license-state" data-state="(\w+)">\s*<h2 id="state-h">([^<]+)</h2>', html)
    assert match, html[-2000:]
    return match.group(1), match.group(2)


def test_overview_shows_each_license_state_in_words(client, app, admin: Account, vendor: ThrowawayVendor) -> None:
    """Trial with days left, active, limits exhausted, grace with days left, expired: driven by real license files
    and a travelling clock."""
    import time_machine

    from licensing.options import GRACE_DAYS, TRIAL_DAYS

    start = datetime.now(UTC).replace(microsecond=0)
    with time_machine.travel(start, tick=False) as clock:
        sign_in(client, admin)
        assert overview_state(client) == ("trial", f"Trial: {TRIAL_DAYS} days left")
        with app.app_context():
            from server.services import licensing

            fingerprint = licensing.box().fingerprint
        lic = vendor.license(fingerprint, "starter", valid_until=(start + timedelta(days=10)).isoformat())
        resp = client.post("/license", data={"license_text": lic, "csrf_token": csrf_token(client, "/license")})
        assert resp.status_code == 302
        assert overview_state(client) == ("active", "Licensed")
        probe = client.post("/v1/metering/probe", json={"metric": "credits", "amount": 500}, headers=admin.headers)
        assert probe.status_code == 200, probe.get_json()
        state, headline = overview_state(client)
        assert (state, headline) == ("active", "Limits exhausted")
        html = client.get("/").get_data(as_text=True)
        assert 'class="bar full"' in html and "Used up this month: Background-removal credits" in html

        clock.move_to(start + timedelta(days=12))
        sign_in(client, admin)
        assert overview_state(client)[0] == "grace"
        assert overview_state(client)[1] == f"License expired: {GRACE_DAYS - 2} days of grace left"
        clock.move_to(start + timedelta(days=10 + GRACE_DAYS + 1))
        sign_in(client, admin)
        assert overview_state(client) == ("expired", "Expired")
        assert "Install a new license" in client.get("/").get_data(as_text=True)


def test_overview_says_why_there_is_no_trial(client, app, admin: Account) -> None:
    """A trial record that does not verify (left by an earlier installation, or edited) means no trial: the overview
    and the API say so, with no made-up end date."""
    from licensing import trial
    from licensing.testing import ThrowawayVendor
    from server.services import licensing

    sign_in(client, admin)
    assert overview_state(client)[0] == "trial"
    with app.app_context():
        box = licensing.box()
        outside = trial._paths(box.options.licensing_dir, box.options.state_dir)[1]
        outside.write_text(ThrowawayVendor().sign("trial_record", {"started_at": "2030-06-01T00:00:00Z",
                                                                   "box": box.fingerprint}))
        box.policy(write=True)
    assert overview_state(client) == ("expired", "No trial")
    html = client.get("/").get_data(as_text=True)
    assert "No trial on this box: the trial record in" in html and "1970" not in html
    r = client.post("/v1/metering/probe", json={"metric": "credits", "amount": 1}, headers=admin.headers)
    assert r.status_code == 403 and r.get_json()["errors"][0]["code"] == "license_expired"
    assert r.get_json()["errors"][0]["detail"].startswith("No trial on this box")


def test_make_a_collection_and_add_objects_with_photos(client, app, admin: Account, shared_data) -> None:
    """Staff stock a collection from the browser; uploads are charged per stored photo, duplicates are not."""
    first = (shared_data / "carvana/images/0ce66b539f52_01.jpg").read_bytes()
    sign_in(client, admin)
    token = csrf_token(client, "/collections")
    resp = client.post("/collections", data={"name": "Lot B", "object_type": "generic", "csrf_token": token})
    assert resp.status_code == 302
    cid = resp.headers["Location"].rsplit("/", 1)[1]
    assert "was made" in client.get(f"/collections/{cid}").get_data(as_text=True)
    resp = client.post(f"/collections/{cid}/objects", data={"object_id": "A-1", "name": "Silver sedan",
                                                            "photos": [(io.BytesIO(first), "a.jpg")],
                                                            "csrf_token": token})
    assert resp.status_code == 302
    page = client.get(f"/collections/{cid}").get_data(as_text=True)
    assert "A-1: 1 photo added." in page and 'data-object="A-1"' in page
    # the same photo for another object: skipped as a duplicate, not charged
    resp = client.post(f"/collections/{cid}/objects", data={"object_id": "B-2", "photos": [(io.BytesIO(first),
                                                                                            "b.jpg")],
                                                            "csrf_token": token})
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "B-2: 0 photos added, 1 skipped because another object already has them." in page
    with app.app_context():
        from server.services import licensing

        metrics = licensing.box().usage()["metrics"]
    assert metrics["uploads"]["used"] == 1 and metrics["stored_images"]["used"] == 1
    # plain words for a missing id or photo, and for a file that is not a photo
    resp = client.post(f"/collections/{cid}/objects", data={"object_id": "", "csrf_token": token})
    assert resp.status_code == 400 and "Give the object an id" in resp.get_data(as_text=True)
    resp = client.post(f"/collections/{cid}/objects", data={"object_id": "C-3", "csrf_token": token,
                                                            "photos": [(io.BytesIO(b"nope"), "c.jpg")]})
    assert resp.status_code == 400 and "not a photo this box can read" in resp.get_data(as_text=True)
    resp = client.post("/collections", data={"name": " ", "csrf_token": token})
    assert resp.status_code == 400 and "name is required" in resp.get_data(as_text=True)


def test_add_a_vehicle_and_upload_its_photos(client, app, admin: Account, shared_data) -> None:
    photo = (shared_data / "carvana/images/0ce66b539f52_01.jpg").read_bytes()
    sign_in(client, admin)
    token = csrf_token(client, "/vehicles")
    bad = client.post("/vehicles", data={"vin": "1HGCM82633A004353", "csrf_token": token})
    assert bad.status_code == 400 and "check digit" in bad.get_data(as_text=True).lower()
    assert 'value="1HGCM82633A004353"' in bad.get_data(as_text=True)  # the form keeps what was typed
    resp = client.post("/vehicles", data={"vin": "1HGCM82633A004352", "model": "Accord", "stock_number": "A-17",
                                          "csrf_token": token})
    assert resp.status_code == 302
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "2003 Honda Accord" in page and "was added" in page
    vid = int(resp.headers["Location"].rsplit("/", 1)[1])
    with app.app_context():
        from server.services import licensing

        before = licensing.box().usage()["metrics"]["credits"]["used"]
    resp = client.post(f"/vehicles/{vid}/photos", data={"angle": "front", "csrf_token": token,
                                                        "photos": [(io.BytesIO(photo), "front.jpg")]})
    assert resp.status_code == 302
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "1 photo uploaded" in page and page.count("<li data-photo=") == 1
    resp = client.post(f"/vehicles/{vid}/photos", data={"angle": "front", "csrf_token": token,
                                                        "photos": [(io.BytesIO(photo), "again.jpg")]})
    assert "1 skipped: already uploaded" in client.get(resp.headers["Location"]).get_data(as_text=True)
    with app.app_context():
        assert licensing.box().usage()["metrics"]["credits"]["used"] > before  # one render, charged once
        charged = licensing.box().usage()["metrics"]["credits"]["used"] - before
    assert charged in (0.25, 1.0)
    resp = client.post(f"/vehicles/{vid}/photos", data={"angle": "sideways", "csrf_token": token,
                                                        "photos": [(io.BytesIO(photo), "x.jpg")]})
    assert resp.status_code == 400 and "angle must be one of" in resp.get_data(as_text=True)
