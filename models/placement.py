"""Where each model runs (an onnxruntime provider or a torch device), for the log at start, /readyz, the System
page and `forecourt models list`: a GPU box that would run a model on the CPU says so in all four."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.device import CPU_PROVIDER, nvidia_driver, onnx_plan, torch_plan
from models.errors import DeviceUnavailable, ModelError
from models.manifest import get_spec
from models.segmenters.base import Segmenter


@dataclass(frozen=True)
class Placement:
    """One model: what it runs on, a warning when a GPU on the box goes unused, an error when `device="cuda"`
    cannot be honoured."""

    model: str
    runs_on: str
    warning: str | None = None
    error: str | None = None


def segmenter_placement(seg: Segmenter) -> Placement:
    """The segmenter's provider: the loaded session's when loaded, else the plan (with the CUDA provider started
    on a one-layer graph, so a provider that cannot load is caught before the first request)."""
    if seg.loaded and seg.provider:
        precision = getattr(seg, "running_precision", None)
        runs_on = f"{seg.provider} ({precision})" if precision else seg.provider
        return Placement(seg.name, runs_on, seg.plan.warning if seg.plan is not None else None)
    try:
        plan = onnx_plan(seg.device)
    except DeviceUnavailable as exc:
        return Placement(seg.name, "nothing", error=exc.detail)
    if plan.on_cuda:
        from models.device import cuda_provider_error

        problem = cuda_provider_error()
        if problem:
            detail = (f"{seg.name}: onnxruntime offers CUDAExecutionProvider but could not start it ({problem}), so "
                      f"it would run on {CPU_PROVIDER}; run scripts/gpu_check.sh to see why")
            if seg.device == "cuda":
                return Placement(seg.name, "nothing", error=detail)
            return Placement(seg.name, CPU_PROVIDER, warning=detail)
    return Placement(seg.name, plan.providers[0], plan.warning)


def sam_placement(name: str, models_dir: Path, device: str) -> Placement:
    """SAM's torch device; torch is imported only when the box has an NVIDIA driver or `device="cuda"`."""
    return _torch_placement(name, models_dir, device, "Segment Anything")


def classifier_placement(models_dir: Path, device: str) -> Placement:
    """EfficientNet-Lite0's torch device (type=auto's classifier and recognition's car embedding): the loaded
    network's when this process has loaded it, else the plan; torch is imported as for SAM."""
    from models import foreground

    clf = foreground.loaded_classifier(models_dir, device)
    if clf is not None and clf.plan is not None:
        return Placement(clf.name, clf.plan.device, clf.plan.warning)
    return _torch_placement(foreground.EFFICIENTNET_LITE0.name, models_dir, device, foreground.WHAT)


def _torch_placement(name: str, models_dir: Path, device: str, what: str) -> Placement:
    try:
        spec = get_spec(name)
    except ModelError as exc:
        return Placement(name, "nothing", error=exc.detail)
    if not spec.path(Path(models_dir)).is_file():
        return Placement(name, "not installed")
    if device == "auto" and nvidia_driver() is None:
        return Placement(name, "cpu")
    try:
        plan = torch_plan(device, what=what)
    except DeviceUnavailable as exc:
        return Placement(name, "nothing", error=f"{what}: {exc.detail}")
    return Placement(name, plan.device, plan.warning)


def main(argv: list[str] | None = None) -> int:
    """`python -m models.placement`: print where each model runs; exit 1 when `--device cuda` cannot be honoured or,
    with `--require-gpu`, when the segmenter would not run on CUDA (gpu_check.sh and `forecourt serve` use it)."""
    import argparse

    from models.registry import DEFAULT_SEGMENTER, get_segmenter

    parser = argparse.ArgumentParser(description=main.__doc__.splitlines()[0] if main.__doc__ else None)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--models-dir", type=Path, default=Path("var/models"))
    parser.add_argument("--segmenter", default=DEFAULT_SEGMENTER)
    parser.add_argument("--sam", default="sam-vit-b")
    parser.add_argument("--require-gpu", action="store_true")
    args = parser.parse_args(argv)
    seg = segmenter_placement(get_segmenter(args.segmenter, args.models_dir, device=args.device))
    rows = [seg, sam_placement(args.sam, args.models_dir, args.device),
            classifier_placement(args.models_dir, args.device)]
    failed = False
    for p in rows:
        print(f"{p.model}: runs on {p.runs_on}")
        if p.warning:
            print(f"warning: {p.warning}")
        if p.error:
            print(f"error: {p.error}")
            failed = True
    if args.require_gpu and not seg.runs_on.startswith("CUDA"):
        print(f"error: {seg.model} would run on {seg.runs_on}, not CUDAExecutionProvider")
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
