"""type=auto's foreground classes on real photos: how many car photos come out `car`, how many non-car photos do not.

    .venv/bin/python scripts/eval_foreground_type.py ../shared/data [--cache /tmp/fg-cache] [--limit 40]

Car photos: every image of PAIRS.tsv (carvana, roboflow), of calibration/PAIRS.tsv and of distractors/ (all cars).
Car parts: the `wheel`, `*_light` and `*_mirror` boxes of distractors/parts.json, cut out with a 15% margin (small:
most are under 100 px), and both wheels of every Carvana side view, cut from the car's mask box.
Non-car photos: scikit-image's bundled sample images (astronaut, coffee, cat, rocket and the rest that ship in its
wheel; scikit-image is a test dependency). Prints, per set, the share given each type at type_level=2 and the share
X-Type=car at the default type_level=1 (car, car_part and car_interior fold into car), then the car threshold chosen
on one half of the car photos (carvana + roboflow, or calibration + distractors) and reported on the other, both
ways round. Class probabilities are cached per file in --cache, so a second run only re-decides.

Roboflow photos: "visea/car-segmentation-vacre" (Roboflow Universe, CC BY 4.0); distractors and parts:
Car-Parts-Segmentation (Pasupa et al., 2021).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from models.foreground import ForegroundClassifier, ForegroundParams, decide
from server.services.removebg import reported_type

SKIMAGE_SAMPLES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
                   "logo", "colorwheel", "camera", "coins", "page", "text", "clock", "moon", "brick", "grass",
                   "gravel")
PART_NAMES = ("wheel", "light", "mirror")


def car_photos(data: Path) -> dict[str, list[Path]]:
    """Car photo paths by set: carvana, roboflow, calibration, distractors."""
    sets: dict[str, list[Path]] = {}
    for tsv, base in ((data / "PAIRS.tsv", data), (data / "calibration" / "PAIRS.tsv", data / "calibration")):
        if tsv.is_file():
            with open(tsv, newline="") as fh:
                for row in csv.DictReader(fh, delimiter="\t"):
                    name = "calibration" if base != data else row["dataset"]
                    sets.setdefault(name, []).append(base / row["image"])
    distractors = sorted((data / "distractors").glob("*.jpg"))
    if distractors:
        sets["distractors"] = distractors
    return sets


def part_crops(data: Path) -> list[tuple[str, np.ndarray]]:
    """(label, RGB crop) for every wheel, light and mirror box of distractors/parts.json."""
    path = data / "distractors" / "parts.json"
    if not path.is_file():
        return []
    coco = json.loads(path.read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    files = {i["id"]: i["file_name"] for i in coco["images"]}
    crops = []
    for ann in coco["annotations"]:
        name = names[ann["category_id"]]
        if not any(p in name for p in PART_NAMES):
            continue
        x, y, w, h = ann["bbox"]
        if min(w, h) < 24:
            continue
        rgb = np.asarray(Image.open(data / "distractors" / files[ann["image_id"]]).convert("RGB"))
        mx, my = 0.15 * w, 0.15 * h
        x0, y0 = max(0, int(x - mx)), max(0, int(y - my))
        x1, y1 = min(rgb.shape[1], int(x + w + mx)), min(rgb.shape[0], int(y + h + my))
        crops.append((f"{files[ann['image_id']]}:{name}:{ann['id']}", rgb[y0:y1, x0:x1]))
    return crops


def wheel_crops(data: Path, limit: int | None = None) -> list[tuple[str, np.ndarray]]:
    """(label, RGB crop) of both wheels of every Carvana side view (angles 05 and 13): the lower 45% of the car's
    mask box, its outer 35% on either side (the wheel with a little of the body around it)."""
    crops = []
    for tsv, base in ((data / "PAIRS.tsv", data), (data / "calibration" / "PAIRS.tsv", data / "calibration")):
        if not tsv.is_file():
            continue
        with open(tsv, newline="") as fh:
            rows = [r for r in csv.DictReader(fh, delimiter="\t")
                    if r["dataset"] == "carvana" and r["image"].endswith(("_05.jpg", "_13.jpg"))]
        for row in rows[:limit]:
            mask = np.asarray(Image.open(base / row["mask"]))
            mask = mask.any(axis=2) if mask.ndim == 3 else mask > 0
            ys, xs = np.nonzero(mask)
            x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
            w, h = x1 - x0, y1 - y0
            rgb = np.asarray(Image.open(base / row["image"]).convert("RGB"))
            top = int(y0 + 0.55 * h)
            for side, (a, b) in (("left", (x0, int(x0 + 0.35 * w))), ("right", (int(x1 - 0.35 * w), x1))):
                crops.append((f"{Path(row['image']).name}:{side}-wheel", rgb[top:y1 + 1, a:b + 1]))
    return crops


def skimage_samples() -> list[tuple[str, np.ndarray]]:
    """scikit-image's bundled sample photos as RGB."""
    from skimage import data as samples

    out = []
    for name in SKIMAGE_SAMPLES:
        arr = np.asarray(getattr(samples, name)())
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        out.append((name, np.ascontiguousarray(arr[..., :3]).astype(np.uint8)))
    return out


