"""The render queue: jobs in SQLite, claimed with BEGIN IMMEDIATE, processed by background threads in each worker."""

from __future__ import annotations

import atexit
import hashlib
import io
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from flask import Flask
from PIL import Image, ImageOps

from core.clock import now_iso
from core.process import owner_alive, owner_id
from models import imaging, plates
from server.config import Settings, get_settings
from server.services import catalog
from server.services.removebg import SIZE_MEGAPIXELS, parse_options, parse_position, remove_background
from server.store import get_db, write_txn

log = logging.getLogger(__name__)
STALE_MINUTES = 15  # a running job older than this belonged to a worker that died; it is queued again
MAX_ATTEMPTS = 3
PRUNE_EVERY_SECONDS = 3600  # how often a render thread deletes renders replaced long ago
_start_lock = threading.Lock()


class _Overtaken(Exception):
    """A newer render of the same photo finished first."""


def _owner() -> str:
    return f"{socket.gethostname()}:{owner_id()}"


def _recover_dead_owners(db: Any) -> None:
    """Inside a write transaction: running jobs of a process on this host that is gone are queued again (or failed
    after MAX_ATTEMPTS) without waiting STALE_MINUTES."""
    host = socket.gethostname()
    for job_id, owner, attempts in db.execute(
            "SELECT id, claimed_by, attempts FROM catalog_jobs WHERE status = 'running' AND claimed_by LIKE ?",
            [f"{host}:%"]).fetchall():
        if not owner_alive(owner.split(":", 1)[1]):
            if attempts < MAX_ATTEMPTS:
                db.execute("UPDATE catalog_jobs SET status = 'queued' WHERE id = ?", [job_id])
            else:
                db.execute("UPDATE catalog_jobs SET status = 'failed', finished_at = ?, error = 'worker_lost: gave "
                           "up after repeated tries' WHERE id = ?", [now_iso(), job_id])


def claim(db: Any) -> dict[str, Any] | None:
    """Take the oldest queued job (one writer at a time, so two workers never take the same job)."""
    with write_txn(db):
        _recover_dead_owners(db)
        db.execute("UPDATE catalog_jobs SET status = 'queued' WHERE status = 'running' AND started_at < "
                   "strftime('%Y-%m-%dT%H:%M:%SZ', 'now', ?) AND attempts < ?",
                   [f"-{STALE_MINUTES} minutes", MAX_ATTEMPTS])
        db.execute("UPDATE catalog_jobs SET status = 'failed', error = 'worker_lost: gave up after repeated tries', "
                   "finished_at = ? WHERE status = 'running' AND started_at < "
                   "strftime('%Y-%m-%dT%H:%M:%SZ', 'now', ?) AND attempts >= ?",
                   [now_iso(), f"-{STALE_MINUTES} minutes", MAX_ATTEMPTS])
        row = db.execute("SELECT id FROM catalog_jobs WHERE status = 'queued' ORDER BY id LIMIT 1").fetchone()
        if row is None:
            return None
        db.execute("UPDATE catalog_jobs SET status = 'running', started_at = ?, attempts = attempts + 1, "
                   "claimed_by = ? WHERE id = ?", [now_iso(), _owner(), row[0]])
    return db["catalog_jobs"].get(row[0])


def frame(cutout: Image.Image, profile: dict[str, Any], background: Image.Image | None = None) -> Image.Image:
    """Place a transparent cutout on the profile's canvas: the car (its alpha box) fills `scale` of the canvas on
    the tighter side, at `position` of the free space, over the background image (cropped to fill) or colour."""
    width, height = profile["width"], profile["height"]
    if background is not None:
        canvas = ImageOps.fit(background.convert("RGB"), (width, height), Image.LANCZOS)
    else:
        canvas = Image.new("RGB", (width, height), f"#{profile['bg_color']}")
    alpha = cutout.getchannel("A")
    box = alpha.point(lambda a: 255 if a > 12 else 0).getbbox() or (0, 0, cutout.width, cutout.height)
    subject = cutout.crop(box)
    scale = profile["scale"] or 1.0
    factor = min(width * scale / subject.width, height * scale / subject.height)
    subject = subject.resize((max(1, round(subject.width * factor)), max(1, round(subject.height * factor))),
                             Image.LANCZOS)
    fx, fy = parse_position(profile["position"] or "center") or (0.5, 0.5)
    canvas.paste(subject, (round((width - subject.width) * fx), round((height - subject.height) * fy)), subject)
    return canvas


def working_size(setting: str, profile: dict[str, Any]) -> str:
    """The remove.bg size to segment at: the setting, or for auto the smallest size with at least twice the
    canvas's pixels (the car fills only part of a photo)."""
    if setting != "auto":
        return setting
    need = 2 * profile["width"] * profile["height"] / 1e6
    return next((s for s in ("preview", "medium", "hd") if SIZE_MEGAPIXELS[s] >= need), "full")


@dataclass
class Rendered:
    """An encoded studio render and the plate regions that were masked in it."""

    body: bytes
    width: int
    height: int
    masked: list[plates.Region]


