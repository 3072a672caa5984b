"""Recognition accuracy on the shared car photos: near views, far views, unknown cars, light changes, look-alike
twins and lot photos.

    .venv/bin/python scripts/eval_recognition.py ../shared/data [--half 0|1|2] [--masks gt|segmenter|none]
        [--protocols near,far,unknown,light,twins,lot] [--no-colour] [--limit-cars N] [--cache DIR]
        [--vote-keypoints N] [--index-keypoints N] [--min-score S] [--ivf-threshold N] [--stop-score S]
        [--midpoint N] [--view-top N] [--twin-ratio R] [--dump FILE] [--lot-misses]
        [--margin on|off] [--acceptance BIAS,WEIGHT] [--sharpen]

Each Carvana car is one object; the 100 distractors are always in the collection as other objects. Every default
is the server's for a car collection (recognition settings' defaults; features from the configured segmenter's car
mask; the score weighs colour with the inliers and look-alikes are answered together, models/recognition/decide.py).
Features come from the car only (`--masks segmenter`, the default; `gt`: the dataset's masks, distractors,
which have none, then use the whole image) or the whole image (`none`). Several data folders pool their cars
(the 12 development cars and the 40 calibration cars: 52); `--half 1` / `--half 2` keep the first or second half of
the cars (sorted by id), to tune on one half and test on the other. Protocols:
- near: references at the 8 odd angles, queries at the even ones; far: 01,05,09,13 -> 03,07,11,15;
- unknown: half of the cars in the collection, the other half queried, then swapped (pairs of the same model and
  colour, TWINS, are left out: no photo of the car alone can tell them apart, see twins);
- light: the near queries with a white-balance, exposure and gamma change (the same car under other light);
- twins: cars of the same model and colour (TWINS) all in the collection, each queried at the even angles: right if
  the answer is the car itself, alone or with its twin marked ambiguous; the other twin alone is wrong;
- lot: each car at two even angles made into a phone photo on the lot (scripts/lot_composites.py's composite: in
  front of an out-of-focus street with another car further back, the distractor photos, which are then left out
  of the collection; a third cut by the frame), exposure, white balance, blur and JPEG changed, its car mask from
  the segmenter (always, so that it must pick the car the photo is about); against the studio references at the
  odd angles, and as unknown cars against the other half's. `--lot-misses` prints why each missed lot photo
  missed (lot_miss_cause: the car mask, the colour check, too few inliers, the shortlist, another car).
The embedding margin (models/recognition/margin.py, recognition.car_margin; `--margin on|off`, the server's
default): every view's car embedding (car_embedding.py, the same mask as its features; cached), a float16 index of
the collection's reference vectors, each verified object's margin with the twins (TWINS) as its look-alikes, all as
the server computes them; `--acceptance BIAS,WEIGHT` scores with that bias and margin weight instead of
decide.CAR_ACCEPTANCE's. `--dump` also writes FILE.margins (each query's margins, computed whether or not they score).
recall@1 counts a car answered with its twin (TWINS), both marked ambiguous, as right: issue 17 asks for exactly
that answer when no photo can tell the two apart; "alone" is printed beside it. Prints recall@1, recall@5, how
often the top match is a distractor or another car, the inlier counts of right and wrong top matches, and each
target.
"""

from __future__ import annotations

import argparse
import io
import time
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
from lot_composites import composite as lot_composite
from PIL import Image

from models.recognition import FeatureIndex, car_embedding, colour, decide, extract, margin, search
from models.recognition.features import Features, extract_views, main_subject
from models.recognition.index import GlobalIndex
from models.recognition.matcher import MIN_MATCHES
from server.config import RecognitionSettings


def _features(path: Path, mask_path: Path | None, masks: str, segmenter,  # type: ignore[no-untyped-def]
              cache: Path | None = None) -> Features:
    """The image's features with their colours (colour.py), extracted once and kept in `cache` (features and
    colours in two files, so features cached before colour existed are reused)."""
    if cache is None:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        return extract(rgb, _mask(path, mask_path, masks, segmenter, rgb=rgb))
    cached, coloured = cache / f"{path.stem}.{masks}.npz", cache / f"{path.stem}.{masks}.{COLOUR_CACHE}.npz"
    if cached.exists():
        z = np.load(cached)
        f = Features(z["points"], z["descriptors"], int(z["size"][0]), int(z["size"][1]))
        if coloured.exists():
            return _load_colour(f, coloured)
        rgb = np.asarray(Image.open(path).convert("RGB"))
        _set_colour(f, rgb, _mask(path, mask_path, masks, segmenter, cache, rgb=rgb))
    else:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        f = extract(rgb, _mask(path, mask_path, masks, segmenter, cache, rgb=rgb))
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(cached, points=f.points, descriptors=f.descriptors, size=np.array([f.width, f.height]))
    _save_colour(f, coloured)
    return f


