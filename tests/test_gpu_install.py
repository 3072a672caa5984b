"""The GPU install, checked on a CPU box: the gpu extra's onnxruntime-gpu pin, the Dockerfile's CUDA base image and
torch's CUDA agree, and both `make run GPU=1` and the image put onnxruntime's CUDA build in place of the CPU one."""

from __future__ import annotations

import configparser
import os
import re
import subprocess

import pytest
from dockerfile_parse import DockerfileParser

from tests.helpers import REPO

# CUDA major each onnxruntime-gpu release on PyPI is built for, read off its wheel
# (onnxruntime/capi/libonnxruntime_providers_cuda.so needs libcudart.so.13; its `cuda` extra wants
# nvidia-cuda-runtime~=13.0 and its `cudnn` extra nvidia-cudnn-cu13~=9.0)
ORT_GPU_CUDA_MAJOR = {"1.31.1": 13}


def gpu_extra_pin() -> str:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = [x.strip() for x in cfg["options.extras_require"]["gpu"].splitlines() if x.strip()]
    assert len(lines) == 1, lines
    match = re.fullmatch(r"onnxruntime-gpu==(\d+\.\d+\.\d+)", lines[0])
    assert match, f"the gpu extra must pin onnxruntime-gpu exactly, not {lines[0]!r}"
    return match.group(1)


def constraint(name: str) -> str | None:
    for line in (REPO / "constraints.txt").read_text().splitlines():
        pkg, _, version = line.partition("==")
        if pkg.strip().lower() == name:
            return version.strip()
    return None


def base_image_cuda() -> tuple[int, int]:
    froms = [i["value"] for i in DockerfileParser(path=str(REPO / "Dockerfile")).structure if i["instruction"] == "FROM"]
    tag = froms[0].split()[0].partition(":")[2]
    major, minor = tag.split("-")[0].split(".")[:2]
    assert "cudnn" in tag, "onnxruntime's CUDA provider needs cuDNN: use a -cudnn- base image"
    return int(major), int(minor)


def test_the_gpu_extra_pins_onnxruntime_gpu_to_the_cpu_builds_version() -> None:
    version = gpu_extra_pin()
    assert constraint("onnxruntime") == version, "the GPU and CPU builds must be the same onnxruntime release"
    assert constraint("onnxruntime-gpu") == version


def test_the_pinned_onnxruntime_gpu_is_built_for_the_base_images_cuda() -> None:
    version = gpu_extra_pin()
    assert version in ORT_GPU_CUDA_MAJOR, f"onnxruntime-gpu {version}: read its CUDA major off the wheel, add it"
    assert base_image_cuda()[0] == ORT_GPU_CUDA_MAJOR[version]


def test_torch_is_built_for_the_same_cuda() -> None:
    torch = pytest.importorskip("torch")
    assert torch.version.cuda, "the pinned torch is a CUDA build (SAM runs on the GPU)"
    assert int(torch.version.cuda.split(".")[0]) == base_image_cuda()[0]


def test_the_image_installs_the_gpu_extra_and_swaps_onnxruntime() -> None:
    runs = " ".join(i["value"] for i in DockerfileParser(path=str(REPO / "Dockerfile")).structure
                    if i["instruction"] == "RUN")
    assert re.search(r'pip install "\.\[gpu\]" -c constraints\.txt', runs)
    assert "sh scripts/use_onnxruntime.sh gpu" in runs


def test_make_gpu_1_installs_the_gpu_extra_and_swaps_onnxruntime() -> None:
    gpu = subprocess.run(["make", "-n", "-B", "setup", "GPU=1"], cwd=REPO, capture_output=True, text=True, check=True)
    assert '-e ".[test,gpu]" -c constraints.txt' in gpu.stdout
    assert "scripts/use_onnxruntime.sh gpu" in gpu.stdout
    cpu = subprocess.run(["make", "-n", "-B", "setup"], cwd=REPO, capture_output=True, text=True, check=True)
    assert '-e ".[test]" -c constraints.txt' in cpu.stdout and "use_onnxruntime.sh cpu" in cpu.stdout


def test_the_swap_script_removes_both_builds_then_installs_the_pinned_one() -> None:
    env = dict(os.environ, PIP="echo pip")  # a fake pip that prints what it is asked
    version = gpu_extra_pin()
    out = subprocess.run(["sh", "scripts/use_onnxruntime.sh", "gpu"], cwd=REPO, env=env, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert out == ["pip uninstall -y onnxruntime onnxruntime-gpu", f"pip install --no-deps onnxruntime-gpu=={version}"]
    out = subprocess.run(["sh", "scripts/use_onnxruntime.sh", "cpu"], cwd=REPO, env=env, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert out[-1] == f"pip install --no-deps onnxruntime=={version}"
    bad = subprocess.run(["sh", "scripts/use_onnxruntime.sh", "tpu"], cwd=REPO, env=env, capture_output=True)
    assert bad.returncode == 2
