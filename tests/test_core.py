"""core/: the plumbing every layer shares (errors, clock, write transactions, process liveness, base64, cursors)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import time_machine

from core import process
from core.clock import iso, now_iso, parse_iso
from core.encoding import decode_b64, decode_cursor, encode_cursor
from core.errors import DomainError, InvalidBase64, InvalidCursor
from core.sqlite import write_txn
from server.store import open_db

REPO = Path(__file__).resolve().parents[1]


def _imports(package: str) -> set[str]:
    """Top-level names every module of a package imports."""
    names: set[str] = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_layers_import_only_downwards() -> None:
    assert not _imports("core") & {"server", "models", "licensing", "flask", "apiflask", "werkzeug"}
    assert not _imports("licensing") & {"server", "models", "flask", "apiflask", "werkzeug"}
    assert not _imports("models") & {"server", "licensing", "flask", "apiflask", "werkzeug"}


def test_every_domain_error_has_the_one_base() -> None:
    from licensing.errors import InsufficientCredits, LicensingError
    from models.errors import ModelError, ModelMissing
    from server.errors import ApiError, NotFound

    for cls in (ApiError, NotFound, LicensingError, InsufficientCredits, ModelError, ModelMissing):
        assert issubclass(cls, DomainError)
    err = ModelMissing("isnet-general is not installed.")
    assert (err.code, err.title, err.status, err.detail, err.headers) == (
        "model_unavailable", "Model not installed", 503, "isnet-general is not installed.", {})
    assert InsufficientCredits().detail == "Insufficient credits"  # no detail: the title


def test_one_timestamp_form() -> None:
    with time_machine.travel("2026-03-04T05:06:07.890+00:00", tick=False):
        assert now_iso() == "2026-03-04T05:06:07Z"
    assert iso(None) is None
    assert parse_iso("2026-03-04T05:06:07Z") == parse_iso("2026-03-04T05:06:07+00:00") == parse_iso(
        "2026-03-04T05:06:07")
    assert iso(parse_iso("2026-03-04T07:06:07+02:00")) == "2026-03-04T05:06:07Z"


def test_nested_write_transaction_is_a_savepoint(tmp_path: Path) -> None:
    db = open_db(tmp_path / "t.db")
    db["t"].create({"n": int})
    with write_txn(db):
        db["t"].insert({"n": 1})
        with pytest.raises(RuntimeError), write_txn(db):
            db["t"].insert({"n": 2})
            raise RuntimeError("inner fails")
        db["t"].insert({"n": 3})
    assert [r["n"] for r in db["t"].rows] == [1, 3]  # the inner block's write alone was undone
    with pytest.raises(RuntimeError), write_txn(db):
        db["t"].insert({"n": 4})
        raise RuntimeError("outer fails")
    assert [r["n"] for r in db["t"].rows] == [1, 3]
    assert not db.conn.in_transaction


def test_owner_alive_tells_a_reused_pid_from_its_owner() -> None:
    me = process.owner_id()
    boot, pid, started = me.split(":")
    assert int(pid) == os.getpid() and process.owner_alive(me)
    assert not process.owner_alive(f"{boot}:{pid}:{int(started) + 1}")  # same pid, another process's start time
    assert not process.owner_alive(f"another-boot:{pid}:{started}")  # made before this boot
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert not process.owner_alive(gone) and process.owner_alive(str(os.getpid()))  # bare pids (older rows)
    assert not process.pid_alive(int(gone))
    assert process.owner_alive(None) and process.owner_alive("not:an:owner:id")  # unreadable: left alone


@pytest.mark.parametrize("text", ["aGVsbG8=", "aGVsbG8", " aGVs\nbG8= ", "data:image/png;base64,aGVsbG8="])
def test_decode_b64_accepts_the_usual_forms(text: str) -> None:
    assert decode_b64(text, "image_file_b64") == b"hello"


def test_decode_b64_urlsafe_and_refusals() -> None:
    assert decode_b64("-_8", "x") == b"\xfb\xff"
    with pytest.raises(InvalidBase64) as info:
        decode_b64("not base64!", "image_file_b64")
    assert (info.value.code, info.value.status, info.value.detail) == (
        "invalid_base64", 400, "image_file_b64 is not valid base64.")


def test_cursors_round_trip_and_refuse_anything_else() -> None:
    assert decode_cursor(encode_cursor(42), int) == 42
    assert decode_cursor(encode_cursor("car-7"), str) == "car-7"
    for token, kind in [("%%%", int), (encode_cursor("7"), int), (encode_cursor(-1), int), (encode_cursor(2**63), int),
                        (encode_cursor(3), str), (encode_cursor(True), int), ("", str)]:
        with pytest.raises(InvalidCursor):
            decode_cursor(token, kind)
