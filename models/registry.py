"""Named segmentation backends, one instance per process and configuration, and their readiness."""

from __future__ import annotations

import importlib
import threading
from pathlib import Path

from models.errors import UnknownModel
from models.fetch import verify
from models.manifest import MANIFEST, get_spec
from models.segmenters import BACKENDS
from models.segmenters.base import Segmenter

DEFAULT_SEGMENTER = "isnet-general"

_instances: dict[tuple[str, str, str, int, str, int, float], Segmenter] = {}
_lock = threading.Lock()


def segmenter_names() -> list[str]:
    """Manifest names that are background-removal backends."""
    return [name for name, spec in MANIFEST.items() if spec.backend in BACKENDS]


def get_segmenter(name: str = DEFAULT_SEGMENTER, models_dir: Path | str = Path("var/models"), device: str = "auto",
                  threads: int = 0, precision: str = "auto", batch_size: int = 0,
                  batch_wait_ms: float = 5.0) -> Segmenter:
    """The process-wide segmenter for this configuration; its model loads on first use (or `.load()`).

    `precision` (IS-Net): auto = int8 on CPUs with VNNI/AMX, else fp32; fp16 (the shipped graph) on CUDA.
    `batch_size` / `batch_wait_ms`: the micro-batcher's bounds (0 = auto: 8 on CUDA, 1 on the CPU).
    """
    spec = get_spec(name)
    if spec.backend not in BACKENDS:
        raise UnknownModel(f"{name} is not a segmentation backend; choose from {', '.join(segmenter_names())}")
    key = (name, str(Path(models_dir).expanduser().resolve()), device, int(threads), precision, int(batch_size),
           float(batch_wait_ms))
    with _lock:
        seg = _instances.get(key)
        if seg is None:
            module_name, class_name = BACKENDS[spec.backend].split(":")
            cls = getattr(importlib.import_module(module_name), class_name)
            seg = cls(spec, Path(key[1]), device=device, threads=int(threads), precision=precision,
                      batch_size=int(batch_size), batch_wait_ms=float(batch_wait_ms))
            _instances[key] = seg
    return seg


def clear_segmenters() -> None:
    """Forget every cached segmenter (tests; a worker reloading its models)."""
    with _lock:
        _instances.clear()


def model_status(models_dir: Path | str) -> list[dict]:
    """Per model file: name, present, verified, path, error (and error_code, fetchable, license)."""
    return [status.as_dict() for status in verify(Path(models_dir))]
