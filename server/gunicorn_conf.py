"""Gunicorn settings, from Forecourt's config: workers (as many as fit in memory), threads, timeouts, no preload,
multiprocess metrics."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from server.capacity import available_memory_mb, plan_workers
from server.config import load_settings

_settings = load_settings()
_gpu_ids = [g.strip() for g in os.environ.get("FORECOURT_GPU_IDS", "").split(",") if g.strip()]
# One worker per GPU listed in FORECOURT_GPU_IDS unless [server] workers says otherwise: a worker's micro-batcher
# feeds its GPU, and a second worker on the same GPU would only split the batches.
_server = _settings.server
configured_workers = len(_gpu_ids) if _gpu_ids and "workers" not in _server.model_fields_set else _server.workers
# As many of the configured workers as fit in memory, each with every thread on a 50 MP image (bench_memory.py).
_worker_mb = _server.worker_memory_mb + _server.threads * _server.request_memory_mb if _server.worker_memory_mb else 0
_plan = plan_workers(configured_workers, _worker_mb, available_memory_mb())

bind = f"{_settings.server.host}:{_settings.server.port}"
workers = _plan.workers
threads = _settings.server.threads
worker_class = "gthread"
timeout = _settings.server.timeout
graceful_timeout = _settings.server.graceful_timeout
keepalive = 5
preload_app = False  # each worker loads the app (and any CUDA context) itself; the master never touches CUDA
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 16384
accesslog = None  # the app logs each request as JSON with its request id
errorlog = "-"
loglevel = _settings.logging.level.lower()
proc_name = "forecourt"

_metrics_dir = _settings.data_dir / "prometheus"
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_dir)
# Importing server.config above already imported prometheus_client (via server/__init__), which picked its value
# class from the environment then; pick again so the workers forked from here write multiprocess files.
from prometheus_client import values as _prometheus_values  # noqa: E402

_prometheus_values.ValueClass = _prometheus_values.get_value_class()


def on_starting(server) -> None:  # type: ignore[no-untyped-def]
    """Tell the admin when fewer workers start than configured; start each run with empty metric files."""
    if _plan.warning:
        server.log.warning(_plan.warning)
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    Path(_metrics_dir).mkdir(parents=True, exist_ok=True)


def pre_fork(server, worker) -> None:  # type: ignore[no-untyped-def]
    """Spread GPUs over workers by environment only (FORECOURT_GPU_IDS=0,1); CUDA is never touched here."""
    if _gpu_ids:
        index = len([w for w in server.WORKERS.values() if w is not worker]) % len(_gpu_ids)
        worker.cuda_device = _gpu_ids[index]


def post_fork(server, worker) -> None:  # type: ignore[no-untyped-def]
    """In the worker: pin its GPU before anything imports torch or onnxruntime."""
    device = getattr(worker, "cuda_device", None)
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device


def child_exit(server, worker) -> None:  # type: ignore[no-untyped-def]
    """Drop a dead worker's live gauges from the merged metrics."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
