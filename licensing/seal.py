"""The box's sealing secret (kept in [licensing] state_dir, outside the data folder) and what it seals there.

An HMAC with this secret keys the ledger's hash chain, the clock mark and the trial record, so a row or value
rewritten without the secret is detected. The per-box record outside the data folder keeps the clock mark, the
ledger's keyed-from point and its highest entry, so a database edited, truncated or put back from an older copy
disagrees with it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import json
import os
import secrets
import uuid
from pathlib import Path
from typing import Any

from licensing import keys

SECRET = "seal.key"


def secret(state_dir: Path) -> bytes:
    """The machine's sealing secret (made on first use, write-once)."""
    path = state_dir / SECRET
    try:
        st = path.stat()
    except FileNotFoundError:
        keys._write_once(path, secrets.token_hex(32).encode())
        st = path.stat()
    return _load(path, st.st_ino, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _load(path: Path, inode: int, mtime_ns: int) -> bytes:
    return path.read_bytes().strip()


def mac(key: bytes, *parts: object) -> str:
    """HMAC-SHA256 over the parts (joined unambiguously), as hex."""
    body = json.dumps([str(p) for p in parts], separators=(",", ":")).encode()
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def valid(key: bytes, tag: object, *parts: object) -> bool:
    """Whether tag is the MAC of the parts."""
    return isinstance(tag, str) and hmac.compare_digest(tag, mac(key, *parts))


def box_id(licensing_dir: Path) -> str:
    """The key id of this data folder's install key: names its records outside the data folder."""
    return keys.key_id(keys.public_key_b64(keys.install_key(licensing_dir).public_key()))


def write_atomic(path: Path, text: str) -> None:
    """Replace a file's text in one step (a reader sees the old or the new text, never half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class OutsideRecord:
    """state_dir/box-<install key id>.json: {clock_hwm, keyed_from, ledger_seq, mac}; sealed with the secret."""

    FIELDS = ("clock_hwm", "keyed_from", "ledger_seq")

    def __init__(self, state_dir: Path, licensing_dir: Path) -> None:
        self.key = secret(state_dir)
        self.box = box_id(licensing_dir)
        self.path = state_dir / f"box-{self.box}.json"
        self._cache: tuple[tuple[int, int, int], dict[str, Any] | None, str] | None = None

    def read(self) -> tuple[dict[str, Any] | None, str]:
        """The record (None when there is none) and a problem text when it does not verify."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None, ""
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._cache is not None and self._cache[0] == stamp:
            return self._cache[1], self._cache[2]
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None, ""
        except (OSError, ValueError):
            return None, f"{self.path} is damaged"
        if not isinstance(data, dict) or not valid(self.key, data.get("mac"), "box", self.box,
                                                   *(data.get(f) for f in self.FIELDS)):
            data, problem = None, f"{self.path} was altered"
        else:
            problem = ""
        self._cache = (stamp, data, problem)
        return data, problem

    def write(self, *, force: bool = False, **values: Any) -> None:
        """Set some fields (others kept) and seal the record again; an altered record is kept as evidence
        unless force (a new license starts afresh)."""
        data, problem = self.read()
        if problem and not force:
            return
        out: dict[str, Any] = {f: (data or {}).get(f) for f in self.FIELDS}
        out.update(values)
        out["mac"] = mac(self.key, "box", self.box, *(out[f] for f in self.FIELDS))
        with contextlib.suppress(OSError):
            write_atomic(self.path, json.dumps(out, sort_keys=True))


class Seal:
    """The secret and this data folder's record outside it, for one box's options."""

    def __init__(self, state_dir: Path, licensing_dir: Path) -> None:
        self.key = secret(state_dir)
        self.outside = OutsideRecord(state_dir, licensing_dir)

    def mac(self, *parts: object) -> str:
        return mac(self.key, *parts)

    def valid(self, tag: object, *parts: object) -> bool:
        return valid(self.key, tag, *parts)


PACKS = "packs.txt"


def installed_packs(state_dir: Path) -> set[str]:
    """Credit packs installed on this machine, in any data folder (kept outside the data folder)."""
    with contextlib.suppress(FileNotFoundError):
        return {line.strip() for line in (state_dir / PACKS).read_text().splitlines() if line.strip()}
    return set()


def note_packs(state_dir: Path, pack_ids: list[str]) -> None:
    """Add installed pack ids to the machine's list (one append; lines are short, so appends do not interleave)."""
    new = [p for p in pack_ids if p not in installed_packs(state_dir)]
    if not new:
        return
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / PACKS, "a") as f:
        f.write("".join(f"{p}\n" for p in new))
