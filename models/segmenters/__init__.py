"""Segmentation backends, one file each; `BACKENDS` maps a manifest `backend` to its class path."""

from __future__ import annotations

BACKENDS: dict[str, str] = {
    "isnet": "models.segmenters.isnet:IsNetSegmenter",
}
