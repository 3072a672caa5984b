"""Gunicorn starts only as many workers as the box's memory holds at the 50 MP peak, and tells the admin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.capacity import available_memory_mb, plan_workers
from tests.helpers import REPO

MEMINFO = "MemTotal:       24000000 kB\nMemFree:         1000000 kB\nMemAvailable:    8192000 kB\n"


def test_the_configured_workers_start_when_they_fit() -> None:
    plan = plan_workers(2, 3000, 8000)
    assert (plan.workers, plan.warning) == (2, None)
    assert plan_workers(2, 4000, 8000).workers == 2  # exactly fits


def test_fewer_workers_start_when_memory_is_short_and_the_admin_is_told() -> None:
    plan = plan_workers(4, 3000, 8000)
    assert plan.workers == 2
    assert "workers = 4" in plan.warning and "12,000 MB" in plan.warning and "8,000 MB" in plan.warning
    assert "starting 2 workers" in plan.warning


def test_one_worker_always_starts_with_a_warning_when_even_one_does_not_fit() -> None:
    plan = plan_workers(2, 3000, 1000)
    assert plan.workers == 1 and "even one worker" in plan.warning and "run out of memory" in plan.warning


@pytest.mark.parametrize(("worker_mb", "available"), [(0, 100), (3000, None)])
def test_no_figure_or_unknown_memory_keeps_the_configured_count(worker_mb: float, available) -> None:
    assert plan_workers(6, worker_mb, available).workers == 6 and plan_workers(6, worker_mb, available).warning is None


def test_available_memory_reads_meminfo_and_a_containers_cgroup_limit(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text(MEMINFO)
    cg = tmp_path / "cgroup"
    cg.mkdir()
    assert available_memory_mb(tmp_path / "meminfo", cg) == 8000  # no cgroup files: MemAvailable
    (cg / "memory.max").write_text("max\n")
    assert available_memory_mb(tmp_path / "meminfo", cg) == 8000  # v2 without a limit
    (cg / "memory.max").write_text(str(4 * 1024**3))
    (cg / "memory.current").write_text(str(1024**3))
    assert available_memory_mb(tmp_path / "meminfo", cg) == 3072  # v2: the container's 4 GB limit, 1 GB in use
    (cg / "memory.max").unlink()
    (cg / "memory").mkdir()
    (cg / "memory" / "memory.limit_in_bytes").write_text(str(2 * 1024**3))
    (cg / "memory" / "memory.usage_in_bytes").write_text(str(512 * 1024**2))
    assert available_memory_mb(tmp_path / "meminfo", cg) == 1536  # v1
    (cg / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712")
    assert available_memory_mb(tmp_path / "meminfo", cg) == 8000  # v1's "unlimited"
    assert available_memory_mb(tmp_path / "none", tmp_path / "none") is None


def _gunicorn_conf(tmp_path: Path, **env: str) -> str:
    code = ("import server.gunicorn_conf as c\n"
            "class Log:\n    def warning(self, m): print('WARNING', m)\n"
            "class Server:\n    log = Log()\n"
            "c.on_starting(Server())\nprint('workers', c.workers)")
    full = {**os.environ, "FORECOURT_STORAGE__DATA_DIR": str(tmp_path / "data"),
            "FORECOURT_LICENSING__STATE_DIR": str(tmp_path / "state"), **env}
    full.pop("PROMETHEUS_MULTIPROC_DIR", None)
    out = subprocess.run([sys.executable, "-c", code], env=full, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_gunicorn_settings_apply_the_plan_and_log_the_warning(tmp_path: Path) -> None:
    """A worker figure larger than any box: one worker starts and gunicorn's log says why."""
    out = _gunicorn_conf(tmp_path, FORECOURT_SERVER__WORKERS="3", FORECOURT_SERVER__WORKER_MEMORY_MB="10000000")
    assert "workers 1" in out and "WARNING [server] workers = 3, but even one worker" in out
    out = _gunicorn_conf(tmp_path, FORECOURT_SERVER__WORKERS="3", FORECOURT_SERVER__WORKER_MEMORY_MB="1",
                         FORECOURT_SERVER__REQUEST_MEMORY_MB="10000000")  # each thread's 50 MP request counts
    assert "workers 1" in out and "WARNING" in out
    out = _gunicorn_conf(tmp_path, FORECOURT_SERVER__WORKERS="3", FORECOURT_SERVER__WORKER_MEMORY_MB="0",
                         FORECOURT_SERVER__REQUEST_MEMORY_MB="10000000")
    assert "workers 3" in out and "WARNING" not in out
    out = _gunicorn_conf(tmp_path, FORECOURT_SERVER__WORKERS="2", FORECOURT_SERVER__WORKER_MEMORY_MB="1",
                         FORECOURT_SERVER__REQUEST_MEMORY_MB="1")
    assert "workers 2" in out and "WARNING" not in out
