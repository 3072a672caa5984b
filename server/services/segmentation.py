"""The configured segmenter ([models] segmenter, dir, device, threads, batch_size, batch_wait_ms), shared by background
removal, the catalog's renders and recognition's car masks; a test swaps it with
monkeypatch.setattr(segmentation, "segmenter", lambda settings: fake)."""

from __future__ import annotations

from models.registry import get_segmenter
from models.segmenters.base import Segmenter
from server.config import Settings


def segmenter(settings: Settings) -> Segmenter:
    """The segmenter these settings name: one object per process and configuration (models.registry caches it), so
    every request of an app shares it; its weights load on first use."""
    m = settings.models
    return get_segmenter(m.segmenter, models_dir=settings.models_dir, device=m.device, threads=m.threads,
                         batch_size=m.batch_size, batch_wait_ms=m.batch_wait_ms)
