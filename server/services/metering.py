"""Metering for views: `with charge("credits", 1):` around the work; `check("collection_manage")` for unmetered
actions. Reserve before, commit on success, refund on any exception."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from flask import g

from licensing.metering import Meter
from server.services.licensing import licensing_options, policy
from server.store import get_db


@dataclass(frozen=True)
class Charge:
    """A reservation held for the current request; amount is final."""

    metric: str
    amount: float
    reservation_id: str


def meter() -> Meter:
    """A Meter on this thread's database connection."""
    return Meter(get_db(), licensing_options())


@contextmanager
def charge(metric: str, amount: float) -> Iterator[Charge]:
    """Reserve amount of metric for this request; commit on normal exit, refund on any exception."""
    principal = g.get("principal")
    request_id = g.get("request_id") or uuid.uuid4().hex
    m = meter()
    rid = m.reserve(metric, amount, key_id=getattr(principal, "key_id", None),
                    user_id=getattr(principal, "user_id", None), request_id=request_id)
    try:
        yield Charge(metric, amount, rid)
    except BaseException:
        m.refund(rid)
        raise
    m.commit(rid)


def release(metric: str, amount: float) -> None:
    """Lower a capped gauge (stored_images) after deleting reference images."""
    meter().release(metric, amount)


def check(action: str) -> None:
    """Raise the LicensingError that stops this action in the current license state (e.g. collection_manage in
    grace); actions: background_removal, recognition, collection_manage, collection_read, admin, license, account,
    export."""
    policy().check(action)
