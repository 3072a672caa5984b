"""The real IS-Net segmenter on real photos (model from FORECOURT_TEST_MODELS_DIR, fetched by `make weights`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from models.car import CarParams
from models.errors import InvalidKind, ModelCorrupt, ModelMissing
from models.manifest import ISNET_GENERAL
from models.registry import clear_segmenters, get_segmenter, model_status
from models.segmenters.base import Segmenter, postprocess
from tests.helpers import MODELS_DIR, REPO

ROBOFLOW = "roboflow/images/75538664-compact-suv-car-side-view_png.rf.6e957397c436e2062f716bf82374077f.png"
CARVANA = "carvana/images/0d3adbbc9a8b_05.jpg"  # side view: the backdrop letters lean on the roof


def truth_for(shared_data: Path, image: str) -> np.ndarray:
    mask = next((shared_data / Path(image).parent.parent / "masks").glob(Path(image).stem + "*"))
    raw = np.asarray(Image.open(mask))
    return raw.any(axis=2) if raw.ndim == 3 else raw > 0


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    return 2 * float((pred & truth).sum()) / float(pred.sum() + truth.sum())


@pytest.fixture(scope="module")
def segmenter():
    seg = get_segmenter("isnet-general", MODELS_DIR, device="cpu", threads=2)
    seg.load()
    return seg


@pytest.mark.slow
def test_mask_of_a_small_real_photo(segmenter, shared_data: Path) -> None:
    image = Image.open(shared_data / ROBOFLOW)
    alpha = segmenter.mask(image)
    assert alpha.dtype == np.float32 and alpha.shape == (image.height, image.width)
    assert 0.0 <= alpha.min() and alpha.max() <= 1.0
    assert dice(alpha >= 0.5, truth_for(shared_data, ROBOFLOW)) > 0.85
    assert segmenter.last_inference_ms > 0 and segmenter.last_model_ms <= segmenter.last_inference_ms
    assert get_segmenter("isnet-general", MODELS_DIR, device="cpu", threads=2) is segmenter
    # RGBA and palette inputs give the same matte as RGB
    assert np.array_equal(segmenter.mask(image.convert("RGBA")), alpha)


@pytest.mark.slow
def test_kind_car_removes_the_backdrop_logo_and_keeps_the_car(segmenter, shared_data: Path) -> None:
    image = Image.open(shared_data / CARVANA)
    truth = truth_for(shared_data, CARVANA)
    general = segmenter.mask(image, kind="auto") >= 0.5
    car_only = segmenter.mask(image, kind="car") >= 0.5
    far = ~(cv2.dilate(truth.astype(np.uint8), np.ones((41, 41), np.uint8)) > 0)  # > 20 px from the car
    assert (general & far).sum() > 0.01 * truth.size, "the general matte keeps the logo letters"
    assert (car_only & far).sum() < 0.1 * (general & far).sum(), "kind=car drops the letters"
    assert dice(car_only, truth) > 0.97
    assert dice(car_only, truth) > dice(general, truth) + 0.02


WRAPPED = "roboflow/images/im8_png.rf.358f5f736074bd17a4edc4d0ed9f61df.png"  # a white car wrapped in black triangles


@pytest.mark.slow
def test_mirror_pass_is_the_union_of_both_views_and_recovers_a_missed_door(segmenter, shared_data: Path) -> None:
    image = np.asarray(Image.open(shared_data / WRAPPED).convert("RGB"))
    plain = segmenter.mask(image, refine_edges=False)
    both = segmenter.mask(image, refine_edges=False, mirror=True)
    assert (both >= plain).all() and (both > plain + 0.2).mean() > 0.01
    # the same union whichever way round the photo comes in
    mirrored = segmenter.mask(np.ascontiguousarray(image[:, ::-1]), refine_edges=False, mirror=True)[:, ::-1]
    assert np.allclose(both, mirrored, atol=1e-6)
    truth = truth_for(shared_data, WRAPPED)
    single_car = segmenter.mask(image, kind="car") >= 0.5
    mirror_car = segmenter.mask(image, kind="car", mirror=True) >= 0.5
    assert dice(mirror_car, truth) > dice(single_car, truth) + 0.1


@pytest.mark.slow
def test_int8_and_fp32_graphs_agree(segmenter, shared_data: Path) -> None:
    if segmenter.running_precision != "int8":
        pytest.skip(f"this CPU runs {segmenter.running_precision}: no int8 graph to compare")
    image = Image.open(shared_data / ROBOFLOW)
    fp32 = get_segmenter("isnet-general", MODELS_DIR, device="cpu", threads=2, precision="fp32")
    a, b = segmenter.mask(image) >= 0.5, fp32.mask(image) >= 0.5
    assert fp32.running_precision == "fp32"
    assert (a & b).sum() / (a | b).sum() > 0.97


def test_unknown_kind_is_refused_before_any_work(tmp_path: Path) -> None:
    seg = get_segmenter("isnet-general", tmp_path, device="cpu")
    with pytest.raises(InvalidKind) as info:
        seg.mask(Image.new("RGB", (8, 8)), kind="boat")
    assert info.value.status == 400


def test_the_service_segmenter_takes_settings_and_is_one_object_per_configuration(tmp_path: Path) -> None:
    """server.services.segmentation follows the service convention: settings passed in, no app needed; the same
    configuration gives the same (cached) segmenter, another configuration another one."""
    from server.config import Settings
    from server.services import segmentation

    settings = Settings.model_validate({"models": {"dir": str(tmp_path), "device": "cpu", "threads": 1}})
    seg = segmentation.segmenter(settings)  # outside any app context
    assert seg is segmentation.segmenter(settings.model_copy(deep=True))
    assert seg is get_segmenter("isnet-general", tmp_path, device="cpu", threads=1, batch_size=0,
                                batch_wait_ms=settings.models.batch_wait_ms)
    other = Settings.model_validate({"models": {"dir": str(tmp_path), "device": "cpu", "threads": 2}})
    assert segmentation.segmenter(other) is not seg


def test_missing_model_is_a_clear_error_and_a_status(tmp_path: Path) -> None:
    seg = get_segmenter("isnet-general", tmp_path, device="cpu")
    with pytest.raises(ModelMissing, match="forecourt models fetch isnet-general") as info:
        seg.mask(Image.new("RGB", (8, 8)))
    assert (info.value.code, info.value.status) == ("model_unavailable", 503)
    status = seg.status()
    assert status["present"] is False and status["verified"] is False and "missing" in status["error"]


def test_corrupt_model_is_a_clear_error_and_a_status(tmp_path: Path) -> None:
    (tmp_path / "isnet-medium.onnx").write_bytes(b"\0" * 1000)
    seg = get_segmenter("isnet-general", tmp_path, device="cpu")
    with pytest.raises(ModelCorrupt, match="1000 bytes") as info:
        seg.load()
    assert (info.value.code, info.value.status) == ("model_corrupt", 503)
    assert not seg.loaded
    row = next(s for s in model_status(tmp_path) if s["name"] == "isnet-general")
    assert row["present"] and not row["verified"] and row["error_code"] == "model_corrupt"
    clear_segmenters()


class _Sketch(Segmenter):
    """A model-free segmenter: a soft car-shaped blob, lopsided so that the mirrored pass differs."""

    def load(self) -> None:
        pass

    def _load(self) -> None:
        pass

    def probability(self, rgb: np.ndarray) -> np.ndarray:
        height, width = rgb.shape[:2]
        prob = np.zeros((height, width), np.float32)
        cv2.ellipse(prob, (width // 2 - 20, height // 2), (width // 3, height // 5), 0, 0, 360, 1.0, -1)
        cv2.rectangle(prob, (5, 5), (12, 40), 0.9, -1)  # a thin sign the car filter drops
        prob[:, : width // 4] *= 0.7
        return cv2.GaussianBlur(prob, (0, 0), 3) * rgb[..., 0].mean() / 255.0


def test_postprocess_on_the_raw_outputs_is_what_mask_gives(tmp_path: Path) -> None:
    """The evaluation's cache runs `postprocess` on the model's saved outputs: it must measure `mask` exactly."""
    seg = _Sketch(ISNET_GENERAL, tmp_path)
    rng = np.random.default_rng(0)
    rgb = (rng.random((300, 1400, 3)) * 80 + 150).astype(np.uint8)  # wider than the model side: edges refined
    prob = seg.probability(rgb)
    flipped = seg.probability(np.ascontiguousarray(rgb[:, ::-1]))[:, ::-1]
    for kind in ("car", "auto"):
        for mirror in (False, True):
            want = seg.mask(rgb, kind=kind, mirror=mirror)
            got = postprocess(rgb, prob.copy(), flipped.copy() if mirror else None, kind)
            assert np.array_equal(want, got), (kind, mirror)
    assert set(seg.last_stages) == {"edges"}
    seg.mask(rgb, kind="car")
    assert set(seg.last_stages) == {"car_filter", "edges"}
    no_main = postprocess(rgb, prob.copy(), None, "car", car_params=CarParams(main=None))
    assert np.array_equal(no_main, seg.mask(rgb, kind="car", car_params=CarParams(main=None)))


def test_importing_the_engine_loads_neither_torch_nor_a_model() -> None:
    code = ("import sys, models.registry, models.sam, models.device, models.cli, models.car, models.refine; "
            "print('torch' in sys.modules, 'onnxruntime' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_device_choice() -> None:
    from models.device import onnx_providers
    from models.errors import DeviceUnavailable

    assert onnx_providers("cpu") == ["CPUExecutionProvider"]
    assert onnx_providers("auto")[-1] == "CPUExecutionProvider"
    with pytest.raises(DeviceUnavailable):
        onnx_providers("tpu")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(DeviceUnavailable, match="CUDA"):
            onnx_providers("cuda")
    assert ISNET_GENERAL.name == "isnet-general"


def test_a_cached_int8_graph_is_trusted_only_with_a_matching_record(tmp_path: Path) -> None:
    import hashlib
    import json

    from models.segmenters.isnet import IsNetSegmenter

    cache = tmp_path / "isnet-medium.int8.onnx"
    cache.write_bytes(b"graph bytes")
    wanted = {"source_sha256": ISNET_GENERAL.files[0].sha256, "calibration_sha256": "c" * 64,
              "onnxruntime": "1.31.1", "onnx": "1.23.2"}
    record = tmp_path / "isnet-medium.int8.onnx.json"
    assert not IsNetSegmenter._int8_cached(cache, wanted), "no record"
    record.write_text(json.dumps({**wanted, "sha256": hashlib.sha256(b"graph bytes").hexdigest()}))
    assert IsNetSegmenter._int8_cached(cache, wanted)
    assert not IsNetSegmenter._int8_cached(cache, {**wanted, "onnxruntime": "1.32.0"}), "built by another version"
    cache.write_bytes(b"graph bytez")
    assert not IsNetSegmenter._int8_cached(cache, wanted), "file changed after it was recorded"
    record.write_text("{not json")
    assert not IsNetSegmenter._int8_cached(cache, wanted)


@pytest.mark.slow
def test_a_batched_run_gives_each_request_the_mask_it_would_get_alone(shared_data: Path) -> None:
    """The GPU's path on the CPU: a graph with a free batch dimension, two concurrent requests in one run."""
    from concurrent.futures import ThreadPoolExecutor

    alone = get_segmenter("isnet-general", MODELS_DIR, device="cpu", threads=2, precision="fp32")
    alone.load()
    batched = get_segmenter("isnet-general", MODELS_DIR, device="cpu", threads=2, precision="fp32", batch_size=2,
                            batch_wait_ms=60_000)  # only a full batch of two runs
    images = [np.asarray(Image.open(shared_data / ROBOFLOW).convert("RGB")),
              np.asarray(Image.open(shared_data / CARVANA).convert("RGB").resize((480, 320)))]
    batched.load()
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(batched.probability, images))
    assert batched._batcher is not None and batched._batcher.batches == 1
    for image, prob in zip(images, together, strict=True):
        assert np.allclose(alone.probability(image), prob, atol=1e-4)
    assert batched.provider == "CPUExecutionProvider" and batched.status()["provider"] == "CPUExecutionProvider"
    clear_segmenters()


