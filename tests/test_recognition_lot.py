"""A lot photo against studio references, with the real segmenter: a Carvana car pasted in front of a street with
another car in view, under other light, blurred and JPEG-compressed, is found among two cars' studio photos, and
the car mask recognition uses is that car's, not the other one's (features.main_subject, models/main_car.py)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from models.recognition.features import main_subject
from models.registry import get_segmenter
from tests.helpers import MODELS_DIR, paste_car
from tests.test_recognition_real import CARS, _small_jpeg

pytestmark = pytest.mark.slow  # the real car segmenter

W, H = 1024, 683


def lot_photo(shared_data: Path, car: str) -> tuple[bytes, np.ndarray, np.ndarray]:
    """(JPEG, RGB, truth): `car` pasted at 70% of the frame's width, low, in front of an out-of-focus street with
    another car (a distractor photo) further back, sharper, at the left; warmer and darker light over it all, a little
    blur, JPEG quality 60."""
    street = np.asarray(Image.open(shared_data / "distractors" / "car4.jpg").convert("RGB"))
    canvas = cv2.GaussianBlur(cv2.resize(street, (W, H)), (0, 0), 8).astype(np.float32)
    other = np.asarray(Image.open(shared_data / "distractors" / "car42.jpg").convert("RGB"))
    canvas[40:280, 0:240] = cv2.resize(other, (240, 240), interpolation=cv2.INTER_AREA)
    rgb = np.asarray(Image.open(shared_data / "carvana" / "images" / f"{car}_02.jpg").convert("RGB"))
    mask = np.asarray(Image.open(shared_data / "carvana" / "masks" / f"{car}_02_mask.gif")) > 0
    truth = paste_car(canvas, rgb, mask, int(0.7 * W), 280, 40)
    lin = (canvas / 255.0) ** 2.2 * np.array([1.15, 1.0, 0.85], np.float32) * 0.8  # warmer, darker light
    photo = cv2.GaussianBlur(np.clip(lin ** (1 / 2.2) * 255 + 0.5, 0, 255).astype(np.uint8), (0, 0), 0.8)
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "JPEG", quality=60)
    data = buf.getvalue()
    return data, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), truth


def test_a_lot_photo_is_found_among_studio_references_and_its_main_car_is_picked(  # type: ignore[no-untyped-def]
        client, admin, shared_data: Path) -> None:
    car = CARS[0]
    data, photo, truth = lot_photo(shared_data, car)
    seg = get_segmenter("isnet-general", MODELS_DIR, device="cpu", threads=2)
    picked = main_subject(seg.mask(photo, kind="car"))
    assert 2 * (picked & truth).sum() / (picked.sum() + truth.sum()) > 0.9
    assert not picked[60:260, 0:220].any()  # the car further back at the left is not this photo's car

    images = shared_data / "carvana" / "images"
    cid = client.post("/v1/collections", json={"name": "Stock", "object_type": "car"}, headers=admin.headers).json["id"]
    for ref in CARS:
        client.put(f"/v1/collections/{cid}/objects/{ref}", json={"name": ref}, headers=admin.headers)
        body = {"images_b64": [base64.b64encode(_small_jpeg(images / f"{ref}_{a:02d}.jpg")).decode() for a in (1, 3)]}
        assert client.post(f"/v1/collections/{cid}/objects/{ref}/images", json=body,
                           headers=admin.headers).status_code == 200
    r = client.post(f"/v1/collections/{cid}/recognize",
                    json={"image_file_b64": base64.b64encode(data).decode(), "mode": "all"}, headers=admin.headers)
    assert r.status_code == 200, r.json
    results = r.json["results"]
    assert results[0]["object_id"] == car and results[0]["score"] >= 0.5, results
    assert all(x["score"] < 0.5 for x in results[1:]), results
    cx, cy = np.mean(np.array(results[0]["polygon"]), axis=0)
    ys, xs = np.nonzero(truth)
    assert xs.min() <= cx <= xs.max() and ys.min() <= cy <= ys.max()
