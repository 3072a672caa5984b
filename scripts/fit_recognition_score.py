"""Fit the car score (models/recognition/decide.py, CAR_ACCEPTANCE) on the matches eval_recognition.py dumped, and
check it on the other half: a logistic regression over each object's evidence (inliers of its best view, how much
of the car they cover, the inliers of its second view), fitted on one half of the cars and tested on the other, both
ways round, with the eval's own decision code (decide.per_object, decide.twins).

    .venv/bin/python scripts/eval_recognition.py ../shared/data ../shared/data/calibration --half 1 --masks gt \\
        --protocols near,far,unknown,twins --cache /tmp/rec_cache --dump /tmp/half1.pkl      # and --half 2
    .venv/bin/python scripts/fit_recognition_score.py /tmp/half1.pkl /tmp/half2.pkl [--extra dev.pkl]

Prints the coefficients fitted on each half, the other half's near / far / unknown / twins figures under them,
under the pooled fit and under the score in decide.py, and the pooled fit's calibration (share right per score bin).

`--margin`: the embedding margin's bias and weight instead (the dumps' FILE.margins, written by the eval), with the
inliers' weight kept at 1 / INLIER_SCALE: a logistic regression of bias and weight on one half (a calibrated
probability), and the grid point with the most far recall that loses neither near recall nor unknown rejection
against the inliers' score on that half; each applied to the other half and the --extra dumps, with lot photos.
"""

from __future__ import annotations

import argparse
import math
import pickle
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval_recognition import recall_right, twin_map, twin_ok  # noqa: E402

from models.recognition import decide  # noqa: E402
from models.recognition.matcher import CAR_INLIER_MIDPOINT, MIN_MATCHES  # noqa: E402


def _protocol(name: str) -> str:
    if name.startswith("unknown lot"):
        return "lot unknown"
    for key in ("near", "far", "unknown", "twins", "lot"):
        if name.startswith(key):
            return key
    return name.split(" ")[0]


def samples(dump: list, acceptance: decide.Acceptance | None) -> tuple[np.ndarray, np.ndarray]:
    """One row per (query, object with a verified match of MIN_MATCHES or more inliers) of the near, far and
    unknown queries: the evidence features (decide.evidence_features) and whether the object is the query's car.
    Only objects whose colour is compatible (body distance up to COLOUR_LIMIT): the colour factor comes on top."""
    xs, ys = [], []
    for name, truth, _known, matches, owners in dump:
        if _protocol(name) not in ("near", "far", "unknown"):
            continue
        by_obj: dict[str, list] = defaultdict(list)
        for m in matches:
            by_obj[owners[m.image_id]].append(m)
        for obj, ms in by_obj.items():
            ev = decide.object_evidence(ms, CAR_INLIER_MIDPOINT, True, decide.INLIERS_ONLY)
            if ev.best.inliers < MIN_MATCHES or (ev.best.body is not None and ev.best.body > decide.COLOUR_LIMIT):
                continue
            xs.append(decide.evidence_features(ev, CAR_INLIER_MIDPOINT))
            ys.append(obj == truth)
    return np.array(xs, float), np.array(ys, float)


def fit(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, offset: np.ndarray | float = 0.0) -> np.ndarray:
    """Logistic regression (bias first) by Newton's method, a small L2 penalty on the weights; `offset`: a fixed
    term added to every sample's logit (its weight is not fitted)."""
    a = np.hstack([np.ones((len(x), 1)), x])
    w = np.zeros(a.shape[1])
    for _ in range(100):
        p = 1 / (1 + np.exp(-np.clip(offset + a @ w, -50, 50)))
        g = a.T @ (p - y) + l2 * np.r_[0, w[1:]]
        h = (a * (p * (1 - p))[:, None]).T @ a + l2 * np.diag(np.r_[0, np.ones(len(w) - 1)])
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def figures(dump: list, acceptance: decide.Acceptance | None, min_score: float = 0.5,
            twin_ratio: float = decide.TWIN_RATIO, margins: list | None = None) -> dict[str, float]:  # type: ignore[type-arg]
    """The eval's figures under a score: near recall@1 and found, far recall@1, unknown rejected, twins ok, lot
    recall@1 and unknown lot photos rejected; `margins`: each query's embedding margins (the dump's .margins)."""
    twin_of = twin_map()
    out: dict[str, list[float]] = defaultdict(list)
    tops: list[tuple[float, bool]] = []
    for k, (name, truth, known, matches, owners) in enumerate(dump):
        key = _protocol(name)
        cands = decide.per_object(matches, owners, CAR_INLIER_MIDPOINT, True, acceptance=acceptance,
                                  margins=margins[k] if margins is not None else None)
        answer = [c.object_id for c in decide.twins(cands, min_score, twin_ratio)]
        if key in ("near", "far", "unknown") and cands:
            tops.append((cands[0].score, known and cands[0].object_id == truth))
        if key in ("unknown", "lot unknown"):
            out[key].append(not answer)
        elif key == "twins":
            out[key].append(twin_ok(answer, truth, twin_of[truth]))
            out["twins wrong"].append(bool(answer) and truth not in answer)
        else:
            out[key].append(recall_right(answer, truth, twin_of.get(truth)))
            out[key + " found"].append(truth in answer)
    res = {k: float(np.mean(v)) for k, v in out.items()}
    res["_tops"] = tops  # type: ignore[assignment]
    return res


