"""Prometheus metrics, correct across gunicorn workers (multiprocess mode when PROMETHEUS_MULTIPROC_DIR is set)."""

from __future__ import annotations

import os

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
CHARGES = Counter("forecourt_charges_total", "Metered units charged, by metric", ["metric"])


def observe_inference(model: str, seconds: float) -> None:
    """Record one model inference."""
    INFERENCE.labels(model=model).observe(seconds)


def render() -> tuple[bytes, str]:
    """The exposition text for /metrics, merged over all workers in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
