"""Catalog benchmark: time to render one Carvana car's photos (real model), and served-image latency.

In-process (Flask test client, no HTTP): uploads the photos of one car, drains the render queue in one thread,
then serves resized WebP variants of the renders, uncached (first request of each size) and cached (repeats).
The peer, measured in the same run on the same renders: a plain Pillow open + resize + WebP encode, which is the
least an uncached request must do. Prints one line a figure and the ratios.

    .venv/bin/python scripts/bench_catalog.py [../shared/data] [--photos 16] [--car 0ce66b539f52]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ANGLES8 = ("front", "front_left", "left", "rear_left", "rear", "rear_right", "right", "front_right")


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--photos", type=int, default=16)
    parser.add_argument("--car", default="0ce66b539f52")
    parser.add_argument("--size", choices=("auto", "preview", "medium", "hd", "full"), default="preview",
                        help="catalog.render_size (the working size of the segmentation)")
    parser.add_argument("--canvas", default="1200x800", help="the studio profile's output size")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="forecourt-bench-catalog-"))
    os.environ.setdefault("FORECOURT_LICENSING__STATE_DIR", str(tmp / "state"))
    from server import create_app
    from server.services import accounts, catalog_jobs
    from server.store import get_db

    app = create_app({
        "storage": {"data_dir": str(tmp / "data")},
        "models": {"dir": os.environ.get("FORECOURT_MODELS__DIR", str(REPO / "var" / "models")), "require": False},
        "logging": {"level": "WARNING"}, "rate_limit": {"enabled": False},
        "licensing": {"state_dir": str(tmp / "state")},
        "catalog": {"render_size": args.size}, "queue": {"threads": 0},
    })
    with app.app_context():
        user = accounts.create_user(get_db(), "bench@dealer.example", "benchmark-password", "admin")
        key, _ = accounts.create_key(get_db(), user["id"], "bench")
    h = {"X-Api-Key": key}
    client = app.test_client()
    width, height = (int(v) for v in args.canvas.split("x"))
    client.patch("/v1/profiles/1", json={"width": width, "height": height}, headers=h)
    vehicle = client.post("/v1/vehicles", json={"vin": "1HGCM82633A004352"}, headers=h).get_json()
    folder = Path(args.data) / "carvana" / "images"
    names = [f"{args.car}_{n:02d}.jpg" for n in range(1, args.photos + 1)]
    data = {"photo": [(io.BytesIO((folder / n).read_bytes()), n) for n in names],
            "angle": [ANGLES8[round(i / 2) % 8] for i in range(len(names))]}
    t0 = time.perf_counter()
    resp = client.post(f"/v1/vehicles/{vehicle['id']}/photos", data=data, headers=h,
                       content_type="multipart/form-data")
    upload_s = time.perf_counter() - t0
    assert resp.status_code == 201, resp.get_data(as_text=True)
    import numpy as np

    from server.config import get_settings
    from server.services import segmentation

    with app.app_context():  # load the model outside the timing
        segmentation.segmenter(get_settings()).mask(np.zeros((64, 64, 3), np.uint8), kind="car")
    t0 = time.perf_counter()
    rendered = catalog_jobs.run_pending(app)
    render_s = time.perf_counter() - t0
    per = render_s / max(1, rendered)
    client.patch("/v1/profiles/1", json={"bg_color": "eeeeee", "scale": 0.8}, headers=h)  # a new look
    t0 = time.perf_counter()
    catalog_jobs.run_pending(app)
    rerender_s = time.perf_counter() - t0
    images = client.get(f"/v1/vehicles/{vehicle['id']}/images", headers=h).get_json()["data"]
    assert len(images) == len(names), client.get(f"/v1/vehicles/{vehicle['id']}/photos", headers=h).get_json()

    def timed(url: str) -> float:
        start = time.perf_counter()
        r = client.get(url, headers=h)
        assert r.status_code == 200, r.get_data(as_text=True)
        return (time.perf_counter() - start) * 1000

    widths = (320, 640, 1024)
    uncached = [timed(f"{i['url']}?width={w}&format=webp") for i in images for w in widths]
    cached = [timed(f"{i['url']}?width={w}&format=webp") for _ in range(3) for i in images for w in widths]
    original = [timed(i["url"]) for _ in range(3) for i in images]

    from PIL import Image, ImageOps

    data_dir = tmp / "data"
    with app.app_context():
        paths = [data_dir / get_db()["catalog_renders"].get(i["id"])["path"] for i in images]

    def pillow(path: Path, w: int) -> float:
        start = time.perf_counter()
        with Image.open(path) as src:
            img = ImageOps.contain(src.convert("RGB"), (w, round(w * src.height / src.width)), Image.LANCZOS)
        img.save(io.BytesIO(), "WEBP", quality=85)
        return (time.perf_counter() - start) * 1000

    peer = [pillow(p, w) for p in paths for w in widths]
    print(f"upload {len(names)} photos (decode, hash, store): {upload_s:.2f} s")
    print(f"render {len(names)} photos ({args.size}, {args.canvas} canvas, 1 thread, model loaded): "
          f"{render_s:.1f} s (~{per:.2f} s/photo)")
    print(f"re-render {len(names)} photos after a colour/scale change (cached cutouts): {rerender_s:.1f} s")
    print(f"served resized webp, uncached: median {statistics.median(uncached):.1f} ms (n={len(uncached)})")
    print(f"served resized webp, cached: median {statistics.median(cached):.2f} ms (n={len(cached)})")
    print(f"served render as stored: median {statistics.median(original):.2f} ms (n={len(original)})")
    print(f"peer, plain Pillow open+resize+webp encode: median {statistics.median(peer):.1f} ms (n={len(peer)})")
    print(f"uncached/peer ratio: {statistics.median(uncached) / statistics.median(peer):.2f}x")
    print(f"cached/peer ratio: {statistics.median(cached) / statistics.median(peer):.3f}x")
    print(f"uncached/cached ratio: {statistics.median(uncached) / statistics.median(cached):.1f}x")


if __name__ == "__main__":
    main()
