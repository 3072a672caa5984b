"""Recognition with the real car segmenter on two Carvana cars: features on the car only, near views match."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from models.recognition import score_from_inliers
from models.recognition.matcher import CAR_INLIER_MIDPOINT

pytestmark = pytest.mark.slow  # the real car segmenter

CARS = ("0ce66b539f52", "0d3adbbc9a8b")


@pytest.fixture
def settings_dict(settings_dict: dict) -> dict:
    """The inliers' own calibration is what this test pins: the embedding margin (recognition.car_margin, which can
    lift a score above it) is tested in test_recognition_margin*.py."""
    return {**settings_dict, "recognition": {"car_margin": False}}


def _small_jpeg(path: Path) -> bytes:
    img = Image.open(path).convert("RGB")
    img.thumbnail((960, 960))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_two_carvana_cars_are_told_apart_from_the_car_alone(client, admin, shared_data) -> None:  # type: ignore[no-untyped-def]
    images = shared_data / "carvana" / "images"
    cid = client.post("/v1/collections", json={"name": "Stock", "object_type": "car"}, headers=admin.headers).json["id"]
    for car in CARS:
        client.put(f"/v1/collections/{cid}/objects/{car}", json={"name": car}, headers=admin.headers)
        body = {"images_b64": [base64.b64encode(_small_jpeg(images / f"{car}_{a:02d}.jpg")).decode()
                               for a in (1, 3)]}
        r = client.post(f"/v1/collections/{cid}/objects/{car}/images", json=body, headers=admin.headers)
        assert r.status_code == 200, r.json
        assert [i["status"] for i in r.json["images"]] == ["added", "added"]
        assert all(i["rating"] >= 2 for i in r.json["images"])
    between = 0
    for car in CARS:
        query = base64.b64encode(_small_jpeg(images / f"{car}_02.jpg")).decode()
        r = client.post(f"/v1/collections/{cid}/recognize", json={"image_file_b64": query, "mode": "all"},
                        headers=admin.headers)
        assert r.status_code == 200, r.json
        results = r.json["results"]
        assert results[0]["object_id"] == car and results[0]["score"] >= 0.5, results
        assert all(x["score"] < 0.5 for x in results[1:]), results
        # A car collection's scores use the car calibration (recognition.car_inlier_midpoint), times the colour
        # term (decide.py), which only lowers them: the right car's colour agrees, so its score is the inliers'.
        assert results[0]["score"] == pytest.approx(score_from_inliers(results[0]["inliers"], CAR_INLIER_MIDPOINT),
                                                    abs=0.02)
        for x in results:
            assert x["score"] <= score_from_inliers(x["inliers"], CAR_INLIER_MIDPOINT) + 1e-4
            between += 0.001 < score_from_inliers(x["inliers"], CAR_INLIER_MIDPOINT) < 0.999
        xs = [p[0] for p in results[0]["polygon"]]
        assert 0 <= min(xs) < max(xs) <= 960
    assert between, "no result scored where the car and generic calibrations differ"
