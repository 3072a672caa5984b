"""A dealership admin tampering with licensing: each test performs the tamper (SQL on the database file, folder
moves and copies, replays) and checks that it is refused, or detected, reported in the signed usage report and
shown on the dashboard's License page."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlite_utils
import time_machine

from licensing import errors, ledger, notices
from licensing.box import LicenseBox, read_usage_report
from licensing.options import LicensingOptions
from licensing.plans import Plan
from licensing.schema import migrate
from licensing.testing import ThrowawayVendor, make_box
from tests.helpers import T0, day, make_account


def licensed(root: Path, vendor: ThrowawayVendor, credits: float = 100) -> LicenseBox:
    box = make_box(root, vendor)
    box.install(vendor.license(box.fingerprint, Plan(name="p", credits=credits, scans=100), license_id="lic_t",
                               months=36))
    return box


def spend(box: LicenseBox, metric: str = "credits", amount: float = 1) -> None:
    box.meter.commit(box.meter.reserve(metric, amount, key_id="k1", user_id=1, request_id=f"r{time.monotonic_ns()}"))


def reopen(box: LicenseBox, options: LicensingOptions | None = None) -> LicenseBox:
    """The same box after a restart (a new connection to the same files)."""
    db = sqlite_utils.Database(box.options.data_dir / "forecourt.db")
    migrate(db)
    return LicenseBox(db, options or box.options)


def sql(box: LicenseBox, *statements: str) -> None:
    """What the admin does with the sqlite3 shell on the database file (the box is stopped)."""
    box.db.close()
    conn = sqlite3.connect(box.options.data_dir / "forecourt.db")
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def events(box: LicenseBox) -> list[str]:
    from licensing import integrity

    return [e["what"] for e in integrity.tamper_events(box.db)]


def report(box: LicenseBox) -> dict:
    return read_usage_report(box.usage_report("2030-01"), box.install_public_key)


# --- 1. balances are tied to the ledger --------------------------------------------------------------------------
def test_resetting_used_credits_by_sql_is_caught_and_the_ledger_wins(tmp_path, vendor, traveller):
    box = licensed(tmp_path, vendor)
    for _ in range(12):
        spend(box)
    assert box.balances()["credits"]["remaining"] == 88
    sql(box, "UPDATE lic_buckets SET used = 0 WHERE metric = 'credits'")
    box = reopen(box)
    assert box.db.execute("SELECT used FROM lic_buckets WHERE id = 'sub:credits:2030-01'").fetchone()[0] == 0
    # the views never show the made-up credits (reading writes nothing)
    assert box.balances()["credits"]["remaining"] == 88 and events(box) == []
    assert box.account()["data"]["attributes"]["credits"]["total"] == 88
    # the minute's job, with no traffic, finds it
    from licensing import purge

    purge.tick(box.db, box.options)
    assert box.balances()["credits"]["remaining"] == 88 and events(box) == ["balance_altered"]
    assert box.db.execute("SELECT used FROM lic_buckets WHERE id = 'sub:credits:2030-01'").fetchone()[0] == 12
    # on a settlement: the reset is caught before the credits are spent
    sql(box, "UPDATE lic_buckets SET used = 0, reserved = -50 WHERE metric = 'credits'")
    box = reopen(box)
    spend(box)
    assert box.balances()["credits"]["used"] == 13 and box.balances()["credits"]["reserved"] == 0
    assert events(box) == ["balance_altered"] * 3  # used, then used and reserved
    # in the usage report, signed: what and when
    sql(box, "UPDATE lic_buckets SET used = 1 WHERE metric = 'credits'")
    box = reopen(box)
    r = report(box)
    assert r["usage"]["metrics"]["credits"]["used"] == 13 and r["ledger"]["verified"] is True
    assert [e["what"] for e in r["tamper_events"]] == ["balance_altered"] * 4
    assert r["tamper_events"][0]["at"] == "2030-01-10T12:00:00Z"
    assert "said 0 used; the ledger says 12" in r["tamper_events"][0]["detail"]
    assert box.account()["data"]["attributes"]["credits"]["total"] == 87
    # a pack's grant raised by SQL goes back to what the vendor signed, at start-up
    box.install(vendor.pack(box.fingerprint, 10, pack_id="pack_g"))
    sql(box, "UPDATE lic_buckets SET granted = 10000 WHERE id = 'payg:pack_g'")
    box = reopen(box)
    box.integrity_check()
    assert box.balances()["credits"]["payg"][0]["remaining"] == 10
    assert "granted 10000.0; the ledger granted 10" in report(box)["tamper_events"][-1]["detail"]


# --- 2. the ledger's chain is keyed -----------------------------------------------------------------------------
def _rewrite_and_rechain(path: Path, seq: int, amount: float, lower_balance: bool = True) -> None:
    """The issue's 20 lines: change one charge and recompute every hash after it with ledger.entry_hash."""
    db = sqlite_utils.Database(path)
    db.execute("DROP TRIGGER IF EXISTS lic_ledger_no_update")
    names = (*ledger.FIELDS, "prev_hash", "hash")
    rows = [dict(zip(names, r, strict=True)) for r in db.execute(f"SELECT {', '.join(names)} FROM lic_ledger "
                                                                  "ORDER BY seq")]
    prev = ledger.GENESIS
    for row in rows:
        if row["seq"] == seq:
            row["amount"] = amount
        row["prev_hash"], row["hash"] = prev, ledger.entry_hash(row, prev)
        db.execute("UPDATE lic_ledger SET amount = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                   [row["amount"], row["prev_hash"], row["hash"], row["seq"]])
        prev = row["hash"]
    head = json.loads(db.execute("SELECT value FROM lic_kv WHERE key = 'ledger_head'").fetchone()[0])
    head.update({"seq": rows[-1]["seq"], "hash": prev})
    db.execute("UPDATE lic_kv SET value = ? WHERE key = 'ledger_head'", [json.dumps(head)])
    if lower_balance:
        db.execute("UPDATE lic_buckets SET used = used - 4 WHERE id = 'sub:credits:2030-01'")
    db.conn.commit()
    db.close()


def test_a_ledger_rewritten_with_a_recomputed_chain_does_not_verify(tmp_path, vendor, traveller):
    box = licensed(tmp_path, vendor)
    spend(box, amount=5)
    spend(box, amount=5)
    assert ledger.verify(box.db, box.options.seal()).ok
    box.db.close()
    _rewrite_and_rechain(box.options.data_dir / "forecourt.db", seq=4, amount=1.0)
    box = reopen(box)
    v = ledger.verify(box.db, box.options.seal())
    assert not v.ok and v.problem == "entry 4 does not carry this box's seal (rewritten without the box's secret)"
    r = report(box)
    assert r["ledger"]["verified"] is False and "entry 4 does not carry" in r["ledger"]["problem"]
    assert [e["what"] for e in r["tamper_events"]] == ["ledger_altered"]
    assert box.db.execute("SELECT count(*) FROM lic_notices WHERE kind = 'tamper'").fetchone()[0] == 1


def test_a_rewritten_ledger_cannot_hand_credits_back(tmp_path, vendor, traveller):
    box = licensed(tmp_path, vendor)
    spend(box, amount=5)
    spend(box, amount=5)
    box.db.close()
    _rewrite_and_rechain(box.options.data_dir / "forecourt.db", seq=4, amount=1.0, lower_balance=False)
    box = reopen(box)
    r = report(box)  # the ledger now says 6 used; the balance keeps 10
    assert r["ledger"]["verified"] is False and box.balances()["credits"]["used"] == 10
    # and with the balance lowered too (its seal fails): the higher figure stays
    sql(box, "UPDATE lic_buckets SET used = 2 WHERE id = 'sub:credits:2030-01'")
    box = reopen(box)
    assert box.balances()["credits"]["used"] == 6
    spend(box)
    assert box.balances()["credits"]["used"] == 7
    assert "the higher figure, since the ledger does not verify" in report(box)["tamper_events"][-1]["detail"]


def test_a_ledger_from_before_keying_verifies_and_is_keyed_from_the_upgrade(tmp_path, vendor, traveller):
    box = licensed(tmp_path, vendor)
    spend(box, amount=2)
    # what a database written before this version looks like: no seals, no keyed-from record
    sql(box, "DROP TRIGGER lic_ledger_no_update", "UPDATE lic_ledger SET mac = NULL",
        "DELETE FROM lic_kv WHERE key = 'ledger_keyed'",
        "UPDATE lic_kv SET value = json_remove(value, '$.mac') WHERE key = 'ledger_head'",
        "UPDATE lic_kv SET value = json_extract(value, '$.t') WHERE key = 'clock_hwm'")
    for f in box.options.state_dir.glob("box-*.json"):
        f.unlink()
    box = reopen(box)
    assert ledger.verify(box.db, box.options.seal()).ok
    box.integrity_check()  # start-up: keying starts here, recorded
    assert box.db.execute("SELECT value FROM lic_kv WHERE key = 'ledger_keyed'").fetchone()[0].startswith(
        '{"from": 4')
    spend(box)
    assert ledger.verify(box.db, box.options.seal()).ok and events(box) == []
    assert box.state()["state"] == "active"
    # rows written before keying are covered too once a keyed row follows them
    box.db.close()
    _rewrite_and_rechain(box.options.data_dir / "forecourt.db", seq=3, amount=0.5)
    box = reopen(box)
    assert not ledger.verify(box.db, box.options.seal()).ok
    # and the keyed-from point cannot be moved later to unseal rows
    sql(box, "UPDATE lic_kv SET value = '{\"from\": 99, \"mac\": \"00\"}' WHERE key = 'ledger_keyed'")
    box = reopen(box)
    assert "keyed-from record in the database was altered" in ledger.verify(box.db, box.options.seal()).problem


def test_a_ledger_cut_short_or_an_older_copy_put_back_is_caught(tmp_path, vendor, traveller):
    from licensing import purge

    box = licensed(tmp_path, vendor)
    spend(box, amount=3)
    box.integrity_check()  # start-up
    box.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    copy = (box.options.data_dir / "forecourt.db").read_bytes()  # the admin keeps a copy ...
    spend(box, amount=40)
    purge.tick(box.db, box.options)  # the minute's job notes the ledger's head outside the data folder
    box.db.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{box.options.data_dir / 'forecourt.db'}{suffix}").unlink(missing_ok=True)
    (box.options.data_dir / "forecourt.db").write_bytes(copy)  # ... and puts it back: 40 credits back
    box = reopen(box)
    v = ledger.verify(box.db, box.options.seal())
    assert not v.ok and "was seen before (the database was cut short or an older copy put back)" in v.problem
    purge.tick(box.db, box.options)  # the running box's next minute
    assert events(box) == ["ledger_altered"]
    assert report(box)["tamper_events"][0]["what"] == "ledger_altered"
    # cutting the last entries off (and fixing the head record) is the same finding
    spend(box, amount=2)
    purge.tick(box.db, box.options)
    sql(box, "DROP TRIGGER lic_ledger_no_delete", "DELETE FROM lic_ledger WHERE seq = (SELECT max(seq) FROM "
        "lic_ledger)", "UPDATE lic_kv SET value = (SELECT json_object('seq', seq, 'hash', hash) FROM lic_ledger "
        "ORDER BY seq DESC LIMIT 1) WHERE key = 'ledger_head'",
        "UPDATE lic_buckets SET used = used - 2 WHERE id = 'sub:credits:2030-01'")
    box = reopen(box)
    box.integrity_check()
    assert events(box) == ["ledger_altered"] * 2


# --- 3. the clock mark is sealed and kept outside too ------------------------------------------------------------
def test_lowering_the_clock_mark_by_sql_leaves_the_box_restricted(tmp_path, vendor, traveller):
    box = licensed(tmp_path, vendor)
    traveller.move_to(day(5))
    spend(box, "scans")
    traveller.move_to(day(3))  # the clock set back two days
    assert box.state()["state"] == "restricted"
    low = (day(3) - timedelta(hours=2)).timestamp()
    # an unsealed value, and a sealed-looking one
    for value in (str(low), json.dumps({"t": low, "mac": "0" * 64})):
        sql(box, f"UPDATE lic_kv SET value = '{value}' WHERE key = 'clock_hwm'")
        box = reopen(box)
        st = box.state()
        assert st["state"] == "restricted", value
        with pytest.raises(errors.LicenseRestricted):
            spend(box, "scans")
    assert "the clock record in the database was altered" in box.status()["reasons"][0]
    assert "clock_record_altered" in events(box)
    from server.dashboard.overview import license_summary

    assert license_summary(box.status(), day(3).timestamp())["headline"] == "Paused: the clock record was altered"
    # deleting the database's mark: the one outside the data folder still knows
    sql(box, "DELETE FROM lic_kv WHERE key = 'clock_hwm'")
    box = reopen(box)
    assert box.state()["state"] == "restricted"
    assert "clock_record_altered" in [e["what"] for e in report(box)["tamper_events"]]
    # a new license from the vendor is the way out
    box.install(vendor.license(box.fingerprint, "pro", issued_at=(day(3) - timedelta(hours=1)).isoformat()))
    assert box.state()["state"] == "active"
    spend(box, "scans")


# --- 4. one trial per machine ------------------------------------------------------------------------------------
def test_forecourt_init_at_a_second_path_does_not_start_a_second_trial(tmp_path):
    from click.testing import CliRunner

    from server.cli import cli

    runner = CliRunner()

    def init_and_status(folder: str) -> dict:
        env = {"FORECOURT_STORAGE__DATA_DIR": str(tmp_path / folder), "FORECOURT_LOGGING__LEVEL": "WARNING",
               "FORECOURT_MODELS__REQUIRE": "false", "FORECOURT_LICENSING__STATE_DIR": str(tmp_path / "state")}
        assert runner.invoke(cli, ["init"], env=env).exit_code == 0
        out = runner.invoke(cli, ["license", "status", "--json"], env=env)
        assert out.exit_code == 0, out.output
        return json.loads(out.output)

    with time_machine.travel(T0, tick=False) as t:
        a = init_and_status("a")
        assert (a["state"], a["expires_at"]) == ("trial", "2030-01-31T12:00:00Z")
        t.move_to(day(5))
        b = init_and_status("b")
        assert (b["state"], b["expires_at"]) == ("trial", "2030-01-31T12:00:00Z")
        # the first folder moved elsewhere: the same trial
        (tmp_path / "a").rename(tmp_path / "c")
        assert init_and_status("c")["expires_at"] == "2030-01-31T12:00:00Z"
        t.move_to(day(22))
        assert init_and_status("d")["state"] == "expired"
    # the admin's command line lists tamper events too
    env = {"FORECOURT_STORAGE__DATA_DIR": str(tmp_path / "b"), "FORECOURT_LOGGING__LEVEL": "WARNING",
           "FORECOURT_MODELS__REQUIRE": "false", "FORECOURT_LICENSING__STATE_DIR": str(tmp_path / "state")}
    conn = sqlite3.connect(tmp_path / "b" / "forecourt.db")
    conn.execute("UPDATE lic_kv SET value = '0' WHERE key = 'clock_hwm'")
    conn.commit()
    conn.close()
    out = runner.invoke(cli, ["license", "status"], env=env)
    assert "tampering:" in out.output and "the clock record in the database was altered" in out.output


def test_a_trial_recorded_before_one_trial_per_machine_carries_over(tmp_path, vendor, traveller):
    """An outside record from before the upgrade (named after the data folder's path, not sealed) is taken over."""
    from licensing import files, keys, trial

    box = make_box(tmp_path, vendor)
    legacy = trial._legacy_path(box.options.licensing_dir, box.options.state_dir)
    legacy.parent.mkdir(parents=True, exist_ok=True)
    legacy.write_text(files.self_signed("trial_record", {"started_at": "2030-01-01T12:00:00Z", "box": box.fingerprint},
                                        keys.install_key(box.options.licensing_dir)))
    st = box.policy(write=True)
    assert st.state == "trial" and st.expires_at == datetime(2030, 1, 22, 12, tzinfo=UTC).timestamp()
    machine = trial._paths(box.options.licensing_dir, box.options.state_dir)[1]
    assert machine.exists() and machine != legacy
    other = make_box(tmp_path / "b", vendor, state_dir=box.options.state_dir)  # another data folder: same trial
    assert other.policy(write=True).expires_at == st.expires_at


def test_an_edited_trial_record_is_a_tamper_event(tmp_path, vendor, traveller):
    from licensing import trial

    box = make_box(tmp_path, vendor)
    box.policy(write=True)
    machine = trial._paths(box.options.licensing_dir, box.options.state_dir)[1]
    machine.write_text(ThrowawayVendor().sign("trial_record", {"started_at": "2030-06-01T00:00:00Z",
                                                                "box": box.fingerprint}))
    assert box.policy(write=True).state == "expired"
    r = report(box)
    assert [e["what"] for e in r["tamper_events"]] == ["trial_record_altered"]
    assert "does not verify" in r["tamper_events"][0]["detail"]


# --- 5. an expired license is refused, a future one waits ----------------------------------------------------------
def test_an_expired_license_is_refused_and_a_future_one_waits(tmp_path, vendor, traveller):
    box = make_box(tmp_path, vendor)
    assert box.state()["state"] == "trial"
    old = vendor.license(box.fingerprint, "pro", issued_at="2029-01-01", valid_from="2029-01-01",
                         valid_until="2030-01-01")
    with pytest.raises(errors.InvalidLicenseFile) as refused:
        box.install(old)
    assert (refused.value.code, refused.value.status) == ("license_expired", 400)
    assert "2030-01-01" in refused.value.detail
    assert box.state()["state"] == "trial" and box.db.execute("SELECT count(*) FROM lic_licenses").fetchone()[0] == 0
    future = vendor.license(box.fingerprint, "pro", valid_from=day(10).isoformat(), license_id="lic_next")
    assert box.install(future)["installed"] is True
    assert box.status()["state"] == "trial" and box.status()["license_id"] is None
    traveller.move_to(day(10) + timedelta(minutes=1))
    assert (box.status()["state"], box.status()["license_id"]) == ("active", "lic_next")


def test_the_api_answers_license_expired_for_an_expired_file(client, admin, vendor, settings_dict):
    fp = client.get("/v1/licensing/status", headers=admin.headers).json["fingerprint"]
    old = vendor.license(fp, "pro", issued_at="2025-01-01", valid_from="2025-01-01", valid_until="2025-06-01")
    r = client.post("/v1/licensing/license", json={"license": old}, headers=admin.headers)
    assert r.status_code == 400 and r.json["errors"][0]["code"] == "license_expired"
    assert client.get("/v1/licensing/status", headers=admin.headers).json["state"] == "trial"


# --- 6. credit packs: bound by default, once per machine ----------------------------------------------------------
def _vendor_tool():
    import importlib.util

    spec = importlib.util.spec_from_file_location("vendor_tool", Path(__file__).parents[1] / "scripts" / "vendor.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_credit_packs_are_box_bound_unless_asked_and_count_once_per_machine(tmp_path, traveller):
    from click.testing import CliRunner

    tool, runner = _vendor_tool(), CliRunner()
    key = tmp_path / "vendor.pem"
    public = json.loads(runner.invoke(tool.cli, ["keygen", "--out", str(key)]).output)["public_key"]
    vendor_keys = (public,)
    box = make_box(tmp_path / "a", public_keys=vendor_keys, state_dir=tmp_path / "state")
    pack = tmp_path / "p.lic"
    out = runner.invoke(tool.cli, ["credit-pack", "--key", str(key), "--customer", "Acme", "--credits", "500",
                                   "--out", str(pack)])
    assert out.exit_code == 2 and "give --box FINGERPRINT or --unbound" in out.output and not pack.exists()
    out = runner.invoke(tool.cli, ["credit-pack", "--key", str(key), "--customer", "Acme", "--credits", "500",
                                   "--unbound", "--pack-id", "pack_u", "--out", str(pack)])
    assert out.exit_code == 0
    box.install(pack.read_text())
    assert [(p["pack_id"], p["bound"]) for p in report(box)["credit_packs"]] == [("pack_u", False)]
    # a fresh data folder on the same machine (or the same folder after deleting the database)
    fresh = make_box(tmp_path / "b", public_keys=vendor_keys, state_dir=tmp_path / "state")
    with pytest.raises(errors.ReplayedPack) as replay:
        fresh.install(pack.read_text())
    assert replay.value.status == 409 and "installed before on this machine" in replay.value.detail
    assert fresh.balances()["credits"]["payg"] == []
    assert events(fresh) == ["credit_pack_replayed"]
    assert report(fresh)["tamper_events"][0]["what"] == "credit_pack_replayed"
    # a bound pack names this box
    runner.invoke(tool.cli, ["credit-pack", "--key", str(key), "--customer", "Acme", "--credits", "5",
                             "--box", fresh.fingerprint, "--pack-id", "pack_b", "--out", str(pack)])
    fresh.install(pack.read_text())
    assert [(p["pack_id"], p["bound"]) for p in report(fresh)["credit_packs"]] == [("pack_b", True)]


# --- 7. the purge waits for its hooks; a box started past the due date purges ---------------------------------------
def test_a_purge_due_while_the_box_was_off_runs_when_it_starts(settings_dict, vendor, tmp_path):
    from server import create_app
    from server.store import close_thread_connections, get_db
    from tests.recognition_synth import jpeg, pattern, scene

    settings = {**settings_dict, "licensing": {**settings_dict["licensing"], "public_keys": [vendor.public_key],
                                               "scheduler": "off"}}
    with time_machine.travel(T0, tick=True) as t:
        app = create_app(settings)
        admin = make_account(app, "admin@dealer.example", "admin")
        client = app.test_client()
        fp = client.get("/v1/licensing/status", headers=admin.headers).json["fingerprint"]
        lic = vendor.license(fp, "starter", valid_until=day(10).isoformat())
        assert client.post("/v1/licensing/license", json={"license": lic}, headers=admin.headers).status_code == 200
        cid = client.post("/v1/collections", json={"name": "Lot", "object_type": "generic"},
                          headers=admin.headers).json["id"]
        for i in (1, 2, 3):
            client.put(f"/v1/collections/{cid}/objects/o{i}", json={"name": f"O{i}"}, headers=admin.headers)
            r = client.post(f"/v1/collections/{cid}/objects/o{i}/images", headers=admin.headers,
                            data={"image_file": [(__import__("io").BytesIO(jpeg(scene(pattern(i), seed=i))), "a.jpg")]},
                            content_type="multipart/form-data")
            assert r.status_code == 200, r.json
        indexes = Path(settings["storage"]["data_dir"]) / "indexes"
        client.post(f"/v1/collections/{cid}/recognize", json={"image_file_b64": __import__("base64").b64encode(
            jpeg(scene(pattern(1), seed=1))).decode()}, headers=admin.headers)
        deadline = time.monotonic() + 60
        while not list(indexes.glob("*.faiss")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(indexes.glob("*.faiss")), "the index file was never written"
        assert client.get("/v1/licensing/status", headers=admin.headers).json["balances"]["stored_images"][
            "stored"] == 3
        close_thread_connections()
        # the box is off past its license's end + 45 days, then starts with its jobs on
        t.move_to(day(10 + 46))
        app2 = create_app({**settings, "licensing": {**settings["licensing"], "scheduler": "on"}})
        try:
            deadline = time.monotonic() + 60
            with app2.app_context():
                db = get_db()
                while time.monotonic() < deadline and not db.execute(
                        "SELECT 1 FROM lic_notices WHERE kind = 'purged_reference_images'").fetchone():
                    time.sleep(0.1)
                purged = [n for n in notices.list_notices(db) if n["kind"] == "purged_reference_images"]
                assert purged and purged[0]["data"] == {"kind": "reference_images", "deleted": 3}
                assert db.execute("SELECT count(*) FROM rec_images").fetchone()[0] == 0
                assert db.execute("SELECT used FROM lic_buckets WHERE id = 'cap:stored_images'").fetchone()[0] == 0
            assert list(indexes.glob("*.faiss")) == []
        finally:
            app2.extensions["forecourt.licensing.scheduler"].shutdown()
            close_thread_connections()


def test_a_purge_with_nothing_registered_is_not_marked_done(tmp_path, vendor, traveller):
    from licensing import purge

    box = make_box(tmp_path, vendor)
    box.install(vendor.license(box.fingerprint, "standard", valid_until=day(10).isoformat()))
    traveller.move_to(day(10 + 46))
    assert purge.run_due(box.db, box.options, hooks={"reference_images": [], "accounts": []}) == [
        {"action": "notice", "kind": "reference_images"}]
    ran: list[int] = []
    done = purge.run_due(box.db, box.options, hooks={"reference_images": [lambda: ran.append(1) or 4],
                                                     "accounts": []})
    assert done == [{"action": "purge", "kind": "reference_images", "deleted": 4}] and ran == [1]


# --- 8. what a refused box says ------------------------------------------------------------------------------------
def test_an_expired_trial_reports_no_usable_credits_no_grace_and_why(client, admin):
    st = client.get("/v1/licensing/status", headers=admin.headers).json
    assert st["state"] == "trial" and st["refusal"] is None
    assert client.get("/v1.0/account", headers=admin.headers).json["data"]["attributes"]["credits"]["total"] == 50
    with time_machine.travel(datetime.now(UTC) + timedelta(days=30), tick=False):
        credits = client.get("/v1.0/account", headers=admin.headers).json["data"]["attributes"]["credits"]
        assert credits == {"total": 0, "subscription": 0, "payg": 0, "enterprise": 0}
        st = client.get("/v1/licensing/status", headers=admin.headers).json
        assert st["state"] == "expired" and st["grace_until"] is None
        assert st["refusal"]["code"] == "license_expired" and "trial expired on" in st["refusal"]["detail"]
        r = client.post("/v1/metering/probe", json={"metric": "credits", "amount": 1}, headers=admin.headers)
        assert r.status_code == 403


def test_reading_status_with_the_clock_set_back_writes_no_balance(tmp_path, vendor, traveller):
    box = licensed(tmp_path, vendor)
    traveller.move_to(day(40))
    spend(box)
    before = box.db.execute("SELECT id FROM lic_buckets ORDER BY id").fetchall()
    entries = box.db.execute("SELECT count(*) FROM lic_ledger").fetchone()[0]
    traveller.move_to(day(-20))  # December 2029
    st = box.status()
    assert st["state"] == "restricted" and st["balances"]["credits"]["period"] == "2029-12"
    assert box.db.execute("SELECT id FROM lic_buckets ORDER BY id").fetchall() == before
    assert box.db.execute("SELECT count(*) FROM lic_ledger").fetchone()[0] == entries


# --- 9. the admin sees it -----------------------------------------------------------------------------------------
def test_the_license_page_shows_tamper_events(client, app, admin, vendor):
    from server.services import licensing
    from tests.helpers import sign_in

    fp = client.get("/v1/licensing/status", headers=admin.headers).json["fingerprint"]
    lic = vendor.license(fp, Plan(name="p", credits=100))
    assert client.post("/v1/licensing/license", json={"license": lic}, headers=admin.headers).status_code == 200
    for _ in range(3):
        assert client.post("/v1/metering/probe", json={"amount": 2}, headers=admin.headers).status_code == 200
    sign_in(client, admin)
    assert 'id="tamper-events"' not in client.get("/license").get_data(as_text=True)
    with app.app_context():
        db = licensing.box().db
        db.execute("UPDATE lic_buckets SET used = 0 WHERE metric = 'credits'")
        db.conn.commit()
    assert client.post("/v1/metering/probe", json={"amount": 1}, headers=admin.headers).status_code == 200
    page = client.get("/license").get_data(as_text=True)
    assert 'id="tamper-events"' in page and "Tampering detected" in page
    assert 'data-what="balance_altered"' in page and "said 0 used; the ledger says 6" in page
    assert client.get("/v1/licensing/status", headers=admin.headers).json["balances"]["credits"]["used"] == 7


@pytest.fixture
def settings_dict(settings_dict, vendor):
    return {**settings_dict, "licensing": {**settings_dict["licensing"], "public_keys": [vendor.public_key]}}
