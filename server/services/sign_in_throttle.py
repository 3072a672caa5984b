"""Sign-in throttling: wrong passwords pause further tries for the account and for the client address, the pause
doubling with each further wrong password; every failure is kept for the admin. The state lives in the database,
so every gunicorn worker sees the same counts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import sqlite_utils

from core.clock import iso, now
from core.sqlite import write_txn
from server.errors import ApiError

# Longest e-mail and user agent kept per failure (the table must not grow with what an attacker sends).
MAX_EMAIL, MAX_USER_AGENT = 254, 300


class TooManySignIns(ApiError):
    """429 while the account or the address is paused; `retry_after` is in whole seconds, at least 1."""

    code, title, status = "too_many_sign_ins", "Too many sign-in attempts", 429

    def __init__(self, retry_after: int) -> None:
        self.retry_after = max(1, int(retry_after))
        super().__init__(f"Too many wrong passwords: signing in is paused. Try again in {wait_words(self.retry_after)}.",
                         headers={"Retry-After": str(self.retry_after)})


def wait_words(seconds: int) -> str:
    """'45 seconds', '1 minute', '15 minutes'."""
    if seconds < 60:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


@dataclass(frozen=True)
class ThrottlePolicy:
    """How many wrong passwords pass, how long the pause is and how long a failure is remembered."""

    account_attempts: int = 5
    address_attempts: int = 20
    delay_seconds: float = 30.0
    max_delay_seconds: float = 900.0
    forget_minutes: float = 60.0
    keep_days: int = 90

    @classmethod
    def from_settings(cls, auth: Any) -> ThrottlePolicy:
        return cls(auth.sign_in_attempts, auth.sign_in_address_attempts, auth.sign_in_delay_seconds,
                   auth.sign_in_max_delay_seconds, auth.sign_in_forget_minutes, auth.failed_sign_ins_kept_days)

    def pause(self, failures: int, allowed: int) -> float:
        """Seconds of pause after `failures` wrong passwords in a row (0 while within `allowed`)."""
        if failures < allowed:
            return 0.0
        return min(self.max_delay_seconds, self.delay_seconds * 2 ** min(failures - allowed, 30))


@dataclass(frozen=True)
class SignInGuard:
    """One sign-in attempt's who and where, and the policy that judges it."""

    policy: ThrottlePolicy
    address: str
    user_agent: str = ""
    route: str = ""

    def _keys(self, email: str) -> list[tuple[str, int]]:
        return [(f"account:{normal_email(email)}", self.policy.account_attempts),
                (f"address:{self.address}", self.policy.address_attempts)]

    def check(self, db: sqlite_utils.Database, email: str) -> None:
        """Raise TooManySignIns while the account or this address is paused (before any password is checked)."""
        keys = [k for k, _ in self._keys(email)]
        row = db.execute("SELECT MAX(locked_until) FROM sign_in_throttle WHERE key IN (?, ?)", keys).fetchone()
        until, t = float(row[0] or 0.0), now()
        if until > t:
            raise TooManySignIns(math.ceil(until - t))

    def failed(self, db: sqlite_utils.Database, email: str, reason: str) -> None:
        """Keep the failure and count it against the account and the address; past their allowance, pause them."""
        t = now()
        forget = self.policy.forget_minutes * 60
        with write_txn(db):
            db["failed_sign_ins"].insert({"at": _iso(t), "email": normal_email(email)[:MAX_EMAIL],
                                          "address": self.address, "user_agent": self.user_agent[:MAX_USER_AGENT],
                                          "route": self.route, "reason": reason})
            for key, allowed in self._keys(email):
                row = db.execute("SELECT failures, last_failure FROM sign_in_throttle WHERE key = ?",
                                 [key]).fetchone()
                failures = (row[0] if row and t - row[1] <= forget else 0) + 1
                pause = self.policy.pause(failures, allowed)
                db.execute("INSERT OR REPLACE INTO sign_in_throttle (key, failures, last_failure, locked_until) "
                           "VALUES (?, ?, ?, ?)", [key, failures, t, t + pause if pause else 0.0])
            db.execute("DELETE FROM sign_in_throttle WHERE last_failure < ? AND locked_until < ?", [t - forget, t])
            db.execute("DELETE FROM failed_sign_ins WHERE at < ?", [_iso(t - self.policy.keep_days * 86400)])

    def succeeded(self, db: sqlite_utils.Database, email: str) -> None:
        """The right password: the account starts afresh (the address keeps its count, so one account an attacker
        owns does not reset the guessing on others)."""
        with write_txn(db):
            db.execute("DELETE FROM sign_in_throttle WHERE key = ?", [self._keys(email)[0][0]])


def normal_email(email: str) -> str:
    return (email or "").strip().lower()


def _iso(ts: float) -> str:
    return iso(ts) or ""


def recent_failures(db: sqlite_utils.Database, limit: int = 50) -> list[dict[str, Any]]:
    """The latest failed sign-ins, newest first."""
    return list(db["failed_sign_ins"].rows_where(order_by="id DESC", limit=limit))


def current_pauses(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Accounts and addresses paused right now: kind, who, failures, until (ISO)."""
    out = []
    for key, failures, until in db.execute("SELECT key, failures, locked_until FROM sign_in_throttle "
                                           "WHERE locked_until > ? ORDER BY locked_until DESC", [now()]).fetchall():
        kind, _, who = key.partition(":")
        out.append({"key": key, "kind": kind, "who": who, "failures": failures, "until": _iso(until)})
    return out


def lift_pause(db: sqlite_utils.Database, key: str) -> bool:
    """An admin lets an account or an address try again now; False when it was not paused."""
    with write_txn(db):
        return db.execute("DELETE FROM sign_in_throttle WHERE key = ?", [key]).rowcount > 0
