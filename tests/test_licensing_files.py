"""License files: signing, install through the library, the CLI and the admin API, and every refusal."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from licensing import errors, files
from licensing.clock import iso
from licensing.testing import ThrowawayVendor, make_box


@pytest.fixture
def vendor() -> ThrowawayVendor:
    return ThrowawayVendor()


@pytest.fixture
def box(tmp_path: Path, vendor: ThrowawayVendor):
    return make_box(tmp_path, vendor)


def _retamper(text: str, **changes: object) -> str:
    """Change payload fields but keep the old signature (what someone editing the file would do)."""
    kind, env = files.unarmor(text)
    payload = json.loads(base64.b64decode(env["payload"]))
    payload.update(changes)
    env["payload"] = base64.b64encode(files.canonical(payload)).decode()
    body = base64.b64encode(files.canonical(env)).decode()
    label = files.LABELS[kind]
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n"


def _in_force(box) -> tuple[str, str | None, str]:
    s = box.status()
    return s["state"], s["license_id"], s["plan"]["name"]


def test_license_survives_mail_reformatting(box, vendor):
    text = vendor.license(box.fingerprint, "standard", license_id="lic_mail")
    mangled = "Hello, here is your license:\r\n\r\n" + text.replace("\n", "\r\n   ") + "\r\n-- \r\nVendor"
    result = box.install(mangled)
    assert result == {"kind": "license", "id": "lic_mail", "installed": True, "message": result["message"]}
    assert _in_force(box) == ("active", "lic_mail", "standard")


def test_unbound_license_installs_anywhere(box, vendor):
    box.install(vendor.license(None, "pro", license_id="lic_any"))
    assert _in_force(box) == ("active", "lic_any", "pro")


def test_every_refusal_keeps_the_license_in_force(box, vendor, tmp_path):
    good = vendor.license(box.fingerprint, "standard", license_id="lic_good")
    box.install(good)
    pack = vendor.pack(box.fingerprint, 100, pack_id="pack_1")
    box.install(pack)
    stranger = ThrowawayVendor()
    future = iso((datetime.now(UTC) + timedelta(days=2)).timestamp())
    cases = [
        (_retamper(vendor.license(box.fingerprint, "enterprise", license_id="lic_edit"),
                   valid_until="2099-01-01T00:00:00Z"), errors.BadSignature, "license_bad_signature"),
        (_retamper(good, plan={"name": "enterprise"}), errors.BadSignature, "license_bad_signature"),
        (vendor.license("FC-AAAA-BBBB-CCCC-DDDD-EEEE", "pro"), errors.WrongBox, "license_wrong_box"),
        (vendor.license(box.fingerprint, "pro", issued_at=future), errors.IssuedInFuture,
         "license_issued_in_future"),
        (stranger.license(box.fingerprint, "pro"), errors.UnknownKey, "license_unknown_key"),
        (pack, errors.ReplayedPack, "credit_pack_replayed"),
        (vendor.license(box.fingerprint, "pro", issued_at="2020-01-01T00:00:00Z", valid_from="2020-01-01",
                        valid_until="2099-01-01"), errors.SupersededLicense, "license_superseded"),
        (vendor.upgrade(box.fingerprint, "lic_other", "pro"), errors.NotApplicable, "license_not_applicable"),
        (vendor.pack(box.fingerprint, 10, customer="Someone Else"), errors.NotApplicable, "license_not_applicable"),
        ("-----BEGIN FORECOURT LICENSE-----\nnot base64!\n-----END FORECOURT LICENSE-----",
         errors.InvalidLicenseFile, "invalid_license_file"),
        ("just some text", errors.InvalidLicenseFile, "invalid_license_file"),
    ]
    for text, exc_type, code in cases:
        with pytest.raises(exc_type) as info:
            box.install(text)
        assert info.value.code == code
        assert info.value.status in (400, 409)
        assert info.value.detail
        assert _in_force(box) == ("active", "lic_good", "standard"), code
    assert box.account()["data"]["attributes"]["credits"]["payg"] == 100


def test_newer_license_supersedes_and_reinstall_is_harmless(box, vendor):
    old = vendor.license(box.fingerprint, "starter", license_id="lic_old", issued_at="2025-01-01T00:00:00Z",
                         valid_from="2025-01-01", months=60)
    new = vendor.license(box.fingerprint, "pro", license_id="lic_new")
    box.install(old)
    assert _in_force(box) == ("active", "lic_old", "starter")
    box.install(new)
    assert _in_force(box) == ("active", "lic_new", "pro")
    assert box.install(new)["installed"] is False
    assert box.install(old)["installed"] is False  # a file already installed changes nothing
    older = vendor.license(box.fingerprint, "enterprise", license_id="lic_older", issued_at="2025-06-01T00:00:00Z",
                           valid_from="2025-06-01", months=60)
    with pytest.raises(errors.SupersededLicense):
        box.install(older)
    assert _in_force(box) == ("active", "lic_new", "pro")


def test_editing_the_stored_license_changes_nothing(box, vendor):
    box.install(vendor.license(box.fingerprint, "starter", license_id="lic_db", months=1))
    box.db.execute("UPDATE lic_licenses SET valid_until = 4102444800, payload = '{}'")
    expires = box.status()["expires_at"]
    assert expires < "2099"
    armored = box.db.execute("SELECT armored FROM lic_licenses").fetchone()[0]
    box.db.execute("UPDATE lic_licenses SET armored = ?", [_retamper(armored, valid_until="2099-01-01T00:00:00Z")])
    st = box.status()
    assert st["license_id"] is None  # the altered license no longer counts
    assert any("lic_db is not valid" in r for r in st["reasons"])


def test_upgrade_authorisation_moves_the_plan_once(box, vendor):
    box.install(vendor.license(box.fingerprint, "starter", license_id="lic_u"))
    up = vendor.upgrade(box.fingerprint, "lic_u", "pro", upgrade_id="upg_1")
    assert box.install(up)["message"] == "Plan changed from starter to pro."
    assert _in_force(box) == ("active", "lic_u", "pro")
    with pytest.raises(errors.ReplayedPack) as info:
        box.install(up)
    assert info.value.code == "upgrade_replayed"


def test_expired_pack_is_refused(box, vendor):
    with pytest.raises(errors.InvalidLicenseFile, match="expired"):
        box.install(vendor.pack(box.fingerprint, 10, issued_at="2020-01-01T00:00:00Z"))


# --- the CLI ----------------------------------------------------------------------------------------------
@pytest.fixture
def cli_env(cli_runner, tmp_path, vendor):
    runner, env = cli_runner
    env = {**env, "FORECOURT_LICENSING__STATE_DIR": str(tmp_path / "state"),
           "FORECOURT_LICENSING__PUBLIC_KEYS": json.dumps([vendor.public_key])}
    return runner, env


def test_cli_fingerprint_install_status(cli_env, vendor, tmp_path):
    from server.cli import cli

    runner, env = cli_env
    out = runner.invoke(cli, ["license", "fingerprint"], env=env, catch_exceptions=False)
    assert out.exit_code == 0, out.output
    fp = re.search(r"fingerprint: (FC-[A-Z2-7-]+)", out.output).group(1)
    assert re.search(r"install key: [A-Za-z0-9+/=]{44}", out.output)

    out = runner.invoke(cli, ["license", "status"], env=env, catch_exceptions=False)
    assert "state:        trial" in out.output

    lic = tmp_path / "acme.lic"
    lic.write_text(vendor.license(fp, "standard", license_id="lic_cli"))
    out = runner.invoke(cli, ["license", "install", str(lic)], env=env, catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert "License lic_cli installed; plan standard" in out.output

    other = tmp_path / "other.lic"
    other.write_text(vendor.license("FC-AAAA-BBBB-CCCC-DDDD-EEEE", "pro"))
    out = runner.invoke(cli, ["license", "install", str(other)], env=env, catch_exceptions=False)
    assert out.exit_code == 1
    assert "refused (license_wrong_box)" in out.output
    assert "in force: active" in out.output

    out = runner.invoke(cli, ["license", "status", "--json"], env=env, catch_exceptions=False)
    st = json.loads(out.output)
    assert (st["state"], st["license_id"], st["plan"]["name"], st["ledger"]["ok"]) == (
        "active", "lic_cli", "standard", True)

    period = datetime.now(UTC).strftime("%Y-%m")
    out = runner.invoke(cli, ["usage", "report", "--period", period], env=env, catch_exceptions=False)
    assert out.exit_code == 0
    from licensing.box import read_usage_report

    report = read_usage_report(out.output, st["install_key"])
    assert (report["box"], report["period"], report["license_id"]) == (fp, period, "lic_cli")
    assert runner.invoke(cli, ["usage", "report", "--period", "2030-1"], env=env).exit_code == 2


# --- the admin API ----------------------------------------------------------------------------------------
@pytest.fixture
def settings_dict(settings_dict, tmp_path, vendor):
    return {**settings_dict, "licensing": {"state_dir": str(tmp_path / "state"), "public_keys": [vendor.public_key]}}


def test_admin_api_installs_and_reports(client, admin, member, vendor):
    st = client.get("/v1/licensing/status", headers=admin.headers)
    assert st.status_code == 200
    assert st.json["state"] == "trial" and st.json["usable"] is True
    fp = st.json["fingerprint"]

    assert client.get("/v1/licensing/status", headers=member.headers).status_code == 403
    r = client.post("/v1/licensing/license", json={"license": vendor.license(fp, "pro", license_id="lic_api")},
                    headers=member.headers)
    assert r.status_code == 403

    r = client.post("/v1/licensing/license", json={"license": vendor.license(fp, "pro", license_id="lic_api")},
                    headers=admin.headers)
    assert r.status_code == 200, r.json
    assert r.json["status"]["license_id"] == "lic_api" and r.json["status"]["plan"]["name"] == "pro"

    r = client.post("/v1/licensing/license", json={"license": ThrowawayVendor().license(fp, "pro")},
                    headers=admin.headers)
    assert r.status_code == 400
    assert r.json["errors"][0]["code"] == "license_unknown_key"
    assert client.get("/v1/licensing/status", headers=admin.headers).json["license_id"] == "lic_api"


def test_vendor_tool_issues_what_the_box_accepts(tmp_path, box):
    import importlib.util

    from click.testing import CliRunner

    spec = importlib.util.spec_from_file_location("vendor_tool", Path(__file__).parents[1] / "scripts" / "vendor.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    runner = CliRunner()
    key = tmp_path / "vendor" / "key.pem"
    out = runner.invoke(tool.cli, ["keygen", "--out", str(key)], catch_exceptions=False)
    public = json.loads(out.output)["public_key"]
    assert oct(key.stat().st_mode)[-3:] == "600"
    assert runner.invoke(tool.cli, ["keygen", "--out", str(key)]).exit_code != 0  # never overwrites a key

    box2 = make_box(tmp_path / "b2")
    box2 = type(box2)(box2.db, type(box2.options)(**{**box2.options.__dict__, "public_keys": (public,)}))
    lic, pack, up = tmp_path / "l.lic", tmp_path / "p.lic", tmp_path / "u.lic"
    runner.invoke(tool.cli, ["license", "--key", str(key), "--customer", "Acme", "--box", box2.fingerprint,
                             "--plan", "starter", "--credits", "300", "--upgrade-path", "standard,pro",
                             "--auto-upgrade", "--overage", "allow", "--overage-factor", "1.25",
                             "--license-id", "lic_tool", "--out", str(lic)], catch_exceptions=False)
    runner.invoke(tool.cli, ["credit-pack", "--key", str(key), "--customer", "Acme", "--box", box2.fingerprint,
                             "--credits", "1000", "--out", str(pack)], catch_exceptions=False)
    runner.invoke(tool.cli, ["upgrade", "--key", str(key), "--customer", "Acme", "--box", box2.fingerprint,
                             "--license-id", "lic_tool", "--plan", "standard", "--out", str(up)],
                  catch_exceptions=False)
    assert lic.read_text().startswith("-----BEGIN FORECOURT LICENSE-----")
    box2.install(lic.read_text())
    st = box2.status()
    assert (st["plan"]["name"], st["plan"]["credits"], st["upgrade_path"]) == ("starter", 300, ["standard", "pro"])
    assert st["overage"] == {"policy": "allow", "factor": 1.25}
    box2.install(pack.read_text())
    box2.install(up.read_text())
    assert box2.status()["plan"]["name"] == "standard"
    credits = box2.account()["data"]["attributes"]["credits"]
    assert (credits["subscription"], credits["payg"]) == (2000, 1000)
    # the original box does not know this vendor's key
    with pytest.raises(errors.UnknownKey):
        box.install(lic.read_text())
