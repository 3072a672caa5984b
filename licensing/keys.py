"""Ed25519 keys: the vendor's (built in plus configured), the box's own install key, and the box fingerprint."""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import os
import uuid
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

# The vendor's public keys. The private halves live with the vendor, never in this repository.
BUILTIN_PUBLIC_KEYS: tuple[str, ...] = (
    "dW6ywJDqkQQSHtB5O1m3LnZCmaZADf5LB8wRklP65wE=",
)


def public_key_b64(key: Ed25519PublicKey) -> str:
    """A public key as base64 of its 32 raw bytes."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def load_public_key(b64: str) -> Ed25519PublicKey:
    """A public key from base64 of its raw bytes."""
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(b64.strip(), validate=True))


def key_id(b64: str) -> str:
    """A short, stable name for a public key: the first 16 hex digits of SHA-256 of its raw bytes."""
    return hashlib.sha256(base64.b64decode(b64.strip())).hexdigest()[:16]


def generate_private_key() -> Ed25519PrivateKey:
    """A new Ed25519 private key."""
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    """A private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    """A private key from PEM."""
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    return key


def trusted_keys(extra: tuple[str, ...] | list[str] = ()) -> dict[str, Ed25519PublicKey]:
    """The vendor keys this box accepts, by key id."""
    return dict(_trusted(tuple(extra)))


@functools.lru_cache(maxsize=16)
def _trusted(extra: tuple[str, ...]) -> dict[str, Ed25519PublicKey]:
    out: dict[str, Ed25519PublicKey] = {}
    for b64 in (*BUILTIN_PUBLIC_KEYS, *extra):
        with contextlib.suppress(ValueError):
            out[key_id(b64)] = load_public_key(b64)
    return out


def _write_once(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Create a file atomically if it does not exist yet (the first process wins)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()


def install_key(licensing_dir: Path) -> Ed25519PrivateKey:
    """The box's own install key (made on first use); it signs usage reports and the trial record."""
    path = licensing_dir / "install_key.pem"
    try:
        st = path.stat()
    except FileNotFoundError:
        _write_once(path, private_key_pem(generate_private_key()))
        st = path.stat()
    return _load_install_key(path, st.st_ino, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _load_install_key(path: Path, inode: int, mtime_ns: int) -> Ed25519PrivateKey:
    return load_private_key(path.read_bytes())


def _machine_id(state_dir: Path) -> str:
    for candidate in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        with contextlib.suppress(OSError):
            value = Path(candidate).read_text().strip()
            if value:
                return value
    path = state_dir / "box_id"  # containers without a machine id: a random id kept outside the data folder
    if not path.exists():
        _write_once(path, uuid.uuid4().hex.encode(), 0o644)
    return path.read_text().strip()


@functools.lru_cache(maxsize=8)
def fingerprint(state_dir: Path) -> str:
    """The box's fingerprint, e.g. FC-7K2Q-M4XA-...: a hash of the machine id, stable across reinstalls."""
    digest = hashlib.sha256(b"forecourt-box-v1:" + _machine_id(state_dir).encode()).digest()
    text = base64.b32encode(digest).decode()[:20]
    return "FC-" + "-".join(text[i : i + 4] for i in range(0, 20, 4))
