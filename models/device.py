"""Device choice for inference: `auto`, `cpu` or `cuda`, decided here and only in the process that runs a model.

Nothing here touches CUDA at import time, so gunicorn's master (which imports the config) never creates a CUDA
context. A GPU box is recognised by its NVIDIA driver (`/proc/driver/nvidia/version`), independently of what
onnxruntime or torch make of it, so a CPU-only onnxruntime or a torch that cannot use the driver is reported, never
silent: `onnx_plan` and `torch_plan` return a warning, and `device="cuda"` raises `DeviceUnavailable` instead.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from models.errors import DeviceUnavailable

DEVICES = ("auto", "cpu", "cuda")
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
NVIDIA_DRIVER = Path("/proc/driver/nvidia/version")
NVIDIA_DEVICE = Path("/dev/nvidiactl")  # what `docker run --gpus` mounts
GPU_INSTALL_HINT = ("install the GPU build with `make run GPU=1` (bare metal) or use the Docker image; "
                    "see the README's GPU paragraph")


@dataclass(frozen=True)
class DevicePlan:
    """Where a model will run: `device` (cpu or cuda), the onnxruntime providers in order (none for torch), and a
    warning when a GPU is on the box but this model will not use it."""

    requested: str
    device: str
    providers: tuple[str, ...] = ()
    warning: str | None = None

    @property
    def on_cuda(self) -> bool:
        return self.device == "cuda"


def _check(device: str) -> None:
    if device not in DEVICES:
        raise DeviceUnavailable(f"device must be one of {', '.join(DEVICES)}, not {device!r}",
                                code="invalid_device", title="Invalid device", status=400)


def nvidia_driver() -> str | None:
    """The NVIDIA kernel driver's version line when this box has one (read from /proc, no CUDA call), else None."""
    try:
        return NVIDIA_DRIVER.read_text().splitlines()[0].strip() or "present"
    except (OSError, IndexError):
        return "present" if NVIDIA_DEVICE.exists() else None


def onnx_available_providers() -> list[str]:
    """The execution providers this onnxruntime build offers (a CPU-only build has no CUDA one)."""
    import onnxruntime as ort

    return list(ort.get_available_providers())


def torch_cuda_available() -> bool:
    """Whether torch sees a usable CUDA device (imports torch; call it only in a worker, never in the master)."""
    import torch

    return bool(torch.cuda.is_available())


def onnx_plan(device: str = "auto", *, available: Sequence[str] | None = None,
              gpu_on_box: bool | None = None) -> DevicePlan:
    """onnxruntime providers for `device`: CUDA first when asked for (or `auto`) and the build has it.

    `available` and `gpu_on_box` default to this machine's (tests pass a fake provider list).
    """
    _check(device)
    if device == "cpu":
        return DevicePlan(device, "cpu", (CPU_PROVIDER,))
    available = list(onnx_available_providers() if available is None else available)
    if CUDA_PROVIDER in available:
        return DevicePlan(device, "cuda", (CUDA_PROVIDER, CPU_PROVIDER))
    if device == "cuda":
        raise DeviceUnavailable(f"device=cuda, but this onnxruntime build has no {CUDA_PROVIDER} (it offers "
                                f"{', '.join(available) or 'none'}); {GPU_INSTALL_HINT}")
    gpu = nvidia_driver() is not None if gpu_on_box is None else gpu_on_box
    warning = (f"this box has an NVIDIA GPU, but onnxruntime has no {CUDA_PROVIDER} (the CPU-only onnxruntime is "
               f"installed), so segmentation runs on the CPU; {GPU_INSTALL_HINT}") if gpu else None
    return DevicePlan(device, "cpu", (CPU_PROVIDER,), warning)


def onnx_providers(device: str = "auto") -> list[str]:
    """onnxruntime execution providers for `device` (see `onnx_plan`)."""
    return list(onnx_plan(device).providers)


