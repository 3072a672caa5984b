"""Peak memory of one recognition reference upload at the 25-megapixel limit ([recognition] max_query_megapixels).

Builds an app in this process on a temporary folder, sends one small real photo twice first (so the segmenter of a
car collection is loaded and warm, and the index exists), then posts each 25 MP input alone and prints the growth of resident
memory during that request (VmHWM after resetting it, minus VmRSS before): a single-colour 4999x5000 PNG (24 KB on
the wire, 75 MB decoded) and a real photo (a Carvana JPEG upscaled to 6124x4082). Linux only (/proc/self).

    .venv/bin/python scripts/bench_upload_memory.py [../shared/data] [--kind generic|car] [--models-dir var/models]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PHOTO = "carvana/images/0ce66b539f52_03.jpg"


def status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def inputs(data: Path) -> dict[str, bytes]:
    flat = io.BytesIO()
    Image.new("L", (4999, 5000), 77).save(flat, "PNG", optimize=True)
    photo = io.BytesIO()
    with Image.open(data / PHOTO) as img:
        img.convert("RGB").resize((6124, 4082), Image.Resampling.BICUBIC).save(photo, "JPEG", quality=90)
    return {"flat PNG 4999x5000": flat.getvalue(), "photo JPEG 6124x4082": photo.getvalue()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--kind", choices=["generic", "car"], default="generic", help="the collection's object_type")
    parser.add_argument("--models-dir", type=Path, default=REPO / "var" / "models")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    tmp = Path(tempfile.mkdtemp(prefix="forecourt-bench-upload-"))
    os.environ.setdefault("FORECOURT_LICENSING__STATE_DIR", str(tmp / "state"))
    from server import create_app
    from server.services import accounts
    from server.store import get_db

    app = create_app({"storage": {"data_dir": str(tmp / "data")},
                      "models": {"dir": str(args.models_dir), "require": False, "threads": 1},
                      "logging": {"level": "ERROR"}, "rate_limit": {"enabled": False},
                      "licensing": {"state_dir": str(tmp / "state")}, "queue": {"threads": 0}})
    with app.app_context():
        user = accounts.create_user(get_db(), "bench@dealer.example", "benchmark-password", "admin")
        key, _ = accounts.create_key(get_db(), user["id"], "bench")
    client, h = app.test_client(), {"X-Api-Key": key}
    cid = client.post("/v1/collections", json={"name": "c", "object_type": args.kind}, headers=h).get_json()["id"]
    url = f"/v1/collections/{cid}/objects/o/images"
    client.put(f"/v1/collections/{cid}/objects/o", json={"name": "o"}, headers=h)
    for _ in range(2):  # the model's buffers come with the first run (the second grew them once more until MEM_PATTERN)
        warm = client.post(url, data={"image_file": (io.BytesIO((args.data / PHOTO).read_bytes()), "warm.jpg")},
                           headers=h, content_type="multipart/form-data")
        assert warm.status_code == 200, warm.get_data(as_text=True)
    for name, body in inputs(args.data).items():
        before = status_mb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM back to the current RSS
        resp = client.post(url, data={"image_file": (io.BytesIO(body), "big")}, headers=h,
                           content_type="multipart/form-data", query_string={"force": "true"})
        growth = status_mb("VmHWM") - before
        got = resp.get_json()["images"][0] if resp.status_code == 200 else resp.get_json()
        print(f"{args.kind} {name}: peak growth {growth:.0f} MB (status {resp.status_code}, "
              f"{got.get('status')}, {got.get('keypoints')} keypoints, {len(body) / 1e6:.1f} MB upload)")


if __name__ == "__main__":
    main()
