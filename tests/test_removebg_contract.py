"""The last gaps in the remove.bg contract (issue 13), checked against remove.bg's OpenAPI description: X-Type and
type_level, failed_to_read_image for an unreadable image of a supported type, and Retry-After only on 429.

Parameter handling runs on a FakeSegmenter (an ellipse matte); type=auto's classifier is covered in
test_foreground_type.py.
"""

from __future__ import annotations

import base64
import datetime as dt
import io

import numpy as np
import pytest
import time_machine

from server.services import removebg as service
from server.services import segmentation
from tests.fakes_removebg import FakeSegmenter, photo
from tests.helpers import assert_error_shape


@pytest.fixture
def fake_segmenter(monkeypatch):
    fake = FakeSegmenter()
    monkeypatch.setattr(segmentation, "segmenter", lambda settings: fake)
    return fake


def post(client, headers, data):
    return client.post("/v1.0/removebg", data=data, headers=headers, content_type="multipart/form-data")


def credits(client, headers) -> float:
    return client.get("/v1.0/account", headers=headers).get_json()["data"]["attributes"]["credits"]["total"]


# --- type_level ------------------------------------------------------------------------------------------------
def test_type_level_none_sends_no_x_type(client, admin, fake_segmenter) -> None:
    resp = post(client, admin.headers, {"image_file": (io.BytesIO(photo()), "a.jpg"), "type": "car",
                                        "type_level": "none"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert "X-Type" not in resp.headers
    assert resp.headers["X-Width"] == "400"  # the other headers are still there
    json_resp = client.post("/v1.0/removebg", json={"image_file_b64": base64.b64encode(photo()).decode(),
                                                    "type_level": "none"},
                            headers={**admin.headers, "Accept": "application/json"})
    assert json_resp.status_code == 200 and "X-Type" not in json_resp.headers


@pytest.mark.parametrize(("type_", "level", "expected"), [
    ("car", "1", "car"), ("car", "2", "car"), ("person", "latest", "person"),
    ("transportation", "2", "transportation"), ("transportation", "1", "other"),
    ("graphic", "2", "graphics"), ("graphic", "1", "other")])
def test_type_level_one_uses_the_coarse_classes_and_two_the_finer(client, admin, fake_segmenter, type_, level,
                                                                  expected) -> None:
    resp = post(client, admin.headers, {"image_file": (io.BytesIO(photo()), "a.jpg"), "type": type_,
                                        "type_level": level})
    assert resp.status_code == 200 and resp.headers["X-Type"] == expected


def test_reported_type_folds_the_finer_classes_at_level_one() -> None:
    assert service.reported_type("car_part", "1") == "car" and service.reported_type("car_part", "2") == "car_part"
    assert service.reported_type("car_interior", "1") == "car"
    assert service.reported_type("animal", "1") == "animal" and service.reported_type("animal", "none") is None


# --- unreadable images of a supported type -------------------------------------------------------------------
def test_jpeg_magic_with_a_body_that_does_not_decode_is_failed_to_read_image(client, admin, fake_segmenter) -> None:
    before = credits(client, admin.headers)
    broken = b"\xff\xd8\xff" + bytes(5000)
    resp = post(client, admin.headers, {"image_file": (io.BytesIO(broken), "car.jpg")})
    err = assert_error_shape(resp, 400)
    assert err["code"] == "failed_to_read_image"
    noisy = photo(300, 200)[:300] + np.random.default_rng(0).bytes(5000)
    b64 = client.post("/v1.0/removebg", json={"image_file_b64": base64.b64encode(noisy).decode()},
                      headers=admin.headers)
    assert assert_error_shape(b64, 400)["code"] == "failed_to_read_image"
    pdf = post(client, admin.headers, {"image_file": (io.BytesIO(b"%PDF-1.4 not an image"), "a.pdf")})
    assert assert_error_shape(pdf, 400)["code"] == "invalid_file_type"  # other types keep invalid_file_type
    assert credits(client, admin.headers) == before and fake_segmenter.calls == 0


# --- Retry-After -----------------------------------------------------------------------------------------------
def whole_second_ahead() -> dt.datetime:
    """A whole second a day from now (the box refuses work when its clock goes back, so travel forward only)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=1)


def test_retry_after_only_on_429_and_never_below_one_second(settings_dict) -> None:
    from server import create_app
    from tests.helpers import make_account

    settings_dict["rate_limit"] = {"default": "2 per second"}
    application = create_app(settings_dict)
    account = make_account(application, "a@dealer.example", "member")
    c = application.test_client()
    with time_machine.travel(whole_second_ahead(), tick=False) as clock:  # the window ends at +1 s
        for _ in range(2):
            ok = c.get("/v1/me", headers=account.headers)
            assert ok.status_code == 200
            assert "Retry-After" not in ok.headers and ok.headers["X-RateLimit-Limit"] == "2"
        clock.shift(0.9995)  # just before the window ends: half a millisecond left
        limited = c.get("/v1/me", headers=account.headers)
        assert assert_error_shape(limited, 429)["code"] == "rate_limit_exceeded"
        assert int(limited.headers["Retry-After"]) == 1
        clock.shift(0.001)  # the window has ended
        again = c.get("/v1/me", headers=account.headers)
        assert again.status_code == 200 and "Retry-After" not in again.headers
        assert "Retry-After" not in c.get("/livez").headers


class SlowFakeSegmenter(FakeSegmenter):
    """The ellipse fake whose work takes `seconds` on a time-machine clock (a cutout that outlasts its window)."""

    def __init__(self, clock, seconds: float) -> None:  # noqa: ANN001
        super().__init__()
        self.clock, self.seconds = clock, seconds

    def mask(self, image, kind: str = "auto", mirror: bool = False) -> np.ndarray:  # noqa: ANN001
        self.clock.shift(self.seconds)
        return super().mask(image, kind, mirror)


def test_a_request_that_outlasts_its_window_gets_no_negative_retry_after(settings_dict, monkeypatch) -> None:
    from server import create_app
    from tests.helpers import make_account

    settings_dict["rate_limit"] = {"default": "5 per second"}
    application = create_app(settings_dict)
    account = make_account(application, "a@dealer.example", "member")
    c = application.test_client()
    with time_machine.travel(whole_second_ahead(), tick=False) as clock:
        monkeypatch.setattr(segmentation, "segmenter", lambda settings: SlowFakeSegmenter(clock, 3.0))
        resp = post(c, account.headers, {"image_file": (io.BytesIO(photo()), "a.jpg")})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert "Retry-After" not in resp.headers and resp.headers["X-RateLimit-Limit"] == "5"


@pytest.mark.parametrize(("status", "given", "sent"), [(429, "0", "1"), (429, "-2", "1"), (429, "7", "7"),
                                                       (200, "-2", None), (503, "30", None)])
def test_retry_after_hook_keeps_it_on_429_only_and_at_least_one(status: int, given: str, sent: str | None) -> None:
    from flask import Response

    from server import _retry_after_on_429_only

    resp = _retry_after_on_429_only(Response("x", status=status, headers={"Retry-After": given}))
    assert resp.headers.get("Retry-After") == sent
