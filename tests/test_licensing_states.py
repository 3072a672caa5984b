"""The license state machine travelling in time: trial, expiry, grace, purge, clock set back, one scheduler."""

from __future__ import annotations

import shutil
from datetime import timedelta

import pytest
import sqlite_utils
import time_machine

from licensing import errors, notices, purge
from licensing.box import LicenseBox
from licensing.scheduler import BoxScheduler
from licensing.schema import migrate
from licensing.testing import ThrowawayVendor, make_box
from tests.helpers import T0, day


def _reserve(box: LicenseBox, metric: str, amount: float = 1) -> None:
    rid = box.meter.reserve(metric, amount, key_id="k", user_id=1, request_id="r")
    box.meter.commit(rid)


def _kinds(box: LicenseBox) -> list[str]:
    return [n["kind"] for n in notices.list_notices(box.db)]


def test_trial_day_20_works_and_day_22_stops(tmp_path, vendor, traveller):
    box = make_box(tmp_path, vendor)
    assert box.state() == {"usable": True, "state": "trial", "reasons": [], "expires_at": "2030-01-31T12:00:00Z"}
    traveller.move_to(day(20))
    _reserve(box, "credits")
    _reserve(box, "scans")
    assert box.status()["plan"]["name"] == "trial"
    traveller.move_to(day(22))
    assert box.state()["usable"] is False and box.state()["state"] == "expired"
    with pytest.raises(errors.LicenseExpired) as info:
        _reserve(box, "scans")
    assert info.value.status == 403 and "trial expired on 2030-01-31" in info.value.detail
    for action in ("license", "account", "export"):
        box.check(action)
    # a license brings it back at once
    box.install(vendor.license(box.fingerprint, "starter"))
    _reserve(box, "scans")


def _fresh_db(box: LicenseBox, name: str) -> LicenseBox:
    db = sqlite_utils.Database(box.options.data_dir / name)
    migrate(db)
    return LicenseBox(db, box.options)


def test_trial_cannot_restart_by_deleting_the_database(tmp_path, vendor, traveller):
    box = make_box(tmp_path, vendor)
    box.state()
    box.policy(write=True)
    traveller.move_to(day(15))
    box.db.close()
    (box.options.data_dir / "forecourt.db").unlink()
    box = _fresh_db(box, "forecourt.db")
    st = box.policy(write=True)
    assert st.state == "trial" and st.expires_at == day(21).timestamp()  # the old start came back
    # delete the database and the data folder's copy: the copy outside the data folder still knows
    box.db.close()
    (box.options.data_dir / "forecourt.db").unlink()
    (box.options.licensing_dir / "trial.rec").unlink()
    box = _fresh_db(box, "forecourt.db")
    assert box.policy(write=True).expires_at == day(21).timestamp()
    assert (box.options.licensing_dir / "trial.rec").exists()  # healed
    traveller.move_to(day(22))
    assert box.state()["state"] == "expired"


def test_trial_record_edits_end_the_trial_and_a_wiped_data_folder_does_not_restart_it(tmp_path, vendor,
                                                                                         traveller):
    box = make_box(tmp_path, vendor)
    box.policy(write=True)
    outside = next(box.options.state_dir.glob("trial-*.rec"))
    # an edited outside record (a later start date re-encoded without the install key) is detected
    forged = ThrowawayVendor().sign("trial_record", {"started_at": "2030-06-01T00:00:00Z", "box": box.fingerprint})
    outside.write_text(forged)
    st = box.policy(write=True)
    assert st.state == "expired" and "does not verify" in st.reasons[0]
    # no trial means no end date: the refusal says why (not "expired on 1970-01-01"), and no purge is scheduled
    assert st.expires_at is None and st.grace_until is None and purge.schedule(st) == []
    with pytest.raises(errors.LicenseExpired) as refused:
        st.check("background_removal")
    assert refused.value.detail.startswith("No trial on this box: the trial record in ")
    assert "does not verify" in refused.value.detail and "1970" not in refused.value.detail
    assert [(n["title"], "does not verify" in n["body"]) for n in notices.list_notices(box.db)
            if n["kind"] == "license_expired"] == [("No trial", True)]
    # wiping the whole data folder makes a new install key; the machine's outside record, sealed with the
    # machine's secret, still holds the trial's start: the trial goes on, it does not restart
    box2 = make_box(tmp_path / "other", vendor)
    box2.policy(write=True)
    outside2 = next(box2.options.state_dir.glob("trial-*.rec"))
    traveller.move_to(day(10))
    box2.db.close()
    shutil.rmtree(box2.options.data_dir)
    box3 = make_box(tmp_path / "other", vendor)
    assert next(box3.options.state_dir.glob("trial-*.rec")) == outside2
    st = box3.policy(write=True)
    assert st.state == "trial" and st.expires_at == day(21).timestamp()
    traveller.move_to(day(22))
    assert box3.policy(write=True).state == "expired"


