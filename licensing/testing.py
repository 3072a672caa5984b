"""Helpers for tests: a throwaway vendor key pair that signs real files, and a box on a temporary folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlite_utils

from licensing import files, keys
from licensing.box import LicenseBox
from licensing.issue import license_payload, pack_payload, plan_from, upgrade_payload
from licensing.options import LicensingOptions
from licensing.plans import Plan
from licensing.schema import migrate


class ThrowawayVendor:
    """A vendor whose key exists only for one test; its public half goes to the box through options."""

    def __init__(self) -> None:
        self.key = keys.generate_private_key()
        self.public_key = keys.public_key_b64(self.key.public_key())

    def sign(self, kind: str, payload: dict[str, Any]) -> str:
        """Sign any payload (tests build broken ones too)."""
        return files.sign(kind, payload, self.key)

    def license(self, box: str | None, plan: str | Plan = "starter", customer: str = "Acme Motors",
                **kwargs: Any) -> str:
        """A signed license; kwargs go to licensing.issue.license_payload."""
        p = plan if isinstance(plan, Plan) else plan_from(plan)
        return self.sign("license", license_payload(customer, p, box=box, **kwargs))

    def pack(self, box: str | None, credits: float, customer: str = "Acme Motors", **kwargs: Any) -> str:
        """A signed pay-as-you-go credit pack."""
        return self.sign("credit_pack", pack_payload(customer, credits, box=box, **kwargs))

    def upgrade(self, box: str | None, license_id: str, plan: str | Plan, customer: str = "Acme Motors",
                **kwargs: Any) -> str:
        """A signed upgrade authorisation."""
        p = plan if isinstance(plan, Plan) else plan_from(plan)
        return self.sign("upgrade", upgrade_payload(customer, license_id, p, box=box, **kwargs))


def make_box(root: Path, vendor: ThrowawayVendor | None = None, *, db_name: str = "forecourt.db",
             **options: Any) -> LicenseBox:
    """A LicenseBox on root/data with its outside record under root/state (or options' state_dir), trusting the
    vendor's key."""
    options.setdefault("state_dir", root / "state")
    if vendor:
        options.setdefault("public_keys", (vendor.public_key,))
    opts = LicensingOptions(data_dir=root / "data", **options)
    opts.data_dir.mkdir(parents=True, exist_ok=True)
    db = sqlite_utils.Database(opts.data_dir / db_name)
    migrate(db)
    return LicenseBox(db, opts)
