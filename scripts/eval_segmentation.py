"""Segmentation quality against the shared ground-truth masks: mean IoU, mean Dice, 5th percentile Dice and the
worst file per dataset.

    .venv/bin/python scripts/eval_segmentation.py ../shared/data --kind car [--limit 24] [--dataset carvana]
        [--lot 32] [--halves] [--cache /tmp/seg-cache]

Foreground is every mask pixel above 0 (Carvana masks are palette GIFs, index 1 = car) and every matte pixel
>= 0.5. Roboflow results: "visea/car-segmentation-vacre" (Roboflow Universe, CC BY 4.0).
The `lot` set is `--lot` composites of Carvana cars on real street photos with another car in view (see
scripts/lot_composites.py; distractor photos: Car-Parts-Segmentation, Pasupa et al., 2021); its truth is the
pasted car only. `--halves` also reports each dataset's two fixed halves (by a hash of the file name): tune on one,
report on the other. `--cache` keeps the model's raw outputs (both passes) per image, so a second run with other
post-processing costs no model time; the ms column then times the post-processing only.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import car, refine  # noqa: E402
from models.registry import DEFAULT_SEGMENTER, get_segmenter  # noqa: E402
from models.segmenters.base import as_rgb_array  # noqa: E402
from scripts.lot_composites import composites  # noqa: E402
from server.config import RemovebgSettings  # noqa: E402


def read_mask(path: Path) -> np.ndarray:
    """Boolean foreground of a ground-truth mask: any raw value (palette index or level) above 0."""
    raw = np.asarray(Image.open(path))
    return raw.any(axis=2) if raw.ndim == 3 else raw > 0


def scores(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(IoU, Dice) of two boolean masks; two empty masks agree perfectly."""
    inter = np.count_nonzero(pred & truth)
    total = np.count_nonzero(pred) + np.count_nonzero(truth)
    union = total - inter
    if total == 0:
        return 1.0, 1.0
    return inter / union, 2 * inter / total


def spread(rows: list[dict], limit: int | None) -> list[dict]:
    """`limit` rows evenly spaced over the list (all of them without a limit)."""
    if not limit or limit >= len(rows):
        return rows
    picks = np.linspace(0, len(rows) - 1, limit).round().astype(int)
    return [rows[i] for i in sorted(set(picks))]


def half(name: str) -> str:
    """The fixed half ("A" or "B") a file belongs to."""
    return "AB"[hashlib.sha1(name.encode()).digest()[0] % 2]


def cached_matte(seg, rgb: np.ndarray, kind: str, mirror: bool, cache: Path) -> np.ndarray:  # type: ignore[no-untyped-def]
    """`seg.mask(rgb, kind, mirror=mirror)` with the model's raw outputs cached under `cache` (the same steps as
    Segmenter.mask: union of the passes, the car filter on their minimum, edge refinement)."""
    key = hashlib.sha1(rgb.tobytes() + f"{seg.name}|{getattr(seg, 'running_precision', '')}".encode()).hexdigest()
    path = cache / f"{key[:20]}.npz"
    if path.is_file():
        saved = np.load(path)
        alpha, flipped = saved["a"].astype(np.float32), saved["b"].astype(np.float32) if "b" in saved else None
    else:
        alpha = seg.probability(rgb)
        flipped = np.ascontiguousarray(seg.probability(np.ascontiguousarray(rgb[:, ::-1]))[:, ::-1]) if mirror \
            else None
        parts = {"a": alpha.astype(np.float16)} | ({"b": flipped.astype(np.float16)} if flipped is not None else {})
        np.savez(path, **parts)
    confidence = None
    if mirror and flipped is not None:
        confidence = np.minimum(alpha, flipped) if kind == "car" else None
        alpha = np.maximum(alpha, flipped)
    if kind == "car":
        alpha = car.keep_cars(alpha, confidence=confidence)
    return refine.refine_alpha(rgb, alpha)


