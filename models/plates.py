"""Number-plate masking: regions given by the uploader are always blurred out before a photo is processed.

Automatic detection needs a plate detector; the pip build of OpenCV (opencv-python-headless) ships no plate
cascade, so `detector_available()` is False here and only given regions are masked.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from models.errors import ModelError

Region = tuple[int, int, int, int]


class InvalidPlateRegion(ModelError):
    code, title, status = "invalid_plate_region", "Invalid plate region", 400


def _cascade_path() -> str | None:
    folder = getattr(getattr(cv2, "data", None), "haarcascades", "")
    for name in ("haarcascade_russian_plate_number.xml", "haarcascade_licence_plate_rus_16stages.xml"):
        path = os.path.join(folder, name)
        if folder and os.path.exists(path):
            return path
    return None


def detector_available() -> bool:
    """Whether the installed OpenCV ships a plate cascade (Russian-style plates only, front/rear views)."""
    return _cascade_path() is not None


def detect(rgb: np.ndarray) -> list[Region]:
    """Plate boxes found by OpenCV's cascade, or none where no cascade is installed."""
    path = _cascade_path()
    if path is None:
        return []
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    found = cv2.CascadeClassifier(path).detectMultiScale(gray, scaleFactor=1.1, minNeighbors=4)
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
