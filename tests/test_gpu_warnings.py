"""Never silently on the CPU: on a (fake) GPU box with the CPU-only onnxruntime installed, /readyz stays ready with a
warning, the System page and `forecourt models list` name each model's provider and the warning; `device = "cuda"`
on this CPU box refuses to start. The GPU is faked by pointing the driver file at one the test writes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from models import device, foreground
from models.device import CUDA_PROVIDER
from models.registry import clear_segmenters
from tests.helpers import MODELS_DIR, REPO, sign_in, start_live_server, stop_live_server


@pytest.fixture
def fake_gpu_box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A fake NVIDIA driver file; this box's onnxruntime is the CPU-only build."""
    import onnxruntime as ort

    if CUDA_PROVIDER in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    driver = tmp_path / "nvidia-version"
    driver.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06  (fake)\n")
    monkeypatch.setattr(device, "NVIDIA_DRIVER", driver)
    clear_segmenters()  # a segmenter loaded earlier in this process judged the box without the fake GPU
    monkeypatch.setattr(foreground, "_instances", {})  # so did a classifier
    yield
    clear_segmenters()


@pytest.fixture
def no_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "NVIDIA_DRIVER", tmp_path / "absent")
    monkeypatch.setattr(device, "NVIDIA_DEVICE", tmp_path / "absent-dev")
    clear_segmenters()


def test_readyz_is_ready_with_a_warning_on_a_gpu_box_running_on_the_cpu(fake_gpu_box, client) -> None:
    resp = client.get("/readyz")
    assert resp.status_code == 200
    body = resp.get_json()
    check = next(c for c in body["checks"] if c["name"] == "device")
    assert check["ok"] and not check["required"]
    assert "isnet-general on CPUExecutionProvider" in check["detail"]
    assert "CPU-only onnxruntime" in check["warning"] and "make run GPU=1" in check["warning"]
    assert any(w.startswith("device: ") and "NVIDIA GPU" in w for w in body["warnings"])


def test_readyz_has_no_warning_on_a_box_without_a_gpu(no_gpu, client) -> None:
    body = client.get("/readyz").get_json()
    check = next(c for c in body["checks"] if c["name"] == "device")
    assert check["ok"] and "warning" not in check and "warnings" not in body
    assert "isnet-general on CPUExecutionProvider" in check["detail"]


def test_the_system_page_shows_the_provider_and_the_warning(fake_gpu_box, client, admin) -> None:
    sign_in(client, admin)
    html = client.get("/system").get_data(as_text=True)
    assert "<th scope=\"col\">Runs on</th>" in html
    row = html[html.index('data-model="isnet-general"'):]
    row = row[:row.index("</tr>")]
    assert "CPUExecutionProvider" in row and "CPU-only onnxruntime" in row
    assert 'data-warning="Devices (GPU or CPU)"' in html


def _models_list(tmp_path: Path):  # type: ignore[no-untyped-def]  # noqa: ANN202
    """`forecourt models list` on the test models folder; it exits 0 (warnings are not errors)."""
    from models.cli import models_group

    obj = SimpleNamespace(models_dir=MODELS_DIR, cache_dir=tmp_path / "cache")
    result = CliRunner().invoke(models_group, ["list"], obj=obj)
    assert result.exit_code == 0, result.output
    return result


def test_models_list_shows_the_provider_and_warns(fake_gpu_box, tmp_path: Path) -> None:
    result = _models_list(tmp_path)
    line = next(x for x in result.output.splitlines() if x.startswith("isnet-general"))
    assert "runs on CPUExecutionProvider" in line
    assert "warning: isnet-general: this box has an NVIDIA GPU" in result.output


@pytest.fixture
def torch_without_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device, "torch_cuda_available", lambda: False)


LITE0_WARNING = "torch cannot use it (a CPU build of torch, or a driver too old for its CUDA), so EfficientNet-Lite0"


