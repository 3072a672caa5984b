"""End-to-end benchmark: Forecourt's running server on full-size Carvana photos, at one or more concurrencies, with
the time per image split by stage; and rembg (PyPI) on the same IS-Net .onnx file in the same run, for a ratio.

Each request removes the background of a 1918x1280 Carvana JPEG at full size with PNG out. Per concurrency it prints
images/s, p50/p95 latency, each stage's ms per image (decode, resize, preprocess, model, upscale, car_filter, edges,
compose, encode) and the share of the server's time outside the model run (target <= 10% on the CPU), then the peak
RSS of each gunicorn worker.

    .venv/bin/python scripts/bench_removebg.py [../shared/data] [--requests 12] [--clients 1 8 32] [--device cuda]

rembg is installed by `make bench` (`pip install -e .[bench]`); it is given our verified file and downloads nothing.
Only the standard library talks HTTP here, so the script also runs in the Docker image (scripts/gpu_check.sh).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("decode", "resize", "classify", "preprocess", "model", "upscale", "car_filter", "edges", "sam", "compose",
          "encode")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, data: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 300) -> bytes:
    request = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data else "GET")
    with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 - a loopback URL we built
        return resp.read()


def multipart(fields: dict[str, str], name: str, filename: str, payload: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with text fields and one file, and its content type."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                 f"Content-Type: image/jpeg\r\n\r\n".encode() + payload + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def start_server(data_dir: Path, models_dir: Path, args: argparse.Namespace) -> tuple[subprocess.Popen, str, dict]:
    port = free_port()
    env = dict(os.environ, FORECOURT_STORAGE__DATA_DIR=str(data_dir), FORECOURT_MODELS__DIR=str(models_dir),
               FORECOURT_SERVER__PORT=str(port), FORECOURT_SERVER__WORKERS=str(args.workers),
               FORECOURT_SERVER__THREADS=str(args.server_threads or max(2, max(args.clients))),
               FORECOURT_MODELS__THREADS=str(args.threads), FORECOURT_MODELS__DEVICE=args.device,
               FORECOURT_MODELS__BATCH_SIZE=str(args.batch_size), FORECOURT_MODELS__BATCH_WAIT_MS=str(args.batch_wait_ms),
               FORECOURT_LOGGING__LEVEL="WARNING", FORECOURT_RATE_LIMIT__ENABLED="false",
               FORECOURT_LICENSING__STATE_DIR=str(data_dir / "state"))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    cli = [sys.executable, "-m", "server.cli"]
    subprocess.run([*cli, "users", "create", "bench@localhost.localdomain", "--role", "admin", "--password",
                    "benchmark-password"], env=env, cwd=REPO, check=True, capture_output=True)
    key = subprocess.run([*cli, "keys", "create", "bench@localhost.localdomain"], env=env, cwd=REPO, check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    log = open(data_dir / "server.log", "w")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen([*cli, "serve"], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited:\n{(data_dir / 'server.log').read_text()[-3000:]}")
        try:
            http(url + "/livez", timeout=2)
            break
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    return proc, url, {"X-Api-Key": key}


def worker_pids(master: int) -> list[int]:
    """The children of gunicorn's master (`forecourt serve` execs gunicorn, so it is the process we started), read
    from /proc: the CUDA base image has no pgrep."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == master:
            pids.append(int(stat.parent.name))
    return pids


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def metric_sum(text: str, name: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M))


def stage_sums(text: str) -> dict[str, float]:
    return {stage: metric_sum(text, re.escape(f'forecourt_removebg_stage_seconds_sum{{stage="{stage}"}}'))
            for stage in STAGES}


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


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered) + 0.5)) - 1))]


def measure(url: str, headers: dict, payloads: list[bytes], clients: int, kind: str) -> dict:
    """One concurrency level: throughput, latency percentiles and the per-stage split per image."""
    def call(data: bytes) -> None:
        body, ctype = multipart({"size": "full", "format": "png", "type": kind}, "image_file", "car.jpg", data)
        http(url + "/v1.0/removebg", body, {**headers, "Content-Type": ctype})

    before = http(url + "/metrics").decode()
    seconds, latencies = run_concurrently(call, payloads, clients)
    after = http(url + "/metrics").decode()
    route = re.escape('forecourt_http_request_duration_seconds_sum{method="POST",route="/v1.0/removebg"}')
    served = metric_sum(after, route) - metric_sum(before, route)
    stages = {k: (v - stage_sums(before)[k]) for k, v in stage_sums(after).items()}
    n = len(payloads)
    return {"clients": clients, "images": n, "images_per_s": n / seconds,
            "p50_s": statistics.median(latencies), "p95_s": percentile(latencies, 95),
            "stage_ms": {k: v / n * 1000 for k, v in stages.items() if v > 0},
            "served_ms": served / n * 1000}


