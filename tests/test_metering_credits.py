"""Metering: allowances, roll-over, pay-as-you-go, overage, auto-upgrade, notices, reserve/commit/refund, the
reaper, the hash-chained ledger, the usage report and the remove.bg account view."""

from __future__ import annotations

import http.server
import json
import multiprocessing
import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlite_utils
import time_machine

from licensing import errors, ledger, notices
from licensing.box import LicenseBox, read_usage_report
from licensing.metering import Meter
from licensing.plans import Plan
from licensing.testing import make_box
from tests.helpers import T0


def licensed(tmp_path, vendor, plan: Plan, **kwargs) -> LicenseBox:
    box = make_box(tmp_path, vendor)
    box.install(vendor.license(box.fingerprint, plan, license_id="lic_t", months=36, **kwargs))
    return box


def spend(box: LicenseBox, metric: str, amount: float = 1, key: str = "k1") -> str:
    rid = box.meter.reserve(metric, amount, key_id=key, user_id=1, request_id=f"req-{time.monotonic_ns()}")
    box.meter.commit(rid)
    return rid


def credits(box: LicenseBox) -> dict:
    return box.account()["data"]["attributes"]["credits"]


def test_renewal_rolls_over_unused_credits_capped_at_5x(tmp_path, vendor, traveller):
    box = licensed(tmp_path, vendor, Plan(name="p", credits=100, scans=50))
    for _ in range(30):
        spend(box, "credits")
    spend(box, "scans", 50)
    assert credits(box)["subscription"] == 70
    traveller.move_to(datetime(2030, 2, 3, tzinfo=UTC))
    assert credits(box)["subscription"] == 170  # 70 rolled over + 100
    assert box.balances()["scans"]["remaining"] == 50  # scans do not roll over, they renew
    spend(box, "credits")  # the period's balance is made on first use (reading it changes nothing)
    # nobody uses it for months: it keeps accruing up to 5x the monthly allowance
    traveller.move_to(datetime(2030, 4, 2, tzinfo=UTC))
    assert credits(box)["subscription"] == 369
    traveller.move_to(datetime(2030, 9, 2, tzinfo=UTC))
    assert credits(box)["subscription"] == 500
    traveller.move_to(datetime(2030, 10, 2, tzinfo=UTC))
    assert credits(box)["subscription"] == 500
    grants = [json.loads(d) for (d,) in box.db.execute(
        "SELECT data FROM lic_ledger WHERE kind = 'grant' AND metric = 'credits' AND period = '2030-02'")]
    assert grants == [{"allowance": 100.0, "plan": "p", "rolled_over": 70.0}]


def test_renewal_issued_ahead_takes_over_when_it_starts(tmp_path, vendor, traveller):
    box = make_box(tmp_path, vendor)
    box.install(vendor.license(box.fingerprint, Plan(name="old", credits=10), license_id="lic_old",
                               valid_until="2030-01-20T12:00:00Z"))
    spend(box, "credits", 4)
    traveller.shift(timedelta(hours=1))
    box.install(vendor.license(box.fingerprint, Plan(name="new", credits=50), license_id="lic_new",
                               valid_from="2030-01-20T12:00:00Z", months=12))
    assert box.status()["license_id"] == "lic_old" and credits(box)["subscription"] == 6
    traveller.move_to(datetime(2030, 1, 21, tzinfo=UTC))
    st = box.status()
    assert (st["state"], st["license_id"], st["plan"]["name"]) == ("active", "lic_new", "new")
    assert credits(box)["subscription"] == 46  # the new allowance, minus what this period used
    spend(box, "credits", 46)


def test_80_percent_notice_once_per_period_to_every_sink(tmp_path, vendor, traveller):
    got: list[dict] = []
    hits: list[dict] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            hits.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    notices.set_sinks([got.append, notices.webhook_sink(f"http://127.0.0.1:{server.server_port}/hook")])
    try:
        box = licensed(tmp_path, vendor, Plan(name="p", credits=10))
        for _ in range(7):
            spend(box, "credits")
        assert "budget_80" not in [n["kind"] for n in notices.list_notices(box.db)]
        spend(box, "credits")
        spend(box, "credits")
        stored = [n for n in notices.list_notices(box.db) if n["kind"] == "budget_80"]
        assert len(stored) == 1 and stored[0]["body"] == "8 of 10 credits for 2030-01 are used."
        for _ in range(50):
            if any(n["kind"] == "budget_80" for n in got) and any(
                    h["event"] == "licensing.budget_80" for h in hits):
                break
            time.sleep(0.02)
        assert [n["kind"] for n in got].count("budget_80") == 1
        assert [h["notice"]["kind"] for h in hits].count("budget_80") == 1
        traveller.move_to(datetime(2030, 2, 2, tzinfo=UTC))  # 1 rolled over + 10 = 11; 80% = 8.8
        for _ in range(9):
            spend(box, "credits")
        assert len([n for n in notices.list_notices(box.db) if n["kind"] == "budget_80"]) == 2
    finally:
        notices.set_sinks([])
        server.shutdown()


