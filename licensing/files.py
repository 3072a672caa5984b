"""Signed files as armoured text: a JSON envelope (payload, key id, signature) in base64 between BEGIN/END lines."""

from __future__ import annotations

import base64
import binascii
import json
import re
import textwrap
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from licensing import keys
from licensing.clock import parse_iso
from licensing.errors import BadSignature, InvalidLicenseFile, UnknownKey
from licensing.plans import Plan

LABELS = {
    "license": "FORECOURT LICENSE",
    "credit_pack": "FORECOURT CREDIT PACK",
    "upgrade": "FORECOURT UPGRADE AUTHORISATION",
    "usage_report": "FORECOURT USAGE REPORT",
    "trial_record": "FORECOURT TRIAL RECORD",
}
ARMOR_RE = re.compile(r"-----BEGIN ([A-Z ]+)-----\s*(.*?)\s*-----END \1-----", re.S)


class Overage(BaseModel):
    """What happens past the allowance: block (default) or allow up to factor x the allowance."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: Literal["block", "allow"] = "block"
    factor: float = Field(default=1.0, ge=1.0, le=2.0)


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = 1
    customer: str = Field(min_length=1)
    box: str | None = Field(default=None, description="The box fingerprint this file is bound to; None: unbound.")
    issued_at: str

    @field_validator("issued_at", "valid_from", "valid_until", check_fields=False)
    @classmethod
    def _is_time(cls, v: str) -> str:
        parse_iso(v)
        return v


class LicensePayload(_Payload):
    """A license: who, which box, when, which plan, and its policies."""

    type: Literal["license"] = "license"
    license_id: str = Field(min_length=1)
    valid_from: str
    valid_until: str
    plan: Plan
    upgrade_path: tuple[Plan, ...] = ()
    auto_upgrade: bool = False
    overage: Overage = Overage()
    install_key: str | None = Field(default=None, description="The box's install public key from its license request.")


class CreditPackPayload(_Payload):
    """A pay-as-you-go credit pack, valid two years unless it says otherwise."""

    type: Literal["credit_pack"] = "credit_pack"
    pack_id: str = Field(min_length=1)
    credits: float = Field(gt=0)
    valid_until: str


class UpgradePayload(_Payload):
    """An authorisation to move the license in force to another plan."""

    type: Literal["upgrade"] = "upgrade"
    upgrade_id: str = Field(min_length=1)
    license_id: str = Field(min_length=1)
    plan: Plan


PAYLOADS: dict[str, type[_Payload]] = {
    "license": LicensePayload, "credit_pack": CreditPackPayload, "upgrade": UpgradePayload,
}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def canonical(payload: dict[str, Any]) -> bytes:
    """The exact bytes that get signed."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(kind: str, payload: dict[str, Any], private_key: Ed25519PrivateKey) -> str:
    """Sign a payload and armour it as text that survives e-mail and copy-paste."""
    body = canonical({**payload, "type": kind})
    pub = keys.public_key_b64(private_key.public_key())
    envelope = {"payload": _b64(body), "key_id": keys.key_id(pub), "public_key": pub,
                "signature": _b64(private_key.sign(body))}
    text = "\n".join(textwrap.wrap(_b64(canonical(envelope)), 64))
    label = LABELS[kind]
    return f"-----BEGIN {label}-----\n{text}\n-----END {label}-----\n"


def unarmor(text: str) -> tuple[str, dict[str, Any]]:
    """The kind and envelope of an armoured file (no signature check)."""
    match = ARMOR_RE.search(text or "")
    if not match:
        raise InvalidLicenseFile("The text has no -----BEGIN FORECOURT ...----- block; paste the whole file.")
    kinds = {v: k for k, v in LABELS.items()}
    if match.group(1) not in kinds:
        raise InvalidLicenseFile(f"Unknown block type {match.group(1)!r}.")
    try:
        envelope = json.loads(base64.b64decode("".join(match.group(2).split()), validate=True))
        for field in ("payload", "key_id", "signature"):
            if not isinstance(envelope.get(field), str):
                raise ValueError(field)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidLicenseFile("The file is damaged (its base64 or JSON does not decode).") from exc
    return kinds[match.group(1)], envelope


def verify_envelope(kind: str, envelope: dict[str, Any], trusted: dict[str, Ed25519PublicKey]) -> dict[str, Any]:
    """Check the signature against a trusted key and return the payload dict."""
    key = trusted.get(envelope["key_id"])
    if key is None:
        raise UnknownKey(f"The file is signed with key {envelope['key_id']}, which this box does not trust. "
                         "Add the vendor's new public key to [licensing] public_keys, or ask for a new file.")
    body = base64.b64decode(envelope["payload"])
    try:
        key.verify(base64.b64decode(envelope["signature"]), body)
    except (InvalidSignature, binascii.Error, ValueError) as exc:
        raise BadSignature("The signature does not match the content: the file was altered or damaged.") from exc
    payload = json.loads(body)
    if payload.get("type") != kind:
        raise BadSignature("The file's header does not match its signed content.")
    return payload


def read_signed(text: str, trusted: dict[str, Ed25519PublicKey]) -> _Payload:
    """Parse, verify and validate a license, credit pack or upgrade authorisation."""
    kind, envelope = unarmor(text)
    if kind not in PAYLOADS:
        raise InvalidLicenseFile(f"A {LABELS[kind].lower()} cannot be installed.")
    payload = verify_envelope(kind, envelope, trusted)
    try:
        return PAYLOADS[kind].model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidLicenseFile(f"The file's {'.'.join(map(str, first['loc']))} is not valid: {first['msg']}.") from exc


def envelope_key_id(text: str) -> str:
    """The key id an armoured file names."""
    return str(unarmor(text)[1]["key_id"])


def self_signed(kind: str, payload: dict[str, Any], private_key: Ed25519PrivateKey) -> str:
    """Armour a payload signed by the box's own key (usage reports, trial records)."""
    return sign(kind, payload, private_key)


def read_self_signed(text: str, kind: str, public_key: Ed25519PublicKey | None = None) -> dict[str, Any]:
    """Verify a box-signed file against the given key, or the public key it embeds when none is given."""
    found, envelope = unarmor(text)
    if found != kind:
        raise InvalidLicenseFile(f"Expected a {LABELS[kind].lower()}, got a {LABELS[found].lower()}.")
    key = public_key or keys.load_public_key(str(envelope.get("public_key", "")))
    return verify_envelope(kind, envelope, {envelope["key_id"]: key})

