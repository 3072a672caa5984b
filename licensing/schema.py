"""Licensing's tables, created with sqlite-utils Migrations; the server calls migrate(db) at start-up."""

from __future__ import annotations

import sqlite_utils
from sqlite_utils.migrations import Migrations

migrations = Migrations("forecourt.licensing")


def migrate(db: sqlite_utils.Database) -> None:
    """Create or update licensing's tables (idempotent)."""
    migrations.apply(db)


@migrations()
def m001_licensing(db: sqlite_utils.Database) -> None:
    """Licenses, packs, upgrades, buckets, reservations, the ledger and notices."""
    db.table("lic_kv").create({"key": str, "value": str}, pk="key")
    db.table("lic_licenses").create(
        {"id": str, "customer": str, "issued_at": float, "valid_from": float, "valid_until": float,
         "payload": str, "armored": str, "key_id": str, "installed_at": float},
        pk="id", not_null={"issued_at", "valid_from", "valid_until", "payload", "armored"},
    )
    db.table("lic_licenses").create_index(["valid_from", "issued_at"])
    db.table("lic_packs").create(
        {"id": str, "customer": str, "credits": float, "issued_at": float, "valid_until": float,
         "armored": str, "installed_at": float}, pk="id",
    )
    db.table("lic_upgrades").create(
        {"id": str, "license_id": str, "plan": str, "issued_at": float, "armored": str, "installed_at": float},
        pk="id",
    )
    db.table("lic_buckets").create(
        {"id": str, "metric": str, "kind": str, "period": str, "allowance": float, "granted": float,
         "used": float, "reserved": float, "valid_until": float, "created_at": float},
        pk="id", not_null={"metric", "kind"}, defaults={"used": 0.0, "reserved": 0.0},
    )
    db.table("lic_buckets").create_index(["metric", "kind", "period"])
    db.table("lic_reservations").create(
        {"id": str, "metric": str, "amount": float, "splits": str, "key_id": str, "user_id": int,
         "request_id": str, "owner": str, "status": str, "created_at": float, "expires_at": float,
         "settled_at": float},
        pk="id", not_null={"metric", "amount", "splits", "status", "created_at", "expires_at"},
    )
    db.table("lic_reservations").create_index(["status", "expires_at"])
    db.table("lic_reservations").create_index(["request_id"])
    db.table("lic_ledger").create(
        {"seq": int, "at": float, "kind": str, "metric": str, "amount": float, "bucket": str, "period": str,
         "ref": str, "key_id": str, "user_id": int, "request_id": str, "data": str, "prev_hash": str,
         "hash": str},
        pk="seq", not_null={"at", "kind", "prev_hash", "hash"},
    )
    db.table("lic_ledger").create_index(["period", "metric"])
    # Append-only at the database level too; the hash chain catches anyone who drops these triggers.
    db.execute("CREATE TRIGGER lic_ledger_no_update BEFORE UPDATE ON lic_ledger "
               "BEGIN SELECT RAISE(ABORT, 'the usage ledger is append-only'); END")
    db.execute("CREATE TRIGGER lic_ledger_no_delete BEFORE DELETE ON lic_ledger "
               "BEGIN SELECT RAISE(ABORT, 'the usage ledger is append-only'); END")
    db.table("lic_notices").create(
        {"id": int, "dedupe": str, "kind": str, "level": str, "title": str, "body": str, "data": str,
         "created_at": float, "delivered_at": float, "read_at": float},
        pk="id", not_null={"dedupe", "kind", "title", "created_at"},
    )
    db.table("lic_notices").create_index(["dedupe"], unique=True)


@migrations()
def m002_sealed_ledger(db: sqlite_utils.Database) -> None:
    """Each ledger entry's seal (an HMAC of its hash with the box's secret), each balance's seal, and a lookup of
    entries by balance (balances are checked against the ledger)."""
    db.table("lic_ledger").add_column("mac", str)
    db.table("lic_buckets").add_column("seal", str)
    db.table("lic_ledger").create_index(["bucket", "seq"])