def test_payg_is_spent_after_subscription_and_expires_after_two_years(tmp_path, vendor, traveller):
    box = licensed(tmp_path, vendor, Plan(name="p", credits=2))
    box.install(vendor.pack(box.fingerprint, 5, pack_id="pack_a"))
    assert credits(box) == {"total": 7, "subscription": 2, "payg": 5, "enterprise": 0}
    spend(box, "credits", 1.0)
    spend(box, "credits", 0.25)  # a preview
    assert credits(box) == {"total": 5.75, "subscription": 0.75, "payg": 5, "enterprise": 0}
    assert "payg_started" not in [n["kind"] for n in notices.list_notices(box.db)]
    spend(box, "credits", 1.0)  # 0.75 from the subscription, 0.25 from the pack
    assert credits(box) == {"total": 4.75, "subscription": 0, "payg": 4.75, "enterprise": 0}
    assert "payg_started" in [n["kind"] for n in notices.list_notices(box.db)]
    usage = box.usage("2030-01")["metrics"]["credits"]
    assert (usage["used"], usage["subscription"], usage["payg"]) == (2.25, 2.0, 0.25)
    traveller.move_to(T0 + timedelta(days=731))
    # the pack lapsed; only the (rolled-over) subscription is left
    c = credits(box)
    assert c["payg"] == 0 and c["subscription"] == 10


@pytest.mark.parametrize(("overage", "factor", "usable"), [("block", "1.5", 10), ("allow", "1.25", 12.5),
                                                           ("allow", "2", 20)])
def test_overage_block_or_allow_up_to_factor(tmp_path, vendor, traveller, overage, factor, usable):
    box = make_box(tmp_path, vendor)
    from licensing import files
    from licensing.issue import license_payload

    payload = license_payload("Acme Motors", Plan(name="p", credits=10), box=box.fingerprint, months=12,
                              overage=overage, overage_factor=float(factor))
    box.install(files.sign("license", payload, vendor.key))
    used = 0.0
    while True:
        try:
            spend(box, "credits", 0.25)
        except errors.InsufficientCredits as exc:
            assert exc.status == 402 and exc.code == "insufficient_credits"
            break
        used += 0.25
    assert used == usable
    assert box.usage("2030-01")["metrics"]["credits"]["overage"] == usable - 10


def test_auto_upgrade_on_the_scan_limit_only(tmp_path, vendor, traveller):
    small, mid, big = Plan(name="s", credits=2, scans=3), Plan(name="m", credits=4, scans=6), Plan(name="l", scans=9)
    box = make_box(tmp_path, vendor)
    box.install(vendor.license(box.fingerprint, small, upgrade_path=[mid, big], auto_upgrade=True))
    spend(box, "credits", 2)
    with pytest.raises(errors.InsufficientCredits):  # credits do not trigger an upgrade
        spend(box, "credits")
    assert box.status()["plan"]["name"] == "s"
    for _ in range(3):
        spend(box, "scans")
    spend(box, "scans")  # the 4th scan moves the box to "m" at once
    st = box.status()
    assert st["plan"]["name"] == "m" and st["balances"]["scans"]["granted"] == 6
    assert st["balances"]["credits"]["remaining"] == 2  # the bigger package's credits too
    for _ in range(2):
        spend(box, "scans")
    assert box.status()["plan"]["name"] == "m"
    spend(box, "scans")  # the 7th scan moves it on to "l"
    assert box.status()["plan"]["name"] == "l"
    for _ in range(2):
        spend(box, "scans")
    with pytest.raises(errors.LimitExhausted) as info:  # end of the path
        spend(box, "scans")
    assert info.value.status == 402 and info.value.code == "limit_exhausted"
    ups = box.usage("2030-01")["upgrades"]
    assert [(u["from"], u["to"], u["auto"]) for u in ups] == [("s", "m", True), ("m", "l", True)]
    assert [n["kind"] for n in notices.list_notices(box.db)].count("plan_upgraded") == 2