def render_photo(settings: Settings, photo: dict[str, Any], profile: dict[str, Any]) -> Rendered:
    """The studio render of one photo: plates masked (given regions always, detected ones when the profile asks),
    background removed (car type), framed on the profile's canvas and encoded in its format."""
    data = (settings.data_dir / photo["path"]).read_bytes()
    image = imaging.decode(data, max_bytes=len(data) + 1)
    regions: list[plates.Region] = [tuple(r) for r in json.loads(photo["plate_regions"] or "[]")]  # type: ignore[misc]
    if profile.get("detect_plates"):
        regions += plates.detect(np.asarray(image.convert("RGB")), settings.catalog.plate_cascade)
    if regions:
        image = Image.fromarray(plates.mask(np.asarray(image.convert("RGB")), regions))
    size = working_size(settings.catalog.render_size, profile)
    # the cutout depends only on the photo, the masked plates, the working size and the shadow: a profile change of
    # colour, background, scale, position or format re-frames the cached cutout instead of segmenting again
    key = hashlib.sha256(json.dumps([photo["sha256"], settings.models.segmenter, size, bool(profile["add_shadow"]),
                                     [list(r) for r in regions]]).encode()).hexdigest()[:24]
    cached = catalog.cutout_dir(settings, photo["id"]) / f"{key}.png"
    if cached.exists():
        body = cached.read_bytes()
    else:
        opts = parse_options({"type": "car", "size": size, "format": "png",
                              "add_shadow": "true" if profile["add_shadow"] else "false"})
        body = remove_background(image, opts).body
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(body)
        tmp.replace(cached)
    with Image.open(io.BytesIO(body)) as cut:
        framed = frame(cut.convert("RGBA"), profile, catalog.profile_background(settings, profile))
    buf = io.BytesIO()
    fmt = profile["format"]
    framed.save(buf, catalog.PIL_FORMATS[fmt], **({"quality": 90} if fmt != "png" else {"optimize": True}))
    return Rendered(buf.getvalue(), framed.width, framed.height, regions)


def process(db: Any, settings: Settings, job: dict[str, Any]) -> str:
    """Run one claimed job; returns its final status."""
    try:
        photo = catalog.get_photo(db, job["photo_id"])
        profile = catalog.profile_row(db, job["profile_id"])
        if profile["version"] != job["profile_version"]:
            status, error = "superseded", None  # a newer version is queued behind it
        else:
            rendered = render_photo(settings, photo, profile)
            body = rendered.body

            rid = uuid.uuid4().hex
            folder = settings.data_dir / "images" / "renders"
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{rid}.{profile['format']}"
            path.write_bytes(body)
            with write_txn(db):
                if db.execute("SELECT 1 FROM catalog_jobs WHERE photo_id = ? AND id > ? AND status = 'done'",
                              [photo["id"], job["id"]]).fetchone():
                    raise _Overtaken  # a newer job's render landed first (another worker): it stays current
                db["catalog_renders"].insert({
                    "id": rid, "photo_id": photo["id"], "profile_id": profile["id"],
                    "profile_version": profile["version"], "path": str(path.relative_to(settings.data_dir)),
                    "width": rendered.width, "height": rendered.height, "format": profile["format"],
                    "sha256": hashlib.sha256(body).hexdigest(), "bg_color": profile["bg_color"],
                    "masked_regions": json.dumps([list(r) for r in rendered.masked]), "created_at": now_iso()})
            status, error = "done", None
    except _Overtaken:
        path.unlink(missing_ok=True)
        status, error = "superseded", None
    except Exception as exc:  # noqa: BLE001 - a failed render is recorded on its job, never lost
        log.warning("render job %s failed: %s", job["id"], exc)
        status, error = "failed", f"{getattr(exc, 'code', type(exc).__name__)}: {getattr(exc, 'detail', exc)}"
    with write_txn(db):
        db.execute("UPDATE catalog_jobs SET status = ?, error = ?, finished_at = ? WHERE id = ? AND "
                   "status = 'running'", [status, error, now_iso(), job["id"]])
    return status


def run_pending(app: Flask, limit: int | None = None) -> int:
    """Process queued jobs in this thread until none are left (or limit); returns how many ran."""
    done = 0
    with app.app_context():
        db, settings = get_db(), get_settings()
        while limit is None or done < limit:
            job = claim(db)
            if job is None:
                break
            process(db, settings, job)
            done += 1
    return done


def _worker_loop(app: Flask, stop: threading.Event) -> None:
    settings = app.extensions["forecourt.settings"]
    poll = settings.catalog.poll_seconds
    next_prune = time.monotonic()
    while not stop.is_set() and settings.db_path.exists():  # a removed data folder (tests) ends the thread
        try:
            if time.monotonic() >= next_prune:
                next_prune = time.monotonic() + PRUNE_EVERY_SECONDS
                with app.app_context():
                    catalog.prune_old_renders(get_db(), settings)
            ran = run_pending(app, limit=1)
        except Exception:  # noqa: BLE001 - keep the thread alive across a locked or vanished database
            log.exception("render worker error")
            ran = 0
        if not ran:
            stop.wait(poll)


def start_workers(app: Flask) -> None:
    """Start this process's render threads once (called on the first request, so after gunicorn forks)."""
    with _start_lock:
        if app.extensions.get("forecourt.catalog.workers"):
            return
        stop = threading.Event()
        threads = [threading.Thread(target=_worker_loop, args=(app, stop), name=f"catalog-render-{i}", daemon=True)
                   for i in range(app.extensions["forecourt.settings"].catalog.render_workers)]
        app.extensions["forecourt.catalog.workers"] = (stop, threads)
        for t in threads:
            t.start()
        # a worker that exits (gunicorn's graceful stop) lets the job in hand finish instead of cutting it off;
        # a job cut off anyway (kill -9) is queued again once it is STALE_MINUTES old
        atexit.register(stop_workers, app, app.extensions["forecourt.settings"].server.graceful_timeout * 0.8)
        log.info("started %d render thread(s) in process %d", len(threads), os.getpid())


def stop_workers(app: Flask, timeout: float = 30) -> None:
    """Stop the render threads and wait for the jobs in hand (tests, shutdown); they are not started again."""
    entry = app.extensions.get("forecourt.catalog.workers")
    if not entry:
        return
    stop, threads = entry
    stop.set()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = sum(t.is_alive() for t in threads)
    log.info("render threads stopped in process %d (%d still busy)", os.getpid(), alive)
