"""Segmentation quality against the shared ground-truth masks: mean IoU, mean Dice, 5th percentile Dice and the
worst file per dataset.

    .venv/bin/python scripts/eval_segmentation.py ../shared/data --kind car [--limit 24] [--dataset carvana]
        [--lot 32] [--halves] [--cache /tmp/seg-cache]
    .venv/bin/python scripts/eval_segmentation.py ../shared/data --glass [--alpha-cache /tmp/x] [--half a|b]

`--glass` judges the see-through windows of type=car (models/glass.py) instead: see `glass_eval`.

Foreground is every mask pixel above 0 (Carvana masks are palette GIFs, index 1 = car) and every matte pixel
>= 0.5. Roboflow results: "visea/car-segmentation-vacre" (Roboflow Universe, CC BY 4.0).
The `lot` set is `--lot` composites of Carvana cars on real street photos with another car in view, cut out
along its parts' outline (see scripts/lot_composites.py; distractor photos: Car-Parts-Segmentation, Pasupa et al.,
2021); its truth is the pasted car only. `--halves` also reports each dataset's two fixed halves (by a hash of the file name): tune on one,
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
from lot_composites import composites
from PIL import Image

from models import car
from models.registry import DEFAULT_SEGMENTER, get_segmenter
from models.segmenters.base import as_rgb_array, postprocess
from server.config import RemovebgSettings


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


def cached_matte(seg, rgb: np.ndarray, kind: str, mirror: bool, cache: Path,  # type: ignore[no-untyped-def]
                 car_params: car.CarParams = car.CarParams()) -> np.ndarray:
    """`seg.mask(rgb, kind, mirror=mirror)` with the model's raw outputs cached under `cache`: the product's own
    post-processing (models.segmenters.base.postprocess) runs on them."""
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
    return postprocess(rgb, alpha, flipped if mirror else None, kind, car_params=car_params)


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
    parser.add_argument("--glass", action="store_true", help="evaluate the see-through windows (see glass_eval)")
    parser.add_argument("--alpha-cache", type=Path,
                        help="--glass: read/write today's type=car mattes here (<image path with / as __>.npy)")
    parser.add_argument("--half", choices=("a", "b"), help="--glass: only the even (a) or odd (b) photos / cars")
    parser.add_argument("--cached-only", action="store_true", help="--glass: skip photos without a cached matte")
    parser.add_argument("--main-car", choices=("on", "off"), default="on",
                        help="off: --kind car without the main-car choice (models/main_car.py), for before/after")
    args = parser.parse_args(argv)
    if args.glass:
        return glass_eval(args)

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
    car_params = car.CarParams(main=None) if args.main_car == "off" else car.CarParams()
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
                alpha = cached_matte(seg, as_rgb_array(image), args.kind, mirror, args.cache, car_params)
            else:
                alpha = seg.mask(image, kind=args.kind, mirror=mirror, car_params=car_params)
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


GLASS_PARTS = ("front_glass", "back_glass")
GLASS_ANGLES = ("03", "05", "07", "11", "13", "15")  # Carvana side (05, 13) and three-quarter views


def _cached_alpha(args: argparse.Namespace, seg, rel: str, rgb: np.ndarray) -> np.ndarray | None:  # noqa: ANN001
    """Today's type=car matte (float32 0-1, quantised to 8 bits like the server's), from the cache when there."""
    path = args.alpha_cache / (rel.replace("/", "__") + ".npy") if args.alpha_cache else None
    if path is not None and path.is_file():
        return np.load(path).astype(np.float32) / 255.0
    if args.cached_only:
        return None
    mirror = args.mirror == "on" or (args.mirror == "auto" and RemovebgSettings().car_mirror_pass)
    alpha8 = (seg.mask(rgb, kind="car", mirror=mirror) * 255.0 + 0.5).astype(np.uint8)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, alpha8)
    return alpha8.astype(np.float32) / 255.0


def _white_render(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Luminance (0-255) of the cut-out on white, coloured as the server colours it."""
    from models.refine import decontaminate

    colour = decontaminate(rgb, alpha)
    return _white_lum(colour, alpha)


