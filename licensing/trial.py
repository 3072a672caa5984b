"""The trial's start, kept three times (database, data folder, a folder outside it) and signed by the install key."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import sqlite_utils
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from licensing import files
from licensing.clock import iso, parse_iso
from licensing.db import kv_get, kv_set
from licensing.errors import InvalidLicenseFile

RECORD = "trial.rec"
_verified: dict[str, float] = {}


def _paths(licensing_dir: Path, state_dir: Path) -> list[Path]:
    # The outside copy is named after the data folder's path, so boxes (and test runs) with separate data
    # folders keep separate trials, while deleting and recreating a data folder finds its old record.
    tag = hashlib.sha256(str(licensing_dir.resolve()).encode()).hexdigest()[:16]
    return [licensing_dir / RECORD, state_dir / f"trial-{tag}.rec"]


def _read(text: str, key: Ed25519PrivateKey) -> float:
    cached = _verified.get(text)
    if cached is None:
        payload = files.read_self_signed(text, "trial_record", key.public_key())
        cached = _verified[text] = parse_iso(payload["started_at"])
    return cached


def trial_start(db: sqlite_utils.Database, licensing_dir: Path, state_dir: Path, key: Ed25519PrivateKey,
                fingerprint: str, now: float) -> tuple[float, str]:
    """When the trial started (recording it now on a truly first start), and a problem text if a record is bad.

    Call inside a write transaction. A record that fails to verify (edited, or signed by an earlier install whose
    data folder was deleted) ends the trial: it cannot be restarted by deleting or editing records.
    """
    texts: list[tuple[str, str]] = []
    db_text = kv_get(db, "trial_record")
    if db_text:
        texts.append(("database", db_text))
    for path in _paths(licensing_dir, state_dir):
        with contextlib.suppress(OSError):
            texts.append((str(path), path.read_text()))
    starts, problems = [], []
    for where, text in texts:
        try:
            starts.append(_read(text, key))
        except (InvalidLicenseFile, KeyError, ValueError):
            problems.append(where)
    if problems:
        return 0.0, ("the trial record in " + ", ".join(problems) + " does not verify (edited, or left by an "
                     "earlier installation); the trial cannot restart: install a license")
    if starts:
        start = min(starts)
        text = next(t for _, t in texts if _read(t, key) == start)
    else:
        start = now
        text = files.self_signed("trial_record", {"started_at": iso(now), "box": fingerprint}, key)
    if db_text != text:
        kv_set(db, "trial_record", text)
    for path in _paths(licensing_dir, state_dir):  # heal a missing copy
        with contextlib.suppress(OSError):
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    return start, ""
