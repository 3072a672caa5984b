"""Memory of one gunicorn worker at remove.bg's 50-megapixel input limit, for sizing [server] workers.

Starts real gunicorn (1 worker), loads the model with a small photo, then sends 50 MP inputs with size=full and PNG
out (remove.bg's heaviest answer): a 7071x7071 single-colour PNG (157 KB on the wire) and a 50 MP photo (a Carvana
JPEG upscaled). Prints the worker's resident memory idle (model loaded) and its peak per input, then the same with
`--threads` such requests at once in that one worker. The last line gives the figures behind [server]
worker_memory_mb (idle) and request_memory_mb (one 50 MP request), by which gunicorn_conf.py sizes workers.

    .venv/bin/python scripts/bench_memory.py [../shared/data] [--threads 4] [--models-dir var/models]
"""

from __future__ import annotations

import argparse
import io
import os
import signal
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads of the worker, and 50 MP requests "
                        "sent to it at once (the default config runs 4).")
    parser.add_argument("--models-dir", type=Path, default=REPO / "var" / "models")
    args = parser.parse_args()
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