def test_the_classifier_on_the_cpu_of_a_gpu_box_is_named_in_all_three(fake_gpu_box, torch_without_cuda, client,
                                                                      admin, tmp_path: Path) -> None:
    """/readyz, the System page and `forecourt models list` (the worker's log: test_announce_logs_the_classifier)."""
    check = next(c for c in client.get("/readyz").get_json()["checks"] if c["name"] == "device")
    assert "efficientnet-lite0 on cpu" in check["detail"] and LITE0_WARNING in check["warning"]
    sign_in(client, admin)
    html = client.get("/system").get_data(as_text=True)
    row = html[html.index('data-model="efficientnet-lite0"'):]
    row = row[:row.index("</tr>")]
    assert ">cpu" in row and LITE0_WARNING in row

    result = _models_list(tmp_path)
    line = next(x for x in result.output.splitlines() if x.startswith("efficientnet-lite0"))
    assert "runs on cpu " in line
    assert f"warning: efficientnet-lite0: this box has an NVIDIA GPU, but {LITE0_WARNING}" in result.output


def test_announce_logs_the_classifier_and_refuses_cuda(fake_gpu_box, torch_without_cuda, app, caplog,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from models.errors import DeviceUnavailable
    from models.placement import Placement
    from server import placement

    with app.app_context(), caplog.at_level("INFO", logger="server.placement"):
        placement.announce()
    assert "model efficientnet-lite0 runs on cpu" in caplog.text and LITE0_WARNING in caplog.text
    monkeypatch.setattr(placement, "segmenter_placement", lambda seg: Placement("isnet-general", "CUDA"))
    monkeypatch.setattr(placement, "sam_placement", lambda *a: Placement("sam-vit-b", "not installed"))
    with app.app_context():
        monkeypatch.setattr(placement.get_settings().models, "device", "cuda")
        with pytest.raises(DeviceUnavailable, match="EfficientNet-Lite0.*torch sees no CUDA"):
            placement.announce()


@pytest.mark.slow
def test_device_cuda_refuses_to_start_on_this_box(tmp_path: Path) -> None:
    import onnxruntime as ort

    if CUDA_PROVIDER in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(RuntimeError, match="cannot be honoured") as err:
        start_live_server(data, workers=1, threads=1, extra_env={"FORECOURT_MODELS__DEVICE": "cuda"}, timeout=60)
    assert "no CUDAExecutionProvider" in str(err.value)


def test_the_worker_refuses_device_cuda_too(tmp_path: Path) -> None:
    """gunicorn's worker imports server.wsgi; with device=cuda unmet that import fails, so the worker cannot boot."""
    code = "import server.wsgi"
    env = {"FORECOURT_STORAGE__DATA_DIR": str(tmp_path / "data"), "FORECOURT_MODELS__DIR": str(MODELS_DIR),
           "FORECOURT_MODELS__DEVICE": "cuda", "FORECOURT_LICENSING__STATE_DIR": str(tmp_path / "state"),
           "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "DeviceUnavailable" in out.stderr and "no CUDAExecutionProvider" in out.stderr


@pytest.mark.slow
def test_a_worker_logs_where_each_model_runs_at_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    server = start_live_server(data, workers=1, threads=2)
    try:
        log = server.log()
        assert "model isnet-general runs on CPUExecutionProvider" in log
    finally:
        stop_live_server(server)


def test_gunicorns_master_loads_neither_onnxruntime_nor_torch(tmp_path: Path) -> None:
    """The master reads gunicorn_conf (settings only) and forks; a CUDA context made there would break every worker."""
    code = ("import sys, server.gunicorn_conf, server.cli; "
            "print('torch' in sys.modules, 'onnxruntime' in sys.modules)")
    env = {"FORECOURT_STORAGE__DATA_DIR": str(tmp_path / "data"), "FORECOURT_MODELS__DEVICE": "cuda",
           "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


@pytest.mark.parametrize(("extra", "expected"), [({"FORECOURT_GPU_IDS": "0,1,2"}, "3"),
                                                 ({"FORECOURT_GPU_IDS": "0,1,2", "FORECOURT_SERVER__WORKERS": "5"}, "5"),
                                                 ({}, "2")])
def test_one_worker_per_listed_gpu_unless_workers_is_set(tmp_path: Path, extra: dict, expected: str) -> None:
    code = "import server.gunicorn_conf as c; print(c.configured_workers)"
    env = {"FORECOURT_STORAGE__DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin", **extra}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == expected
