"""Segmentation quality against the shared ground-truth masks: mean IoU, mean Dice and the worst file per dataset.

    .venv/bin/python scripts/eval_segmentation.py ../shared/data --kind car [--limit 24] [--dataset carvana]

Foreground is every mask pixel above 0 (Carvana masks are palette GIFs, index 1 = car) and every matte pixel
>= 0.5. Roboflow results: "visea/car-segmentation-vacre" (Roboflow Universe, CC BY 4.0).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.registry import DEFAULT_SEGMENTER, get_segmenter  # noqa: E402
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
            image = Image.open(args.data / row["image"])
            image.load()
            truth = read_mask(args.data / row["mask"])
            start = time.perf_counter()
            alpha = seg.mask(image, kind=args.kind, mirror=mirror)
            elapsed = (time.perf_counter() - start) * 1000
            pred = alpha >= 0.5
            if pred.shape != truth.shape:
                truth = np.asarray(Image.fromarray(truth).resize(pred.shape[::-1], Image.Resampling.NEAREST))
            iou, dice = scores(pred, truth)
            results.append((dice, iou, row["image"], elapsed))
            per_image.append({"dataset": dataset, "image": row["image"], "iou": f"{iou:.5f}", "dice": f"{dice:.5f}",
                              "ms": f"{elapsed:.0f}"})
        dice_mean = float(np.mean([r[0] for r in results]))
        iou_mean = float(np.mean([r[1] for r in results]))
        worst = min(results)
        ms = float(np.median([r[3] for r in results]))
        print(f"{dataset:<10} n={len(results):<4} kind={args.kind:<5} mean IoU {iou_mean:.4f}  mean Dice {dice_mean:.4f}  "
              f"worst {worst[2]} (Dice {worst[0]:.4f})  median {ms:.0f} ms/image", flush=True)
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=["dataset", "image", "iou", "dice", "ms"])
            writer.writeheader()
            writer.writerows(per_image)
    return 0


if __name__ == "__main__":
    sys.exit(main())