@pytest.mark.parametrize("size", [(1280, 1918), (300, 400), (1024, 1024)])
def test_preprocess_gives_blob_from_images_values(size: tuple[int, int]) -> None:
    from models.segmenters.isnet import INPUT_SIDE, preprocess

    rgb = np.random.default_rng(7).integers(0, 256, (*size, 3), dtype=np.uint8)
    shrink = max(size) > INPUT_SIDE
    resized = cv2.resize(rgb, (INPUT_SIDE, INPUT_SIDE), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    expected = cv2.dnn.blobFromImage(resized, scalefactor=1.0 / 255.0, mean=(127.5, 127.5, 127.5), swapRB=False)
    blob = preprocess(rgb)
    assert blob.shape == (1, 3, INPUT_SIDE, INPUT_SIDE) and blob.dtype == np.float32
    assert np.abs(blob - expected).max() < 1e-6


def test_isnet_sessions_run_without_the_memory_pattern_on_the_cpu_and_cuda(tmp_path: Path, monkeypatch) -> None:
    """onnxruntime's memory pattern would allocate one more block of all a run's tensors on the second run (~600 MB a
    worker, once) while the arena keeps the first run's: IS-Net's sessions keep the arena and drop the pattern, with
    the same options on both providers (nothing here starts CUDA: the session is a fake)."""
    import onnxruntime as ort

    from models.device import CPU_PROVIDER, CUDA_PROVIDER, DevicePlan
    from models.segmenters.isnet import MEM_PATTERN, IsNetSegmenter, session_options

    options = session_options(3)
    assert MEM_PATTERN is False and options.enable_mem_pattern is False and options.enable_cpu_mem_arena is True
    assert options.intra_op_num_threads == 3 and options.inter_op_num_threads == 1
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert session_options(0, mem_pattern=True).enable_mem_pattern is True  # the old setting, for the benchmark

    made = []
    monkeypatch.setattr(ort, "InferenceSession", lambda model, opts, providers: made.append((opts, providers)))
    seg = IsNetSegmenter(ISNET_GENERAL, tmp_path, device="auto", threads=2, precision="fp32")
    monkeypatch.setattr(seg, "_graph", lambda path, precision: (b"graph", precision))
    seg._session_for(DevicePlan("cpu", "cpu", (CPU_PROVIDER,)))
    seg._session_for(DevicePlan("auto", "cuda", (CUDA_PROVIDER, CPU_PROVIDER)))
    assert [providers for _, providers in made] == [[CPU_PROVIDER], [CUDA_PROVIDER, CPU_PROVIDER]]
    for opts, _ in made:
        assert (opts.enable_mem_pattern, opts.enable_cpu_mem_arena, opts.intra_op_num_threads) == (False, True, 2)


@pytest.mark.slow
def test_the_second_and_third_mask_calls_do_not_grow_the_process(shared_data: Path) -> None:
    """RSS after calls 1-3 in a fresh process (this one has other models loaded): with the memory pattern on, the
    second call grew it by 550-620 MB (int8 and fp32); now the arena's buffers of the first call serve the rest."""
    code = f"""
import json, sys
from pathlib import Path
import numpy as np
from PIL import Image
from models.registry import get_segmenter
seg = get_segmenter("isnet-general", {str(MODELS_DIR)!r}, device="cpu", threads=2)
rgb = np.asarray(Image.open({str(shared_data / ROBOFLOW)!r}).convert("RGB"))
def rss():
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024
after = []
for _ in range(3):
    seg.mask(rgb, "car", mirror=False)
    after.append(rss())
print(json.dumps(after))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    first, second, third = json.loads(done.stdout.strip().splitlines()[-1])
    assert second - first < 150 and third - first < 150, (first, second, third)
