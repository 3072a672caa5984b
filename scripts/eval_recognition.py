"""Recognition accuracy on the shared car photos: near views, far views and unknown cars.

    .venv/bin/python scripts/eval_recognition.py ../shared/data [--masks gt|segmenter|none] [--limit-cars N]
        [--cache DIR] [--vote-keypoints N] [--index-keypoints N] [--min-score S] [--ivf-threshold N]
        [--stop-score S] [--midpoint N] [--view-top N]

Each Carvana car is one object; the 100 distractors are always in the collection as other objects. Every default
is the server's for a car collection (recognition settings' defaults; features from the configured segmenter's car
mask). Features come from the car only (`--masks segmenter`, the default; `gt`: the dataset's masks, distractors,
which have none, then use the whole image) or the whole image (`none`). Prints recall@1, recall@5, how often
the top match is a distractor or another car, and the inlier counts of right and wrong top matches.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.recognition import FeatureIndex, extract, search  # noqa: E402
from models.recognition.features import Features, extract_views  # noqa: E402
from server.config import RecognitionSettings  # noqa: E402


def _features(path: Path, mask_path: Path | None, masks: str, segmenter,  # type: ignore[no-untyped-def]
              cache: Path | None = None) -> Features:
    if cache is not None:
        cached = cache / f"{path.stem}.{masks}.npz"
        if cached.exists():
            z = np.load(cached)
            return Features(z["points"], z["descriptors"], int(z["size"][0]), int(z["size"][1]))
        f = _features(path, mask_path, masks, segmenter)
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(cached, points=f.points, descriptors=f.descriptors, size=np.array([f.width, f.height]))
        return f
    rgb = np.asarray(Image.open(path).convert("RGB"))
    return extract(rgb, _mask(path, mask_path, masks, segmenter, rgb=rgb))


def _mask(path: Path, mask_path: Path | None, masks: str, segmenter,  # type: ignore[no-untyped-def]
          cache: Path | None = None, rgb: np.ndarray | None = None) -> np.ndarray | None:
    """The car mask the features are limited to (cached as a PNG next to the features)."""
    if masks == "none" or (masks == "gt" and mask_path is None and segmenter is None):
        return None
    cached = cache / f"{path.stem}.{masks}.mask.png" if cache is not None else None
    if cached is not None and cached.exists():
        return np.asarray(Image.open(cached)) > 127
    if masks == "gt" and mask_path is not None:
        mask = np.asarray(Image.open(mask_path)) > 0
    else:
        if rgb is None:
            rgb = np.asarray(Image.open(path).convert("RGB"))
        mask = segmenter.mask(rgb, kind="car") > 0.5
    if cached is not None:
        cache.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask.astype(np.uint8) * 255).save(cached)
    return mask


def _view_features(path: Path, mask_path: Path | None, masks: str, segmenter,  # type: ignore[no-untyped-def]
                   cache: Path | None = None) -> Features:
    """The query's simulated views (features.extract_views), cached like _features."""
    cached = cache / f"{path.stem}.{masks}.views.npz" if cache is not None else None
    if cached is not None and cached.exists():
        z = np.load(cached)
        return Features(z["points"], z["descriptors"], int(z["size"][0]), int(z["size"][1]))
    f = extract_views(np.asarray(Image.open(path).convert("RGB")), _mask(path, mask_path, masks, segmenter, cache))
    if cached is not None:
        np.savez(cached, points=f.points, descriptors=f.descriptors, size=np.array([f.width, f.height]))
    return f