def _set_colour(f: Features, rgb: np.ndarray, mask: np.ndarray | None) -> None:
    """f's colours as features.extract gives them, for features cached without."""
    f.colours, f.light = colour.keypoint_colours(rgb, f.points, mask), colour.illuminant(rgb)
    f.body = colour.signature(rgb, mask, f.light)
    if mask is not None:
        f.paint_points, f.paint = colour.paint_pixels(rgb, mask, f.light)


def _save_colour(f: Features, path: Path) -> None:
    empty = np.zeros((0, 2), np.float32), np.zeros((0, 3), np.float32)
    points, paint = (f.paint_points, f.paint) if f.paint is not None else empty
    np.savez(path, colours=f.colours, light=f.light, body=f.body, paint_points=points, paint=paint)


def _load_colour(f: Features, path: Path) -> Features:
    c = np.load(path)
    f.colours, f.light, f.body = c["colours"], c["light"], c["body"]
    if len(c["paint"]):
        f.paint_points, f.paint = c["paint_points"], c["paint"]
    return f


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


def _car_vector(f: Features, name: str, make, args: argparse.Namespace) -> None:  # type: ignore[no-untyped-def]
    """Register the car embedding of f's photo (`make()` gives its RGB and its car mask or None), cached as
    `name`.<car_embedding.NAME>.npy, as stored (float16): args.car_vecs[id(f)]."""
    if args.car_embedder is None:
        return
    cached = args.cache / f"{name}.{car_embedding.NAME}.npy" if args.cache is not None else None
    if cached is not None and cached.exists():
        vec = np.load(cached)
    else:
        vec = args.car_embedder.embed(*make())
        vec = None if vec is None else car_embedding.from_blob(car_embedding.to_blob(vec))
        if cached is not None and vec is not None:
            np.save(cached, vec)
    if vec is not None:
        args.car_vecs[id(f)] = vec


def _margins(q: Features, matches: list, refs: dict[int, Features], owner: dict[int, str],  # type: ignore[type-arg]
             cindex: GlobalIndex | None, args: argparse.Namespace) -> dict[str, float]:
    """The query's margins as the server computes them (recognition.car_margins): the objects with a fit, the
    collection's nearest reference vectors with their body colours, the twins (TWINS) as look-alikes."""
    vec = args.car_vecs.get(id(q))
    fitted = {owner[m.image_id] for m in matches if m.inliers >= MIN_MATCHES}
    if vec is None or cindex is None or not fitted:
        return {}
    near, complete = cindex.nearest(vec, margin.NEIGHBOURS)
    neighbours = [margin.Neighbour(owner[i], sim, refs[i].body) for i, sim in near]
    def own(obj: str) -> np.ndarray:
        vecs = [args.car_vecs[id(f)] for i, f in refs.items() if owner[i] == obj and id(f) in args.car_vecs]
        return np.stack(vecs) if vecs else np.zeros((0, car_embedding.DIM), np.float32)

    twins = {o: {args.twin_of[o]} for o in fitted if o in args.twin_of}
    return margin.margins(vec, fitted, own, neighbours, twins, q.body, complete)


# Pairs of Carvana cars of the same model in the same colour (found by cross-matching every car's views, then
# checked by eye): the twins protocol's cars. Listed by id; a pair counts in a run when both cars are in it.
TWINS: list[tuple[str, str]] = [("de3ca5ec1e59", "feaf59172a01")]  # black Audi Q3 (calibration/, carvana/)


def twin_map(cars: set[str] | list[str] | None = None) -> dict[str, str]:
    """Each car of a TWINS pair to its twin (both ways), for the pairs whose two cars are in `cars` (all without)."""
    pairs = [(a, b) for a, b in TWINS if cars is None or (a in cars and b in cars)]
    return {a: b for a, b in pairs} | {b: a for a, b in pairs}


def recall_right(answer: list[str], truth: str, twin: str | None) -> bool:
    """recall@1 as issue 17 defines it: the true car alone, or with its twin (the same model and colour, TWINS)
    both marked ambiguous, which is the right answer when no photo of the car alone can tell them apart."""
    return answer == [truth] or (twin is not None and sorted(answer) == sorted([truth, twin]))


def twin_ok(answer: list[str], truth: str, twin: str) -> bool:
    """The twins protocol: the car itself is answered, alone or together with its twin."""
    return truth in answer and (len(answer) == 1 or twin in answer)


