"""Does a learned global embedding tell chance SIFT fits between different car models from right fits? (issue 17)

Embeds every car view of the shared data (the car's ground-truth mask, background grey) with EfficientNet-Lite0's
convolutional trunk (the weights of `forecourt models fetch efficientnet-lite0`, GeM-pooled by
models/recognition/embedding.py), then, for every (query, object) pair that eval_recognition.py --dump verified,
compares the query's embedding with the object's reference views:

- `full`: the masked whole photo (what the server stores per reference today); `crop`: the masked car's bounding
  box; `crop_max`: the highest `crop` similarity over the object's reference views; `flip`: `crop_max` with the
  references mirrored too;
- `margin`: `crop_max` of the matched object minus the highest `crop_max` of any other car in the collection (does
  the embedding's nearest car agree with SIFT's?); `top`: 1 when the matched object is the embedding's nearest car.

Prints the AUC of each against the inlier count (right near/far fits against unknown-car fits, 10+ inliers), then,
tuned on one half and tested on the other, far recall@1 and unknown rejection of a score logistic(inliers / 3 +
w x feature + bias) (colour factor and decide.twins as in the server), beside the inlier count alone.

    .venv/bin/python scripts/eval_recognition.py ../shared/data ../shared/data/calibration --half 1 --masks gt \\
        --protocols near,far,unknown,twins --cache /tmp/rec_cache --dump /tmp/h1.pkl      # and --half 2; and
    .venv/bin/python scripts/eval_recognition.py ../shared/data --masks gt ... --dump /tmp/dev.pkl
    .venv/bin/python scripts/embedding_evidence.py ../shared/data /tmp/h1.pkl /tmp/h2.pkl /tmp/dev.pkl \\
        --models-dir var/models --cache /tmp/embed_cache
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval_recognition import distractor_dir, dump_keys  # noqa: E402
from fit_recognition_score import _protocol  # noqa: E402

from models.recognition import decide  # noqa: E402
from models.recognition.matcher import CAR_INLIER_MIDPOINT, INLIER_SCALE, MIN_MATCHES  # noqa: E402

FEATURES = ("full", "crop", "crop_max", "flip", "margin", "top")


def lite0_embedding(models_dir: Path, folder: Path):  # type: ignore[no-untyped-def]
    """EfficientNet-Lite0's trunk (stem, blocks, head) as an embedding model in folder (written once)."""
    import torch
    from torch.nn import functional as F

    from models.foreground import _build_network
    from models.recognition import embedding

    if not (folder / embedding.MANIFEST).exists():
        net = _build_network()
        state = torch.load(models_dir / "efficientnet-lite0-57934424.pth", map_location="cpu", weights_only=True)
        net.load_state_dict({k: v for k, v in state.items() if not k.endswith("num_batches_tracked")})

        class Trunk(torch.nn.Module):
            def __init__(self, n) -> None:  # type: ignore[no-untyped-def]
                super().__init__()
                self.n = n

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                n = self.n
                x = F.relu6(n._bn0(n._conv_stem(x)))
                for block in n._blocks:
                    x = block(x)
                return F.relu6(n._bn1(n._conv_head(x)))

        embedding.save_module(Trunk(net.eval()), folder, "lite0", dim=1280, input_size=224,
                              mean=(127 / 255,) * 3, std=(128 / 255,) * 3)  # the Lite models' (x - 127) / 128
    return embedding.load_embedding(folder)


