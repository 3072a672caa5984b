"""Milliseconds per image of our segmenter against rembg's `dis_custom` session on the same IS-Net .onnx file.

    .venv/bin/python scripts/bench_segmenter.py ../shared/data [--rounds 3] [--images 4] [--threads 2]

Both run in this process, alternating image by image so that load from other processes hits both alike;
rembg is given our verified file (REMBG_HOME points at the models folder) and downloads nothing.
Target: ours >= 1.25x rembg's throughput.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path

from PIL import Image

from models.manifest import ISNET_GENERAL
from models.registry import get_segmenter


def pick_images(data: Path, count: int) -> list[Image.Image]:
    """`count` photos spread over the datasets with masks (Carvana 1918x1280 and Roboflow 480x360)."""
    with open(data / "PAIRS.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    step = max(1, len(rows) // count)
    images = []
    for row in rows[::step][:count]:
        image = Image.open(data / row["image"]).convert("RGB")
        images.append(image)
    return images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--models-dir", type=Path,
                        default=Path(os.environ.get("FORECOURT_TEST_MODELS_DIR", "var/models")))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kind", default="auto")
    parser.add_argument("--precision", default="auto", help="auto (int8 on VNNI/AMX CPUs), int8, fp32, fp16")
    args = parser.parse_args(argv)

    models_dir = args.models_dir.expanduser().resolve()
    model_path = ISNET_GENERAL.path(models_dir)
    ISNET_GENERAL.check(models_dir)
    images = pick_images(args.data, args.images)

    ours = get_segmenter(ISNET_GENERAL.name, models_dir, device="cpu", threads=args.threads,
                         precision=args.precision)
    ours.load()
    try:
        import onnxruntime as ort

        os.environ["REMBG_HOME"] = str(models_dir)
        from rembg import new_session
    except ImportError:
        print("rembg is not installed (pip install rembg): measuring ours alone")
        new_session = None
    rembg = None
    if new_session is not None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        rembg = new_session("dis_custom", model_path=str(model_path), providers=["CPUExecutionProvider"],
                            sess_opts=options)

    ours.mask(images[0], kind=args.kind)  # warm up both
    if rembg is not None:
        rembg.predict(images[0])
    ours_ms: list[float] = []
    rembg_ms: list[float] = []
    for _ in range(args.rounds):
        for image in images:
            start = time.perf_counter()
            ours.mask(image, kind=args.kind)
            ours_ms.append((time.perf_counter() - start) * 1000)
            if rembg is not None:
                start = time.perf_counter()
                rembg.predict(image)
                rembg_ms.append((time.perf_counter() - start) * 1000)

    n = len(ours_ms)
    ours_median = statistics.median(ours_ms)
    print(f"images: {len(images)} x {args.rounds} rounds, threads={args.threads}, kind={args.kind}")
    graph = getattr(ours, "running_precision", "?")
    print(f"ours  (forecourt {ISNET_GENERAL.name}, {graph} graph): median {ours_median:.0f} ms/image, "
          f"mean {statistics.fmean(ours_ms):.0f} ms/image (n={n})")
    if rembg_ms:
        rembg_median = statistics.median(rembg_ms)
        print(f"rembg (dis_custom, same .onnx):            median {rembg_median:.0f} ms/image, "
              f"mean {statistics.fmean(rembg_ms):.0f} ms/image (n={n})")
        paired = statistics.median(r / o for r, o in zip(rembg_ms, ours_ms, strict=True))
        print(f"throughput ratio ours/rembg: {rembg_median / ours_median:.2f}x by medians, "
              f"{paired:.2f}x median of paired runs (target >= 1.25x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
