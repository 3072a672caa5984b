"""Device choice and its warnings, on this CPU box, with fake provider lists and fake GPU facts: a GPU box that
would run on the CPU is always told so, and `device="cuda"` refuses instead of falling back."""

from __future__ import annotations

from pathlib import Path

import pytest

from models import device
from models.device import CPU_PROVIDER, CUDA_PROVIDER, onnx_plan, session_fallback, torch_plan
from models.errors import DeviceUnavailable

FAKE_GPU_BUILD = ["TensorrtExecutionProvider", CUDA_PROVIDER, CPU_PROVIDER]  # what onnxruntime-gpu lists
FAKE_CPU_BUILD = ["AzureExecutionProvider", CPU_PROVIDER]  # what the CPU-only onnxruntime lists


def test_auto_takes_cuda_when_the_provider_is_there() -> None:
    plan = onnx_plan("auto", available=FAKE_GPU_BUILD, gpu_on_box=True)
    assert plan.device == "cuda" and plan.providers == (CUDA_PROVIDER, CPU_PROVIDER) and plan.warning is None
    assert onnx_plan("cuda", available=FAKE_GPU_BUILD).providers[0] == CUDA_PROVIDER


def test_cpu_is_the_cpu_even_with_a_gpu_and_says_nothing() -> None:
    plan = onnx_plan("cpu", available=FAKE_GPU_BUILD, gpu_on_box=True)
    assert plan.providers == (CPU_PROVIDER,) and plan.warning is None


def test_a_gpu_box_with_the_cpu_only_onnxruntime_warns() -> None:
    plan = onnx_plan("auto", available=FAKE_CPU_BUILD, gpu_on_box=True)
    assert plan.device == "cpu" and plan.providers == (CPU_PROVIDER,)
    assert plan.warning and "NVIDIA GPU" in plan.warning and "CPU-only onnxruntime" in plan.warning
    assert "make run GPU=1" in plan.warning


def test_a_box_without_a_gpu_runs_on_the_cpu_quietly() -> None:
    assert onnx_plan("auto", available=FAKE_CPU_BUILD, gpu_on_box=False).warning is None


def test_device_cuda_refuses_without_the_provider() -> None:
    with pytest.raises(DeviceUnavailable, match="no CUDAExecutionProvider") as err:
        onnx_plan("cuda", available=FAKE_CPU_BUILD, gpu_on_box=True)
    assert err.value.code == "device_unavailable"
    with pytest.raises(DeviceUnavailable, match="must be one of"):
        onnx_plan("tpu", available=FAKE_GPU_BUILD)


def test_a_cuda_provider_that_fails_to_start_is_a_warning_under_auto_and_an_error_under_cuda() -> None:
    planned = onnx_plan("auto", available=FAKE_GPU_BUILD, gpu_on_box=True)
    real = session_fallback(planned, [CPU_PROVIDER], "isnet-general")  # what onnxruntime does without cuDNN
    assert real.device == "cpu" and real.warning and "could not start it" in real.warning
    assert session_fallback(planned, [CUDA_PROVIDER, CPU_PROVIDER], "isnet-general") is planned
    with pytest.raises(DeviceUnavailable, match="could not start it"):
        session_fallback(onnx_plan("cuda", available=FAKE_GPU_BUILD), [CPU_PROVIDER], "isnet-general")


def test_sam_on_torch_warns_and_refuses_the_same_way() -> None:
    assert torch_plan("auto", cuda_available=True).device == "cuda"
    assert torch_plan("cpu", cuda_available=True).device == "cpu"
    quiet = torch_plan("auto", cuda_available=False, gpu_on_box=False)
    assert quiet.device == "cpu" and quiet.warning is None
    warned = torch_plan("auto", cuda_available=False, gpu_on_box=True)
    assert warned.device == "cpu" and "Segment Anything runs on the CPU" in (warned.warning or "")
    with pytest.raises(DeviceUnavailable, match="torch sees no CUDA device"):
        torch_plan("cuda", cuda_available=False)
    lite0 = torch_plan("auto", cuda_available=False, gpu_on_box=True, what="EfficientNet-Lite0")
    assert "so EfficientNet-Lite0 runs on the CPU" in (lite0.warning or "")  # each torch model names itself


def test_the_gpu_is_recognised_by_its_driver_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_driver = tmp_path / "version"
    monkeypatch.setattr(device, "NVIDIA_DRIVER", fake_driver)
    monkeypatch.setattr(device, "NVIDIA_DEVICE", tmp_path / "nvidiactl")
    assert device.nvidia_driver() is None
    fake_driver.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06\nGCC version: 12\n")
    assert "580.65.06" in (device.nvidia_driver() or "")
    assert onnx_plan("auto", available=FAKE_CPU_BUILD).warning is not None  # read from the (fake) driver file


def test_this_cpu_box_has_no_cuda_provider_that_works() -> None:
    import onnxruntime as ort

    if CUDA_PROVIDER in ort.get_available_providers() and device.nvidia_driver():
        pytest.skip("a GPU box: scripts/gpu_check.sh covers it")
    assert device.cuda_provider_error() is not None
