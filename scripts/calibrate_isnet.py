"""Measure IS-Net's activation ranges for int8 quantization and write them to models/calibration/ (committed).

    .venv/bin/python scripts/calibrate_isnet.py ../shared/data [--images 8]

Uses the `distractors/` photos only (never the evaluation sets), min/max calibration on the fp32 graph.
The Segmenter quantizes from this file at load time; rerun only when the model or the recipe changes.
Photos: Car-Parts-Segmentation (Pasupa et al., 2021).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from models.manifest import ISNET_GENERAL
from models.segmenters.isnet import INPUT_SIDE, preprocess
from models.segmenters.onnx_graph import CALIBRATION, QUANT_OPTIONS, to_fp32_single_output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--models-dir", type=Path,
                        default=Path(os.environ.get("FORECOURT_TEST_MODELS_DIR", "var/models")))
    parser.add_argument("--out", type=Path, default=CALIBRATION)
    args = parser.parse_args(argv)

    from onnxruntime.quantization import CalibrationDataReader, quantize_static

    ISNET_GENERAL.check(args.models_dir)
    photos = sorted((args.data / "distractors").glob("*.jpg"))
    photos = [photos[i] for i in np.linspace(0, len(photos) - 1, args.images).round().astype(int)]

    class Photos(CalibrationDataReader):
        def __init__(self) -> None:
            self.queue = iter(photos)

        def get_next(self) -> dict | None:
            path = next(self.queue, None)
            if path is None:
                return None
            rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
            print(f"  {path.name} {rgb.shape[1]}x{rgb.shape[0]} -> {INPUT_SIDE}", flush=True)
            return {"input": preprocess(rgb)}

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        fp32.write_bytes(to_fp32_single_output(ISNET_GENERAL.path(args.models_dir), "output"))
        quantize_static(str(fp32), str(Path(tmp) / "int8.onnx"), Photos(), calibration_cache_path=str(args.out),
                        **QUANT_OPTIONS())
    print(f"wrote {args.out} from {len(photos)} photos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