def session_fallback(plan: DevicePlan, session_providers: Sequence[str], what: str) -> DevicePlan:
    """The plan as it really turned out once a session exists: onnxruntime quietly drops a CUDA provider that fails
    to load (cuDNN missing, driver too old) and runs on the CPU. That is an error for `device="cuda"` and a warning
    for `auto`."""
    if not plan.on_cuda or (session_providers and session_providers[0] == CUDA_PROVIDER):
        return plan
    detail = (f"{what}: onnxruntime offers {CUDA_PROVIDER} but could not start it (missing CUDA or cuDNN libraries, "
              f"or an NVIDIA driver too old for this CUDA), so it runs on {', '.join(session_providers) or 'nothing'}; "
              f"run scripts/gpu_check.sh to see which")
    if plan.requested == "cuda":
        raise DeviceUnavailable(detail)
    return DevicePlan(plan.requested, "cpu", tuple(session_providers), detail)


def torch_plan(device: str = "auto", *, cuda_available: Callable[[], bool] | bool | None = None,
               gpu_on_box: bool | None = None, what: str = "Segment Anything") -> DevicePlan:
    """The torch device for `device` (SAM, EfficientNet-Lite0): cuda when torch sees a device; a warning naming
    `what` when the box has a GPU that torch cannot use (a CPU build of torch, a driver too old for its CUDA)."""
    _check(device)
    if device == "cpu":
        return DevicePlan(device, "cpu")
    if cuda_available is None:
        cuda_available = torch_cuda_available
    seen = cuda_available() if callable(cuda_available) else bool(cuda_available)
    if seen:
        return DevicePlan(device, "cuda")
    if device == "cuda":
        raise DeviceUnavailable("device=cuda, but torch sees no CUDA device (a CPU build of torch, no NVIDIA driver, "
                                "or a driver too old for torch's CUDA)")
    gpu = nvidia_driver() is not None if gpu_on_box is None else gpu_on_box
    warning = ("this box has an NVIDIA GPU, but torch cannot use it (a CPU build of torch, or a driver too old for "
               f"its CUDA), so {what} runs on the CPU") if gpu else None
    return DevicePlan(device, "cpu", (), warning)


def torch_device(device: str = "auto") -> str:
    """A torch device string for `device`; torch is imported here, never when models/ is imported."""
    return torch_plan(device).device


@functools.lru_cache(maxsize=1)
def cuda_provider_error() -> str | None:
    """Start onnxruntime's CUDA provider on a one-Conv graph (which needs cuDNN); None when it runs on CUDA, else
    why not. Cached per process; call it only where models run (a worker, the CLI, gpu_check), never the master."""
    try:
        import numpy as np
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        if CUDA_PROVIDER not in ort.get_available_providers():
            return f"this onnxruntime build has no {CUDA_PROVIDER}"
        weight = numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "w")
        graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "probe",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8, 8])], [weight])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = min(model.ir_version, 9)
        options = ort.SessionOptions()
        options.log_severity_level = 4
        session = ort.InferenceSession(model.SerializeToString(), options, providers=[CUDA_PROVIDER, CPU_PROVIDER])
        session.run(None, {"x": np.ones((1, 1, 8, 8), np.float32)})
        if session.get_providers()[0] != CUDA_PROVIDER:
            return f"onnxruntime fell back to {session.get_providers()[0]}"
        return None
    except Exception as exc:  # noqa: BLE001 - any failure to start the provider is the answer
        return f"{type(exc).__name__}: {exc}"


def preload_cuda_libraries() -> None:
    """Let onnxruntime-gpu find CUDA and cuDNN in the nvidia-* wheels torch installed (bare metal without a system
    CUDA); a no-op on the CPU build, in the Docker image (the base image has them) and when it is not needed."""
    if os.environ.get("FORECOURT_NO_PRELOAD_CUDA"):
        return
    try:
        import onnxruntime as ort

        if CUDA_PROVIDER in ort.get_available_providers() and hasattr(ort, "preload_dlls"):
            ort.preload_dlls()
    except Exception:  # noqa: BLE001 - the session's own load reports what is really missing
        pass


def cpu_has_int8_dot() -> bool:
    """True when the CPU has 8-bit dot-product instructions (VNNI or AMX), where int8 graphs are fast and exact.

    Without them onnxruntime's u8s8 kernels can saturate 16-bit intermediates, so int8 is not used there.
    """
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    except OSError:
        pass
    return False
