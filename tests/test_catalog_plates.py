"""Plate masking: given regions are parsed strictly and blurred; detection runs wherever a cascade is installed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from models import plates


def test_mask_blurs_only_the_region() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (120, 200, 3), dtype=np.uint8)
    out = plates.mask(rgb, [(50, 40, 150, 80), (190, 110, 400, 400)])  # the second runs off the edge
    assert out.shape == rgb.shape and (out[:40] == rgb[:40]).all() and (out[80:110] == rgb[80:110]).all()
    inside = out[40:80, 50:150].astype(int)
    assert inside.std() < rgb[40:80, 50:150].astype(int).std() / 4  # unreadable: the detail is gone
    assert not (out[110:, 190:] == rgb[110:, 190:]).all()


@pytest.mark.parametrize(("raw", "ok"), [([[1, 2, 30, 40]], True), ([], True), (None, True),
                                         ([[10, 10, 5, 20]], False), ([[1, 2, 3]], False),
                                         ([["a", 1, 2, 3]], False), ("0,0,10,10", False), ([[-1, 0, 5, 5]], False)])
def test_parse_regions(raw, ok) -> None:
    if ok:
        assert plates.parse_regions(raw) == [tuple(r) for r in raw or []]
    else:
        with pytest.raises(plates.InvalidPlateRegion):
            plates.parse_regions(raw)


def test_a_configured_cascade_that_is_missing_means_no_detector() -> None:
    assert plates.cascade_path("/nonexistent/plates.xml") is None
    assert not plates.detector_available("/nonexistent/plates.xml")
    assert plates.detect(np.zeros((100, 100, 3), np.uint8), "/nonexistent/plates.xml") == []


def test_no_detector_without_opencvs_cascade_classifier(tmp_path, monkeypatch) -> None:
    cascade = tmp_path / "plates.xml"
    cascade.write_text("<opencv_storage/>")
    monkeypatch.delattr(cv2, "CascadeClassifier", raising=False)  # as in the OpenCV 5.0 pip build
    assert plates.cascade_path(str(cascade)) == str(cascade)
    assert not plates.detector_available(str(cascade))
    assert plates.detect(np.zeros((100, 100, 3), np.uint8), str(cascade)) == []
