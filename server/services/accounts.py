"""Users, passwords, API keys and password-reset tokens."""

from __future__ import annotations

import hashlib
import re
import secrets
import sqlite3
from dataclasses import dataclass
from typing import Any

import sqlite_utils
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from core.clock import iso, now, now_iso, parse_iso
from server.errors import ApiError, BadRequest, Conflict, NotFound
from server.services.sign_in_throttle import SignInGuard
from server.store import write_txn

KEY_PREFIX = "fc_"
ROLES = ("admin", "member")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_hasher = PasswordHasher()


class InvalidCredentials(ApiError):
    code, title, status = "invalid_credentials", "Wrong e-mail or password", 401

    def __init__(self, detail: str, reason: str = "wrong password") -> None:
        super().__init__(detail)
        self.reason = reason  # for the admin's list of failed sign-ins, never for the caller


class WeakPassword(ApiError):
    code, title, status = "weak_password", "Password too short", 400


class InvalidToken(ApiError):
    code, title, status = "invalid_token", "Invalid or expired link", 400


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user and, for API calls, the key."""

    user_id: int
    email: str
    role: str
    key_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _check_email(email: str) -> str:
    email = (email or "").strip().lower()
    if not EMAIL_RE.match(email) or len(email) > 254:
        raise BadRequest(f"'{email}' is not an e-mail address.", code="invalid_email", title="Invalid e-mail")
    return email


def check_password_strength(password: str, min_length: int) -> None:
    """Refuse passwords shorter than the configured minimum."""
    if len(password or "") < min_length:
        raise WeakPassword(f"Use at least {min_length} characters.")


def hash_password(password: str) -> str:
    """An argon2id hash."""
    return _hasher.hash(password)


def public_user(row: dict[str, Any]) -> dict[str, Any]:
    """A user as the API shows it (no hash)."""
    return {"id": row["id"], "email": row["email"], "role": row["role"], "created_at": row["created_at"],
            "disabled": bool(row.get("disabled"))}


def create_user(db: sqlite_utils.Database, email: str, password: str, role: str = "member",
                min_length: int = 10) -> dict[str, Any]:
    """Create a user; e-mail is unique, role admin or member."""
    email = _check_email(email)
    if role not in ROLES:
        raise BadRequest(f"Role must be one of {', '.join(ROLES)}.", code="invalid_role", title="Invalid role")
    check_password_strength(password, min_length)
    with write_txn(db):
        if db["users"].count_where("email = ?", [email]):
            raise Conflict(f"A user with e-mail {email} exists.", code="user_exists", title="User exists")
        table = db["users"].insert({"email": email, "password_hash": hash_password(password), "role": role,
                                    "created_at": now_iso(), "disabled": 0})
        row = db["users"].get(table.last_pk)
    return public_user(row)


def get_user(db: sqlite_utils.Database, user_id: int) -> dict[str, Any]:
    """A user row by id."""
    try:
        return db["users"].get(user_id)
    except (sqlite_utils.db.NotFoundError, OverflowError) as exc:  # OverflowError: an id beyond SQLite's range
        raise NotFound(f"No user {user_id}.", code="user_not_found") from exc


def find_user(db: sqlite_utils.Database, email: str) -> dict[str, Any]:
    """A user row by e-mail."""
    rows = list(db["users"].rows_where("email = ?", [(email or "").strip().lower()], limit=1))
    if not rows:
        raise NotFound(f"No user with e-mail {email}.", code="user_not_found")
    return rows[0]


def list_users(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """All users."""
    return [public_user(r) for r in db["users"].rows_where(order_by="id")]


def authenticate(db: sqlite_utils.Database, email: str, password: str,
                 guard: SignInGuard | None = None) -> dict[str, Any]:
    """The user whose e-mail and password match; InvalidCredentials otherwise (same message either way).

    With a guard (every request that checks a password has one), a paused account or address is refused with
    TooManySignIns before the password is checked, and a failure counts towards the pause.
    """
    if guard is not None:
        guard.check(db, email)
    try:
        row = _verify(db, email, password)
    except InvalidCredentials as exc:
        if guard is not None:
            guard.failed(db, email, exc.reason)
        raise
    if guard is not None:
        guard.succeeded(db, email)
    return row


def _verify(db: sqlite_utils.Database, email: str, password: str) -> dict[str, Any]:
    try:
        row = find_user(db, email)
    except NotFound:
        _hasher.hash(password or "x")  # same cost whether or not the user exists
        raise InvalidCredentials("Check the e-mail address and password.", reason="no such user") from None
    try:
        _hasher.verify(row["password_hash"], password or "")
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        raise InvalidCredentials("Check the e-mail address and password.", reason="wrong password") from None
    if row.get("disabled"):
        raise InvalidCredentials("This account is disabled.", reason="account disabled")
    if _hasher.check_needs_rehash(row["password_hash"]):
        with write_txn(db):
            db["users"].update(row["id"], {"password_hash": hash_password(password)})
    return row


def set_password(db: sqlite_utils.Database, user_id: int, new_password: str, min_length: int = 10) -> None:
    """Set a new password and invalidate outstanding reset links."""
    check_password_strength(new_password, min_length)
    get_user(db, user_id)
    with write_txn(db):
        db["users"].update(user_id, {"password_hash": hash_password(new_password)})
        db.execute("UPDATE reset_tokens SET used_at = ? WHERE user_id = ? AND used_at IS NULL", [now_iso(), user_id])


def change_password(db: sqlite_utils.Database, user_id: int, current: str, new: str, min_length: int = 10,
                    guard: SignInGuard | None = None) -> None:
    """Change one's own password; the current one is required (and throttled like a sign-in)."""
    row = get_user(db, user_id)
    authenticate(db, row["email"], current, guard)
    set_password(db, user_id, new, min_length)


