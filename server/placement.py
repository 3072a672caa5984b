"""Where the configured models run: the device report that the worker's start-up log, /readyz and the System page
share."""

from __future__ import annotations

import logging

from models.placement import Placement, classifier_placement, sam_placement, segmenter_placement
from server.config import get_settings
from server.readiness import CheckResult
from server.services import segmentation

log = logging.getLogger(__name__)


def placements() -> list[Placement]:
    """The default segmenter's, SAM's and EfficientNet-Lite0's (type=auto, car embedding) placement under the
    settings."""
    s = get_settings()
    return [segmenter_placement(segmentation.segmenter(s)),
            sam_placement(s.models.sam_model, s.models_dir, s.models.device),
            classifier_placement(s.models_dir, s.models.device)]


def device_check() -> CheckResult:
    """Ready either way; the detail names each model's provider, and a GPU left unused is a warning."""
    rows = placements()
    detail = "; ".join(f"{p.model} on {p.runs_on}" for p in rows)
    problems = [p.error for p in rows if p.error] + [p.warning for p in rows if p.warning]
    return CheckResult("device", not any(p.error for p in rows), detail, required=False,
                       warning=" ".join(problems) or None)


def announce() -> None:
    """At a worker's start: log where each model runs, warn about an unused GPU, and refuse to start when
    `device = "cuda"` cannot be honoured (gunicorn stops when a worker cannot boot)."""
    from models.errors import DeviceUnavailable

    rows = placements()
    for p in rows:
        log.info("model %s runs on %s", p.model, p.runs_on)
        if p.warning:
            log.warning("%s", p.warning)
    errors = [p.error for p in rows if p.error]
    if errors:
        for e in errors:
            log.error("%s", e)
        raise DeviceUnavailable("; ".join(errors))