def summary(results: list[tuple[float, float, str, float]]) -> str:
    """n, mean IoU, mean Dice, 5th percentile Dice and the worst file of (dice, iou, name, ms) rows."""
    dice = np.array([r[0] for r in results])
    worst = min(results)
    return (f"n={len(results):<4} mean IoU {np.mean([r[1] for r in results]):.4f}  mean Dice {dice.mean():.4f}  "
            f"p5 Dice {np.percentile(dice, 5):.4f}  worst {worst[2]} (Dice {worst[0]:.4f})  "
            f"median {np.median([r[3] for r in results]):.0f} ms/image")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="the shared data folder (holds PAIRS.tsv)")
    parser.add_argument("--kind", default="auto", help="auto, car, person, product")
    parser.add_argument("--limit", type=int, help="images per dataset, evenly spaced")
    parser.add_argument("--dataset", action="append", help="only this dataset (repeatable)")
    parser.add_argument("--model", default=DEFAULT_SEGMENTER)
    parser.add_argument("--models-dir", type=Path,
                        default=Path(os.environ.get("FORECOURT_TEST_MODELS_DIR", "var/models")))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--precision", default="auto", help="auto, int8, fp32, fp16")
    parser.add_argument("--csv", type=Path, help="write one row per image here")
    parser.add_argument("--mirror", choices=("auto", "on", "off"), default="auto",
                        help="second, mirrored model pass; auto = what the server does ([removebg] car_mirror_pass "
                        "for --kind car, off otherwise)")
    parser.add_argument("--lot", type=int, default=32, help="lot-photo composites (0: none)")
    parser.add_argument("--halves", action="store_true", help="also report each dataset's halves A and B")
    parser.add_argument("--cache", type=Path, help="cache the model's raw outputs in this folder")
    args = parser.parse_args(argv)

    pairs = args.data / "PAIRS.tsv"
    if not pairs.is_file():
        parser.error(f"{pairs} not found")
    with open(pairs, newline="") as fh:
        rows = [r for r in csv.DictReader(fh, delimiter="\t") if r.get("mask")]
    by_dataset: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if not args.dataset or row["dataset"] in args.dataset:
            by_dataset[row["dataset"]].append(row)

    if args.lot and (not args.dataset or "lot" in args.dataset):
        by_dataset["lot"] = [{"image": name, "rgb": rgb, "truth": truth}
                             for name, rgb, truth in composites(args.data, args.lot)]
    if args.cache:
        args.cache.mkdir(parents=True, exist_ok=True)
    seg = get_segmenter(args.model, args.models_dir, device=args.device, threads=args.threads,
                        precision=args.precision)
    seg.load()
    mirror = args.mirror == "on" or (args.mirror == "auto" and args.kind == "car" and RemovebgSettings().car_mirror_pass)
    print(f"{seg.name}: precision {getattr(seg, 'running_precision', '?')}, mirror pass {'on' if mirror else 'off'}",
          flush=True)
    per_image = []
    for dataset, items in sorted(by_dataset.items()):
        results = []
        for row in spread(items, args.limit):
            if "rgb" in row:
                image, truth = row["rgb"], row["truth"]
            else:
                image = Image.open(args.data / row["image"])
                image.load()
                truth = read_mask(args.data / row["mask"])
            start = time.perf_counter()
            if args.cache:
                alpha = cached_matte(seg, as_rgb_array(image), args.kind, mirror, args.cache)
            else:
                alpha = seg.mask(image, kind=args.kind, mirror=mirror)
            elapsed = (time.perf_counter() - start) * 1000
            pred = alpha >= 0.5
            if pred.shape != truth.shape:
                truth = np.asarray(Image.fromarray(truth).resize(pred.shape[::-1], Image.Resampling.NEAREST))
            iou, dice = scores(pred, truth)
            results.append((dice, iou, row["image"], elapsed))
            per_image.append({"dataset": dataset, "image": row["image"], "iou": f"{iou:.5f}", "dice": f"{dice:.5f}",
                              "ms": f"{elapsed:.0f}"})
        print(f"{dataset:<10} kind={args.kind:<5} {summary(results)}", flush=True)
        if args.halves:
            for name in "AB":
                part = [r for r in results if half(r[2]) == name]
                if part:
                    print(f"{dataset + ' ' + name:<10} kind={args.kind:<5} {summary(part)}", flush=True)
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["dataset", "image", "iou", "dice", "ms"])
            writer.writeheader()
            writer.writerows(per_image)
    return 0


if __name__ == "__main__":
    sys.exit(main())