def change_email(db: sqlite_utils.Database, user_id: int, password: str, new_email: str,
                 guard: SignInGuard | None = None) -> dict[str, Any]:
    """Change one's own e-mail; asks for the password (throttled like a sign-in)."""
    row = get_user(db, user_id)
    authenticate(db, row["email"], password, guard)
    new_email = _check_email(new_email)
    with write_txn(db):
        if db["users"].count_where("email = ? AND id != ?", [new_email, user_id]):
            raise Conflict(f"A user with e-mail {new_email} exists.", code="user_exists", title="User exists")
        db["users"].update(user_id, {"email": new_email})
    return public_user(get_user(db, user_id))


def set_role(db: sqlite_utils.Database, user_id: int, role: str) -> dict[str, Any]:
    """Make a user admin or member."""
    if role not in ROLES:
        raise BadRequest(f"Role must be one of {', '.join(ROLES)}.", code="invalid_role", title="Invalid role")
    get_user(db, user_id)
    with write_txn(db):
        db["users"].update(user_id, {"role": role})
    return public_user(get_user(db, user_id))


def delete_user(db: sqlite_utils.Database, user_id: int) -> None:
    """Delete a user, their keys and reset tokens."""
    get_user(db, user_id)
    with write_txn(db):
        db.execute("DELETE FROM api_keys WHERE user_id = ?", [user_id])
        db.execute("DELETE FROM reset_tokens WHERE user_id = ?", [user_id])
        db.execute("DELETE FROM users WHERE id = ?", [user_id])


# --- API keys -----------------------------------------------------------------------------------------------------


def public_key(row: dict[str, Any]) -> dict[str, Any]:
    """A key as listed: never the secret."""
    return {"id": row["id"], "name": row["name"], "prefix": row["prefix"], "created_at": row["created_at"],
            "last_used_at": row.get("last_used_at"), "revoked_at": row.get("revoked_at"),
            "user_id": row["user_id"]}