def test_exhausted_limit_refuses_only_that_action(tmp_path, vendor, traveller):
    box = make_box(tmp_path, vendor)
    box.install(vendor.license(box.fingerprint, Plan(name="p", credits=5, scans=2, uploads=1, stored_images=2)))
    spend(box, "scans", 2)
    with pytest.raises(errors.LimitExhausted, match="scans allowance of 2 for 2030-01"):
        spend(box, "scans")
    spend(box, "credits")
    spend(box, "uploads")
    with pytest.raises(errors.LimitExhausted):
        spend(box, "uploads")
    spend(box, "stored_images")
    spend(box, "stored_images")
    with pytest.raises(errors.LimitExhausted, match="at most 2 reference images"):
        spend(box, "stored_images")
    box.meter.release("stored_images", 1)
    spend(box, "stored_images")
    assert box.state()["usable"] is True
    traveller.move_to(datetime(2030, 2, 1, 0, 1, tzinfo=UTC))  # next period
    spend(box, "scans", 2)
    spend(box, "uploads")


def test_reserve_commit_refund_never_double_counts(tmp_path, vendor, traveller):
    box = licensed(tmp_path, vendor, Plan(name="p", credits=3))
    m = box.meter
    a = m.reserve("credits", 1, key_id="k", user_id=1, request_id="a")
    b = m.reserve("credits", 1, key_id="k", user_id=1, request_id="b")
    c = m.reserve("credits", 1, key_id="k", user_id=1, request_id="c")
    with pytest.raises(errors.InsufficientCredits):  # reserved counts against the balance
        m.reserve("credits", 1, key_id="k", user_id=1, request_id="d")
    m.commit(a)
    m.commit(a)
    m.refund(b)
    m.refund(b)
    m.refund(a)  # after a commit: nothing happens
    with pytest.raises(errors.ReservationNotFound):
        m.commit(b)
    m.commit(c)
    assert box.balances()["credits"]["used"] == 2 and box.balances()["credits"]["reserved"] == 0
    charges = box.db.execute("SELECT ref FROM lic_ledger WHERE kind = 'charge' ORDER BY seq").fetchall()
    assert [r[0] for r in charges] == [a, c]
    with pytest.raises(errors.UnknownMetric):
        m.reserve("pixels", 1, key_id=None, user_id=None, request_id="x")


def _reserve_and_die(data_dir: str, state_dir: str, public_key: str) -> None:
    from pathlib import Path

    from licensing.options import LicensingOptions

    db = sqlite_utils.Database(Path(data_dir) / "forecourt.db")
    opts = LicensingOptions(data_dir=Path(data_dir), state_dir=Path(state_dir), public_keys=(public_key,))
    Meter(db, opts).reserve("credits", 2, key_id="k", user_id=1, request_id="doomed")
    os.kill(os.getpid(), signal.SIGKILL)


def test_reservations_of_a_killed_process_are_refunded(tmp_path, vendor):
    box = licensed(tmp_path, vendor, Plan(name="p", credits=3))
    proc = multiprocessing.get_context("spawn").Process(
        target=_reserve_and_die, args=(str(box.options.data_dir), str(box.options.state_dir), vendor.public_key))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    assert box.meter.pending() == 1
    with pytest.raises(errors.InsufficientCredits):
        box.meter.reserve("credits", 2, key_id="k", user_id=1, request_id="blocked")
    assert box.meter.reap() == 1
    assert box.meter.pending() == 0
    spend(box, "credits", 2)
    assert box.balances()["credits"]["used"] == 2


def test_reservations_past_their_ttl_are_refunded(tmp_path, vendor, traveller):
    box = licensed(tmp_path, vendor, Plan(name="p", credits=3))
    rid = box.meter.reserve("credits", 3, key_id="k", user_id=1, request_id="slow")
    traveller.shift(timedelta(seconds=box.options.reservation_ttl_s - 5))
    assert box.meter.reap() == 0
    traveller.shift(timedelta(seconds=10))
    assert box.meter.reap() == 1
    with pytest.raises(errors.ReservationNotFound, match="expired"):
        box.meter.commit(rid)
    assert credits(box)["subscription"] == 3