def test_expiry_grace_day_6_and_day_8(tmp_path, vendor, traveller):
    box = make_box(tmp_path, vendor)
    box.install(vendor.license(box.fingerprint, "standard", license_id="lic_x", valid_until="2030-02-10T12:00:00Z"))
    traveller.move_to(day(31) + timedelta(hours=1))
    assert box.state()["state"] == "grace"
    traveller.move_to(day(31 + 6))
    assert box.state() == {"usable": True, "state": "grace", "reasons": [], "expires_at": "2030-02-10T12:00:00Z"}
    _reserve(box, "scans")  # recognition keeps working
    _reserve(box, "credits")
    for metric in ("uploads", "stored_images"):
        with pytest.raises(errors.CollectionLocked) as info:
            _reserve(box, metric)
        assert info.value.status == 403 and info.value.code == "collection_locked"
    with pytest.raises(errors.CollectionLocked):
        box.check("collection_manage")
    box.check("collection_read")
    assert "license_expired" in _kinds(box)
    traveller.move_to(day(31 + 8))
    assert box.state()["state"] == "expired" and box.state()["usable"] is False
    for metric in ("scans", "credits", "uploads"):
        with pytest.raises(errors.LicenseExpired):
            _reserve(box, metric)
    with pytest.raises(errors.LicenseExpired):
        box.check("collection_read")
    for action in ("license", "account", "export"):
        box.check(action)
    assert box.account()["data"]["attributes"]["credits"]["subscription"] >= 0


@pytest.fixture
def hooks():
    calls: dict[str, int] = {"reference_images": 0, "accounts": 0}

    def images() -> int:
        calls["reference_images"] += 1
        return 12

    def accounts() -> int:
        calls["accounts"] += 1
        return 3

    purge.register_purge_hook("reference_images", images)
    purge.register_purge_hook("accounts", accounts)
    yield calls
    purge.unregister_purge_hook("reference_images", images)
    purge.unregister_purge_hook("accounts", accounts)


def test_purge_day_45_and_90_with_notices_a_week_before(tmp_path, vendor, traveller, hooks):
    box = make_box(tmp_path, vendor)
    box.install(vendor.license(box.fingerprint, "standard", valid_until="2030-01-20T12:00:00Z"))
    expiry = day(10)
    schedule = [(37.9, []), (38.01, ["notice:reference_images"]), (44.9, []), (45.01, ["purge:reference_images"]),
                (60, []), (83.01, ["notice:accounts"]), (89.9, []), (90.01, ["purge:accounts"]), (120, [])]
    for offset, expected in schedule:
        traveller.move_to(expiry + timedelta(days=offset))
        done = purge.tick(box.db, box.options)["purge"]
        assert [f"{d['action']}:{d['kind']}" for d in done] == expected, offset
    assert hooks == {"reference_images": 1, "accounts": 1}
    kinds = _kinds(box)
    for k in ("purge_soon_reference_images", "purged_reference_images", "purge_soon_accounts", "purged_accounts"):
        assert k in kinds
    purged = [n for n in notices.list_notices(box.db) if n["kind"] == "purged_reference_images"][0]
    assert purged["data"] == {"kind": "reference_images", "deleted": 12}


def test_a_new_license_stops_the_purge(tmp_path, vendor, traveller, hooks):
    box = make_box(tmp_path, vendor)
    box.install(vendor.license(box.fingerprint, "standard", valid_until="2030-01-20T12:00:00Z"))
    traveller.move_to(day(10 + 40))
    assert [d["kind"] for d in purge.tick(box.db, box.options)["purge"]] == ["reference_images"]  # the notice
    box.install(vendor.license(box.fingerprint, "standard"))
    for offset in (46, 91, 200):
        traveller.move_to(day(10 + offset))
        assert purge.tick(box.db, box.options)["purge"] == []
    assert hooks == {"reference_images": 0, "accounts": 0}