def create_key(db: sqlite_utils.Database, user_id: int, name: str = "") -> tuple[str, dict[str, Any]]:
    """Make a key for a user; returns (the secret, shown once; the stored row)."""
    get_user(db, user_id)
    name = (name or "").strip()[:100] or "API key"
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    row = {"id": "key_" + secrets.token_hex(8), "user_id": user_id, "name": name, "prefix": secret[:10],
           "key_hash": _sha256(secret), "created_at": now_iso(), "last_used_at": None, "revoked_at": None}
    with write_txn(db):
        db["api_keys"].insert(row)
    return secret, public_key(row)


def list_keys(db: sqlite_utils.Database, user_id: int | None = None) -> list[dict[str, Any]]:
    """Keys of one user (or all)."""
    if user_id is None:
        rows = db["api_keys"].rows_where(order_by="created_at")
    else:
        rows = db["api_keys"].rows_where("user_id = ?", [user_id], order_by="created_at")
    return [public_key(r) for r in rows]


def revoke_key(db: sqlite_utils.Database, key_id: str, user_id: int | None = None) -> dict[str, Any]:
    """Revoke a key (of that user, unless user_id is None for admins)."""
    rows = list(db["api_keys"].rows_where("id = ?", [key_id]))
    if not rows or (user_id is not None and rows[0]["user_id"] != user_id):
        raise NotFound(f"No API key {key_id}.", code="key_not_found")
    if not rows[0].get("revoked_at"):
        with write_txn(db):
            db["api_keys"].update(key_id, {"revoked_at": now_iso()})
    return public_key(db["api_keys"].get(key_id))


def principal_for_key(db: sqlite_utils.Database, secret: str) -> Principal | None:
    """The principal a key belongs to, or None for an unknown, revoked or malformed key."""
    if not secret or not secret.startswith(KEY_PREFIX) or len(secret) > 200:
        return None
    rows = db.execute(
        "SELECT k.id, k.user_id, k.last_used_at, u.email, u.role, u.disabled FROM api_keys k "
        "JOIN users u ON u.id = k.user_id WHERE k.key_hash = ? AND k.revoked_at IS NULL",
        [_sha256(secret)],
    ).fetchall()
    if not rows:
        return None
    key_id, user_id, last_used, email, role, disabled = rows[0]
    if disabled:
        return None
    stamp = now_iso()
    if (last_used or "")[:16] != stamp[:16]:  # at most one write a minute per key
        try:
            db.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", [stamp, key_id])
            db.conn.commit()
        except sqlite3.OperationalError:
            pass  # a busy database must not fail the request over a last-used stamp
    return Principal(user_id=user_id, email=email, role=role, key_id=key_id)


# --- password reset ----------------------------------------------------------------------------------------------


def create_reset_token(db: sqlite_utils.Database, user_id: int, minutes: int = 60) -> str:
    """A single-use reset token valid for `minutes`; only its hash is stored."""
    get_user(db, user_id)
    token = secrets.token_urlsafe(32)
    t = now()
    with write_txn(db):
        db["reset_tokens"].insert({"token_hash": _sha256(token), "user_id": user_id, "created_at": iso(t),
                                   "expires_at": iso(t + minutes * 60),
                                   "used_at": None})
    return token


def use_reset_token(db: sqlite_utils.Database, token: str, new_password: str, min_length: int = 10) -> int:
    """Set a new password with a reset token; the token works once and only before it expires."""
    check_password_strength(new_password, min_length)
    with write_txn(db):
        rows = list(db["reset_tokens"].rows_where("token_hash = ?", [_sha256(token or "")]))
        if not rows or rows[0].get("used_at"):
            raise InvalidToken("This reset link is not valid or was already used. Ask for a new one.")
        row = rows[0]
        if parse_iso(row["expires_at"]) < now():
            raise InvalidToken("This reset link has expired. Ask for a new one.")
        db.execute("UPDATE reset_tokens SET used_at = ? WHERE user_id = ? AND used_at IS NULL",
                   [now_iso(), row["user_id"]])
        db["users"].update(row["user_id"], {"password_hash": hash_password(new_password)})
    return int(row["user_id"])