def _run(name: str, refs: dict[int, Features], owner: dict[int, str],
         queries: list[tuple[str, Features, Features | None]],
         known: bool, args: argparse.Namespace) -> list[tuple[bool, float]]:
    cap = args.index_keypoints or None
    index = FeatureIndex.build(((i, f.descriptors[:cap]) for i, f in refs.items()), ivf_threshold=args.ivf_threshold,
                               nprobe=args.nprobe)
    r1 = r5 = distractor = other = no_match = 0
    right_inl, wrong_inl, times = [], [], []
    tops: list[tuple[bool, float]] = []  # (top object is the truth, its score) per query
    for truth, q, v in queries:
        t = time.perf_counter()
        matches = search(index, q, lambda ids: {i: refs[i] for i in ids}, vote_keypoints=args.vote_keypoints,
                         views=v, view_top=args.view_top, stop_score=args.stop_score or None,
                         midpoint=args.midpoint)
        times.append(time.perf_counter() - t)
        ranked: list[str] = []
        best_inl: dict[str, int] = {}
        best_score: dict[str, float] = {}
        for m in matches:
            o = owner[m.image_id]
            if o not in best_inl:
                ranked.append(o)
                best_inl[o], best_score[o] = m.inliers, m.score
        top_ok = bool(ranked) and best_score[ranked[0]] >= args.min_score
        if not top_ok:
            no_match += 1
        else:
            r1 += ranked[0] == truth
            distractor += ranked[0].startswith("distractor:")
            other += ranked[0] != truth and not ranked[0].startswith("distractor:")
        r5 += truth in [o for o in ranked[:5] if best_score[o] >= args.min_score]
        if ranked:
            (right_inl if ranked[0] == truth else wrong_inl).append(best_inl[ranked[0]])
        tops.append((bool(ranked) and ranked[0] == truth, best_score[ranked[0]] if ranked else 0.0))
    n = len(queries)
    print(f"{name}: {n} queries, {len(refs)} reference images, {index.ntotal} descriptors in a {index.kind} index, "
          f"min_score {args.min_score}", flush=True)
    if known:
        print(f"  recall@1 {r1 / n:.3f}  recall@5 {r5 / n:.3f}", flush=True)
    else:
        print(f"  answered no match {no_match / n:.3f}", flush=True)
    print(f"  top match is a distractor {distractor / n:.3f}, another car {other / n:.3f}, "
          f"no match {no_match / n:.3f}", flush=True)
    q = lambda xs: f"median {np.median(xs):.0f}, min {min(xs)}, max {max(xs)}" if xs else "none"  # noqa: E731
    print(f"  inliers of right top matches: {q(right_inl)}; of wrong top matches: {q(wrong_inl)}", flush=True)
    print(f"  search p50 {np.median(times) * 1000:.0f} ms (shortlist + RANSAC, features excluded)", flush=True)
    return tops


