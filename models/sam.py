"""Segment Anything: interactive masks from points and boxes, from a hand-installed checkpoint.

The predictor holds the embedding of the last image, so there is one per process and configuration, used
behind a lock; a second prompt on the same image reuses the embedding.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from models.device import torch_device
from models.errors import InvalidPrompt, ModelCorrupt, UnknownModel
from models.manifest import get_spec
from models.segmenters.base import as_rgb_array

SamBuilder = Callable[[], Any]  # returns an untrained segment_anything.modeling.Sam


def official_builder(sam_type: str) -> SamBuilder:
    """segment-anything's own architecture for `vit_b`, `vit_l` or `vit_h`, without weights."""
    from segment_anything import sam_model_registry

    if sam_type not in sam_model_registry:
        raise UnknownModel(f"unknown SAM type {sam_type!r}")
    return lambda: sam_model_registry[sam_type](checkpoint=None)


def load_sam(checkpoint: Path, builder: SamBuilder, device: str = "auto") -> Any:
    """Build the architecture and load `checkpoint` into it (tensors only: `weights_only=True`)."""
    import torch

    target = torch_device(device)
    model = builder()
    try:
        state = torch.load(str(checkpoint), map_location=target, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors all mean an unreadable checkpoint
        raise ModelCorrupt(f"cannot read SAM checkpoint {checkpoint}: {exc}") from exc
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ModelCorrupt(f"{checkpoint} does not fit this SAM architecture: {str(exc)[:300]}") from exc
    model.to(target)
    model.eval()
    return model


class SamSegmenter:
    """One SamPredictor behind a lock; `predict(image, points, labels, box)` returns a boolean mask."""

    def __init__(self, checkpoint: Path, builder: SamBuilder, device: str = "auto", name: str = "sam") -> None:
        self.name = name
        self.checkpoint = Path(checkpoint)
        self.builder = builder
        self.device = device
        self._lock = threading.Lock()
        self._predictor: Any = None
        self._image_key: bytes | None = None

    def load(self) -> None:
        """Load the checkpoint now instead of on the first prompt."""
        with self._lock:
            self._ensure_loaded()

    def _ensure_loaded(self) -> None:
        if self._predictor is None:
            from segment_anything import SamPredictor

            self._predictor = SamPredictor(load_sam(self.checkpoint, self.builder, self.device))

    def predict(self, image: Image.Image | np.ndarray, points: Sequence[Sequence[float]] | np.ndarray | None = None,
                labels: Sequence[int] | np.ndarray | None = None,
                box: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
        """Boolean HxW mask of the object the prompts point at (positive label 1, negative 0; box x0,y0,x1,y1)."""
        rgb = as_rgb_array(image)
        pts, lbls, bx = _check_prompt(points, labels, box, rgb.shape[1], rgb.shape[0])
        digest = hashlib.blake2b(str(rgb.shape).encode(), digest_size=16)
        digest.update(np.ascontiguousarray(rgb).data)
        key = digest.digest()
        ambiguous = bx is None and pts is not None and len(pts) == 1  # one click: pick the best of 3 masks
        with self._lock:
            self._ensure_loaded()
            if key != self._image_key:
                self._predictor.set_image(rgb, image_format="RGB")
                self._image_key = key
            masks, scores, _ = self._predictor.predict(point_coords=pts, point_labels=lbls, box=bx,
                                                       multimask_output=ambiguous)
        return np.asarray(masks[int(np.argmax(scores))], dtype=bool)


def _check_prompt(points: Any, labels: Any, box: Any, width: int,
                  height: int) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    if points is None and box is None:
        raise InvalidPrompt("give at least one point or a box")
    pts = lbls = bx = None
    if points is not None:
        pts = np.asarray(points, dtype=np.float32)
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
            raise InvalidPrompt("points must be a non-empty list of [x, y] pairs")
        lbls = np.ones(len(pts), np.int64) if labels is None else np.asarray(labels)
        if lbls.shape != (len(pts),) or not np.isin(lbls, (0, 1)).all():
            raise InvalidPrompt("labels must be one 0 (background) or 1 (object) per point")
        lbls = lbls.astype(np.int64)
        if not ((pts[:, 0] >= 0) & (pts[:, 0] < width) & (pts[:, 1] >= 0) & (pts[:, 1] < height)).all():
            raise InvalidPrompt(f"points must lie inside the {width}x{height} image")
    elif labels is not None:
        raise InvalidPrompt("labels without points")
    if box is not None:
        bx = np.asarray(box, dtype=np.float32)
        if bx.shape != (4,) or not (0 <= bx[0] < bx[2] <= width and 0 <= bx[1] < bx[3] <= height):
            raise InvalidPrompt(f"box must be [x0, y0, x1, y1] with x0 < x1, y0 < y1 inside the {width}x{height} image")
    return pts, lbls, bx


_instances: dict[tuple[str, str, str], SamSegmenter] = {}
_instances_lock = threading.Lock()


def get_sam(name: str = "sam-vit-b", models_dir: Path | str = Path("var/models"), device: str = "auto") -> SamSegmenter:
    """The process-wide SAM for a manifest entry, its checkpoint verified against the pinned sha256."""
    spec = get_spec(name)
    if spec.backend != "sam":
        raise UnknownModel(f"{name} is not a SAM checkpoint")
    models_dir = Path(models_dir).expanduser().resolve()
    key = (name, str(models_dir), device)
    with _instances_lock:
        sam = _instances.get(key)
        if sam is None:
            spec.check(models_dir)
            sam = SamSegmenter(spec.path(models_dir), official_builder(spec.options["sam_type"]), device, name)
            _instances[key] = sam
    return sam
