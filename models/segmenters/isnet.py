"""IS-Net (DIS) on onnxruntime: 1024x1024 input, one sigmoid output.

On CUDA the shipped fp16 graph runs as fp16, its 11 side outputs pruned and its batch dimension freed so that
concurrent requests share a run (`models.batcher`). On CPU it is converted once: fp16 -> fp32 with the side outputs
pruned, then (on CPUs with VNNI/AMX) quantized to int8 from the committed calibration ranges, about 2x faster
again at the same masks. The int8 graph is cached beside the model as `<model>.int8.onnx` with a JSON record of
what it was built from and its sha256; a record that does not match is rebuilt, never trusted.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from core.files import sha256_file
from models.batcher import MicroBatcher
from models.device import DevicePlan, cpu_has_int8_dot, onnx_plan, preload_cuda_libraries, session_fallback
from models.errors import InferenceFailed, ModelCorrupt, ModelError
from models.manifest import ModelSpec
from models.segmenters.base import Segmenter

log = logging.getLogger(__name__)

INPUT_SIDE = 1024
PRECISIONS = ("auto", "fp32", "int8", "fp16")
GPU_BATCH = 8  # batch_size 0 (auto): up to 8 images a run on CUDA, one at a time on the CPU (no faster batched)
# onnxruntime's memory pattern plans one block for all of a run's tensors after the first run of an input shape and
# allocates it on the second, while the arena still holds the first run's buffers and never frees them: about
# 550-620 MB more per process, once (the second mask call; the first of type=car's two passes). Off, every run reuses
# the arena's buffers, at the same speed and the same masks (docs/benchmarks.md#worker-memory).
MEM_PATTERN = False


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB -> 1x3x1024x1024 float32, DIS normalisation x / 255 - 0.5.

    One area resize, then each channel plane scaled straight into the NCHW buffer: the same values as OpenCV's
    blobFromImage (within 1e-7) in about a quarter of its time, in NumPy calls that release the GIL.
    """
    height, width = rgb.shape[:2]
    shrink = width > INPUT_SIDE or height > INPUT_SIDE
    resized = cv2.resize(rgb, (INPUT_SIDE, INPUT_SIDE), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    blob = np.empty((1, 3, INPUT_SIDE, INPUT_SIDE), np.float32)
    for channel, plane in enumerate(cv2.split(resized)):
        np.multiply(plane, np.float32(1.0 / 255.0), out=blob[0, channel], casting="unsafe")
    blob -= np.float32(0.5)
    return blob


def session_options(threads: int = 0, *, mem_pattern: bool = MEM_PATTERN):  # type: ignore[no-untyped-def]
    """onnxruntime's options for an IS-Net session, the same on the CPU and CUDA providers."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = max(0, int(threads))
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.enable_cpu_mem_arena = True  # the arena keeps a run's buffers for the next one (no page faults a run)
    options.enable_mem_pattern = mem_pattern
    return options


class IsNetSegmenter(Segmenter):
    """IS-Net general-use segmentation."""

    def __init__(self, spec: ModelSpec, models_dir: Path, device: str = "auto", threads: int = 0,
                 precision: str = "auto", batch_size: int = 0, batch_wait_ms: float = 5.0) -> None:
        super().__init__(spec, models_dir, device, threads)
        if precision not in PRECISIONS:
            raise ModelError(f"precision must be one of {', '.join(PRECISIONS)}", code="invalid_precision")
        self.precision = precision
        self.running_precision: str | None = None
        self.precision_fallback: str | None = None
        self.batch_size = int(batch_size)
        self.batch_wait_ms = float(batch_wait_ms)
        self._batcher: MicroBatcher | None = None
        self.mem_pattern = MEM_PATTERN  # onnxruntime's memory pattern, read at load (bench_memory.py compares both)

    def _load(self) -> None:
        plan = onnx_plan(self.device)
        if plan.on_cuda:
            preload_cuda_libraries()
        session, precision = self._session_for(plan)
        real = session_fallback(plan, session.get_providers(), self.name)
        if real is not plan and plan.on_cuda:  # the CUDA provider did not start: build the CPU's graph instead
            session, precision = self._session_for(real)
        self._session = session
        self._input = session.get_inputs()[0].name
        names = [o.name for o in session.get_outputs()]
        self._output = "output" if "output" in names else names[0]
        self.running_precision = precision
        self.plan = real
        batch_dim = session.get_inputs()[0].shape[0]
        size = self.batch_size or (GPU_BATCH if real.on_cuda else 1)
        if not isinstance(batch_dim, str):  # a graph with a fixed batch of 1 (the cached int8 one)
            size = 1
        self._batcher = MicroBatcher(self._run_batch, size, self.batch_wait_ms, name=f"{self.name}-batcher")
        log.info("loaded %s (%s) on %s, batches of up to %d", self.name, precision, session.get_providers()[0], size)
        if real.warning:
            log.warning("%s", real.warning)

    def _session_for(self, plan: DevicePlan):  # type: ignore[no-untyped-def]
        """An onnxruntime session of this model for the plan's providers, and the precision it runs."""
        import onnxruntime as ort

        path = self.spec.path(self.models_dir)
        options = session_options(self.threads, mem_pattern=self.mem_pattern)
        precision = self.precision
        if precision == "auto":
            precision = "fp16" if plan.on_cuda else ("int8" if cpu_has_int8_dot() else "fp32")
        elif precision == "int8" and plan.on_cuda:
            log.warning("%s: no int8 graph on CUDA; running fp16", self.name)
            precision = "fp16"
        model, precision = self._graph(path, precision)
        try:
            return ort.InferenceSession(model, options, providers=list(plan.providers)), precision
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            raise ModelCorrupt(f"onnxruntime cannot load {path} ({precision}): {exc}") from exc

    @property
    def provider(self) -> str | None:
        """The execution provider the loaded session runs on (None before loading)."""
        return self._session.get_providers()[0] if self._loaded else None

    def _graph(self, path: Path, precision: str) -> tuple[bytes | str, str]:
        """The graph to hand onnxruntime (a path or serialized bytes) and the precision it really has."""
        if precision == "fp16":
            try:
                from models.segmenters.onnx_graph import single_output_graph

                return single_output_graph(path, "output", fp32=False, dynamic_batch=True), "fp16"
            except ImportError:
                return str(path), "fp16"
        int8_cache = path.with_name(path.stem + ".int8.onnx")
        if precision == "int8":
            try:
                record = self._int8_record()
                if self._int8_cached(int8_cache, record):
                    return str(int8_cache), "int8"
            except ImportError as exc:
                log.warning("int8 needs the onnx package (%s); running fp32", exc)
                precision = "fp32"
        try:
            from models.segmenters.onnx_graph import single_output_graph, to_fp32_single_output
        except ImportError:
            log.warning("the onnx package is missing: running the fp16 graph as is (slower on CPU)")
            return str(path), "fp16"
        try:
            fp32 = to_fp32_single_output(path, "output") if precision == "int8" else \
                single_output_graph(path, "output", fp32=True, dynamic_batch=True)
        except Exception as exc:  # noqa: BLE001 - a graph the converter cannot read is a corrupt model
            raise ModelCorrupt(f"cannot read {path} as an ONNX graph: {exc}") from exc
        if precision == "int8":
            try:
                return self._build_int8(fp32, int8_cache, record), "int8"
            except Exception as exc:  # noqa: BLE001 - int8 is an optimisation: fall back, but say so
                log.warning("int8 graph unavailable (%s); running fp32", exc)
                self.precision_fallback = str(exc)
        return fp32, "fp32"

    def _int8_record(self) -> dict:
        """What a cached int8 graph must have been built from."""
        import onnx
        import onnxruntime as ort

        from models.segmenters.onnx_graph import CALIBRATION

        return {"source_sha256": self.spec.files[0].sha256, "calibration_sha256": sha256_file(CALIBRATION),
                "onnxruntime": ort.__version__, "onnx": onnx.__version__}

    @staticmethod
    def _int8_cached(cache: Path, wanted: dict) -> bool:
        """True when `cache` and its JSON record match `wanted` and the file's sha256."""
        try:
            record = json.loads(cache.with_name(cache.name + ".json").read_text())
            return all(record.get(k) == v for k, v in wanted.items()) and sha256_file(cache) == record.get("sha256")
        except (OSError, ValueError, AttributeError):
            return False

    def _build_int8(self, fp32: bytes, cache: Path, wanted: dict) -> bytes | str:
        """Quantize, then write the graph and its record atomically beside the model (or keep it in memory)."""
        from models.segmenters.onnx_graph import quantize_int8

        log.info("building the int8 graph of %s (once)", self.name)
        writable = os.access(cache.parent, os.W_OK)
        fd, tmp = tempfile.mkstemp(prefix=f".{cache.name}.", suffix=".part",
                                   dir=cache.parent if writable else None)
        os.close(fd)
        try:
            quantize_int8(fp32, Path(tmp))
            if not writable:  # a read-only models folder: build it for this process only
                return Path(tmp).read_bytes()
            os.chmod(tmp, 0o644)
            os.replace(tmp, cache)
        finally:
            Path(tmp).unlink(missing_ok=True)
        record = {**wanted, "sha256": sha256_file(cache), "size": cache.stat().st_size}
        record_path = cache.with_name(cache.name + ".json")
        record_tmp = record_path.with_name(record_path.name + ".part")
        record_tmp.write_text(json.dumps(record, indent=1))
        os.replace(record_tmp, record_path)
        return str(cache)

    def probability(self, rgb: np.ndarray) -> np.ndarray:
        """Foreground probability at the input's size (bilinear upscale of the 1024x1024 output).

        The resize and normalisation run in the calling thread; the model run may be shared with other requests.
        """
        height, width = rgb.shape[:2]
        start = time.perf_counter()
        blob = preprocess(rgb)
        ran = time.perf_counter()
        try:
            out = self._batcher.submit(blob) if self._batcher is not None else self._run_batch([blob])[0]
        except InferenceFailed:
            raise
        except Exception as exc:  # noqa: BLE001
            raise InferenceFailed(f"{self.name} failed on a {width}x{height} image: {exc}") from exc
        done = time.perf_counter()
        prob = out[0, 0]
        if (width, height) != (INPUT_SIDE, INPUT_SIDE):
            prob = cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR)
        prob = np.clip(prob, 0.0, 1.0, out=prob)
        self._add_stage("preprocess", ran - start)
        self._add_stage("model", done - ran)
        self._add_stage("upscale", time.perf_counter() - done)
        return prob

    def _run_batch(self, blobs: list[np.ndarray]) -> list[np.ndarray]:
        """One session run over stacked 1x3x1024x1024 inputs; the 1x1x1024x1024 output of each."""
        batch = blobs[0] if len(blobs) == 1 else np.concatenate(blobs)
        out = self._session.run([self._output], {self._input: batch})[0]
        return [out[i:i + 1] for i in range(len(blobs))]
