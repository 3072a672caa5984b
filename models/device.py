"""Device choice for inference: `auto`, `cpu` or `cuda`, decided here and only when a model loads."""

from __future__ import annotations

from models.errors import DeviceUnavailable

DEVICES = ("auto", "cpu", "cuda")


def _check(device: str) -> None:
    if device not in DEVICES:
        raise DeviceUnavailable(f"device must be one of {', '.join(DEVICES)}, not {device!r}",
                                code="invalid_device", title="Invalid device", status=400)


def onnx_providers(device: str = "auto") -> list[str]:
    """onnxruntime execution providers for `device`: CUDA first when asked for (or `auto`) and present."""
    _check(device)
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise DeviceUnavailable("device=cuda, but this onnxruntime build has no CUDAExecutionProvider")
    return ["CPUExecutionProvider"]


def torch_device(device: str = "auto") -> str:
    """A torch device string for `device`; torch is imported here, never when models/ is imported."""
    _check(device)
    if device == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise DeviceUnavailable("device=cuda, but torch sees no CUDA device")
    return "cpu"


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
