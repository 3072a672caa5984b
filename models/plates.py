"""Number-plate masking: regions given by the uploader are always blurred out before a photo is processed.

Automatic detection uses an OpenCV Haar cascade for plates, so it is offered only where OpenCV has its
CascadeClassifier (4.x; the OpenCV 5.0 pip build installed here has none, and ships no cascade files) and a plate
cascade is installed: a path in the settings, or OpenCV's data folders (Debian/Ubuntu's `opencv-data` package puts
`haarcascade_russian_plate_number.xml` in /usr/share/opencv4/haarcascades). Its limits:
trained on Russian-style plates seen roughly head-on, so it finds front and rear plates of level photos, misses
many plates at three-quarter angles, small or tilted ones, and can fire on grilles or badges.
"""

from __future__ import annotations

import functools
import os
import threading
from typing import Any

import cv2
import numpy as np

from models.errors import ModelError

Region = tuple[int, int, int, int]
_detect_lock = threading.Lock()


class InvalidPlateRegion(ModelError):
    """A plate region that is not a box inside the photo."""

    code, title, status = "invalid_plate_region", "Invalid plate region", 400


CASCADE_NAMES = ("haarcascade_russian_plate_number.xml", "haarcascade_licence_plate_rus_16stages.xml")
SYSTEM_FOLDERS = ("/usr/share/opencv4/haarcascades", "/usr/share/opencv/haarcascades",
                  "/usr/local/share/opencv4/haarcascades")


def cascade_path(configured: str | None = None) -> str | None:
    """The plate cascade to use: the configured file, else the first one found in OpenCV's data folders."""
    if configured:
        return configured if os.path.isfile(configured) else None
    folders = [getattr(getattr(cv2, "data", None), "haarcascades", ""), *SYSTEM_FOLDERS]
    for folder in filter(None, folders):
        for name in CASCADE_NAMES:
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                return path
    return None


def _usable_cascade(configured: str | None) -> str | None:
    """The plate cascade when this OpenCV can run one (it has CascadeClassifier) and one is installed, else None."""
    return cascade_path(configured) if hasattr(cv2, "CascadeClassifier") else None


def detector_available(configured: str | None = None) -> bool:
    """Whether OpenCV can run a plate cascade here and one is installed (see the module's note on its limits)."""
    return _usable_cascade(configured) is not None


@functools.cache
def _classifier(path: str) -> Any:
    classifier = cv2.CascadeClassifier(path)  # type: ignore[attr-defined]
    if classifier.empty():
        raise ModelError(f"The plate cascade {path} could not be loaded.", code="plate_detector_broken",
                         title="Plate detector broken", status=500)
    return classifier


def detect(rgb: np.ndarray, configured: str | None = None) -> list[Region]:
    """Plate boxes (x1, y1, x2, y2) found by the cascade, or none where no detector is available."""
    path = _usable_cascade(configured)
    if path is None:
        return []
    gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    min_side = max(24, min(gray.shape) // 40)
    with _detect_lock:  # a CascadeClassifier is not safe to share between threads
        found = _classifier(path).detectMultiScale(gray, scaleFactor=1.1, minNeighbors=4,
                                                   minSize=(min_side * 2, min_side // 2))
    return [(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h in found]


def parse_regions(raw: object) -> list[Region]:
    """Regions as [[x1, y1, x2, y2], ...] in pixels of the original photo."""
    if raw in (None, "", []):
        return []
    if not isinstance(raw, list) or not all(isinstance(r, list | tuple) and len(r) == 4 for r in raw):
        raise InvalidPlateRegion("plate_regions must be a list of [x1, y1, x2, y2] boxes in pixels.")
    regions = []
    for r in raw:
        try:
            x1, y1, x2, y2 = (int(v) for v in r)
        except (TypeError, ValueError) as exc:
            raise InvalidPlateRegion("plate_regions values must be whole numbers.") from exc
        if x2 <= x1 or y2 <= y1 or min(x1, y1) < 0:
            raise InvalidPlateRegion(f"The plate region {list(r)} is empty or negative.")
        regions.append((x1, y1, x2, y2))
    return regions


def mask(rgb: np.ndarray, regions: list[Region]) -> np.ndarray:
    """A copy with each region replaced by a strong blur (unreadable, but the car's outline stays)."""
    out = rgb.copy()
    h, w = out.shape[:2]
    for x1, y1, x2, y2 in regions:
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
        if x2 <= x1 or y2 <= y1:
            continue
        patch = out[y1:y2, x1:x2]
        small = cv2.resize(patch, (max(1, (x2 - x1) // 16), max(1, (y2 - y1) // 16)), interpolation=cv2.INTER_AREA)
        out[y1:y2, x1:x2] = cv2.GaussianBlur(cv2.resize(small, (x2 - x1, y2 - y1)), (0, 0), 3)
    return out
