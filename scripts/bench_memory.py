"""Memory of one gunicorn worker at remove.bg's 50-megapixel input limit, for sizing [server] workers.

Starts real gunicorn (1 worker), loads the model with a small photo, then sends 50 MP inputs with size=full and PNG
out (remove.bg's heaviest answer): a 7071x7071 single-colour PNG (157 KB on the wire) and a 50 MP photo (a Carvana
JPEG upscaled). Prints the worker's resident memory idle (model loaded) and its peak per input, then the same with
`--threads` such requests at once in that one worker. The last line gives the figures behind [server]
worker_memory_mb (idle) and request_memory_mb (one 50 MP request), by which gunicorn_conf.py sizes workers.

    .venv/bin/python scripts/bench_memory.py [../shared/data] [--threads 4] [--models-dir var/models]

`--first-calls` measures the segmenter alone instead, with onnxruntime's memory pattern on (the old setting) and off
(models/segmenters/isnet.py MEM_PATTERN): a fresh process per setting, in turns, prints the RSS after loading and
after each of the first `--calls` mask calls on one photo (or on photos of `--sizes` long sides in turn); then one
process holds both sessions and alternates them photo by photo (other load on the box hits both alike) for the
photos/s ratio of the two, and the largest difference between their masks.

    .venv/bin/python scripts/bench_memory.py --first-calls [--precision int8] [--type car] [--rounds 3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from bench_removebg import start_server, worker_pids
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SIDE = 7071  # 7071 x 7071 = 49.998 MP, just under the 50 MP limit


def status_mb(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def reset_peak(pid: int) -> None:
    """VmHWM back to the current RSS (Linux: clear_refs 5), so the next peak is this request's."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def wait_for_worker(master: int, url: str, deadline_s: float = 600) -> int:
    """The one worker's pid, once it answers (polls state with a generous deadline for a busy box)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        pids = worker_pids(master)
        try:
            if len(pids) == 1 and requests.get(url + "/livez", timeout=5).ok:
                return pids[0]
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise SystemExit(f"no worker answered within {deadline_s:.0f} s")


def inputs(data: Path) -> dict[str, tuple[str, bytes]]:
    buf = io.BytesIO()
    Image.new("RGB", (SIDE, SIDE), (200, 40, 40)).save(buf, "PNG", optimize=True)
    flat = buf.getvalue()
    photo = Image.open(sorted((data / "carvana" / "images").glob("*.jpg"))[0]).convert("RGB")
    factor = (50e6 * 0.9999 / (photo.width * photo.height)) ** 0.5
    big = photo.resize((int(photo.width * factor), int(photo.height * factor)), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=90)
    return {f"single-colour PNG {SIDE}x{SIDE} ({len(flat) / 1e3:.0f} KB)": ("flat.png", flat),
            f"photo JPEG {big.width}x{big.height} ({len(buf.getvalue()) / 1e6:.1f} MB)": ("car.jpg", buf.getvalue())}


SETTINGS = {"on": True, "off": False}  # onnxruntime's memory pattern: on = the old setting, off = MEM_PATTERN


def segmenter(models_dir: Path, mem_pattern: bool, precision: str, threads: int):  # type: ignore[no-untyped-def]
    """A loaded IS-Net segmenter of its own (not the registry's) with the memory pattern on or off."""
    from models.manifest import ISNET_GENERAL
    from models.segmenters.isnet import IsNetSegmenter

    seg = IsNetSegmenter(ISNET_GENERAL, models_dir, device="cpu", threads=threads, precision=precision)
    seg.mem_pattern = mem_pattern
    seg.load()
    return seg


def photos(data: Path, count: int, sides: list[int]) -> list:
    """`count` Carvana photos (HxWx3 uint8), or the first one resized to each of `sides` (long side, px)."""
    import numpy as np

    paths = sorted((data / "carvana" / "images").glob("*.jpg"))
    if not sides:
        return [np.asarray(Image.open(path).convert("RGB")) for path in paths[::max(1, len(paths) // count)][:count]]
    photo = Image.open(paths[0]).convert("RGB")
    return [np.asarray(photo.resize((round(photo.width * side / max(photo.size)),
                                     round(photo.height * side / max(photo.size))), Image.Resampling.BILINEAR))
            for side in sides]


def first_calls_child(args: argparse.Namespace) -> int:
    """In this fresh process: RSS after loading and after each of the first `--calls` mask calls, as one JSON line."""
    seg = segmenter(args.models_dir, SETTINGS[args.child], args.precision, args.model_threads)
    images = photos(args.data, 1, args.sizes)
    pid = os.getpid()
    rss, peaks = [], []
    loaded = status_mb(pid, "VmRSS")
    for i in range(args.calls):
        reset_peak(pid)
        seg.mask(images[i % len(images)], args.type, mirror=args.type == "car")
        rss.append(status_mb(pid, "VmRSS"))
        peaks.append(status_mb(pid, "VmHWM"))
    print(json.dumps({"loaded": loaded, "rss": rss, "peak": peaks, "precision": seg.running_precision}))
    return 0


def first_calls(args: argparse.Namespace) -> int:
    """Memory of the first mask calls and throughput, memory pattern on (old) against off (new)."""
    import numpy as np

    passes = "type=car, two passes" if args.type == "car" else f"type={args.type}, one pass"
    what = f"long sides {', '.join(map(str, args.sizes))} px in turn" if args.sizes else "one 1918x1280 photo"
    if args.calls:
        print(f"first {args.calls} mask calls in a fresh process ({passes}, {what}), RSS after each:")
    for turn in range(args.rounds if args.calls else 0):
        for name in (("on", "off") if turn % 2 == 0 else ("off", "on")):
            cmd = [sys.executable, __file__, str(args.data), "--child", name, "--calls", str(args.calls),
                   "--precision", args.precision, "--type", args.type, "--models-dir", str(args.models_dir),
                   "--model-threads", str(args.model_threads), *(["--sizes", *map(str, args.sizes)] if args.sizes
                                                                 else [])]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            got = json.loads(out)
            steps = " / ".join(f"{mb:.0f}" for mb in got["rss"])
            print(f"memory pattern {name:>3} ({got['precision']}): loaded {got['loaded']:.0f} MB, calls 1-{args.calls}: "
                  f"{steps} MB, highest peak {max(got['peak']):.0f} MB")
    segs = {name: segmenter(args.models_dir, on, args.precision, args.model_threads) for name, on in SETTINGS.items()}
    images = photos(args.data, args.images, [])
    for seg in segs.values():  # past the one-off growth on both before timing
        for _ in range(2):
            seg.mask(images[0], args.type, mirror=args.type == "car")
    seconds, model = dict.fromkeys(segs, 0.0), dict.fromkeys(segs, 0.0)
    worst = 0.0
    for turn in range(args.rounds):
        for index, image in enumerate(images):
            masks = {}  # who goes first swaps photo by photo: the second run of a pair meets the first one's threads
            for name in (("on", "off") if (turn * len(images) + index) % 2 == 0 else ("off", "on")):
                start = time.perf_counter()
                masks[name] = segs[name].mask(image, args.type, mirror=args.type == "car")
                seconds[name] += time.perf_counter() - start
                model[name] += segs[name].last_stages.get("model", 0.0)
            worst = max(worst, float(np.abs(masks["on"] - masks["off"]).max()))
    count = args.rounds * len(images)
    for name in segs:
        print(f"memory pattern {name:>3}: {count / seconds[name]:.3f} photos/s ({seconds[name] / count * 1000:.0f} "
              f"ms a photo, of which the model run {model[name] / count * 1000:.0f} ms; {count} photos alternated)")
    print(f"throughput off / on: {seconds['on'] / seconds['off']:.3f}x (model run alone {model['on'] / model['off']:.3f}x)"
          f"; largest mask difference {worst:.2g}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads of the worker, and 50 MP requests "
                        "sent to it at once (the default config runs 4).")
    parser.add_argument("--models-dir", type=Path, default=REPO / "var" / "models")
    parser.add_argument("--first-calls", action="store_true", help="the segmenter alone: memory of its first calls "
                        "and throughput, onnxruntime's memory pattern on against off.")
    parser.add_argument("--calls", type=int, default=5, help="--first-calls: mask calls per fresh process (0: "
                        "throughput only).")
    parser.add_argument("--sizes", type=int, nargs="*", default=[], help="--first-calls: long sides (px) of the "
                        "photo, one a call in turn (default: the photo as it is).")
    parser.add_argument("--precision", default="auto", help="--first-calls: auto, int8 or fp32.")
    parser.add_argument("--type", default="auto", choices=["auto", "car"], help="--first-calls: car runs two passes.")
    parser.add_argument("--rounds", type=int, default=2, help="--first-calls: fresh processes per setting, and "
                        "rounds over the photos for throughput.")
    parser.add_argument("--images", type=int, default=3, help="--first-calls: photos for throughput.")
    parser.add_argument("--model-threads", type=int, default=0, help="--first-calls: onnxruntime threads (0: cores).")
    parser.add_argument("--child", choices=list(SETTINGS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child or args.first_calls:
        sys.path.insert(0, str(REPO))
        args.models_dir = args.models_dir.resolve()
        return first_calls_child(args) if args.child else first_calls(args)
    cases = inputs(args.data)
    warm = sorted((args.data / "carvana" / "images").glob("*.jpg"))[0].read_bytes()

    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        server = argparse.Namespace(workers=1, server_threads=args.threads, clients=[args.threads], threads=0,
                                    device="auto", batch_size=0, batch_wait_ms=5.0)  # the config's defaults
        proc, url, headers = start_server(Path(tmp) / "data", args.models_dir.resolve(), server)
        try:
            pid = wait_for_worker(proc.pid, url)

            def call(name: str, data: bytes) -> str:
                r = requests.post(url + "/v1.0/removebg", headers=headers, files={"image_file": (name, data)},
                                  data={"size": "full", "format": "png"}, timeout=1800)
                if r.ok:
                    return f"{r.status_code}"
                code = r.json()["errors"][0]["code"] if r.headers.get("content-type", "").startswith(
                    "application/json") else ""
                if code != "unknown_foreground":  # a single colour has no foreground: decoded and run all the same
                    raise SystemExit(f"{name}: {r.status_code} {r.text[:500]}")
                return f"{r.status_code} {code}"

            call("warm.jpg", warm)
            idle = status_mb(pid, "VmRSS")
            print(f"idle worker, model loaded: {idle:.0f} MB")
            worst = idle
            for label, (name, data) in cases.items():
                reset_peak(pid)
                answer = call(name, data)
                peak = status_mb(pid, "VmHWM")
                worst = max(worst, peak)
                print(f"{label}, size=full PNG out (answered {answer}): peak {peak:.0f} MB "
                      f"(+{peak - idle:.0f} MB over idle)")
            name, data = list(cases.values())[-1]
            reset_peak(pid)
            with ThreadPoolExecutor(args.threads) as pool:
                list(pool.map(lambda _: call(name, data), range(args.threads)))
            together = status_mb(pid, "VmHWM")
            print(f"{args.threads} 50 MP photos at once in one worker: peak {together:.0f} MB "
                  f"(+{together - idle:.0f} MB over idle)")
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
    print(f"memory per worker at the 50 MP limit: {together:.0f} MB with {args.threads} threads busy, {worst:.0f} MB "
          f"with one request; [server] worker_memory_mb ~ {idle:.0f}, request_memory_mb ~ "
          f"{max(worst - idle, (together - idle) / args.threads):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