def print_level(r: dict) -> None:
    print(f"concurrency {r['clients']}: {r['images_per_s']:.3f} images/s, p50 {r['p50_s'] * 1000:.0f} ms, "
          f"p95 {r['p95_s'] * 1000:.0f} ms ({r['images']} images)")
    total = r["served_ms"] or sum(r["stage_ms"].values())
    split = ", ".join(f"{k} {v:.1f}" for k, v in r["stage_ms"].items())
    print(f"  per image (ms): {split}; request {total:.1f}")
    model = r["stage_ms"].get("model", 0.0)
    if total:
        print(f"  outside the model run: {100 * (total - model) / total:.1f}% of the request time "
              f"({total - model:.1f} ms of {total:.1f} ms; target <= 10% on the CPU)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="?", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--requests", type=int, default=12, help="Images per concurrency level (at least the "
                        "concurrency, unless --exact; photos repeat when there are fewer).")
    parser.add_argument("--exact", action="store_true", help="Exactly --requests images per level, even below the "
                        "concurrency (a quick dry run of the levels, as gpu_check.sh --cpu does).")
    parser.add_argument("--clients", type=int, nargs="+", default=[2], help="Concurrency levels, e.g. 1 8 32.")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (one per GPU on a GPU box).")
    parser.add_argument("--server-threads", type=int, default=0, help="Threads per worker (0: the top concurrency).")
    parser.add_argument("--threads", type=int, default=1, help="Inference threads per worker.")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--batch-size", type=int, default=0, help="[models] batch_size (0: auto).")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--models-dir", type=Path,
                        default=Path(os.environ.get("FORECOURT_MODELS__DIR") or REPO / "var" / "models"))
    parser.add_argument("--type", default="auto", help="remove.bg type; car adds the car filter and (by default) a "
                        "second, mirrored model pass that rembg does not do")
    parser.add_argument("--no-rembg", action="store_true", help="Skip the rembg comparison.")
    parser.add_argument("--json", type=Path, help="Also write the figures to this file.")
    args = parser.parse_args()
    # a TERM (gpu_check.sh's time limit) unwinds through `finally`, so the server started here is stopped too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    images = sorted((args.data / "carvana" / "images").glob("*.jpg"))
    if not images:
        raise SystemExit(f"no Carvana photos under {args.data}")
    pool = [p.read_bytes() for p in images[: max(args.requests, max(args.clients), args.workers * 2)]]
    print(f"Carvana JPEGs (1918x1280), size=full, type={args.type}, PNG out; concurrency {args.clients}; "
          f"{args.workers} worker(s), device={args.device}")

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-removebg-") as tmp:
        (Path(tmp) / "data").mkdir()
        proc, url, headers = start_server(Path(tmp) / "data", args.models_dir.resolve(), args)
        try:
            warm = args.workers * 2  # every worker loads its model and runs once before anything is timed
            measure(url, headers, [pool[i % len(pool)] for i in range(warm)], min(warm, max(args.clients)), args.type)
            for clients in args.clients:
                n = args.requests if args.exact else max(args.requests, clients)
                payloads = [pool[i % len(pool)] for i in range(n)]
                result = measure(url, headers, payloads, clients, args.type)
                results.append(result)
                print_level(result)
            readyz = json.loads(http(url + "/readyz"))
            device = next((c for c in readyz.get("checks", []) if c["name"] == "device"), {})
            print(f"devices: {device.get('detail', '?')}" + (f"; WARNING {device['warning']}"
                                                            if device.get("warning") else ""))
            rss = [peak_rss_mb(p) for p in worker_pids(proc.pid)]
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
    print("forecourt peak RSS per worker: " + ", ".join(f"{r:.0f} MB" for r in rss))
    if args.json:
        args.json.write_text(json.dumps({"levels": results, "rss_mb": rss, "device": device}, indent=1))

    if args.no_rembg:
        return 0
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
    remove(pool[0], session=session)
    clients = args.clients[0]
    payloads = [pool[i % len(pool)] for i in range(max(args.requests, clients))]
    rembg_s, rembg_lat = run_concurrently(lambda data: remove(data, session=session), payloads, clients)
    rembg_tput = len(payloads) / rembg_s
    print(f"rembg dis_custom (same .onnx, in-process, no HTTP): {rembg_tput:.3f} images/s, "
          f"median latency {statistics.median(rembg_lat):.2f} s")
    print(f"throughput ratio forecourt/rembg: {results[0]['images_per_s'] / rembg_tput:.2f}x (target >= 1.25x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
