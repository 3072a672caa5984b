"""`forecourt license` (fingerprint, install FILE, status) and `forecourt usage report --period YYYY-MM`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from licensing import integrity, ledger
from licensing.box import LicenseBox
from licensing.errors import LicensingError
from licensing.schema import migrate


def _box(obj: object) -> LicenseBox:
    from server.services.licensing import options_from

    db = obj.db()  # type: ignore[attr-defined]
    migrate(db)
    return LicenseBox(db, options_from(obj.settings))  # type: ignore[attr-defined]


@click.group("license")
def license_group() -> None:
    """This box's license: fingerprint, install, status."""


@license_group.command()
@click.pass_obj
def fingerprint(obj: object) -> None:
    """Print the box fingerprint and install key to send with a license request."""
    b = _box(obj)
    click.echo(f"fingerprint: {b.fingerprint}")
    click.echo(f"install key: {b.install_public_key}")


@license_group.command()
@click.argument("file", type=click.File("r"))
@click.pass_obj
def install(obj: object, file: click.utils.LazyFile) -> None:
    """Install a license file, credit pack or upgrade authorisation ("-" reads stdin)."""
    b = _box(obj)
    try:
        result = b.install(file.read())
    except LicensingError as exc:
        click.echo(f"refused ({exc.code}): {exc.detail}", err=True)
        click.echo(f"in force: {b.state()['state']}", err=True)
        sys.exit(1)
    click.echo(result["message"])


@license_group.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def status(obj: object, as_json: bool) -> None:
    """Show the license state, plan, balances and ledger check."""
    b = _box(obj)
    st = b.status()
    check = ledger.verify(b.db, b.options.seal())
    st["ledger"] = {"ok": check.ok, "entries": check.entries, "problem": check.problem}
    st["tamper_events"] = integrity.tamper_events(b.db)
    if as_json:
        click.echo(json.dumps(st, indent=2, sort_keys=True))
        return
    click.echo(f"state:        {st['state']}{'' if st['usable'] else ' (NOT usable)'}")
    for reason in st["reasons"]:
        click.echo(f"  reason:     {reason}")
    click.echo(f"license:      {st['license_id'] or '(trial)'}  customer: {st['customer'] or '-'}")
    click.echo(f"plan:         {st['plan']['name']}  upgrade path: {', '.join(st['upgrade_path']) or '-'}")
    click.echo(f"expires:      {st['expires_at']}  grace until: {st['grace_until']}")
    click.echo(f"fingerprint:  {st['fingerprint']}")
    for metric, bal in st["balances"].items():
        if "cap" in bal:
            click.echo(f"{metric + ':':14}{bal['stored']:g} stored of {_n(bal['cap'])}")
        else:
            click.echo(f"{metric + ':':14}{bal['used']:g} used of {_n(bal['granted'])} in {bal['period']}"
                       f" ({_n(bal['remaining'])} left)")
    for pack in st["balances"]["credits"]["payg"]:
        click.echo(f"  pack {pack['pack_id']}: {pack['remaining']:g} of {pack['credits']:g} left, "
                   f"until {pack['valid_until']}")
    click.echo(f"ledger:       {'verified' if check.ok else 'ALTERED: ' + check.problem}, {check.entries} entries")
    for event in st["tamper_events"]:
        click.echo(f"  tampering:  {event['at']} {event['detail']}")


def _n(value: float | None) -> str:
    return "unlimited" if value is None else f"{value:g}"


@click.group("usage")
def usage_group() -> None:
    """Metered usage."""


@usage_group.command()
@click.option("--period", required=True, help="YYYY-MM")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the report here (default: stdout).")
@click.pass_obj
def report(obj: object, period: str, out: str | None) -> None:
    """A usage report for a period, signed with this box's install key, for the vendor's bill."""
    import re

    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", period):
        raise click.BadParameter("use YYYY-MM", param_hint="--period")
    text = _box(obj).usage_report(period)
    if out:
        Path(out).write_text(text)
        click.echo(f"wrote {out}", err=True)
    else:
        click.echo(text, nl=False)
