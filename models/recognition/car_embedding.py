"""The car-crop embedding that recognition's acceptance weighs in car collections (issue 17, docs/decisions/0001).

EfficientNet-Lite0's convolutional trunk (the ImageNet weights of the type=auto classifier, models/foreground.py,
sha256-checked by its manifest entry; no network) on the car's bounding box, the background inside the box grey,
pooled into one unit vector. It does not tell a white sedan from a white sedan (the similarity alone is at chance
between look-alikes), but which car of the collection a photo is *nearest* to: the margin (margin.py) between the
matched object's best reference and the best other car's.

Stored per reference image as float16 (`to_blob`), DIM values: the last block's 320 channels, mean-pooled, hold the
margin's separation of the 1280-channel head (AUC measured in docs/decisions/0001) at a quarter of its size, 640
bytes a reference (640 MB at a million); a random projection of the head to 256 or 128 values lost it.
"""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

from models import foreground

INPUT_SIDE = 224
DIM = 320
NAME = "lite0-car320"  # what the vector is: a change of layer, pooling or input makes another name
_MEAN = 127.0 / 255.0  # the Lite models' input normalisation, (x - 127) / 128, and the grey background
_STD = 128.0 / 255.0


def car_crop(rgb: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The car's bounding box (and the mask inside it); the whole image without a mask; None for an empty mask."""
    if mask is None:
        return rgb, None
    keep = np.asarray(mask) > 0.5
    ys = np.flatnonzero(keep.any(axis=1))
    xs = np.flatnonzero(keep.any(axis=0))
    if not len(ys):
        return None
    box = (slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))
    return rgb[box], keep[box]


class CarEmbedder:
    """The Lite0 trunk, loaded (once, under the classifier's lock) from the models folder's checked weights, on the
    classifier's device (`device`: auto, cpu or cuda; the same network as type=auto's for that device, or that of
    `classifier` when given)."""

    def __init__(self, models_dir: Path, device: str = "auto",
                 classifier: foreground.ForegroundClassifier | None = None) -> None:
        self.models_dir = Path(models_dir)
        self.device = classifier.device if classifier is not None else device
        self._classifier = classifier
        self.name = NAME
        self.dim = DIM
        self._trunk = None
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        """NAME and the weights' sha256 prefix: vectors of two model_ids never mix."""
        return f"{NAME}:{foreground.EFFICIENTNET_LITE0.files[0].sha256[:16]}"

    def load(self) -> None:
        """Check the weights (ModelMissing / ModelCorrupt) and keep the classifier's network."""
        if self._trunk is not None:
            return
        with self._lock:
            if self._trunk is None:
                clf = self._classifier or foreground.get_classifier(self.models_dir, self.device)
                self._trunk = clf.network()

    def embed(self, rgb: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray | None:
        """The unit-length float32 vector of the car in an RGB uint8 photo (mask > 0.5: the car; None: the whole
        photo); None when the mask is empty."""
        import torch
        from torch.nn import functional as F

        crop = car_crop(rgb, mask)
        if crop is None:
            return None
        self.load()
        img, keep = crop[0].astype(np.float32) / 255.0, crop[1]
        if keep is not None:
            img = np.where(keep[..., None], img, np.float32(_MEAN))
        interp = cv2.INTER_AREA if max(img.shape[:2]) > INPUT_SIDE else cv2.INTER_LINEAR
        img = cv2.resize(img, (INPUT_SIDE, INPUT_SIDE), interpolation=interp)
        net = self._trunk
        x = torch.from_numpy(np.ascontiguousarray(((img - _MEAN) / _STD).transpose(2, 0, 1)))[None]
        x = x.to(foreground.net_device(net))
        with torch.inference_mode():
            h = F.relu6(net._bn0(net._conv_stem(x)))
            for block in net._blocks:
                h = block(h)
            vec = h.mean(dim=(2, 3)).reshape(-1).float().cpu().numpy()
        return (vec / max(float(np.linalg.norm(vec)), 1e-12)).astype(np.float32)


def to_blob(vector: np.ndarray) -> bytes:
    """How a vector is stored: DIM float16 values."""
    return np.asarray(vector, np.float16).tobytes()


def from_blob(blob: bytes) -> np.ndarray:
    """A stored vector as float32."""
    return np.frombuffer(blob, dtype=np.float16).astype(np.float32)


_instances: dict[tuple[str, str], CarEmbedder] = {}
_instances_lock = threading.Lock()


def get_car_embedder(models_dir: Path | str, device: str = "auto") -> CarEmbedder:
    """The process-wide car embedder of a models folder and device (weights load on first use, in the worker)."""
    folder = str(Path(models_dir).expanduser().resolve())
    with _instances_lock:
        model = _instances.get((folder, device))
        if model is None:
            model = _instances[(folder, device)] = CarEmbedder(Path(folder), device)
    return model