def test_ledger_detects_edits_removals_and_truncation(tmp_path, vendor, traveller):
    box = licensed(tmp_path, vendor, Plan(name="p", credits=100))
    for _ in range(5):
        spend(box, "credits")
    ok = ledger.verify(box.db, box.options.seal())
    assert ok.ok and ok.entries == 7  # the license, the period's grant, 5 charges
    with pytest.raises(sqlite_utils.db.sqlite3.IntegrityError):
        box.db.execute("UPDATE lic_ledger SET amount = 0 WHERE seq = 4")
    path = box.options.data_dir / "forecourt.db"
    backup = path.read_bytes()

    def tampered(sql: str) -> ledger.Verification:
        path.write_bytes(backup)
        db = sqlite_utils.Database(path)
        db.execute("DROP TRIGGER lic_ledger_no_update")
        db.execute("DROP TRIGGER lic_ledger_no_delete")
        db.execute(sql)
        db.conn.commit()
        return ledger.verify(db, box.options.seal())

    box.db.close()
    v = tampered("UPDATE lic_ledger SET amount = 0.5 WHERE seq = 5")
    assert not v.ok and v.problem == "entry 5 was altered"
    v = tampered("DELETE FROM lic_ledger WHERE seq = 4")
    assert not v.ok and v.problem == "entry 4 is missing (next is 5)"
    v = tampered("DELETE FROM lic_ledger WHERE seq = 7")
    assert not v.ok and "removed" in v.problem
    v = tampered("UPDATE lic_ledger SET key_id = 'someone-else' WHERE seq = 6")
    assert not v.ok and v.problem == "entry 6 was altered"


def test_usage_report_is_signed_by_the_install_key(tmp_path, vendor, traveller):
    box = licensed(tmp_path, vendor, Plan(name="p", credits=100, scans=100))
    spend(box, "credits", 3, key="k1")
    spend(box, "scans", 2, key="k2")
    text = box.usage_report("2030-01")
    assert text.startswith("-----BEGIN FORECOURT USAGE REPORT-----")
    report = read_usage_report(text, box.install_public_key)
    assert report["box"] == box.fingerprint and report["license_id"] == "lic_t"
    assert report["usage"]["metrics"]["credits"]["used"] == 3 and report["usage"]["metrics"]["scans"]["used"] == 2
    assert report["usage"]["by_key"]["k2"]["scans"] == {"used": 2.0, "requests": 1}
    assert report["ledger"]["verified"] is True
    other = make_box(tmp_path / "other", vendor)
    with pytest.raises(errors.BadSignature):  # signed by another box's key
        read_usage_report(other.usage_report("2030-01"), box.install_public_key)
    from tests.test_licensing_files import _retamper

    forged = _retamper(text, period="2029-12")
    with pytest.raises(errors.BadSignature):
        read_usage_report(forged, box.install_public_key)


# --- through the API ----------------------------------------------------------------------------------------
@pytest.fixture
def settings_dict(settings_dict, tmp_path, vendor):
    return {**settings_dict, "licensing": {"state_dir": str(tmp_path / "state"), "public_keys": [vendor.public_key]}}


def test_account_and_usage_api(client, admin, member, vendor):
    fp = client.get("/v1/licensing/status", headers=admin.headers).json["fingerprint"]
    lic = vendor.license(fp, Plan(name="p", credits=2, scans=10))
    assert client.post("/v1/licensing/license", json={"license": lic}, headers=admin.headers).status_code == 200
    assert client.get("/v1.0/account").status_code == 403
    for path in ("/v1.0/account", "/v1/account"):
        r = client.get(path, headers=member.headers)
        assert r.status_code == 200
        assert r.json == {"data": {"attributes": {
            "credits": {"total": 2.0, "subscription": 2.0, "payg": 0.0, "enterprise": 0.0},
            "api": {"free_calls": 0, "sizes": "all"}}}}
    ok = client.post("/v1/metering/probe", json={"metric": "credits", "amount": 1}, headers=admin.headers)
    assert ok.status_code == 200 and ok.json["reservation_id"].startswith("rsv_")
    failed = client.post("/v1/metering/probe", json={"metric": "credits", "fail": True}, headers=admin.headers)
    assert failed.status_code == 400 and failed.json["errors"][0]["code"] == "probe_failed"
    assert client.post("/v1/metering/probe", json={}, headers=member.headers).status_code == 403
    ok = client.post("/v1/metering/probe", json={"metric": "credits", "amount": 1}, headers=admin.headers)
    r = client.post("/v1/metering/probe", json={"metric": "credits", "amount": 0.25}, headers=admin.headers)
    assert r.status_code == 402
    assert r.json == {"errors": [{"code": "insufficient_credits", "title": "Insufficient credits",
                                  "detail": r.json["errors"][0]["detail"]}]}
    r = client.post("/v1/metering/probe", json={"metric": "scans", "amount": 1}, headers=admin.headers)
    assert r.status_code == 200  # other actions go on
    usage = client.get("/v1/usage", headers=admin.headers).json
    assert usage["metrics"]["credits"]["used"] == 2 and usage["metrics"]["scans"]["used"] == 1
    assert client.get("/v1/usage", headers=member.headers).json["metrics"]["credits"]["used"] == 0
    assert client.get("/v1/usage?period=2030-13", headers=admin.headers).status_code == 400
    assert client.get("/v1/licensing/ledger", headers=admin.headers).json["ok"] is True
    rep = client.get("/v1/usage/report", headers=admin.headers)
    assert rep.status_code == 200 and rep.text.startswith("-----BEGIN FORECOURT USAGE REPORT-----")
    kinds = [n["kind"] for n in client.get("/v1/licensing/notices", headers=admin.headers).json["notices"]]
    assert "budget_80" in kinds and "license_installed" in kinds


