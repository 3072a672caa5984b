"""Blurred photos (a phone photo on the lot, out of focus or shaken, then JPEG-compressed): recognition measures
the blur and sharpens the image back to a studio photo's before SIFT, so a blurred car keeps the inliers that match
it to its sharp studio references; a sharp photo's features do not change (features.blur_sigma, sharpened)."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from models.recognition import features
from models.recognition.features import BLUR_TRIGGER, SHARP_SIGMA, blur_sigma, extract, sharpened
from models.recognition.matcher import CAR_INLIER_MIDPOINT, verify
from server.config import RecognitionSettings
from tests.helpers import paste_car

CAR = "0ce66b539f52"
W, H = 1024, 683


def _studio(shared_data: Path, angle: int) -> tuple[np.ndarray, np.ndarray]:
    stem = f"{CAR}_{angle:02d}"
    rgb = np.asarray(Image.open(shared_data / "carvana" / "images" / f"{stem}.jpg").convert("RGB"))
    return rgb, np.asarray(Image.open(shared_data / "carvana" / "masks" / f"{stem}_mask.gif")) > 0


def _working(rgb: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Grey and mask at the size features analyse (features.MAX_SIDE)."""
    h, w = mask.shape
    size = (round(w * features.MAX_SIDE / max(h, w)), round(h * features.MAX_SIDE / max(h, w)))
    grey = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), size, interpolation=cv2.INTER_AREA)
    return grey, cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)


def _blurred_lot_photo(shared_data: Path, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """(RGB, car mask): the studio car at 22.5 degrees from its references, cut out at 65% of a 1024x683 frame's width
    in front of an out-of-focus street, blurred by `sigma` pixels and JPEG-compressed at quality 60."""
    rgb, mask = _studio(shared_data, 2)
    street = np.asarray(Image.open(shared_data / "distractors" / "car4.jpg").convert("RGB"))
    canvas = cv2.GaussianBlur(cv2.resize(street, (W, H)), (0, 0), 8).astype(np.float32)
    truth = paste_car(canvas, rgb, mask, int(0.65 * W), 180, 30)
    photo = cv2.GaussianBlur(np.clip(canvas + 0.5, 0, 255).astype(np.uint8), (0, 0), sigma)
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "JPEG", quality=60)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")), truth


def test_blur_is_measured_in_pixels_and_a_studio_photo_is_sharp(shared_data: Path) -> None:
    grey, mask = _working(*_studio(shared_data, 2))
    sharp = blur_sigma(grey, mask)
    assert 0.4 < sharp < BLUR_TRIGGER
    for sigma in (1.0, 1.5, 2.0):  # blurring adds in quadrature: sqrt(sharp^2 + sigma^2), within 15%
        measured = blur_sigma(cv2.GaussianBlur(grey, (0, 0), sigma), mask)
        assert measured == pytest.approx(np.hypot(sharp, sigma), rel=0.15)


def test_a_sharp_image_is_left_as_it_is_and_a_blurred_one_sharpened_to_a_studio_photos_blur(
        shared_data: Path) -> None:
    grey, mask = _working(*_studio(shared_data, 2))
    assert sharpened(grey, mask) is grey
    blurred = cv2.GaussianBlur(grey, (0, 0), 1.5)
    restored = sharpened(blurred, mask)
    assert SHARP_SIGMA < blur_sigma(restored, mask) < blur_sigma(blurred, mask) - 0.3  # regularised: part of the way
    assert np.abs(restored.astype(int) - grey.astype(int)).mean() < np.abs(blurred.astype(int) - grey.astype(int)).mean()


def test_a_blurred_lot_photo_keeps_the_inliers_to_its_studio_references(shared_data: Path) -> None:
    refs = [extract(*_studio(shared_data, a), sharpen=True) for a in (1, 3)]
    assert all(np.array_equal(ref.descriptors, extract(*_studio(shared_data, a)).descriptors)
               for ref, a in zip(refs, (1, 3), strict=True))  # sharp studio photos: the same features either way
    photo, mask = _blurred_lot_photo(shared_data, 1.6)

    def best(sharpen: bool) -> int:
        query = extract(photo, mask, sharpen=sharpen)
        return max(verify(query, ref, midpoint=CAR_INLIER_MIDPOINT).inliers for ref in refs)

    before, now = best(False), best(True)
    assert now >= before + 10 and now >= 1.5 * CAR_INLIER_MIDPOINT, (before, now)  # measured: 27 -> 46


def test_sharpening_is_the_servers_choice_and_off_by_default() -> None:
    assert RecognitionSettings().sharpen_blurred is False
