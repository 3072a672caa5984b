"""Building the payloads the vendor signs: licenses, credit packs, upgrade authorisations (no keys here).

Used by scripts/vendor.py and by tests; the server never needs it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from licensing import files
from licensing.clock import iso
from licensing.plans import CATALOGUE, PAYG_VALID_DAYS, Plan


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _when(text: str | None, default: datetime) -> str:
    if not text:
        return iso(default.timestamp()) or ""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return iso((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()) or ""


def plan_from(name: str, overrides: dict[str, float | None] | None = None) -> Plan:
    """A catalogue plan, with allowances overridden where given."""
    if name not in CATALOGUE:
        raise ValueError(f"unknown plan {name!r}; one of {', '.join(CATALOGUE)}")
    data = CATALOGUE[name].model_dump()
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return Plan.model_validate(data)


def license_payload(customer: str, plan: Plan, *, box: str | None, valid_from: str | None = None,
                    valid_until: str | None = None, months: int = 12, issued_at: str | None = None,
                    upgrade_path: list[Plan] | None = None, auto_upgrade: bool = False,
                    overage: str = "block", overage_factor: float = 1.0, install_key: str | None = None,
                    license_id: str | None = None) -> dict[str, Any]:
    """The payload of a license (validated)."""
    now = _now()
    start = _when(valid_from, now)
    end = _when(valid_until, datetime.fromisoformat(start.replace("Z", "+00:00")) + timedelta(days=30 * months))
    payload = files.LicensePayload(
        license_id=license_id or f"lic_{uuid.uuid4().hex[:12]}", customer=customer, box=box,
        issued_at=_when(issued_at, now), valid_from=start, valid_until=end, plan=plan,
        upgrade_path=tuple(upgrade_path or ()), auto_upgrade=auto_upgrade,
        overage=files.Overage(policy=overage, factor=overage_factor if overage == "allow" else 1.0),  # type: ignore[arg-type]
        install_key=install_key,
    )
    return payload.model_dump()


def pack_payload(customer: str, credits: float, *, box: str | None, valid_days: int = PAYG_VALID_DAYS,
                 issued_at: str | None = None, pack_id: str | None = None) -> dict[str, Any]:
    """The payload of a pay-as-you-go credit pack."""
    now = _now()
    issued = _when(issued_at, now)
    until = datetime.fromisoformat(issued.replace("Z", "+00:00")) + timedelta(days=valid_days)
    return files.CreditPackPayload(pack_id=pack_id or f"pack_{uuid.uuid4().hex[:12]}", customer=customer, box=box,
                                   issued_at=issued, valid_until=iso(until.timestamp()) or "",
                                   credits=credits).model_dump()


def upgrade_payload(customer: str, license_id: str, plan: Plan, *, box: str | None,
                    issued_at: str | None = None, upgrade_id: str | None = None) -> dict[str, Any]:
    """The payload of an upgrade authorisation."""
    return files.UpgradePayload(upgrade_id=upgrade_id or f"upg_{uuid.uuid4().hex[:12]}", license_id=license_id,
                                customer=customer, box=box, issued_at=_when(issued_at, _now()),
                                plan=plan).model_dump()
