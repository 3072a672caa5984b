"""What every segmentation backend offers: an RGB image in, an alpha matte out, loaded lazily under a lock."""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from models import car, refine
from models.device import DevicePlan
from models.errors import InvalidKind, ModelError
from models.manifest import ModelSpec

# remove.bg's `type` values; all but "car" get the general matte
KINDS = ("auto", "person", "product", "car", "animal", "graphic", "transportation")


def as_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB from a PIL image of any mode (alpha dropped) or an HxWx3 uint8 array."""
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.asarray(image)
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got {array.dtype} {array.shape}")
    return array


def postprocess(rgb: np.ndarray, prob: np.ndarray, mirrored: np.ndarray | None = None, kind: str = "auto", *,
                refine_edges: bool = True, car_params: car.CarParams = car.CarParams(),
                on_stage: Callable[[str, float], None] | None = None) -> np.ndarray:
    """The matte from a model's raw output: what `Segmenter.mask` does after the model, public so that an
    evaluation can run it on cached model outputs and measure the product.

    `prob` is the model's probability at the photo's size (float32 HxW, modified in place), `mirrored` the second
    pass's on the mirrored photo, flipped back (or None). The matte is their per-pixel maximum; for `kind="car"` it is
    `car.fuse_passes` (the maximum only over the parts one pass missed, their mean along the edges), and the car
    filter (models/car.py with `car_params`) judges what only one pass believes (their minimum is its confidence)
    like a region the model half-believed; then the edges are refined (models/refine.py).
    `on_stage(name, seconds)` hears the time of each step (car_filter, edges).
    """
    start = time.perf_counter()
    confidence = None
    if mirrored is not None and kind == "car":
        prob, confidence = car.fuse_passes(prob, mirrored)
    elif mirrored is not None:
        np.maximum(prob, mirrored, out=prob)
    alpha = prob
    if kind == "car":
        alpha = car.keep_cars(alpha, car_params, confidence=confidence)
    car_done = time.perf_counter()
    if refine_edges:
        alpha = refine.refine_alpha(rgb, alpha)
    if on_stage is not None:
        if kind == "car":
            on_stage("car_filter", car_done - start)
        on_stage("edges", time.perf_counter() - car_done)
    return alpha


class Segmenter(ABC):
    """A named background-removal backend; thread-safe, loads its model on first use."""

    def __init__(self, spec: ModelSpec, models_dir: Path, device: str = "auto", threads: int = 0) -> None:
        self.spec = spec
        self.name = spec.name
        self.models_dir = Path(models_dir)
        self.device = device
        self.threads = threads
        self._load_lock = threading.Lock()
        self._loaded = False
        self._timings = threading.local()
        self.plan: DevicePlan | None = None  # where the loaded model runs (set by `_load`)

    # --- loading ----------------------------------------------------------------------------------------------
    def load(self) -> None:
        """Load the model now (verifying its files) instead of on the first `mask` call."""
        if self._loaded:
            return
        with self._load_lock:
            if not self._loaded:
                self.spec.check(self.models_dir)
                self._load()
                self._loaded = True

    @abstractmethod
    def _load(self) -> None:
        """Build the inference session from verified files (called once, under the lock)."""

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def provider(self) -> str | None:
        """What the loaded model runs on (an onnxruntime provider or a torch device); None before loading."""
        return None

    def status(self) -> dict:
        """name, present, verified, loaded, path, error, provider, device warning: for /readyz."""
        path = self.spec.path(self.models_dir)
        info = {"name": self.name, "present": path.is_file(), "verified": False, "loaded": self._loaded,
                "path": str(path), "error": None, "provider": self.provider,
                "device_warning": self.plan.warning if self.plan is not None else None}
        try:
            self.spec.check(self.models_dir)
            info["verified"] = True
        except ModelError as exc:
            info["error"] = exc.detail
        return info

    # --- inference --------------------------------------------------------------------------------------------
    @abstractmethod
    def probability(self, rgb: np.ndarray) -> np.ndarray:
        """The model's raw foreground probability, float32 HxW at the input's size."""

    def mask(self, image_rgb: Image.Image | np.ndarray, kind: str = "auto", *, refine_edges: bool = True,
             mirror: bool = False, car_params: car.CarParams = car.CarParams()) -> np.ndarray:
        """Alpha matte, float32 HxW in [0,1] at the input size; `kind="car"` keeps cars only (`car_params`: the car
        filter's knobs, see models/car.py).

        `mirror` runs the model a second time on the left-right mirrored image and keeps, per pixel, the larger of
        the two probabilities: a saliency model often misses a part of the car (a wrapped door, a spoiler) in one
        view and not in the other. The car filter judges what only one pass believes (their minimum is its
        confidence) like a region the model half-believed. It doubles the model time.
        """
        if kind not in KINDS:
            raise InvalidKind(f"type must be one of {', '.join(KINDS)}, not {kind!r}")
        start = time.perf_counter()
        rgb = as_rgb_array(image_rgb)
        self.load()
        self._timings.stages = {}
        alpha = self.probability(rgb)
        flipped = self.probability(np.ascontiguousarray(rgb[:, ::-1]))[:, ::-1] if mirror else None
        model_done = time.perf_counter()
        alpha = postprocess(rgb, alpha, flipped, kind, refine_edges=refine_edges, car_params=car_params,
                            on_stage=self._add_stage)
        end = time.perf_counter()
        self._timings.model_ms = (model_done - start) * 1000.0
        self._timings.total_ms = (end - start) * 1000.0
        return alpha

    @property
    def last_inference_ms(self) -> float | None:
        """Wall time of this thread's last `mask` call (pre-processing, model, car filter, edges), in ms."""
        return getattr(self._timings, "total_ms", None)

    @property
    def last_model_ms(self) -> float | None:
        """Of that, the model alone with its resizing, in ms."""
        return getattr(self._timings, "model_ms", None)

    @property
    def last_stages(self) -> dict[str, float]:
        """This thread's last `mask` call split by stage, in seconds (preprocess, model, upscale, car_filter,
        edges; a backend reports what it has)."""
        return dict(getattr(self._timings, "stages", {}))

    def _add_stage(self, name: str, seconds: float) -> None:
        stages = getattr(self._timings, "stages", None)
        if stages is None:
            stages = self._timings.stages = {}
        stages[name] = stages.get(name, 0.0) + seconds