class Cache:
    """Class probabilities per (name, content hash), as .npy files in a folder."""

    def __init__(self, folder: Path | None, clf: ForegroundClassifier) -> None:
        self.folder, self.clf = folder, clf
        if folder:
            folder.mkdir(parents=True, exist_ok=True)

    def probs(self, name: str, rgb: np.ndarray) -> np.ndarray:
        key = hashlib.sha256(name.encode() + rgb.tobytes()[:: max(1, rgb.size // 65536)]).hexdigest()[:24]
        path = self.folder / f"{key}.npy" if self.folder else None
        if path is not None and path.is_file():
            return np.load(path)
        probs = self.clf.probabilities(rgb)
        if path is not None:
            np.save(path, probs)
        return probs


def report(name: str, probs: list[np.ndarray], params: ForegroundParams, *, show_misses: list[str] | None = None,
           want: str = "car") -> float:
    """Print one line for a set; returns the share with X-Type=car at type_level=1."""
    types = [decide(p, params).type for p in probs]
    fine = Counter(types)
    coarse = sum(reported_type(t, "1") == "car" for t in types) / max(len(types), 1)
    shares = ", ".join(f"{t} {n / len(types):.1%}" for t, n in fine.most_common())
    print(f"{name:<14} n={len(types):<4} X-Type=car (level 1) {coarse:6.1%} | level 2: {shares}")
    if show_misses is not None:
        misses = [f"{label} -> {t}" for label, t in zip(show_misses, types, strict=True)
                  if (reported_type(t, "1") == "car") != (want == "car")]
        for line in misses[:12]:
            print(f"    miss: {line}")
    return coarse


def best_car_min(probs: list[np.ndarray], negatives: list[np.ndarray]) -> float:
    """The car threshold that maximises car photos given car while no negative is given car (ties: the middle)."""
    grid = np.round(np.arange(0.05, 0.81, 0.05), 2)
    scores = []
    for car_min in grid:
        params = ForegroundParams(car_min=float(car_min))
        hits = sum(reported_type(decide(p, params).type, "1") == "car" for p in probs)
        false = sum(reported_type(decide(p, params).type, "1") == "car" for p in negatives)
        scores.append(hits - 1000 * false)
    best = max(scores)
    ties = [g for g, s in zip(grid, scores, strict=True) if s == best]
    return float(ties[len(ties) // 2])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="the shared data folder (holds PAIRS.tsv)")
    parser.add_argument("--models-dir", type=Path,
                        default=Path(os.environ.get("FORECOURT_TEST_MODELS_DIR", "var/models")))
    parser.add_argument("--cache", type=Path, help="a folder for the class probabilities (e.g. /tmp/fg-cache)")
    parser.add_argument("--limit", type=int, help="photos per set, evenly spaced")
    args = parser.parse_args(argv)

    clf = ForegroundClassifier(args.models_dir)
    clf.load()
    cache = Cache(args.cache, clf)
    params = ForegroundParams()
    started = time.perf_counter()

    def load(paths: list[Path]) -> tuple[list[str], list[np.ndarray]]:
        if args.limit and args.limit < len(paths):
            paths = [paths[i] for i in sorted(set(np.linspace(0, len(paths) - 1, args.limit).round().astype(int)))]
        probs = [cache.probs(str(p), np.asarray(Image.open(p).convert("RGB"))) for p in paths]
        return [p.name for p in paths], probs

    print(f"defaults: car_min {params.car_min}, type_min {params.type_min}")
    car_sets = {name: load(paths) for name, paths in car_photos(args.data).items()}
    for name, (labels, probs) in car_sets.items():
        report(name, probs, params, show_misses=labels)
    all_probs = [p for _, probs in car_sets.values() for p in probs]
    total = sum(reported_type(decide(p, params).type, "1") == "car" for p in all_probs)
    print(f"{'all cars':<14} n={len(all_probs):<4} X-Type=car (level 1) {total / max(len(all_probs), 1):6.1%}")

    parts = part_crops(args.data)
    if args.limit:
        parts = parts[:: max(1, len(parts) // args.limit)]
    part_probs = [cache.probs(label, rgb) for label, rgb in parts]
    if part_probs:
        report("part boxes", part_probs, params)
    wheels = wheel_crops(args.data, args.limit)
    wheel_probs = [cache.probs(label, rgb) for label, rgb in wheels]
    if wheel_probs:
        report("carvana wheels", wheel_probs, params)

    negatives = skimage_samples()
    neg_probs = [cache.probs("skimage:" + name, rgb) for name, rgb in negatives]
    report("non-car", neg_probs, params, show_misses=[n for n, _ in negatives], want="other")
    for (name, _), p in zip(negatives, neg_probs, strict=True):
        print(f"    {name:<22} -> {decide(p, params).type}")

    halves = {"carvana+roboflow": [p for n in ("carvana", "roboflow") for p in car_sets.get(n, ([], []))[1]],
              "calibration+distractors": [p for n in ("calibration", "distractors")
                                          for p in car_sets.get(n, ([], []))[1]]}
    names = list(halves)
    for tune, held in ((names[0], names[1]), (names[1], names[0])):
        if not halves[tune] or not halves[held]:
            continue
        car_min = best_car_min(halves[tune], neg_probs)
        chosen = ForegroundParams(car_min=car_min)
        rate = np.mean([reported_type(decide(p, chosen).type, "1") == "car" for p in halves[held]])
        false = sum(reported_type(decide(p, chosen).type, "1") == "car" for p in neg_probs)
        print(f"tuned on {tune}: car_min {car_min:.2f} -> on {held}: X-Type=car {rate:.1%}; "
              f"non-car given car: {false}/{len(neg_probs)}")
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