def embed_all(data: Path, models_dir: Path, cache: Path) -> dict:  # type: ignore[type-arg]
    """{(car, angle): {full, crop, flip}} for every car view, {("distractor", name): ...} for the distractors."""
    out_file = cache / "embeddings.pkl"
    if out_file.exists():
        return pickle.loads(out_file.read_bytes())
    model = lite0_embedding(models_dir, cache / "lite0")
    res, times = {}, []
    for folder in (data, data / "calibration"):
        for p in sorted((folder / "carvana" / "images").glob("*.jpg")):
            car, a = p.stem.rsplit("_", 1)
            rgb = np.asarray(Image.open(p).convert("RGB"))
            m = np.asarray(Image.open(folder / "carvana" / "masks" / f"{car}_{a}_mask.gif")) > 0
            ys, xs = np.nonzero(m)
            crop, cm = rgb[ys.min():ys.max() + 1, xs.min():xs.max() + 1], m[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
            t = time.perf_counter()
            e = model.embed(crop, cm)
            times.append(time.perf_counter() - t)
            res[(car, int(a))] = {"full": model.embed(rgb, m), "crop": e, "flip": model.embed(
                np.ascontiguousarray(crop[:, ::-1]), np.ascontiguousarray(cm[:, ::-1]))}
    for p in sorted(distractor_dir(data).glob("*.jpg")):
        e = model.embed(np.asarray(Image.open(p).convert("RGB")), None)
        res[("distractor", p.name)] = {"full": e, "crop": e, "flip": e}
    print(f"{len(res)} embeddings; one car crop's embedding p50 {np.median(times) * 1000:.0f} ms (1 thread)")
    cache.mkdir(parents=True, exist_ok=True)
    out_file.write_bytes(pickle.dumps(res))
    return res


def pairs(dump: list, cars: list[str], dist: list[str], emb: dict,  # type: ignore[type-arg]
          everyone: list[str] | None = None) -> list[tuple[str, str, list]]:  # type: ignore[type-arg]
    """Per query (near, far, unknown, in the eval's order): protocol, truth, [(object, evidence, features)];
    `everyone`: the margin's other cars are these (all the data's cars) instead of the collection's."""
    seq = dump_keys(dump, cars, dist)
    rows = [r for r in dump if _protocol(r[0]) != "twins"]
    sim = lambda q, r, v="crop": float(emb[q]["crop"] @ emb[r][v])  # noqa: E731
    out = []
    for (_name, truth, _known, matches, owners), ((proto, c, a), ids) in zip(rows, seq, strict=True):
        q = (c, a)
        refs: dict[str, list] = defaultdict(list)  # type: ignore[type-arg]
        for key in ids.values():
            refs[key[0] if key[0] != "distractor" else f"distractor:{dist.index(key[1])}"].append(key)
        if everyone:  # every car of the data at the collection's angles, but an unknown query's own car
            angles = sorted({k[1] for k in ids.values() if k[0] != "distractor"})
            car_max = {o: max(sim(q, (o, a)) for a in angles) for o in everyone if not (proto == "unknown" and o == c)}
        else:
            car_max = {o: max(sim(q, r) for r in rs) for o, rs in refs.items() if not o.startswith("distractor:")}
        by_obj: dict[str, list] = defaultdict(list)  # type: ignore[type-arg]
        for m in matches:
            by_obj[owners[m.image_id]].append(m)
        objs = []
        for obj, ms in by_obj.items():
            ev = decide.object_evidence(ms, CAR_INLIER_MIDPOINT, True, decide.INLIERS_ONLY)
            ref = ids[ev.best.image_id]
            mine = max(sim(q, r) for r in refs[obj])
            other = max((v for o, v in car_max.items() if o != obj), default=0.0)
            f = {"full": float(emb[q]["full"] @ emb[ref]["full"]), "crop": sim(q, ref), "crop_max": mine,
                 "flip": max(mine, max(sim(q, r, "flip") for r in refs[obj])), "margin": mine - other,
                 "top": float(mine >= other)}
            objs.append((obj, ev, f))
        out.append((proto, truth, objs))
    return out


def auc(pos: list[float], neg: list[float]) -> float:
    p, n = np.asarray(pos)[:, None], np.asarray(neg)[None]
    return float(((p > n) + 0.5 * (p == n)).mean()) if p.size and n.size else float("nan")


def figures(table: list, feature: str, w: tuple[float, float], min_score: float = 0.5) -> dict[str, float]:  # type: ignore[type-arg]
    """near / far recall@1 (the car alone) and unknown rejected under logistic(bias + (inliers - midpoint) / 3 +
    weight x feature), times the colour factor."""
    bias, weight = w
    res: dict[str, list[bool]] = defaultdict(list)
    for proto, truth, objs in table:
        cands = []
        for obj, ev, f in objs:
            b, p = ev.best, 0.0
            if b.inliers >= MIN_MATCHES and b.score > 0:
                p = decide._logistic(bias + (b.inliers - CAR_INLIER_MIDPOINT) / INLIER_SCALE + weight * f[feature])
                if b.body is not None and b.body > decide.COLOUR_LIMIT:
                    p *= 2.0 * decide._logistic((decide.COLOUR_LIMIT - b.body) / decide.COLOUR_SCALE)
            cands.append(decide.Candidate(obj, b, p))
        cands.sort(key=lambda c: (-c.score, -c.match.inliers))
        answer = [c.object_id for c in decide.twins(cands, min_score)]
        res[proto].append(not answer if proto == "unknown" else answer == [truth])
    return {k: float(np.mean(v)) for k, v in res.items()}


def tune(table: list, feature: str, weights: list[float], target: float = 0.97) -> tuple[float, float]:  # type: ignore[type-arg]
    """The (bias, weight) with the most far recall and unknown rejection >= target on table."""
    best: tuple[float, tuple[float, float]] | None = None
    for weight in weights:
        for bias in np.arange(-10, 10.01, 0.5):
            f = figures(table, feature, (float(bias), weight))
            if f["unknown"] >= target and (best is None or f["far"] > best[0]):
                best = (f["far"], (float(bias), weight))
    return best[1] if best else (10.0, 0.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("half1", type=Path)
    ap.add_argument("half2", type=Path)
    ap.add_argument("dev", type=Path)
    ap.add_argument("--models-dir", type=Path, default=Path("var/models"))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/embed_cache"))
    ap.add_argument("--margin-all-cars", action="store_true",
                    help="The margin's other cars: all 52 cars' views at the collection's angles (a bigger stock)")
    args = ap.parse_args()
    emb = embed_all(args.data, args.models_dir, args.cache)
    dist = [p.name for p in sorted(distractor_dir(args.data).glob("*.jpg"))]
    dev = sorted(p.name.rsplit("_", 1)[0] for p in (args.data / "carvana" / "images").glob("*_01.jpg"))
    cars = sorted({k[0] for k in emb if k[0] != "distractor"})
    every = cars if args.margin_all_cars else None
    tables = {"half 1": pairs(pickle.loads(args.half1.read_bytes()), cars[:26], dist, emb, every),
              "half 2": pairs(pickle.loads(args.half2.read_bytes()), cars[26:], dist, emb, every),
              "dev": pairs(pickle.loads(args.dev.read_bytes()), dev, dist, emb, every)}
    for label, table in tables.items():
        rows = [(proto, obj == truth, ev.best.inliers, f) for proto, truth, objs in table for obj, ev, f in objs
                if ev.best.inliers >= 10 and not (ev.best.body is not None and ev.best.body > decide.COLOUR_LIMIT)]
        far = [r for r in rows if r[1] and r[0] == "far"]
        right = [r for r in rows if r[1] and r[0] != "unknown"]
        wrong = [r for r in rows if not r[1] and r[0] == "unknown"]
        band = lambda rs: [r for r in rs if 15 <= r[2] <= 25]  # noqa: E731
        print(f"{label}: {len(right)} right near/far fits ({len(far)} far), {len(wrong)} unknown-car fits, 10+ "
              f"inliers, compatible colour. AUC right near+far / far / far in 15-25 inliers ({len(band(far))} vs "
              f"{len(band(wrong))}) against unknown-car fits:")
        for name in ("inliers",) + FEATURES:
            v = (lambda r: r[2]) if name == "inliers" else (lambda r, n=name: r[3][n])  # noqa: E731
            print(f"  {name:<9} {auc([v(r) for r in right], [v(r) for r in wrong]):.3f}  "
                  f"{auc([v(r) for r in far], [v(r) for r in wrong]):.3f}  "
                  f"{auc([v(r) for r in band(far)], [v(r) for r in band(wrong)]):.3f}")
    show = lambda f: f"near {f['near']:.3f} far {f['far']:.3f} unknown {f['unknown']:.3f}"  # noqa: E731
    grid = {"inliers": [0.0], "crop_max": [0.0, 5, 10, 20, 40], "margin": [0.0, 10, 20, 30, 40, 60, 80],
            "top": [0.0, 1, 2, 3, 4, 6]}
    for a, b in (("half 1", "half 2"), ("half 2", "half 1")):
        print(f"tuned on {a} (unknown >= 0.97, most far), tested on {b} and the dev cars:")
        for feature, weights in grid.items():
            w = tune(tables[a], "margin" if feature == "inliers" else feature, weights)
            feat = "margin" if feature == "inliers" else feature
            print(f"  {feature:<9} bias {w[0]:+.1f} weight {w[1]:g}: {a} {show(figures(tables[a], feat, w))} -> "
                  f"{b} {show(figures(tables[b], feat, w))}; dev {show(figures(tables['dev'], feat, w))}")



if __name__ == "__main__":
    main()
