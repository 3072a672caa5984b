"""End-to-end benchmark: Forecourt's running server against rembg (PyPI) on the same IS-Net .onnx file, same run.

Both remove the background of a 1918x1280 Carvana JPEG at full size with PNG out, from 2 concurrent clients.
Prints throughput of each and the ratio (target >= 1.25x), the server's time beyond model inference (target <= 15%),
and the peak RSS of each gunicorn worker.

    .venv/bin/python scripts/bench_removebg.py [../shared/data] [--requests 12]

rembg is installed by `make bench` (`pip install -e .[bench]`); it is given our verified file and downloads nothing.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: Path, models_dir: Path, workers: int, threads: int) -> tuple[subprocess.Popen, str, dict]:
    port = free_port()
    env = dict(os.environ, FORECOURT_STORAGE__DATA_DIR=str(data_dir), FORECOURT_MODELS__DIR=str(models_dir),
               FORECOURT_SERVER__PORT=str(port), FORECOURT_SERVER__WORKERS=str(workers),
               FORECOURT_SERVER__THREADS="2", FORECOURT_MODELS__THREADS=str(threads),
               FORECOURT_LOGGING__LEVEL="WARNING", FORECOURT_RATE_LIMIT__ENABLED="false",
               FORECOURT_LICENSING__STATE_DIR=str(data_dir / "state"))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    subprocess.run([sys.executable, "-m", "server.cli", "users", "create", "bench@localhost.localdomain", "--role",
                    "admin", "--password", "benchmark-password"], env=env, cwd=REPO, check=True, capture_output=True)
    key = subprocess.run([sys.executable, "-m", "server.cli", "keys", "create", "bench@localhost.localdomain"],
                         env=env, cwd=REPO, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve"], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if requests.get(url + "/livez", timeout=1).ok:
                break
        except requests.RequestException:
            time.sleep(0.2)
    return proc, url, {"X-Api-Key": key}


def worker_pids(master: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
    # `forecourt serve` execs gunicorn, so the master is the process we started
    return [int(p) for p in out]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def metric_sum(text: str, name: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M))


def run_concurrently(fn, items: list, clients: int) -> tuple[float, list[float]]:  # type: ignore[no-untyped-def]
    latencies: list[float] = []

    def one(item) -> None:  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        fn(item)
        latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, items))
    return time.perf_counter() - start, latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--requests", type=int, default=12, help="Images per contender.")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers.")
    parser.add_argument("--threads", type=int, default=1, help="Inference threads per worker.")
    parser.add_argument("--models-dir", type=Path, default=REPO / "var" / "models")
    parser.add_argument("--type", default="auto", help="remove.bg type; car adds the car filter and (by default) a "
                        "second, mirrored model pass that rembg does not do")
    args = parser.parse_args()

    images = sorted((args.data / "carvana" / "images").glob("*.jpg"))[: args.requests]
    payloads = [p.read_bytes() for p in images]
    print(f"{len(payloads)} Carvana JPEGs (1918x1280), size=full, type={args.type}, PNG out, "
          f"{args.clients} concurrent clients")

    with tempfile.TemporaryDirectory(prefix="bench-removebg-") as tmp:
        proc, url, headers = start_server(Path(tmp) / "data", args.models_dir.resolve(), args.workers, args.threads)
        try:
            def call(data: bytes) -> None:
                r = requests.post(url + "/v1.0/removebg", headers=headers,
                                  files={"image_file": ("car.jpg", data, "image/jpeg")},
                                  data={"size": "full", "format": "png", "type": args.type}, timeout=300)
                r.raise_for_status()

            run_concurrently(call, payloads[: args.workers * 2], args.clients)  # warm up every worker
            before = requests.get(url + "/metrics").text
            ours_s, ours_lat = run_concurrently(call, payloads, args.clients)
            after = requests.get(url + "/metrics").text
            infer = (metric_sum(after, "forecourt_model_inference_seconds_sum")
                     - metric_sum(before, "forecourt_model_inference_seconds_sum"))
            route_sum = r'forecourt_http_request_duration_seconds_sum{method="POST",route="/v1.0/removebg"}'
            served = (metric_sum(after, re.escape(route_sum)) - metric_sum(before, re.escape(route_sum)))
            rss = [peak_rss_mb(p) for p in worker_pids(proc.pid)]
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)

    ours_tput = len(payloads) / ours_s
    print(f"forecourt: {ours_tput:.3f} images/s, median latency {statistics.median(ours_lat):.2f} s")
    overhead = (served - infer) / served * 100 if served else float("nan")
    print(f"forecourt server time beyond model inference: {overhead:.1f}% "
          f"(requests {served:.1f} s, inference {infer:.1f} s; target <= 15%)")
    print("forecourt peak RSS per worker: " + ", ".join(f"{r:.0f} MB" for r in rss))

    try:
        os.environ["U2NET_HOME"] = str(args.models_dir)
        import onnxruntime as ort
        from rembg import new_session, remove
    except ImportError:
        print("rembg is not installed (`make bench` installs it): no ratio")
        return 0
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads * args.workers
    model = args.models_dir / "isnet-medium.onnx"
    session = new_session("dis_custom", model_path=str(model), providers=["CPUExecutionProvider"], sess_opts=options)
    remove(payloads[0], session=session)
    rembg_s, rembg_lat = run_concurrently(lambda data: remove(data, session=session), payloads, args.clients)
    rembg_tput = len(payloads) / rembg_s
    print(f"rembg dis_custom (same .onnx, in-process, no HTTP): {rembg_tput:.3f} images/s, "
          f"median latency {statistics.median(rembg_lat):.2f} s")
    print(f"throughput ratio forecourt/rembg: {ours_tput / rembg_tput:.2f}x (target >= 1.25x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