def _white_lum(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    lum = colour.astype(np.float32) @ np.float32([0.299, 0.587, 0.114])
    return alpha * lum + (1.0 - alpha) * 255.0


def glass_eval(args: argparse.Namespace) -> int:
    """The see-through windows, three ways:

    1. glass IoU on distractors/parts.json: the predicted glass (models/glass.py's mask > 0.5) against the union of
       the `front_glass` and `back_glass` polygons, per photo with glass annotated; also with the door polygons'
       pixels ignored (the side windows are annotated as part of the doors there).
    2. backdrop-logo pixels seen through windows on Carvana side and three-quarter views (angles GLASS_ANGLES): the
       studio is fixed and only the car turns, so each angle's clean backdrop is the per-pixel median of the cars'
       photos where their ground-truth mask is 0. A car pixel (ground truth) shows the backdrop when the photo
       is within 30 (RGB distance) of that clean backdrop there. Of those, on the wall (above the floor's top row),
       *logo* pixels are where the clean backdrop's luminance is under 120 (the dark grey letters; the wall is
       ~220), *clear* ones where it is 170 or more. A logo pixel *survives* when, on the white render, it is more
       than 25 levels darker than the median render of the clear pixels of the same photo (the letters stay
       readable).
    3. Dice of the opaque body: matte >= 0.5 against the ground truth outside the predicted glass, today and with
       glass (must stay within 0.001), plus the whole silhouette's Dice for information.
    """
    import json

    import cv2

    from models import glass

    seg = None
    if not args.cached_only:
        seg = get_segmenter(args.model, args.models_dir, device=args.device, threads=args.threads,
                            precision=args.precision)
        seg.load()
    keep = (lambda i: i % 2 == 0) if args.half == "a" else (lambda i: i % 2 == 1) if args.half == "b" else (
        lambda i: True)
    # 1. glass IoU
    parts = json.loads((args.data / "distractors" / "parts.json").read_text())
    names = {c["id"]: c["name"] for c in parts["categories"]}
    by_image: dict[int, list[dict]] = defaultdict(list)
    for ann in parts["annotations"]:
        by_image[ann["image_id"]].append(ann)
    photos = [im for im in parts["images"]
              if any(names[a["category_id"]] in GLASS_PARTS for a in by_image[im["id"]])]
    ious, ious_nodoor, body_today, body_glass = [], [], [], []
    for i, im in enumerate(photos):
        if not keep(i):
            continue
        rel = f"distractors/{im['file_name']}"
        rgb = np.asarray(Image.open(args.data / rel).convert("RGB"))
        alpha = _cached_alpha(args, seg, rel, rgb)
        if alpha is None:
            continue
        truth = np.zeros(rgb.shape[:2], np.uint8)
        doors = np.zeros(rgb.shape[:2], np.uint8)
        for ann in by_image[im["id"]]:
            name = names[ann["category_id"]]
            target = truth if name in GLASS_PARTS else doors if name.endswith("_door") else None
            if target is None:
                continue
            for poly in ann["segmentation"]:
                cv2.fillPoly(target, [np.asarray(poly, np.float64).reshape(-1, 2).round().astype(np.int32)], 1)
        found = glass.find_glass(rgb, alpha)
        pred = found.mask > 0.5 if found is not None else np.zeros(rgb.shape[:2], bool)
        t = truth > 0
        ious.append(scores(pred, t)[0])
        care = ~((doors > 0) & ~t)
        ious_nodoor.append(scores(pred & care, t & care)[0])
    if ious:
        print(f"glass IoU  n={len(ious)} mean {np.mean(ious):.4f} (doors ignored {np.mean(ious_nodoor):.4f})  "
              f"median {np.median(ious):.4f}  share >= 0.5: {np.mean(np.asarray(ious) >= 0.5):.2f}", flush=True)
    # 2. logo pixels through windows, 3. body Dice
    with open(args.data / "PAIRS.tsv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh, delimiter="\t") if r["dataset"] == "carvana"]
    cars = sorted({r["object_id"] for r in rows})
    logo_total = logo_today = logo_glass = 0
    per_photo = []
    for angle in GLASS_ANGLES:
        pics = {c: f"carvana/images/{c}_{angle}.jpg" for c in cars}
        if not all((args.data / p).is_file() for p in pics.values()):
            continue
        masks = {c: read_mask(args.data / f"carvana/masks/{c}_{angle}_mask.gif") for c in cars}
        photos_rgb = {c: np.asarray(Image.open(args.data / p).convert("RGB")) for c, p in pics.items()}
        # the clean backdrop: every car's photo where its own mask is 0 (a car's own pixels are masked out anyway)
        stack = np.stack([photos_rgb[c] for c in cars]).astype(np.float32)
        stack[np.stack([masks[c] for c in cars])] = np.nan
        with np.errstate(all="ignore"):
            plate = np.nanmedian(stack, axis=0)
        del stack
        for k, car_id in enumerate(cars):
            if not keep(k):
                continue
            rgb = photos_rgb[car_id]
            alpha = _cached_alpha(args, seg, pics[car_id], rgb)
            if alpha is None:
                continue
            truth = masks[car_id]
            plate_lum = np.nan_to_num(plate, nan=255.0) @ np.float32([0.299, 0.587, 0.114])
            floor_top = int(np.argmax((np.nanmedian(plate_lum[:, :], axis=1) < 200) &
                                      (np.arange(plate_lum.shape[0]) > plate_lum.shape[0] // 3)))
            wall = np.zeros(truth.shape, bool)
            wall[:floor_top] = True
            seen = truth & ~np.isnan(plate).any(axis=2) & (
                np.linalg.norm(rgb.astype(np.float32) - np.nan_to_num(plate), axis=2) < 30)
            logo = seen & wall & (plate_lum < 120)
            clear = seen & wall & (plate_lum >= 170)
            if logo.sum() < 50 or clear.sum() < 50:
                continue
            from models.refine import decontaminate

            colour = decontaminate(rgb, alpha)
            new_alpha, new_colour = glass.see_through(rgb, alpha, colour)
            for which, (a, col) in (("today", (alpha, colour)), ("glass", (new_alpha, new_colour))):
                lum = _white_lum(col, a)
                survive = int((lum[logo] < np.median(lum[clear]) - 25).sum())
                if which == "today":
                    logo_today += survive
                else:
                    logo_glass += survive
            logo_total += int(logo.sum())
            found = glass.find_glass(rgb, alpha)
            body = ~(found.mask > 0.5) if found is not None else np.ones(truth.shape, bool)
            d_today = scores((alpha >= 0.5) & body, truth & body)[1]
            d_glass = scores((new_alpha >= 0.5) & body, truth & body)[1]
            d_full = scores(new_alpha >= 0.5, truth)[1], scores(alpha >= 0.5, truth)[1]
            body_today.append(d_today)
            body_glass.append(d_glass)
            per_photo.append((pics[car_id], int(logo.sum()), d_full))
    if logo_total:
        print(f"logo pixels through windows  photos={len(per_photo)} pixels={logo_total}  surviving on white: "
              f"today {logo_today / logo_total:.3f}, with glass {logo_glass / logo_total:.3f}", flush=True)
        print(f"body Dice (outside the glass)  today {np.mean(body_today):.5f}  with glass {np.mean(body_glass):.5f}"
              f"   whole silhouette Dice: today {np.mean([p[2][1] for p in per_photo]):.5f}, "
              f"with glass {np.mean([p[2][0] for p in per_photo]):.5f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
