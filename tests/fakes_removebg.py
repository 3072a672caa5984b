"""Fake segmenters and sample images for the background-removal unit tests (real-model tests use IS-Net)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


class FakeSegmenter:
    """An ellipse over the middle half of the picture (centre, half the width and height), named as a fake."""

    name = "fake-ellipse"
    last_model_ms = 1.0

    def __init__(self) -> None:
        self.calls = 0
        self.kinds: list[str] = []
        self.mirrors: list[bool] = []

    def mask(self, image, kind: str = "auto", mirror: bool = False) -> np.ndarray:  # noqa: ANN001
        self.calls += 1
        self.kinds.append(kind)
        self.mirrors.append(mirror)
        h, w = np.asarray(image).shape[:2]
        yy, xx = np.mgrid[0:h, 0:w]
        inside = ((xx + 0.5 - w / 2) / (w / 4)) ** 2 + ((yy + 0.5 - h / 2) / (h / 4)) ** 2 <= 1
        return inside.astype(np.float32)

    def load(self) -> None:
        return None


class FakeEmptySegmenter(FakeSegmenter):
    """Finds nothing at all."""

    def mask(self, image, kind: str = "auto", mirror: bool = False) -> np.ndarray:  # noqa: ANN001
        self.calls += 1
        return np.zeros(np.asarray(image).shape[:2], np.float32)


class FakeCrashingSegmenter(FakeSegmenter):
    """The ellipse fake, failing on a chosen image width (stands in for a crash mid-request or mid-batch)."""

    def __init__(self, fail_width: int | None = None) -> None:
        super().__init__()
        self.fail_width = fail_width

    def mask(self, image, kind: str = "auto", mirror: bool = False) -> np.ndarray:  # noqa: ANN001
        if np.asarray(image).shape[1] == self.fail_width:
            self.calls += 1
            raise RuntimeError("worker died")
        return super().mask(image, kind, mirror)


def photo(w: int = 400, h: int = 300, fmt: str = "JPEG", mode: str = "RGB", **save) -> bytes:  # noqa: ANN003
    """A horizontal red gradient on green, encoded in `fmt` after converting to `mode`."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    arr[..., 1] = 120
    img = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


class FakeClassifier:
    """Says every foreground is `kind` (type=auto's classifier without weights), and records the shapes it saw."""

    name = "fake-classifier"

    def __init__(self, kind: str = "other") -> None:
        self.kind = kind
        self.shapes: list[tuple[int, ...]] = []

    def classify(self, rgb):  # noqa: ANN001, ANN201
        from models.foreground import ForegroundType

        self.shapes.append(np.asarray(rgb).shape)
        return ForegroundType(self.kind, {self.kind: 1.0}, 0)


class FakeMissingClassifier(FakeClassifier):
    """A classifier whose weights are not installed."""

    def classify(self, rgb):  # noqa: ANN001, ANN201
        from models.errors import ModelMissing

        raise ModelMissing("efficientnet-lite0-57934424.pth is missing (fake)")