def test_expired_box_answers_only_license_account_and_export(client, admin, vendor, tmp_path):
    fp = client.get("/v1/licensing/status", headers=admin.headers).json["fingerprint"]
    lic = vendor.license(fp, "starter", issued_at="2026-01-01T00:00:00Z", valid_from="2026-01-01",
                         valid_until="2026-01-31")
    with time_machine.travel(datetime(2026, 1, 10, tzinfo=UTC), tick=False) as t:
        assert client.post("/v1/licensing/license", json={"license": lic}, headers=admin.headers).status_code == 200
        t.move_to(datetime(2026, 2, 5, tzinfo=UTC))  # grace
        assert client.post("/v1/metering/probe", json={"metric": "scans"}, headers=admin.headers).status_code == 200
        r = client.post("/v1/metering/probe", json={"metric": "uploads"}, headers=admin.headers)
        assert r.status_code == 403 and r.json["errors"][0]["code"] == "collection_locked"
        t.move_to(datetime(2026, 2, 9, tzinfo=UTC))  # grace over
        r = client.post("/v1/metering/probe", json={"metric": "scans"}, headers=admin.headers)
        assert r.status_code == 403 and r.json["errors"][0]["code"] == "license_expired"
        assert client.get("/v1/admin/users", headers=admin.headers).status_code == 403
        for path in ("/v1/licensing/status", "/v1.0/account", "/v1/usage"):
            assert client.get(path, headers=admin.headers).status_code == 200, path
        ready = client.get("/readyz")
        assert ready.status_code == 503


def test_notices_are_emailed_to_admins_when_smtp_is_set(settings_dict, vendor):
    import asyncore
    import smtpd
    import warnings

    from server import create_app
    from tests.helpers import free_port, make_account

    received: list[tuple[list[str], str]] = []

    class Inbox(smtpd.SMTPServer):
        def process_message(self, peer, mailfrom, rcpttos, data, **kw):  # noqa: ANN001
            received.append((rcpttos, data.decode() if isinstance(data, bytes) else data))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        port = free_port()
        inbox = Inbox(("127.0.0.1", port), None)
        loop = threading.Thread(target=asyncore.loop, kwargs={"timeout": 0.05}, daemon=True)
        loop.start()
    try:
        app = create_app({**settings_dict, "smtp": {"host": "127.0.0.1", "port": port, "starttls": False}})
        admin = make_account(app, "boss@dealer.example", "admin")
        make_account(app, "sales@dealer.example", "member")
        client = app.test_client()
        fp = client.get("/v1/licensing/status", headers=admin.headers).json["fingerprint"]
        client.post("/v1/licensing/license", json={"license": vendor.license(fp, Plan(name="p", credits=5))},
                    headers=admin.headers)
        for _ in range(4):
            assert client.post("/v1/metering/probe", json={}, headers=admin.headers).status_code == 200
        for _ in range(100):
            if any("80% of the budget used" in body for _, body in received):
                break
            time.sleep(0.05)
        mails = [(to, body) for to, body in received if "80% of the budget used" in body]
        assert mails and mails[0][0] == ["boss@dealer.example"]  # admins only
        assert "4 of 5 credits for" in mails[0][1]
    finally:
        notices.set_sinks([])
        inbox.close()
