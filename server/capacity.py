"""How many gunicorn workers fit in this box's memory (read by server/gunicorn_conf.py before any worker starts)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

UNLIMITED = 1 << 60  # cgroup v1 writes a number near 2**63 for "no limit"


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def available_memory_mb(meminfo: Path = Path("/proc/meminfo"), cgroup: Path = Path("/sys/fs/cgroup")) -> float | None:
    """Memory new processes may still take, in MB: MemAvailable, or less when a cgroup (a container's memory limit)
    leaves less; None when neither can be read."""
    found: list[float] = []
    text = _read(meminfo)
    for line in (text or "").splitlines():
        if line.startswith("MemAvailable:"):
            found.append(int(line.split()[1]) / 1024)
    for limit_file, usage_file in (("memory.max", "memory.current"),  # cgroup v2
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):  # v1
        limit, usage = _read(cgroup / limit_file), _read(cgroup / usage_file)
        if limit and limit.isdigit() and int(limit) < UNLIMITED:
            used = int(usage) if usage and usage.isdigit() else 0
            found.append(max(0, int(limit) - used) / 1024 / 1024)
    return min(found) if found else None


@dataclass(frozen=True)
class WorkerPlan:
    """The workers to start, and what to tell the admin when that is not the configured count."""

    workers: int
    warning: str | None = None


def plan_workers(configured: int, worker_mb: float, available_mb: float | None) -> WorkerPlan:
    """The configured workers when `workers x worker_mb` fits what is available; otherwise as many as fit (at least
    one) and a warning that says so. worker_mb 0 (or unknown memory) keeps the configured count."""
    if worker_mb <= 0 or available_mb is None:
        return WorkerPlan(configured)
    fit = int(available_mb // worker_mb)
    if configured <= fit:
        return WorkerPlan(configured)
    workers = max(1, fit)
    figure = "[server] worker_memory_mb + threads x request_memory_mb"
    need = f"about {worker_mb:,.0f} MB each at the 50-megapixel input limit ({figure})"
    if fit == 0:
        warning = (f"[server] workers = {configured}, but even one worker may need about {worker_mb:,.0f} MB at the "
                   f"50-megapixel input limit ({figure}) and only "
                   f"{available_mb:,.0f} MB is available: starting 1 worker, which can run out of memory on large "
                   f"images. Give the box more memory or lower [server] threads.")
    else:
        warning = (f"[server] workers = {configured} need {need}, {configured * worker_mb:,.0f} MB in all, but only "
                   f"{available_mb:,.0f} MB is available: starting {workers} worker{'s' if workers != 1 else ''} "
                   f"instead. Give the box more memory, lower [server] threads, or set worker_memory_mb = 0 to "
                   f"start the configured count anyway.")
    return WorkerPlan(workers, warning)