def dump_keys(dump: list, cars: list[str], distractors: list[str]  # type: ignore[type-arg]
              ) -> list[tuple[tuple[str, str, int], dict[int, tuple[str, object]]]]:
    """For each near, far and unknown query of a --dump run on these cars (twins left out), in the eval's order: the
    query (protocol, car, angle) and its collection's image ids -> (car, angle), or ("distractor", file name), so
    that offline studies find the photos of a dumped match. Refuses a dump made in another order."""
    odd, even = list(range(1, 17, 2)), list(range(2, 17, 2))

    def collection(car_list: list[str], angles: list[int]) -> dict[int, tuple[str, object]]:
        ids: dict[int, tuple[str, object]] = {i + 1: ("distractor", n) for i, n in enumerate(distractors)}
        for k, (c, a) in enumerate((c, a) for c in car_list for a in angles):
            ids[len(distractors) + 1 + k] = (c, a)
        return ids

    twin_of = twin_map(cars)
    seq = [(("near", c, a), collection(cars, odd)) for c in cars for a in even]
    seq += [(("far", c, a), collection(cars, [1, 5, 9, 13])) for c in cars for a in (3, 7, 11, 15)]
    h = len(cars) // 2
    for inside, outside in ((cars[:h], cars[h:]), (cars[h:], cars[:h])):
        seq += [(("unknown", c, a), collection(inside, odd)) for c in outside for a in even
                if twin_of.get(c) not in inside]
    rows = [r for r in dump if not r[0].startswith("twins")]
    if len(rows) != len(seq) or any(not r[0].startswith(q[0]) or r[1] != q[1] for r, (q, _) in zip(rows, seq, strict=True)):
        raise SystemExit("the dump's queries are not the eval's order for these cars (another eval version?)")
    return seq


COLOUR_CACHE = "colour4"  # the colour files' version (bumped when colour.py's measures change)
LOT_CACHE = "lot2"  # the lot photos' version (bumped when _lot_photo or the query's car mask changes)
TARGETS = {"near": 0.99, "far": 0.60, "unknown": 0.97, "twins": 0.95, "lot": 0.95, "lot unknown": 0.97,
           "light": 0.99}


def distractor_dir(data: Path) -> Path:
    """The data folder's distractor photos (calibration/ names them in a text file when the link was lost)."""
    d = data / "distractors"
    return (data / d.read_text().strip()).resolve() if d.is_file() else d


def _light(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The photo under other light: per-channel gains (white balance, a colour temperature shift of about
    +-1500 K), an exposure change and a gamma change."""
    warm = rng.uniform(-0.25, 0.25)
    gains = np.array([1.0 + warm, 1.0, 1.0 - warm], np.float32) * rng.uniform(0.65, 1.35)
    lin = (rgb.astype(np.float32) / 255.0) ** 2.2 * gains
    out = np.clip(lin, 0, 1) ** (1 / (2.2 * rng.uniform(0.9, 1.1)))
    return np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8)


def _lot_photo(car_rgb: np.ndarray, car_mask: np.ndarray, scene: Image.Image, rng: np.random.Generator,
               cut: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A phone photo on the lot: the segmentation eval's composite (scripts/lot_composites.py: the car in front at
    55-85% of a 1024x683 frame's width, low in it, another car further back at one side, an out-of-focus street
    behind; `cut`: 8-25% of the car out of the frame), then light (_light: white balance, exposure, gamma), blur
    and JPEG (quality 40-85) over the whole photo. (photo, the pasted car's true mask)"""
    rgb, truth = lot_composite(car_rgb, car_mask, np.asarray(scene.convert("RGB")), rng, cut)
    rgb = _light(rgb, rng)
    sigma = rng.uniform(0.0, 1.5)
    if sigma > 0.3:
        import cv2

        rgb = cv2.GaussianBlur(rgb, (0, 0), sigma)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=int(rng.integers(40, 86)))
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")), truth


def _seed(*parts: object) -> int:
    """A fixed random seed per made-up photo, so every run makes the same ones."""
    return zlib.crc32(repr(parts).encode())


