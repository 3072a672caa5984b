"""Dashboard: the System page (models installed and verified, readiness, the job queue and its dead jobs, disk
use, version)."""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path
from typing import Any

from flask import flash, redirect, render_template, request, url_for

from models.registry import model_status
from server.config import get_settings
from server.dashboard import bp
from server.dashboard.common import admin_required
from server.jobs import queue as job_queue
from server.jobs import store as job_store
from server.placement import placements
from server.readiness import run_checks
from server.store import get_db
from server.version import __version__

CHECK_LABELS = {"database": "Database", "segmenter": "Background-removal model", "sam": "Segment Anything (optional)",
                "license": "License", "device": "Devices (GPU or CPU)"}


def folder_bytes(path: Path) -> int:
    """Total size of the files under a folder (0 when it does not exist)."""
    total = 0
    if path.is_file():
        return path.stat().st_size
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:
                pass  # a file removed while we walk
    return total


def human_bytes(n: float) -> str:
    """1234567 -> '1.2 MB'."""
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


@bp.get("/system")
@admin_required
def system() -> Any:
    """Is the box healthy: readiness checks, models, disk, version."""
    s = get_settings()
    checks = [{"name": CHECK_LABELS.get(c.name, c.name.replace("_", " ").capitalize()), "ok": c.ok,
               "detail": c.detail, "required": c.required, "warning": c.warning} for c in run_checks()]
    runs_on = {p.model: p for p in placements()}
    ready = all(c["ok"] for c in checks if c["required"])
    disk = shutil.disk_usage(s.data_dir)
    db_files = [s.db_path, s.db_path.with_name(s.db_path.name + "-wal")]
    parts = [("Database", sum(p.stat().st_size for p in db_files if p.exists())),
             ("Images", folder_bytes(s.data_dir / "images")),
             ("Indexes", folder_bytes(s.data_dir / "indexes")),
             ("Models", folder_bytes(s.models_dir))]
    db = get_db()
    jobs = {"counts": job_store.counts(db), "dead": job_store.list_jobs(db, state="dead", limit=20),
            "where": s.queue.url.split("@")[-1] if s.queue.url else "SQLite in the data folder (queue.db)",
            "in_server": s.queue.workers_in_server and s.queue.threads > 0}
    return render_template(
        "system.html", checks=checks, ready=ready, models=model_status(s.models_dir), runs_on=runs_on, jobs=jobs,
        disk={"total": human_bytes(disk.total), "free": human_bytes(disk.free), "used_pct":
              round(100 * (disk.total - disk.free) / disk.total) if disk.total else 0,
              "low": disk.total > 0 and disk.free / disk.total < 0.1},
        parts=[(name, human_bytes(size)) for name, size in parts], version=__version__,
        python=platform.python_version(), data_dir=str(s.data_dir), models_dir=str(s.models_dir))


@bp.post("/system/jobs/retry")
@admin_required
def retry_jobs() -> Any:
    """Queue dead jobs again: one (job_id) or all of them."""
    job_id = request.form.get("job_id", "")
    ids = [int(job_id)] if job_id.isdigit() else None
    again = job_queue.retry_dead(get_db(), get_settings(), ids)
    flash(f"{len(again)} job{'s' if len(again) != 1 else ''} queued again." if again else
          "Nothing to retry: that job is no longer dead.")
    return redirect(url_for("dashboard.system") + "#jobs")