def test_clock_set_back_restricts_until_right_or_new_license(tmp_path, vendor, traveller):
    box = make_box(tmp_path, vendor, clock_tolerance_s=3600)
    box.install(vendor.license(box.fingerprint, "standard"))
    traveller.move_to(day(5))
    _reserve(box, "scans")
    traveller.move_to(day(5) - timedelta(minutes=30))  # within tolerance
    _reserve(box, "scans")
    traveller.move_to(day(5) - timedelta(hours=3))
    st = box.state()
    assert st["state"] == "restricted" and not st["usable"] and "set the clock right" in st["reasons"][0]
    with pytest.raises(errors.LicenseRestricted) as info:
        _reserve(box, "scans")
    assert info.value.status == 403 and info.value.code == "license_restricted"
    box.check("license")
    assert "clock_set_back" in _kinds(box)
    traveller.move_to(day(5) + timedelta(minutes=1))  # clock right again
    _reserve(box, "scans")
    traveller.move_to(day(5) - timedelta(days=2))
    assert box.state()["state"] == "restricted"
    box.install(vendor.license(box.fingerprint, "pro", issued_at=(day(5) - timedelta(days=2, hours=1)).isoformat()))
    assert box.state()["state"] == "active"
    _reserve(box, "scans")


def test_jobs_run_on_one_process_per_box(tmp_path):
    lock = tmp_path / "scheduler.lock"
    ran: list[str] = []
    a = BoxScheduler(lock, lambda s: ran.append("a"), retry_s=0.05)
    b = BoxScheduler(lock, lambda s: ran.append("b"), retry_s=0.05)
    try:
        assert a.try_lead() is True
        assert b.try_lead() is False
        b.start()
        assert not b.is_leader and ran == ["a"]
        a.shutdown()  # the leader goes away (a killed worker frees its flock the same way)
        for _ in range(100):
            if b.is_leader:
                break
            import time

            time.sleep(0.05)
        assert b.is_leader and ran == ["a", "b"]
    finally:
        a.shutdown()
        b.shutdown()


def test_state_is_what_readyz_reports(app, client):
    r = client.get("/readyz")
    body = r.get_json()
    assert any(c.get("name") == "license" for c in _checks(body)), body


def _checks(body: dict) -> list[dict]:
    checks = body.get("checks", body)
    if isinstance(checks, dict):
        return [{"name": k, **(v if isinstance(v, dict) else {"ok": v})} for k, v in checks.items()]
    return checks


@pytest.fixture
def settings_dict(settings_dict, tmp_path, vendor):
    return {**settings_dict, "licensing": {"state_dir": str(tmp_path / "state"), "public_keys": [vendor.public_key]}}


def test_server_purge_runs_app_hooks_and_removes_member_accounts(app, client, admin, member, vendor):
    from server.services.licensing import on_purge, run_tick

    purged: list[int] = []
    with app.app_context():
        @on_purge("reference_images")
        def drop_images() -> int:
            from server.store import get_db

            get_db().execute("SELECT 1")  # runs inside an app context
            purged.append(1)
            return 7

    fp = client.get("/v1/licensing/status", headers=admin.headers).json["fingerprint"]
    lic = vendor.license(fp, "starter", issued_at="2029-12-01T00:00:00Z", valid_from="2029-12-01",
                         valid_until="2030-01-10T12:00:00Z")
    with time_machine.travel(T0 - timedelta(days=5), tick=False) as t:
        assert client.post("/v1/licensing/license", json={"license": lic}, headers=admin.headers).status_code == 200
        t.move_to(day(44))
        assert [d["action"] for d in run_tick(app)["purge"]] == ["notice"]
        t.move_to(day(45.5))
        assert run_tick(app)["purge"] == [{"action": "purge", "kind": "reference_images", "deleted": 7}]
        assert purged == [1]
        t.move_to(day(90.5))
        done = run_tick(app)["purge"]
        assert [(d["action"], d["kind"]) for d in done] == [("notice", "accounts"), ("purge", "accounts")]
        assert client.get("/v1/me", headers=member.headers).status_code == 403  # the member is gone
        assert client.get("/v1/licensing/status", headers=admin.headers).status_code == 200
        kinds = [n["kind"] for n in client.get("/v1/licensing/notices", headers=admin.headers).json["notices"]]
        assert {"purge_soon_reference_images", "purged_reference_images", "purged_accounts"} <= set(kinds)
