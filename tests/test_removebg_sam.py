"""Prompted segmentation: POST /v1/segment and removebg's refine=sam, on segment-anything's real predictor code
with a tiny randomly initialised checkpoint (the official ones are installed by hand; without one: 503)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models import sam as sam_module
from server.services import segmentation
from tests.fakes_removebg import FakeSegmenter, photo
from tests.fakes_sam import RecordingSam, save_tiny_sam, tiny_sam
from tests.helpers import assert_error_shape


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_sam(tmp_path_factory.mktemp("sam"))


@pytest.fixture
def installed_sam(checkpoint: Path, monkeypatch) -> RecordingSam:
    sam = RecordingSam(checkpoint, tiny_sam, device="cpu", name="sam-tiny")
    monkeypatch.setattr(sam_module, "get_sam", lambda *a, **kw: sam)
    return sam


def credits(client, headers) -> float:
    return client.get("/v1.0/account", headers=headers).get_json()["data"]["attributes"]["credits"]["total"]


def test_segment_returns_the_mask_at_the_image_size(client, admin, installed_sam) -> None:
    b64 = base64.b64encode(photo(200, 150)).decode()
    resp = client.post("/v1/segment", json={"image_file_b64": b64, "points": [[60, 40], [150, 120]],
                                            "labels": [1, 0], "box": [20, 10, 180, 140]}, headers=admin.headers)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    mask = np.asarray(Image.open(io.BytesIO(resp.data)))
    assert resp.mimetype == "image/png" and mask.shape == (150, 200)
    assert set(np.unique(mask)) <= {0, 255} and 0 < (mask == 255).sum() < mask.size
    assert (resp.headers["X-Width"], resp.headers["X-Height"]) == ("200", "150")
    form = client.post("/v1/segment", data={"image_file": (io.BytesIO(photo(200, 150)), "a.jpg"),
                                            "points": "[[60, 40]]"}, headers=admin.headers,
                       content_type="multipart/form-data")
    assert form.status_code == 200
    assert installed_sam.prompts[-1]["points"] == [[60, 40]]


@pytest.mark.parametrize(("prompt", "fragment"), [
    ({"points": [[500, 40]], "labels": [1]}, "inside"),
    ({"points": [[10, 10]], "labels": [2]}, "labels"),
    ({"box": [50, 50, 10, 10]}, "box"),
    ({"points": "not json"}, "JSON"),
])
def test_segment_refuses_bad_prompts(client, admin, installed_sam, prompt, fragment) -> None:
    body = {"image_file_b64": base64.b64encode(photo(200, 150)).decode(), **prompt}
    err = assert_error_shape(client.post("/v1/segment", json=body, headers=admin.headers), 400)
    assert err["code"] == "invalid_prompt" and fragment in err["detail"]


def test_refine_sam_uses_the_matte_box_and_the_callers_points(client, admin, installed_sam, monkeypatch) -> None:
    monkeypatch.setattr(segmentation, "segmenter", lambda settings: FakeSegmenter())
    before = credits(client, admin.headers)
    resp = client.post("/v1.0/removebg", data={"image_file": (io.BytesIO(photo(400, 300)), "a.jpg"),
                                               "refine": "sam", "refine_points": "[[0.5, 0.5, 1], [0.02, 0.02, 0]]"},
                       headers=admin.headers, content_type="multipart/form-data")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    prompt = installed_sam.prompts[-1]
    assert prompt["box"] == pytest.approx([100, 75, 300, 225], abs=2)  # the ellipse's box at preview size
    assert prompt["labels"] == [1, 0]
    assert prompt["points"][0] == pytest.approx([199.5, 149.5]) and prompt["points"][1] == pytest.approx([7.98, 5.98])
    assert credits(client, admin.headers) == pytest.approx(before - 0.25)
    bad = client.post("/v1.0/removebg", data={"image_file": (io.BytesIO(photo()), "a.jpg"),
                                              "refine_points": "[[2, 0.5, 1]]"},
                      headers=admin.headers, content_type="multipart/form-data")
    assert assert_error_shape(bad, 400)["code"] == "invalid_refine_points"


def test_refine_sam_without_a_checkpoint_is_503_and_free(client, admin, monkeypatch) -> None:
    fake = FakeSegmenter()
    monkeypatch.setattr(segmentation, "segmenter", lambda settings: fake)
    before = credits(client, admin.headers)
    resp = client.post("/v1.0/removebg", data={"image_file": (io.BytesIO(photo()), "a.jpg"), "refine": "sam"},
                       headers=admin.headers, content_type="multipart/form-data")
    err = assert_error_shape(resp, 503)
    assert err["code"] == "sam_not_installed" and "forecourt models install sam-vit-b" in err["detail"]
    assert credits(client, admin.headers) == before and fake.calls == 0