def _altered(name: str, make, segmenter, cache: Path | None,  # type: ignore[no-untyped-def]
             mask: np.ndarray | None = None, sharpen: bool = False) -> Features:
    """Features of a made-up photo (`make()` gives its RGB), cached under `name` (features, the car mask and the
    colours apart, so that a colour change re-reads no segmenter; sharpened features, features.extract's
    `sharpen`, under their own name); the car mask is `mask`, or the segmenter's main car (features.main_subject)."""
    if cache is None:
        rgb = make()
        return extract(rgb, mask if mask is not None else main_subject(segmenter.mask(rgb, kind="car")),
                       sharpen=sharpen)
    cache.mkdir(parents=True, exist_ok=True)
    feats = f"{name}.sharp" if sharpen else name
    cached, masked, coloured = (cache / f"{feats}.npz", cache / f"{name}.mask.png",
                                cache / f"{feats}.{COLOUR_CACHE}.npz")
    if cached.exists() and coloured.exists():
        z = np.load(cached)
        return _load_colour(Features(z["points"], z["descriptors"], int(z["size"][0]), int(z["size"][1])), coloured)
    rgb = make()
    if mask is None:
        if masked.exists():
            mask = np.asarray(Image.open(masked)) > 127
        else:
            mask = main_subject(segmenter.mask(rgb, kind="car"))
            Image.fromarray(mask.astype(np.uint8) * 255).save(masked)
    if cached.exists():
        z = np.load(cached)
        f = Features(z["points"], z["descriptors"], int(z["size"][0]), int(z["size"][1]))
        _set_colour(f, rgb, mask)
    else:
        f = extract(rgb, mask, sharpen=sharpen)
        np.savez(cached, points=f.points, descriptors=f.descriptors, size=np.array([f.width, f.height]))
    _save_colour(f, coloured)
    return f


class Outcome:
    """One query's answer: the objects answered (the single answer, or the ambiguous look-alikes) and the best."""

    def __init__(self, truth: str, candidates: list[decide.Candidate], args: argparse.Namespace) -> None:
        self.truth = truth
        self.twin = args.twin_of.get(truth)
        self.ranked = [c.object_id for c in candidates]
        self.scores = {c.object_id: c.score for c in candidates}
        self.inliers = {c.object_id: c.match.inliers for c in candidates}
        self.body = {c.object_id: c.match.body for c in candidates}
        self.answer = [c.object_id for c in decide.twins(candidates, args.min_score, args.twin_ratio)]
        self.top_score = candidates[0].score if candidates else 0.0

    @property
    def right(self) -> bool:
        """recall@1 as issue 17 defines it (recall_right)."""
        return recall_right(self.answer, self.truth, self.twin)

    @property
    def alone(self) -> bool:
        """The answer is the true car alone (strict recall@1, a twin's ambiguity counted wrong)."""
        return self.answer == [self.truth]

    @property
    def found(self) -> bool:
        """The true car is answered, alone or with look-alikes."""
        return self.truth in self.answer


def _run(name: str, refs: dict[int, Features], owner: dict[int, str],
         queries: list[tuple[str, Features, Features | None]], known: bool, args: argparse.Namespace) -> list[Outcome]:
    cap = args.index_keypoints or None
    index = FeatureIndex.build(((i, f.descriptors[:cap]) for i, f in refs.items()), ivf_threshold=args.ivf_threshold,
                               nprobe=args.nprobe)
    cindex = None
    if args.car_embedder is not None:
        cindex = GlobalIndex.build(car_embedding.DIM, ((i, args.car_vecs[id(f)]) for i, f in refs.items()
                                                       if id(f) in args.car_vecs), fp16=True)
    outcomes: list[Outcome] = []
    right_inl, wrong_inl, times = [], [], []
    for truth, q, v in queries:
        t = time.perf_counter()
        matches = search(index, q, lambda ids: {i: refs[i] for i in ids}, vote_keypoints=args.vote_keypoints,
                         views=v, view_top=args.view_top, stop_score=args.stop_score or None,
                         after_stop=args.twin_checks, use_colour=args.colour, midpoint=args.midpoint,
                         spread=args.dump is not None or decide.needs_spread(decide.CAR_ACCEPTANCE))
        margins = _margins(q, matches, refs, owner, cindex, args) if args.colour else {}
        times.append(time.perf_counter() - t)
        o = Outcome(truth, decide.per_object(matches, owner, args.midpoint, args.colour, args.acceptance,
                                             margins if args.margin == "on" else None), args)
        if args.dump is not None:
            args.dumped.append((name, truth, known, matches, {m.image_id: owner[m.image_id] for m in matches}))
            args.dumped_margins.append(margins)
        outcomes.append(o)
        if o.ranked:
            (right_inl if o.ranked[0] == truth else wrong_inl).append(o.inliers[o.ranked[0]])
    n = len(queries)
    answered = [o for o in outcomes if o.answer]
    print(f"{name}: {n} queries, {len(refs)} reference images, {index.ntotal} descriptors in a {index.kind} index, "
          f"min_score {args.min_score}", flush=True)
    if known:
        r5 = sum(o.truth in [x for x in o.ranked[:5] if o.scores[x] >= args.min_score] for o in outcomes)
        print(f"  recall@1 {sum(o.right for o in outcomes) / n:.3f} (alone {sum(o.alone for o in outcomes) / n:.3f}, "
              f"with its twin ambiguous {sum(o.right and not o.alone for o in outcomes) / n:.3f})  "
              f"recall@5 {r5 / n:.3f}  answered with "
              f"look-alikes (ambiguous) {sum(len(o.answer) > 1 for o in outcomes) / n:.3f}  found (alone or among "
              f"ambiguous look-alikes) {sum(o.found for o in outcomes) / n:.3f}", flush=True)
    else:
        print(f"  answered no match {sum(not o.answer for o in outcomes) / n:.3f}", flush=True)
    print(f"  top answer is a distractor {sum(o.answer[0].startswith('distractor:') for o in answered) / n:.3f}, "
          f"another car {sum(o.answer[0] != o.truth and not o.answer[0].startswith('distractor:') for o in answered) / n:.3f}, "
          f"no match {sum(not o.answer for o in outcomes) / n:.3f}", flush=True)
    q = lambda xs: f"median {np.median(xs):.0f}, min {min(xs)}, max {max(xs)}" if xs else "none"  # noqa: E731
    print(f"  inliers of right top matches: {q(right_inl)}; of wrong top matches: {q(wrong_inl)}", flush=True)
    print(f"  search p50 {np.median(times) * 1000:.0f} ms (shortlist + RANSAC + margins, features excluded)",
          flush=True)
    return outcomes


