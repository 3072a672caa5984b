"""The pieces of scripts/gpu_check.sh that can be judged on a CPU box without minutes of inference: the per-stage
times the bench reads from /metrics, the targets against bench figures, and the script's failure exits. The whole
check runs end to end with `scripts/gpu_check.sh --cpu` (minutes: by hand, not in the suite)."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from server.services import segmentation
from tests.fakes_removebg import FakeSegmenter, photo
from tests.helpers import MODELS_DIR, REPO, load_script

CHECK = REPO / "scripts" / "gpu_check.py"


class FakeStagedSegmenter(FakeSegmenter):
    """The ellipse fake, reporting made-up segmenter stages as the real one does."""

    last_stages = {"preprocess": 0.004, "model": 0.25, "upscale": 0.002, "edges": 0.03}


def stage_sums(text: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in
            re.finditer(r'^forecourt_removebg_stage_seconds_sum\{stage="(\w+)"\} ([0-9.e+-]+)$', text, re.M)}


def test_each_stage_of_a_cutout_is_timed_in_the_metrics(client, admin, monkeypatch) -> None:
    monkeypatch.setattr(segmentation, "segmenter", lambda settings: FakeStagedSegmenter())
    before = stage_sums(client.get("/metrics").get_data(as_text=True))
    resp = client.post("/v1.0/removebg", headers=admin.headers, content_type="multipart/form-data",
                       data={"image_file": (io.BytesIO(photo(1200, 800)), "car.jpg"), "size": "full",
                             "format": "png"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    after = stage_sums(client.get("/metrics").get_data(as_text=True))
    grew = {k for k in after if after[k] > before.get(k, 0.0)}
    assert {"decode", "resize", "preprocess", "model", "upscale", "edges", "compose", "encode"} <= grew
    assert after["model"] - before.get("model", 0.0) == pytest.approx(0.25)


def bench_json(path: Path, levels: list[tuple[int, float, float, float, float]]) -> Path:
    """A bench --json file: (clients, images/s, p95 s, request ms, model ms) per level."""
    path.write_text(json.dumps({"levels": [
        {"clients": c, "images": 32, "images_per_s": ips, "p50_s": p95 / 2, "p95_s": p95,
         "stage_ms": {"model": model, "encode": 5.0}, "served_ms": served} for c, ips, p95, served, model in levels]}))
    return path


def targets(tmp_path: Path, auto, car, *flags: str) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    return subprocess.run([sys.executable, str(CHECK), "targets", str(bench_json(tmp_path / "auto.json", auto)),
                           str(bench_json(tmp_path / "car.json", car)), *flags], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def test_targets_pass_when_the_gpu_figures_are_met(tmp_path: Path) -> None:
    out = targets(tmp_path, [(1, 12.0, 0.1, 80, 20), (8, 35.0, 0.2, 90, 20), (32, 45.0, 0.9, 100, 30)],
                  [(32, 22.0, 1.5, 200, 60)])
    assert out.returncode == 0, out.stdout
    assert out.stdout.count("PASS") == 3 and "FAIL" not in out.stdout


def test_targets_fail_when_a_gpu_figure_is_missed(tmp_path: Path) -> None:
    out = targets(tmp_path, [(8, 30.0, 0.3, 90, 20), (32, 39.0, 0.9, 100, 30)], [(32, 22.0, 1.5, 200, 60)])
    assert out.returncode == 1
    assert re.search(r"type=auto images/s at concurrency 32 +39\.00 .*FAIL", out.stdout)
    assert re.search(r"type=auto p95 at concurrency 8 +300 ms .*FAIL", out.stdout)


def test_cpu_mode_shows_the_cpu_figure_and_does_not_judge_its_dry_run(tmp_path: Path) -> None:
    slow_but_lean = [(1, 0.5, 3.0, 2000, 1900), (8, 0.6, 20.0, 2000, 1900), (32, 0.6, 60.0, 2000, 1900)]
    out = targets(tmp_path, slow_but_lean, [(8, 0.3, 30.0, 4000, 3800)], "--cpu")
    assert out.returncode == 0, out.stdout
    assert re.search(r"time outside the model at concurrency 1 +5\.0% .*within \(dry run", out.stdout)
    assert "FAIL" not in out.stdout and out.stdout.count("n/a here") == 3
    heavy = [(1, 0.5, 3.0, 2000, 1500)]  # 25% outside the model
    out = targets(tmp_path, heavy, [], "--cpu")
    assert out.returncode == 0 and re.search(r"25\.0% .*over \(dry run: see make bench\)", out.stdout)


def test_the_check_fails_without_the_photos(tmp_path: Path) -> None:
    out = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--cpu", str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "no Carvana photos" in out.stdout


def test_gpu_mode_fails_on_this_cpu_box_at_the_device_step(shared_data: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    out = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), str(shared_data)], cwd=REPO,
                         capture_output=True, text=True, timeout=300,
                         env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})
    assert out.returncode == 1
    assert "onnxruntime providers:" in out.stdout and "FAIL: devices" in out.stdout
    assert "GPU vs CPU masks" not in out.stdout  # it stops at the first failure


def lite0_step(shared_data: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECK), "lite0", str(shared_data), "--photos", "2", *flags], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "FORECOURT_MODELS__DIR": str(MODELS_DIR),
                               "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})


def test_the_lite0_step_fails_on_this_cpu_box_in_gpu_mode_and_says_why(shared_data: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("torch sees a GPU here")
    out = lite0_step(shared_data)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert "FAIL: EfficientNet-Lite0 cannot run on cuda" in out.stdout and "torch sees no CUDA device" in out.stdout


@pytest.mark.slow
def test_the_lite0_step_passes_in_cpu_mode_with_its_figures(shared_data: Path) -> None:
    out = lite0_step(shared_data, "--cpu")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "type=auto decisions over 2 photos: 2 the same" in out.stdout
    assert re.search(r"car embedding against the CPU's over 3 crops: mean cosine 1\.0+, worst 1\.0+", out.stdout)
    assert re.search(r"car embedding per photo: second CPU instance [0-9.]+ ms median", out.stdout)


@pytest.mark.slow
def test_the_lite0_step_fails_when_the_network_is_not_on_cuda(shared_data: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """The GPU branch judges where the network really is, not what the plan said."""
    from models import foreground
    from models.device import DevicePlan

    monkeypatch.setattr(foreground, "_instances", {})
    monkeypatch.setattr(foreground, "torch_plan", lambda dev, what: DevicePlan(dev, "cpu"))  # a plan that lies
    monkeypatch.setenv("FORECOURT_MODELS__DIR", str(MODELS_DIR))
    gpu_check = load_script("gpu_check")
    assert gpu_check.lite0_check(shared_data, cpu=False, photos=2) == 1
    assert "FAIL: EfficientNet-Lite0 is on cpu, not CUDA" in capsys.readouterr().out