def main() -> None:
    """Parse arguments, extract every feature once, run the three protocols."""
    server = RecognitionSettings()  # every default is the server's, for a car collection
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--masks", choices=("gt", "segmenter", "none"), default="segmenter",
                    help="Car masks: the configured segmenter's (what a car collection uses; the default), the "
                         "dataset's, or none")
    ap.add_argument("--limit-cars", type=int, default=0)
    ap.add_argument("--nprobe", type=int, default=server.nprobe, help="recognition.nprobe (IVF lists searched)")
    ap.add_argument("--ivf-threshold", type=int, default=server.ivf_threshold,
                    help="Descriptors past which the index is IVF (the server's default is recognition.ivf_threshold)")
    ap.add_argument("--models-dir", type=Path, default=Path("var/models"))
    ap.add_argument("--cache", type=Path, default=None, help="Keep extracted features here between runs")
    ap.add_argument("--vote-keypoints", type=int, default=server.vote_keypoints,
                    help="recognition.vote_keypoints (0: all)")
    ap.add_argument("--index-keypoints", type=int, default=server.index_keypoints,
                    help="recognition.index_keypoints (0: all)")
    ap.add_argument("--min-score", type=float, default=server.min_score, help="recognition.min_score")
    ap.add_argument("--stop-score", type=float, default=0.0,
                    help="Stop verifying at the first match scoring this (the server's mode single; 0: verify all)")
    ap.add_argument("--midpoint", type=float, default=server.car_inlier_midpoint,
                    help="Inliers scoring 0.5 (recognition.car_inlier_midpoint; these are car collections)")
    ap.add_argument("--view-top", type=int, default=0,
                    help="Match simulated views of the query (features.extract_views) against this many of the "
                         "shortlisted images (0: off)")
    args = ap.parse_args()
    images = args.data / "carvana" / "images"
    cars = sorted({p.name.rsplit("_", 1)[0] for p in images.glob("*_01.jpg")})
    if args.limit_cars:
        cars = cars[: args.limit_cars]
    segmenter = None
    if args.masks == "segmenter":
        from models.registry import get_segmenter

        segmenter = get_segmenter(models_dir=args.models_dir)
    t0 = time.perf_counter()
    feats: dict[tuple[str, int], Features] = {}
    for car in cars:
        for a in range(1, 17):
            feats[(car, a)] = _features(images / f"{car}_{a:02d}.jpg",
                                        args.data / "carvana" / "masks" / f"{car}_{a:02d}_mask.gif",
                                        args.masks, segmenter, args.cache)
    views: dict[tuple[str, int], Features | None] = {k: None for k in feats}
    if args.view_top:
        for car, a in feats:
            if car in cars and a not in (1, 5, 9, 13):  # every query angle
                views[(car, a)] = _view_features(images / f"{car}_{a:02d}.jpg",
                                                 args.data / "carvana" / "masks" / f"{car}_{a:02d}_mask.gif",
                                                 args.masks, segmenter, args.cache)
    distractors = [_features(p, None, "none" if args.masks == "gt" else args.masks, segmenter, args.cache)
                   for p in sorted((args.data / "distractors").glob("*.jpg"))]
    print(f"features: {len(feats)} car views, {len(distractors)} distractors, masks={args.masks}, "
          f"{time.perf_counter() - t0:.0f} s", flush=True)

    def collection(car_list: list[str], angles: list[int]) -> tuple[dict[int, Features], dict[int, str]]:
        refs, owner = {}, {}
        for i, f in enumerate(distractors):
            refs[i + 1], owner[i + 1] = f, f"distractor:{i}"
        nid = len(refs) + 1
        for car in car_list:
            for a in angles:
                refs[nid], owner[nid] = feats[(car, a)], car
                nid += 1
        return refs, owner

    odd, even = list(range(1, 17, 2)), list(range(2, 17, 2))
    refs, owner = collection(cars, odd)
    near = _run("near views (odd angles -> even)", refs, owner,
                [(c, feats[(c, a)], views[(c, a)]) for c in cars for a in even], True, args)
    refs, owner = collection(cars, [1, 5, 9, 13])
    far = _run("far views (01,05,09,13 -> 03,07,11,15)", refs, owner,
               [(c, feats[(c, a)], views[(c, a)]) for c in cars for a in (3, 7, 11, 15)], True, args)
    # Unknown cars both ways round: the first half in the collection and the second half queried, then swapped, so
    # every car is an unknown one once (twice the queries of one split, and a check that one split is no fluke).
    half = len(cars) // 2
    unknown: list[tuple[bool, float]] = []
    for inside, outside in ((cars[:half], cars[half:]), (cars[half:], cars[:half])):
        refs, owner = collection(inside, odd)
        unknown += _run(f"unknown cars ({len(inside)} cars in, {len(outside)} out, {outside[0]}...)", refs, owner,
                        [(c, feats[(c, a)], views[(c, a)]) for c in outside for a in even], False, args)
    rejected = sum(s < args.min_score for _, s in unknown) / len(unknown)
    print(f"unknown cars, both splits: answered no match {rejected:.3f} of {len(unknown)}", flush=True)

    print("min_score sweep (near-view recall@1 / far-view recall@1 / unknown cars answered no match, both splits):",
          flush=True)
    for ms in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        r1 = sum(ok and score >= ms for ok, score in near) / len(near)
        rf = sum(ok and score >= ms for ok, score in far) / len(far)
        rej = sum(score < ms for _, score in unknown) / len(unknown)
        print(f"  {ms:.1f}: {r1:.3f} / {rf:.3f} / {rej:.3f}", flush=True)


if __name__ == "__main__":
    main()