def lot_miss_cause(o: Outcome, mask_iou: float, true_inliers: int, true_body: float | None,
                   truth_mask_body: float | None, args: argparse.Namespace) -> str:
    """Why a lot photo missed, from its outcome, its car mask's IoU with the pasted car, and the true car's best
    verified view over all its references (inliers, body-colour distance; with the segmenter's mask, and the body
    colour with the true mask): the first of (a) the mask is another car's, (b) the colour check refused the car
    (its mask holding another car too, or its own colour under the photo's light), (c) too few inliers on every
    view, (d) the shortlist left the view that fits out, another car won, or look-alikes answered together."""
    if o.found:
        return "d look-alikes answered together (ambiguous)"
    if mask_iou < 0.3:
        return "a mask: another car picked"
    limit = decide.COLOUR_LIMIT
    if true_inliers >= args.midpoint and true_body is not None and true_body > limit:
        merged = mask_iou < 0.8 and truth_mask_body is not None and truth_mask_body <= limit
        return "b colour refused: " + ("another car in the mask" if merged else "the car's colour under the photo's light")
    if true_inliers < args.midpoint:
        return "c too few inliers on every view"
    if o.inliers.get(o.truth, 0) < true_inliers:
        return "d the shortlist left out the view that fits"
    return "d another car won"


def _lot_again(car: str, angle: int, scenes: list[Path], image_of, mask_of  # type: ignore[no-untyped-def]
               ) -> tuple[np.ndarray, np.ndarray, bool]:
    """A lot photo of the car at this angle, made with the same draws every time (seeded by car and angle): the
    photo, the pasted car's true mask, and whether the frame cuts the car."""
    rng = np.random.default_rng(_seed("lot", car, angle))
    scene = scenes[int(rng.integers(len(scenes)))]
    cut = bool(rng.random() < 1 / 3)  # a third cut the car at the frame
    gt = np.asarray(Image.open(mask_of(car, angle))) > 0
    rgb, truth = _lot_photo(np.asarray(Image.open(image_of(car, angle)).convert("RGB")), gt, Image.open(scene), rng,
                            cut)
    return rgb, truth, cut


def _lot_mask(rgb: np.ndarray, name: str, segmenter, cache: Path | None) -> np.ndarray:  # type: ignore[no-untyped-def]
    """A lot photo's car mask: the one _altered cached under `name`, else the segmenter's main car."""
    masked = cache / f"{name}.mask.png" if cache is not None else None
    if masked is not None and masked.exists():
        return np.asarray(Image.open(masked)) > 127
    return main_subject(segmenter.mask(rgb, kind="car"))


def _lot_name(car: str, angle: int) -> str:
    """The cache name of a lot photo's features and mask."""
    return f"{LOT_CACHE}_{car}_{angle:02d}.segmenter"


