#!/usr/bin/env python3
"""The vendor's tool (never shipped to or imported by the server): key pairs, licenses, credit packs, upgrades.

    python scripts/vendor.py keygen --out ~/vendor/key.pem
    python scripts/vendor.py license --key ~/vendor/key.pem --customer "Acme Motors" --box FC-XXXX-... \\
        --plan standard --months 12 --upgrade-path pro,enterprise --auto-upgrade --out acme.lic
    python scripts/vendor.py credit-pack --key ~/vendor/key.pem --customer "Acme Motors" --box FC-XXXX-... \\
        --credits 1000 --out p.lic
    python scripts/vendor.py upgrade --key ~/vendor/key.pem --customer "Acme Motors" --license-id lic_... --plan pro
    python scripts/vendor.py verify-report report.txt --install-key <box install key>
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from licensing import files, keys
from licensing.issue import license_payload, pack_payload, upgrade_payload
from licensing.issue import plan_from as _plan_from
from licensing.plans import PAYG_VALID_DAYS, Plan


def plan_from(name: str, overrides: dict[str, float | None] | None = None) -> Plan:
    """A catalogue plan with overrides; a bad name is a usage error."""
    try:
        return _plan_from(name, overrides)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _key(path: str) -> Any:
    return keys.load_private_key(Path(path).expanduser().read_bytes())


def _emit(text: str, out: str | None) -> None:
    if out:
        Path(out).write_text(text)
        click.echo(f"wrote {out}", err=True)
    else:
        click.echo(text, nl=False)


@click.group()
def cli() -> None:
    """Forecourt vendor tool: sign licenses, credit packs and upgrade authorisations."""


@cli.command()
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Where to write the private key.")
def keygen(out: str) -> None:
    """Make an Ed25519 key pair; prints the public key for boxes' [licensing] public_keys."""
    path = Path(out).expanduser()
    if path.exists():
        raise click.ClickException(f"{path} exists; refusing to overwrite a key")
    key = keys.generate_private_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(keys.private_key_pem(key))
    path.chmod(0o600)
    pub = keys.public_key_b64(key.public_key())
    click.echo(json.dumps({"public_key": pub, "key_id": keys.key_id(pub), "private_key": str(path)}))


_allowance_options = [
    click.option("--credits", type=float, help="Override the plan's monthly credits."),
    click.option("--scans", type=float, help="Override the plan's monthly scans."),
    click.option("--uploads", type=float, help="Override the plan's monthly uploads."),
    click.option("--stored-images", type=float, help="Override the plan's stored-image cap."),
]


def _with_allowances(fn: Any) -> Any:
    for opt in reversed(_allowance_options):
        fn = opt(fn)
    return fn


@cli.command("license")
@click.option("--key", "key_path", required=True, help="Vendor private key (PEM).")
@click.option("--customer", required=True)
@click.option("--box", help="Box fingerprint (from `forecourt license fingerprint`); omit with --unbound.")
@click.option("--unbound", is_flag=True, help="Not bound to one box.")
@click.option("--plan", "plan_name", default="standard", show_default=True)
@_with_allowances
@click.option("--valid-from", help="ISO date/time; default now.")
@click.option("--valid-until", help="ISO date/time; default valid-from + months.")
@click.option("--months", default=12, show_default=True, type=int)
@click.option("--issued-at", help="ISO date/time; default now.")
@click.option("--upgrade-path", default="", help="Comma-separated plan names to move through.")
@click.option("--auto-upgrade", is_flag=True, help="Move up the path when the scan limit runs out.")
@click.option("--overage", type=click.Choice(["block", "allow"]), default="block", show_default=True)
@click.option("--overage-factor", type=click.Choice(["1.25", "1.5", "2"]), default="1.5", show_default=True)
@click.option("--install-key", help="The box's install public key, from its license request.")
@click.option("--license-id")
@click.option("--out", type=click.Path(dir_okay=False))
def issue_license(key_path: str, customer: str, box: str | None, unbound: bool, plan_name: str, credits: float | None,
                  scans: float | None, uploads: float | None, stored_images: float | None, valid_from: str | None,
                  valid_until: str | None, months: int, issued_at: str | None, upgrade_path: str, auto_upgrade: bool,
                  overage: str, overage_factor: str, install_key: str | None, license_id: str | None,
                  out: str | None) -> None:
    """Issue a license file."""
    if not box and not unbound:
        raise click.UsageError("give --box FINGERPRINT or --unbound")
    plan = plan_from(plan_name, {"credits": credits, "scans": scans, "uploads": uploads,
                                 "stored_images": stored_images})
    path = [plan_from(p.strip()) for p in upgrade_path.split(",") if p.strip()]
    payload = license_payload(customer, plan, box=None if unbound else box, valid_from=valid_from,
                              valid_until=valid_until, months=months, issued_at=issued_at, upgrade_path=path,
                              auto_upgrade=auto_upgrade, overage=overage, overage_factor=float(overage_factor),
                              install_key=install_key, license_id=license_id)
    _emit(files.sign("license", payload, _key(key_path)), out)


@cli.command("credit-pack")
@click.option("--key", "key_path", required=True)
@click.option("--customer", required=True)
@click.option("--box", help="Box fingerprint the pack is for; omit with --unbound.")
@click.option("--unbound", is_flag=True, help="Installable on any box (once per machine); shown in usage reports.")
@click.option("--credits", required=True, type=float)
@click.option("--valid-days", default=PAYG_VALID_DAYS, show_default=True, type=int)
@click.option("--pack-id")
@click.option("--out", type=click.Path(dir_okay=False))
def credit_pack(key_path: str, customer: str, box: str | None, unbound: bool, credits: float, valid_days: int,
                pack_id: str | None, out: str | None) -> None:
    """Issue a pay-as-you-go credit pack for one box (valid two years by default)."""
    if not box and not unbound:
        raise click.UsageError("give --box FINGERPRINT or --unbound")
    if box and unbound:
        raise click.UsageError("give --box FINGERPRINT or --unbound, not both")
    _emit(files.sign("credit_pack", pack_payload(customer, credits, box=None if unbound else box,
                                                 valid_days=valid_days, pack_id=pack_id), _key(key_path)), out)


@cli.command()
@click.option("--key", "key_path", required=True)
@click.option("--customer", required=True)
@click.option("--license-id", required=True)
@click.option("--box")
@click.option("--plan", "plan_name", required=True)
@_with_allowances
@click.option("--out", type=click.Path(dir_okay=False))
def upgrade(key_path: str, customer: str, license_id: str, box: str | None, plan_name: str, credits: float | None,
            scans: float | None, uploads: float | None, stored_images: float | None, out: str | None) -> None:
    """Issue an upgrade authorisation moving a license to another plan."""
    plan = plan_from(plan_name, {"credits": credits, "scans": scans, "uploads": uploads,
                                 "stored_images": stored_images})
    _emit(files.sign("upgrade", upgrade_payload(customer, license_id, plan, box=box), _key(key_path)), out)


@cli.command("verify-report")
@click.argument("report", type=click.Path(exists=True, dir_okay=False))
@click.option("--install-key", help="The box's install public key from its license request (recommended).")
def verify_report(report: str, install_key: str | None) -> None:
    """Check a box's signed usage report and print it as JSON."""
    from licensing.box import read_usage_report
    from licensing.errors import LicensingError

    try:
        payload = read_usage_report(Path(report).read_text(), install_key)
    except LicensingError as exc:
        raise click.ClickException(exc.detail) from exc
    click.echo(json.dumps(payload, indent=2, sort_keys=True))


if __name__ == "__main__":
    cli()