def _show(label: str, f: dict[str, float]) -> str:
    keys = ("near", "near found", "far", "unknown", "twins", "lot", "lot unknown")
    return f"  {label:<34}" + "  ".join(f"{k} {f[k]:.3f}" for k in keys if k in f)


def calibration(tops: list[tuple[float, bool]]) -> str:
    bins = [(0.5, 0.7), (0.7, 0.9), (0.9, 0.99), (0.99, 1.01)]
    parts = []
    for lo, hi in bins:
        sel = [r for s, r in tops if lo <= s < hi]
        parts.append(f"[{lo}, {min(hi, 1.0)}) {np.mean(sel) if sel else float('nan'):.2f} of {len(sel)}")
    return "; ".join(parts)


def margin_samples(dump: list, margins: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    """Per (near / far / unknown query, object with MIN_MATCHES inliers, a compatible colour and a margin): the
    inlier term (the offset), the margin, whether it is the query's car."""
    off, xs, ys = [], [], []
    for (name, truth, _known, matches, owners), got in zip(dump, margins, strict=True):
        if _protocol(name) not in ("near", "far", "unknown"):
            continue
        by_obj: dict[str, list] = defaultdict(list)  # type: ignore[type-arg]
        for m in matches:
            by_obj[owners[m.image_id]].append(m)
        for obj, ms in by_obj.items():
            ev = decide.object_evidence(ms, CAR_INLIER_MIDPOINT, True, decide.INLIERS_ONLY)
            if ev.best.inliers < MIN_MATCHES or (ev.best.body is not None and ev.best.body > decide.COLOUR_LIMIT) \
                    or obj not in got:
                continue
            off.append((ev.best.inliers - CAR_INLIER_MIDPOINT) * decide.INLIERS_ONLY.inliers)
            xs.append(got[obj])
            ys.append(obj == truth)
    return np.array(off), np.array(xs), np.array(ys, float)


def fit_margin(off: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Bias and margin weight of logistic(offset + bias + weight x margin) (fit, with the inlier term as offset)."""
    bias, weight = fit(x[:, None], y, l2=1e-6, offset=off)
    return float(bias), float(weight)


def margin_acceptance(bias: float, weight: float) -> decide.Acceptance:
    return decide.Acceptance(bias, decide.INLIERS_ONLY.inliers, 0.0, 0.0, weight)


def tune_margin(dump: list, margins: list) -> tuple[float, float]:  # type: ignore[type-arg]
    """The grid's (bias, weight) with the most far recall that keeps near recall and unknown rejection at least
    the inliers' score's on this dump (ties: the smaller weight, then the bias nearest 0)."""
    base = figures(dump, decide.INLIERS_ONLY, margins=margins)
    best: tuple[tuple[float, float, float], tuple[float, float]] | None = None
    for weight in (0.0, 5, 10, 20, 30, 40, 60, 80):
        for bias in np.arange(-4.0, 2.01, 0.25):
            f = figures(dump, margin_acceptance(float(bias), weight), margins=margins)
            if f["near"] >= base["near"] and f["unknown"] >= base["unknown"]:
                key = (f["far"], -weight, -abs(float(bias)))
                if best is None or key > best[0]:
                    best = (key, (float(bias), weight))
    return best[1] if best else (0.0, 0.0)


def main_margin(args: argparse.Namespace) -> None:
    """--margin: fit and tune the margin's bias and weight on each half, report on the other."""
    load = lambda p: (pickle.loads(p.read_bytes()), pickle.loads(p.with_name(p.name + ".margins").read_bytes()))  # noqa: E731
    halves = [load(args.half1), load(args.half2)]
    extra = [(p.stem, load(p)) for p in args.extra]
    for k in (0, 1):
        dump, margins = halves[k]
        off, x, y = margin_samples(dump, margins)
        fitted = fit_margin(off, x, y)
        tuned = tune_margin(dump, margins)
        print(f"half {k + 1}: {len(y)} candidates with a margin ({int(y.sum())} right); fitted bias {fitted[0]:+.2f} "
              f"weight {fitted[1]:.1f}; tuned (grid) bias {tuned[0]:+.2f} weight {tuned[1]:g}", flush=True)
        for label, (d, m) in [(f"half {k + 1}", halves[k]), (f"half {2 - k} (held out)", halves[1 - k])] + extra:
            print(f" {label}:")
            print(_show("inliers only", figures(d, decide.INLIERS_ONLY, margins=m)))
            print(_show(f"fitted on half {k + 1}", figures(d, margin_acceptance(*fitted), margins=m)))
            print(_show(f"tuned on half {k + 1}", figures(d, margin_acceptance(*tuned), margins=m)))
            print(f"   calibration of the fitted score: "
                  f"{calibration(figures(d, margin_acceptance(*fitted), margins=m)['_tops'])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("half1", type=Path)
    ap.add_argument("half2", type=Path)
    ap.add_argument("--extra", type=Path, action="append", default=[], help="More dumps to report on (dev cars)")
    ap.add_argument("--margin", action="store_true", help="Fit and tune the embedding margin's bias and weight")
    args = ap.parse_args()
    if args.margin:
        main_margin(args)
        return
    halves = [pickle.loads(args.half1.read_bytes()), pickle.loads(args.half2.read_bytes())]
    extra = [(p.stem, pickle.loads(p.read_bytes())) for p in args.extra]
    names = ", ".join(decide.FEATURE_NAMES)
    fitted = []
    for k in (0, 1):
        x, y = samples(halves[k], None)
        w = fit(x, y)
        fitted.append(w)
        print(f"fitted on half {k + 1} ({len(y)} candidates, {int(y.sum())} right): bias {w[0]:.3f}, "
              f"weights ({names}) {', '.join(f'{v:.3f}' for v in w[1:])}", flush=True)
    x = np.vstack([samples(h, None)[0] for h in halves])
    y = np.concatenate([samples(h, None)[1] for h in halves])
    pooled = fit(x, y)
    print(f"fitted on both: bias {pooled[0]:.3f}, weights {', '.join(f'{v:.3f}' for v in pooled[1:])}")
    as_acc = lambda w: decide.Acceptance(*map(float, w))  # noqa: E731
    for k in (0, 1):
        other = 1 - k
        print(f"half {other + 1} (held out):")
        print(_show("inliers only (midpoint 17)", figures(halves[other], decide.INLIERS_ONLY)))
        print(_show("decide.py (CAR_ACCEPTANCE)", figures(halves[other], decide.CAR_ACCEPTANCE)))
        print(_show(f"fitted on half {k + 1}", figures(halves[other], as_acc(fitted[k]))))
        print(_show("fitted on both", figures(halves[other], as_acc(pooled))))
    for label, dump in extra:
        print(f"{label}:")
        print(_show("inliers only", figures(dump, decide.INLIERS_ONLY)))
        print(_show("decide.py (CAR_ACCEPTANCE)", figures(dump, decide.CAR_ACCEPTANCE)))
        for k in (0, 1):
            print(_show(f"fitted on half {k + 1}", figures(dump, as_acc(fitted[k]))))
    for label, dump in [("half 1", halves[0]), ("half 2", halves[1])] + extra:
        print(f"calibration of decide.py's score, {label} (share right per top score bin): "
              f"{calibration(figures(dump, decide.CAR_ACCEPTANCE)['_tops'])}")
    _ = math


if __name__ == "__main__":
    main()