def _print_lot_misses(out: list[Outcome], names: list[tuple[str, int]], refs: dict[int, Features],
                      owner: dict[int, str], scenes: list[Path], image_of, mask_of,  # type: ignore[no-untyped-def]
                      segmenter, args: argparse.Namespace) -> None:
    """One line per missed lot photo (lot_miss_cause), then the count per cause."""
    from models.recognition.matcher import verify

    causes: dict[str, int] = {}
    for o, (car, angle) in zip(out, names, strict=True):
        if o.right:
            continue
        rgb, truth, cut = _lot_again(car, angle, scenes, image_of, mask_of)  # the photo again, as it was made
        mask = _lot_mask(rgb, _lot_name(car, angle), segmenter, args.cache)
        iou = float((mask & truth).sum() / max(1, (mask | truth).sum()))
        own = [i for i in refs if owner[i] == car]
        q, qt = extract(rgb, mask, sharpen=args.sharpen), extract(rgb, truth, sharpen=args.sharpen)
        best = max((verify(q, refs[i], i, midpoint=args.midpoint) for i in own), key=lambda m: m.inliers)
        true_best = max((verify(qt, refs[i], i, midpoint=args.midpoint) for i in own), key=lambda m: m.inliers)
        cause = lot_miss_cause(o, iou, best.inliers, best.body, true_best.body, args)
        causes[cause] = causes.get(cause, 0) + 1
        body = lambda b: "-" if b is None else f"{b:.2f}"  # noqa: E731
        print(f"  miss {car}_{angle:02d}{' cut' if cut else ''}: mask IoU {iou:.2f}; answered "
              f"{','.join(x[:12] for x in o.answer) or 'no match'}; search: the car {o.inliers.get(car, 0)} inliers, "
              f"body {body(o.body.get(car))}; its best view {best.inliers} inliers, body {body(best.body)} (true mask "
              f"{true_best.inliers}, {body(true_best.body)}) -> {cause}", flush=True)
    for cause, n in sorted(causes.items()):
        print(f"  lot misses: {n} {cause}", flush=True)


def _target(label: str, value: float, n: int) -> str:
    goal = TARGETS[label]
    return f"  {label:<12} {value:.3f} of {n:<4} target >= {goal:.2f} ({'met' if value >= goal else 'NOT met'})"


