"""The trial's start, kept three times (database, data folder, a folder outside it) and signed by the install key.

One trial per machine: the copy outside the data folder is named after the box fingerprint (not the data folder's
path) and sealed with the machine's secret (licensing.seal), so a second data folder on the same machine, or a
wiped and recreated one, finds the trial that already runs instead of starting another.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import sqlite_utils
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from licensing import files, keys
from licensing.clock import iso, parse_iso
from licensing.db import kv_get, kv_set
from licensing.errors import InvalidLicenseFile
from licensing.seal import Seal

RECORD = "trial.rec"
_verified: dict[str, float] = {}


def _paths(licensing_dir: Path, state_dir: Path) -> list[Path]:
    """The data folder's copy and the machine's copy outside it."""
    return [licensing_dir / RECORD, state_dir / f"trial-{keys.fingerprint(state_dir)}.rec"]


def _legacy_path(licensing_dir: Path, state_dir: Path) -> Path:
    """Where the outside copy was kept before one trial per machine: named after the data folder's path."""
    tag = hashlib.sha256(str(licensing_dir.resolve()).encode()).hexdigest()[:16]
    return state_dir / f"trial-{tag}.rec"


def _read(text: str, key: Ed25519PrivateKey) -> float:
    """The start in a record signed by this data folder's install key."""
    cached = _verified.get(text)
    if cached is None:
        payload = files.read_self_signed(text, "trial_record", key.public_key())
        cached = _verified[text] = parse_iso(payload["started_at"])
    return cached


def _read_machine(text: str, seal: Seal, fingerprint: str) -> float:
    """The start in the machine's copy: written by any data folder on this machine, sealed with its secret."""
    payload = files.read_self_signed(text, "trial_record")
    if payload.get("box") != fingerprint or not seal.valid(payload.get("mac"), "trial", fingerprint,
                                                           payload.get("started_at")):
        raise InvalidLicenseFile("not sealed by this machine")
    return parse_iso(payload["started_at"])


def record_text(start: float, key: Ed25519PrivateKey, seal: Seal, fingerprint: str) -> str:
    """A trial record for a start, signed by the install key and sealed for the machine."""
    started = iso(start) or ""
    return files.self_signed("trial_record", {"started_at": started, "box": fingerprint,
                                              "mac": seal.mac("trial", fingerprint, started)}, key)


def trial_start(db: sqlite_utils.Database, licensing_dir: Path, state_dir: Path, key: Ed25519PrivateKey,
                fingerprint: str, now: float, seal: Seal) -> tuple[float, str]:
    """When the trial started (recording it now on a truly first start), and a problem text if a record is bad.

    Call inside a write transaction. A record that fails to verify (edited, or forged) ends the trial: it cannot be
    restarted by deleting or editing records, nor by moving or copying the data folder.
    """
    data_copy, machine_copy = _paths(licensing_dir, state_dir)
    starts, problems = [], []

    def take(where: str, text: str, read: object) -> None:
        try:
            starts.append(read(text))  # type: ignore[operator]
        except (InvalidLicenseFile, KeyError, ValueError, TypeError):
            problems.append(where)

    db_text = kv_get(db, "trial_record")
    if db_text:
        take("database", db_text, lambda t: _read(t, key))
    for path, read in ((data_copy, lambda t: _read(t, key)),
                       (_legacy_path(licensing_dir, state_dir), lambda t: _read(t, key)),
                       (machine_copy, lambda t: _read_machine(t, seal, fingerprint))):
        with contextlib.suppress(OSError):
            take(str(path), path.read_text(), read)
    if problems:
        return 0.0, ("the trial record in " + ", ".join(problems) + " does not verify (edited, or left by an "
                     "earlier installation); the trial cannot restart: install a license")
    start = min(starts) if starts else now
    text = record_text(start, key, seal, fingerprint)
    if db_text != text:
        kv_set(db, "trial_record", text)
    for path in (data_copy, machine_copy):  # heal a missing copy; bring an older one to this format
        with contextlib.suppress(OSError):
            if not path.exists() or (path == data_copy and path.read_text() != text):
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    return start, ""
