"""The configured segmenter ([models] segmenter, dir, device, threads, batch_size, batch_wait_ms), shared by background removal, the catalog's
renders and recognition's car masks; a test swaps it with monkeypatch.setattr(segmentation, "segmenter", ...)."""

from __future__ import annotations

from models.registry import get_segmenter
from models.segmenters.base import Segmenter
from server.config import get_settings


def segmenter() -> Segmenter:
    """The configured segmenter, shared per process (its weights load on first use)."""
    s = get_settings()
    return get_segmenter(s.models.segmenter, models_dir=s.models_dir, device=s.models.device,
                         threads=s.models.threads, batch_size=s.models.batch_size,
                         batch_wait_ms=s.models.batch_wait_ms)