def main() -> None:
    """Parse arguments, extract every feature once, run the protocols, print the targets."""
    server = RecognitionSettings()  # every default is the server's, for a car collection
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path, nargs="+",
                    help="Data folders (../shared/data, ../shared/data/calibration); their cars are pooled")
    ap.add_argument("--masks", choices=("gt", "segmenter", "none"), default="segmenter",
                    help="Car masks: the configured segmenter's (what a car collection uses; the default), the "
                         "dataset's, or none")
    ap.add_argument("--half", type=int, choices=(0, 1, 2), default=0,
                    help="1 or 2: only the first or second half of the cars (sorted by id); 0: all")
    ap.add_argument("--protocols", default="near,far,unknown,light,twins,lot")
    ap.add_argument("--no-colour", dest="colour", action="store_false", help="Score on inliers only")
    ap.add_argument("--lot-cars", type=int, default=0,
                    help="Lot photos of only the first N cars (each costs a segmenter pass; 0: all); as unknown cars "
                         "each half of them is queried against every other car's references")
    ap.add_argument("--sharpen", action=argparse.BooleanOptionalAction, default=server.sharpen_blurred,
                    help="Sharpen blurred photos before features (recognition.sharpen_blurred; the lot photos: the "
                         "studio photos and the street scenes are never blurred enough to change)")
    ap.add_argument("--lot-misses", action="store_true",
                    help="Print why each missed lot photo missed (the car mask, colour, inliers, shortlist)")
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
    ap.add_argument("--twin-checks", type=int, default=server.twin_checks,
                    help="recognition.twin_checks (images verified after a decisive one, with --stop-score)")
    ap.add_argument("--twin-ratio", type=float, default=server.twin_ratio, help="recognition.twin_ratio")
    ap.add_argument("--midpoint", type=float, default=server.car_inlier_midpoint,
                    help="Inliers scoring 0.5 (recognition.car_inlier_midpoint; these are car collections)")
    ap.add_argument("--view-top", type=int, default=0,
                    help="Match simulated views of the query (features.extract_views) against this many of the "
                         "shortlisted images (0: off)")
    ap.add_argument("--margin", choices=("on", "off"), default="on" if server.car_margin else "off",
                    help="Weigh the embedding margin in the score (recognition.car_margin)")
    ap.add_argument("--acceptance", dest="acceptance_text", default="",
                    help="BIAS,WEIGHT: score with this bias and margin weight (decide.CAR_ACCEPTANCE's otherwise)")
    ap.add_argument("--dump", type=Path, default=None,
                    help="Write every query's verified matches (pickle: protocol, truth, known, matches, owners) "
                         "here, to fit the score offline (scripts/fit_recognition_score.py)")
    args = ap.parse_args()
    args.dumped, args.dumped_margins, args.twin_of, args.car_vecs = [], [], {}, {}
    args.acceptance = None
    if args.acceptance_text:
        bias, weight = (float(x) for x in args.acceptance_text.split(","))
        args.acceptance = replace(decide.CAR_ACCEPTANCE, bias=bias, margin=weight)
    protocols = set(args.protocols.split(","))
    folder_of = {p.name.rsplit("_", 1)[0]: d for d in args.data for p in (d / "carvana" / "images").glob("*_01.jpg")}
    cars = sorted(folder_of)
    if args.half:
        cars = cars[: len(cars) // 2] if args.half == 1 else cars[len(cars) // 2:]
    if args.limit_cars:
        cars = cars[: args.limit_cars]
    segmenter = None
    if args.masks == "segmenter" or "lot" in protocols:
        from models.registry import get_segmenter

        segmenter = get_segmenter(models_dir=args.models_dir)
    t0 = time.perf_counter()
    mask_of = lambda car, a: folder_of[car] / "carvana" / "masks" / f"{car}_{a:02d}_mask.gif"  # noqa: E731
    image_of = lambda car, a: folder_of[car] / "carvana" / "images" / f"{car}_{a:02d}.jpg"  # noqa: E731
    feats: dict[tuple[str, int], Features] = {}
    for car in cars:
        for a in range(1, 17):
            feats[(car, a)] = _features(image_of(car, a), mask_of(car, a), args.masks, segmenter,
                                        args.cache)
    views: dict[tuple[str, int], Features | None] = {k: None for k in feats}
    if args.view_top:
        for car, a in feats:
            if car in cars and a not in (1, 5, 9, 13):  # every query angle
                views[(car, a)] = _view_features(image_of(car, a), mask_of(car, a), args.masks,
                                                 segmenter, args.cache)
    scenes = sorted(distractor_dir(args.data[0]).glob("*.jpg"))
    dmasks = "none" if args.masks == "gt" else args.masks
    distractors = [_features(p, None, dmasks, segmenter, args.cache) for p in scenes]
    args.car_embedder = None
    if args.colour and (args.margin == "on" or args.dump is not None):
        args.car_embedder = car_embedding.CarEmbedder(args.models_dir)
        rgb_of = lambda p: np.asarray(Image.open(p).convert("RGB"))  # noqa: E731
        for (car, a), f in feats.items():
            _car_vector(f, f"{car}_{a:02d}.{args.masks}", lambda car=car, a=a: (rgb_of(image_of(car, a)), _mask(
                image_of(car, a), mask_of(car, a), args.masks, segmenter, args.cache)), args)
        for p, f in zip(scenes, distractors, strict=True):
            _car_vector(f, f"{p.stem}.{dmasks}", lambda p=p: (rgb_of(p), _mask(p, None, dmasks, segmenter,
                                                                                 args.cache)), args)
    print(f"features: {len(feats)} views of {len(cars)} cars ({cars[0]}...{cars[-1]}), {len(distractors)} "
          f"distractors, masks={args.masks}, colour={'on' if args.colour else 'off'}, "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    twins = [(a, b) for a, b in TWINS if a in cars and b in cars]
    twin_of = args.twin_of = twin_map(cars)

    def collection(car_list: list[str], angles: list[int], with_distractors: bool = True
                   ) -> tuple[dict[int, Features], dict[int, str]]:
        refs, owner = {}, {}
        if with_distractors:
            for i, f in enumerate(distractors):
                refs[i + 1], owner[i + 1] = f, f"distractor:{i}"
        nid = len(distractors) + 1
        for car in car_list:
            for a in angles:
                refs[nid], owner[nid] = feats[(car, a)], car
                nid += 1
        return refs, owner

    odd, even = list(range(1, 17, 2)), list(range(2, 17, 2))
    results: dict[str, tuple[float, int]] = {}
    if "near" in protocols:
        refs, owner = collection(cars, odd)
        near = _run("near views (odd angles -> even)", refs, owner,
                    [(c, feats[(c, a)], views[(c, a)]) for c in cars for a in even], True, args)
        results["near"] = (sum(o.right for o in near) / len(near), len(near))
    if "far" in protocols:
        refs, owner = collection(cars, [1, 5, 9, 13])
        far = _run("far views (01,05,09,13 -> 03,07,11,15)", refs, owner,
                   [(c, feats[(c, a)], views[(c, a)]) for c in cars for a in (3, 7, 11, 15)], True, args)
        results["far"] = (sum(o.right for o in far) / len(far), len(far))
    if "light" in protocols:
        refs, owner = collection(cars, odd)
        light = []
        for c in cars:
            for a in even:
                make = lambda c=c, a=a: _light(np.asarray(Image.open(image_of(c, a)).convert("RGB")),  # noqa: E731
                                               np.random.default_rng(_seed("light", c, a)))
                m = _mask(image_of(c, a), mask_of(c, a), args.masks, segmenter, args.cache)
                f = _altered(f"light_{c}_{a:02d}.{args.masks}", make, segmenter, args.cache, mask=m)
                _car_vector(f, f"light_{c}_{a:02d}.{args.masks}", lambda make=make, m=m: (make(), m), args)
                light.append((c, f, None))
        out = _run("near views under other light (white balance, exposure, gamma)", refs, owner, light, True, args)
        results["light"] = (sum(o.right for o in out) / len(out), len(out))
    half = len(cars) // 2
    splits = ((cars[:half], cars[half:]), (cars[half:], cars[:half]))
    if "unknown" in protocols:
        unknown: list[Outcome] = []
        for inside, outside in splits:
            refs, owner = collection(inside, odd)
            unknown += _run(f"unknown cars ({len(inside)} cars in, {len(outside)} out, {outside[0]}...)", refs, owner,
                            [(c, feats[(c, a)], views[(c, a)]) for c in outside for a in even
                             if twin_of.get(c) not in inside], False, args)
        rejected = sum(not o.answer for o in unknown) / len(unknown)
        print(f"unknown cars, both splits: answered no match {rejected:.3f} of {len(unknown)}", flush=True)
        results["unknown"] = (rejected, len(unknown))
    if "twins" in protocols and twins:
        refs, owner = collection(cars, odd)
        out = _run(f"twins: {len(twins)} pairs of the same model and colour, all cars in", refs, owner,
                   [(c, feats[(c, a)], None) for pair in twins for c in pair for a in even], True, args)
        ok = sum(twin_ok(o.answer, o.truth, twin_of[o.truth]) for o in out) / len(out)
        wrong = sum(o.answer == [twin_of[o.truth]] for o in out) / len(out)
        print(f"  twins: the car itself, alone or with its twin marked ambiguous {ok:.3f}; the other twin alone "
              f"{wrong:.3f}; both, ambiguous {sum(len(o.answer) > 1 for o in out) / len(out):.3f}", flush=True)
        results["twins"] = (ok, len(out))
    if "lot" in protocols:
        lot_cars = cars[: args.lot_cars] if args.lot_cars else cars
        lot: dict[str, list[tuple[str, Features, None]]] = {}
        for k, c in enumerate(lot_cars):
            for a in (even[k % 8], even[(k + 3) % 8]):
                name = _lot_name(c, a)
                f = _altered(name, lambda c=c, a=a: _lot_again(c, a, scenes, image_of, mask_of)[0], segmenter,
                             args.cache, sharpen=args.sharpen)

                def photo_and_mask(c=c, a=a, name=name):  # type: ignore[no-untyped-def]
                    rgb = _lot_again(c, a, scenes, image_of, mask_of)[0]
                    return rgb, _lot_mask(rgb, name, segmenter, args.cache)

                _car_vector(f, name, photo_and_mask, args)
                lot.setdefault(c, []).append((c, f, None))
        # the street scenes are the distractor photos: left out of the collection, as the cars in them are not stock
        refs, owner = collection(cars, odd, with_distractors=False)
        out = _run("lot photos (street scene, other cars, light, blur, JPEG) against studio references", refs, owner,
                   [q for c in lot_cars for q in lot[c]], True, args)
        results["lot"] = (sum(o.right for o in out) / len(out), len(out))
        if args.lot_misses:
            _print_lot_misses(out, [(c, a) for k, c in enumerate(lot_cars) for a in (even[k % 8], even[(k + 3) % 8])],
                              refs, owner, scenes, image_of, mask_of, segmenter, args)
        unknown_lot: list[Outcome] = []
        lot_half = len(lot_cars) // 2
        for outside in (lot_cars[:lot_half], lot_cars[lot_half:]):
            inside = [c for c in cars if c not in outside]
            refs, owner = collection(inside, odd, with_distractors=False)
            unknown_lot += _run(f"unknown lot photos ({len(inside)} cars in, {len(outside)} out)", refs, owner,
                                [q for c in outside if twin_of.get(c) not in inside for q in lot[c]], False, args)
        results["lot unknown"] = (sum(not o.answer for o in unknown_lot) / len(unknown_lot), len(unknown_lot))
    if args.dump is not None:
        import pickle

        args.dump.write_bytes(pickle.dumps(args.dumped))
        args.dump.with_name(args.dump.name + ".margins").write_bytes(pickle.dumps(args.dumped_margins))
    print(f"targets ({len(cars)} cars, masks={args.masks}, colour={'on' if args.colour else 'off'}):", flush=True)
    for label, (value, n) in results.items():
        print(_target(label, value, n), flush=True)


if __name__ == "__main__":
    main()
