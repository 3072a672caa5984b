"""Per-stage time of one full-size background removal, in-process (no HTTP): where the CPU time around the model goes.

Runs the stages of `server/services/removebg.py` (type=auto's general matte, size=full, PNG out) on Carvana photos:
decode, resize, IS-Net preprocess, `session.run`, upscale, edges, compose, encode; prints each stage's median ms
and the share outside `session.run`.

    .venv/bin/python scripts/bench_stages.py [../shared/data] [--images 6] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from models import compose, imaging, refine
from models.registry import get_segmenter
from models.segmenters.isnet import preprocess
from server.services.removebg import Options, output_megapixels

REPO = Path(__file__).resolve().parents[1]

NAMES = ("decode", "resize", "preprocess", "model", "upscale", "edges", "compose", "encode")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1, help="Inference threads.")
    parser.add_argument("--models-dir", type=Path, default=REPO / "var" / "models")
    args = parser.parse_args()
    seg = get_segmenter("isnet-general", args.models_dir, device="cpu", threads=args.threads)
    seg.load()
    paths = sorted((args.data / "carvana" / "images").glob("*.jpg"))[: args.images + 1]
    opts = Options(size="full", format="png")
    stages: dict[str, list[float]] = {k: [] for k in NAMES}
    for i, path in enumerate(paths):
        data = path.read_bytes()
        t = [time.perf_counter()]
        img = imaging.decode(data, draft_megapixels=opts.draft_megapixels)
        t.append(time.perf_counter())
        work = imaging.resize_to_megapixels(img, output_megapixels(opts, "full"))
        rgb = np.asarray(work if work.mode == "RGB" else work.convert("RGB"))
        t.append(time.perf_counter())
        blob = preprocess(rgb)
        t.append(time.perf_counter())
        out = seg._session.run([seg._output], {seg._input: blob})[0]
        t.append(time.perf_counter())
        prob = np.clip(cv2.resize(out[0, 0], (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR), 0, 1)
        t.append(time.perf_counter())
        alpha = refine.refine_alpha(rgb, prob)
        t.append(time.perf_counter())
        alpha_u8 = cv2.convertScaleAbs(alpha, alpha=255.0)
        compose.foreground_box(alpha_u8)
        layers = cv2.cvtColor(refine.decontaminate(rgb, alpha), cv2.COLOR_RGB2RGBA)
        layers[..., 3] = alpha_u8
        compose.foreground_box(layers[..., -1])
        compose.has_transparency(layers)
        t.append(time.perf_counter())
        compose.encode(layers, "png")
        t.append(time.perf_counter())
        if i:  # the first image warms up
            for name, a, b in zip(NAMES, t, t[1:], strict=False):
                stages[name].append((b - a) * 1000)
    med = {k: statistics.median(v) for k, v in stages.items()}
    total = sum(med.values())
    print(" | ".join(f"{k} {v:.1f}" for k, v in med.items()) + f" | total {total:.0f} ms")
    print(f"outside session.run: {100 * (total - med['model']) / total:.1f}% ({total - med['model']:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
