"""The main-car choice with the real model on small composites: a Carvana car pasted on a blurred street photo,
with a second, smaller car standing apart (type=car drops it, type=auto keeps it), or cut by the frame (kept whole
up to the edge)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from models.car import CarParams, keep_cars
from models.registry import get_segmenter

MODELS_DIR = Path(os.environ.get("FORECOURT_TEST_MODELS_DIR", "var/models"))
W, H = 768, 512


@pytest.fixture(scope="module")
def segmenter():
    seg = get_segmenter("isnet-general", MODELS_DIR, device="cpu", threads=2)
    seg.load()
    return seg


def street(shared_data: Path) -> np.ndarray:
    """A distractor photo blurred over the whole frame: an out-of-focus street."""
    rgb = np.asarray(Image.open(shared_data / "distractors" / "car4.jpg").convert("RGB"))
    return cv2.GaussianBlur(cv2.resize(rgb, (W, H)), (0, 0), 12).astype(np.float32)


def paste(canvas: np.ndarray, shared_data: Path, name: str, x: int, y: int, width: int) -> np.ndarray:
    """Paste a Carvana car (cropped to its mask) with its left-top at (x, y); returns its truth in the frame."""
    rgb = np.asarray(Image.open(shared_data / "carvana" / "images" / f"{name}.jpg").convert("RGB"))
    mask = np.asarray(Image.open(shared_data / "carvana" / "masks" / f"{name}_mask.gif")) > 0
    ys, xs = np.nonzero(mask)
    rgb, mask = rgb[ys.min():ys.max() + 1, xs.min():xs.max() + 1], mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    height = round(rgb.shape[0] * width / rgb.shape[1])
    rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32)
    alpha = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + width, W), min(y + height, H)
    part = (slice(y0 - y, y1 - y), slice(x0 - x, x1 - x))
    a = alpha[part][..., None]
    canvas[y0:y1, x0:x1] = a * rgb[part] + (1 - a) * canvas[y0:y1, x0:x1]
    truth = np.zeros((H, W), bool)
    truth[y0:y1, x0:x1] = alpha[part] >= 0.5
    return truth


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    return 2 * float((pred & truth).sum()) / float(pred.sum() + truth.sum())


@pytest.mark.slow
def test_a_photo_with_two_cars_keeps_the_main_one(segmenter, shared_data: Path) -> None:
    canvas = street(shared_data)
    far = paste(canvas, shared_data, "0ed6904e1004_05", 480, 10, 280)
    main = paste(canvas, shared_data, "0ce66b539f52_03", 200, 200, 440)
    photo = np.clip(canvas, 0, 255).astype(np.uint8)
    kept = segmenter.mask(photo, kind="car") >= 0.5
    assert dice(kept, main) > 0.95
    assert kept[far].mean() < 0.05
    matte = segmenter.mask(photo, kind="auto")
    assert (matte[far] >= 0.5).mean() > 0.9  # type=auto keeps all salient foreground
    # the car filter alone keeps the far car too: the main-car choice is what drops it
    assert (keep_cars(matte, CarParams(main=None))[far] >= 0.5).mean() > 0.9


@pytest.mark.slow
def test_a_car_cut_by_the_frame_is_kept_up_to_the_edge(segmenter, shared_data: Path) -> None:
    canvas = street(shared_data)
    truth = paste(canvas, shared_data, "0ce66b539f52_03", -150, 140, 600)  # a quarter out of the left edge
    kept = segmenter.mask(np.clip(canvas, 0, 255).astype(np.uint8), kind="car") >= 0.5
    assert dice(kept, truth) > 0.95
    assert kept[:, :8][truth[:, :8]].mean() > 0.9  # the body reaches the frame edge
