"""Prometheus metrics, correct across gunicorn workers (multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("forecourt_http_requests_total", "HTTP requests by route, method and status",
                   ["route", "method", "status"])
LATENCY = Histogram("forecourt_http_request_duration_seconds", "HTTP request latency by route", ["route", "method"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
INFERENCE = Histogram("forecourt_model_inference_seconds", "Model inference time by model", ["model"],
                      buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64))
STAGES = Histogram("forecourt_removebg_stage_seconds", "Background removal time per image by stage (decode, "
                   "resize, classify, preprocess, model, upscale, car_filter, edges, sam, compose, encode)", ["stage"],
                   buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
CHARGES = Counter("forecourt_charges_total", "Metered units charged, by metric", ["metric"])


def observe_inference(model: str, seconds: float) -> None:
    """Record one model inference."""
    INFERENCE.labels(model=model).observe(seconds)


def observe_stage(stage: str, seconds: float) -> None:
    """Record the time one image spent in one stage of background removal."""
    STAGES.labels(stage=stage).observe(seconds)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Time the block as one stage of background removal."""
    start = time.perf_counter()
    try:
        yield
    finally:
        observe_stage(name, time.perf_counter() - start)


def render() -> tuple[bytes, str]:
    """The exposition text for /metrics, merged over all workers in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
