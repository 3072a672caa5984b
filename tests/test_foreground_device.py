"""EfficientNet-Lite0 (type=auto's classifier and recognition's car embedding) follows `[models] device`: built for
"cpu" it answers exactly as before; its inputs follow the network to its device; its placement warns on a (fake) GPU
box that torch cannot use and is an error for `device="cuda"` without CUDA. The weights here are a random network
saved to a temporary folder with its own manifest entry (fast); the real ones are compared in the report by hand."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from core.files import sha256_file
from models import device, foreground
from models.device import DevicePlan
from models.manifest import EFFICIENTNET_LITE0, ModelFile
from models.placement import classifier_placement
from models.recognition import car_embedding
from tests.helpers import MODELS_DIR, REPO

REAL_CAR_EMBEDDER_LOAD = car_embedding.CarEmbedder.load  # conftest stubs it out of fast tests: these use tiny weights


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A random Lite0 network's weights and a manifest entry pinning them."""
    import torch

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("lite0")
    path = folder / EFFICIENTNET_LITE0.files[0].name
    torch.save(foreground._build_network().state_dict(), path)
    spec = replace(EFFICIENTNET_LITE0, files=(ModelFile(path.name, sha256_file(path), path.stat().st_size),))
    return folder, spec


@pytest.fixture(autouse=True)
def fresh_instances(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(foreground, "_instances", {})
    monkeypatch.setattr(car_embedding, "_instances", {})
    monkeypatch.setattr(car_embedding.CarEmbedder, "load", REAL_CAR_EMBEDDER_LOAD)


@pytest.fixture
def fake_gpu_box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An NVIDIA driver file, and a torch that cannot use it (a CPU build, as on this box)."""
    driver = tmp_path / "nvidia-version"
    driver.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06  (fake)\n")
    monkeypatch.setattr(device, "NVIDIA_DRIVER", driver)
    monkeypatch.setattr(device, "torch_cuda_available", lambda: False)


def rgb_photo(h: int = 300, w: int = 420) -> np.ndarray:
    rng = np.random.default_rng(7)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    img[80:220, 100:330] = (200, 30, 30)
    return img


def reference_outputs(folder: Path, spec, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """The probabilities and the trunk's pooled vector as the code computed them before the device: on the CPU."""
    import torch
    from torch.nn import functional as F

    net = foreground._build_network()
    state = torch.load(spec.path(folder), map_location="cpu", weights_only=True)
    net.load_state_dict({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")})
    net.eval()
    with torch.inference_mode():
        probs = torch.softmax(net(torch.from_numpy(foreground.views(rgb))), dim=1).mean(dim=0).numpy()
        import cv2

        img = cv2.resize(rgb.astype(np.float32) / 255.0, (224, 224), interpolation=cv2.INTER_AREA)
        x = torch.from_numpy(np.ascontiguousarray(((img - 127 / 255) / (128 / 255)).transpose(2, 0, 1)))[None]
        h = F.relu6(net._bn0(net._conv_stem(x)))
        for block in net._blocks:
            h = block(h)
        vec = h.mean(dim=(2, 3)).reshape(-1).numpy()
    return probs, vec / np.linalg.norm(vec)


@pytest.mark.parametrize("dev", ["cpu", "auto"])
def test_on_the_cpu_the_answers_are_the_same_bit_for_bit(tiny_weights, dev: str) -> None:
    if dev == "auto" and device.torch_cuda_available():
        pytest.skip("torch sees a GPU here: auto is cuda")
    folder, spec = tiny_weights
    rgb = rgb_photo()
    clf = foreground.ForegroundClassifier(folder, spec, device=dev)
    emb = car_embedding.CarEmbedder(folder, classifier=clf)
    probs, vec = reference_outputs(folder, spec, rgb)
    assert np.array_equal(clf.probabilities(rgb), probs)
    assert np.allclose(emb.embed(rgb), vec, atol=1e-6)  # the normalisation's float32 rounding
    assert clf.plan == DevicePlan(dev, "cpu") and foreground.net_device(clf.network()).type == "cpu"
    assert clf.classify(rgb) == foreground.decide(probs, clf.params)


def test_one_instance_per_folder_and_device_and_the_embedder_shares_its_network(tmp_path: Path) -> None:
    assert foreground.get_classifier(tmp_path, "cpu") is foreground.get_classifier(tmp_path, "cpu")
    assert foreground.get_classifier(tmp_path, "cpu") is not foreground.get_classifier(tmp_path, "auto")
    assert car_embedding.get_car_embedder(tmp_path, "cuda").device == "cuda"
    assert foreground.loaded_classifier(tmp_path, "cpu") is None  # made, not loaded: nothing to report yet


def test_the_inputs_follow_the_network_to_its_device(tiny_weights, monkeypatch: pytest.MonkeyPatch) -> None:
    """A network on another device (torch's "meta", standing in for CUDA here) is fed inputs on that device: a
    mismatch would raise in the first convolution; only copying the answer back fails on meta, which has no data."""
    folder, spec = tiny_weights
    monkeypatch.setattr(foreground, "torch_plan", lambda dev, what: DevicePlan(dev, "meta"))
    clf = foreground.ForegroundClassifier(folder, spec, device="cuda")
    seen: list[str] = []
    clf.network()._conv_stem.register_forward_pre_hook(lambda module, args: seen.append(args[0].device.type))
    assert foreground.net_device(clf.network()).type == "meta"
    with pytest.raises(NotImplementedError, match="meta"):
        clf.probabilities(rgb_photo())
    with pytest.raises(NotImplementedError, match="meta"):
        car_embedding.CarEmbedder(folder, classifier=clf).embed(rgb_photo())
    assert seen == ["meta", "meta"]


def test_device_cuda_without_cuda_refuses_to_load(tiny_weights, monkeypatch: pytest.MonkeyPatch) -> None:
    from models.errors import DeviceUnavailable

    monkeypatch.setattr(device, "torch_cuda_available", lambda: False)
    folder, spec = tiny_weights
    with pytest.raises(DeviceUnavailable, match="torch sees no CUDA device"):
        foreground.ForegroundClassifier(folder, spec, device="cuda").load()


# --- placement --------------------------------------------------------------------------------------------------
def test_a_gpu_box_torch_cannot_use_is_a_warning(fake_gpu_box) -> None:
    place = classifier_placement(MODELS_DIR, "auto")
    assert place.model == "efficientnet-lite0" and place.runs_on == "cpu" and place.error is None
    assert "NVIDIA GPU" in place.warning and "EfficientNet-Lite0 (type=auto and recognition's car embedding) runs " \
        "on the CPU" in place.warning
    assert classifier_placement(MODELS_DIR, "cpu") == type(place)("efficientnet-lite0", "cpu")  # asked for: quiet


def test_device_cuda_without_cuda_is_an_error(fake_gpu_box) -> None:
    place = classifier_placement(MODELS_DIR, "cuda")
    assert place.runs_on == "nothing" and "EfficientNet-Lite0" in place.error and "torch sees no CUDA" in place.error


def test_a_loaded_classifier_reports_where_it_runs(tiny_weights, fake_gpu_box, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    folder, spec = tiny_weights
    clf = foreground.ForegroundClassifier(folder, spec, device="auto")
    monkeypatch.setitem(foreground._instances, (str(folder.resolve()), "auto"), clf)
    clf.load()
    place = classifier_placement(folder, "auto")
    assert place.runs_on == "cpu" and "torch cannot use it" in place.warning


def test_not_installed_says_so(tmp_path: Path) -> None:
    assert classifier_placement(tmp_path, "cuda").runs_on == "not installed"


def test_a_box_without_a_driver_is_cpu_without_importing_torch(tmp_path: Path) -> None:
    if device.nvidia_driver() is not None:
        pytest.skip("this box has an NVIDIA driver")
    code = ("import sys; from pathlib import Path; from models.placement import classifier_placement; "
            f"p = classifier_placement(Path({str(MODELS_DIR)!r}), 'auto'); print(p.runs_on, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["cpu", "False"]
