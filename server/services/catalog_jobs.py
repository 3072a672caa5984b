"""Catalog render jobs on the job queue (server/jobs): one queue job per catalog_jobs row (the render request
and its status, which the API reports), and the hourly prune of renders replaced long ago."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from flask import Flask
from PIL import Image, ImageOps

from core.clock import now_iso
from models import imaging, plates
from server.config import Settings, get_settings
from server.jobs import queue
from server.jobs.store import Claim, still_ours
from server.services import catalog
from server.services.removebg import SIZE_MEGAPIXELS, parse_options, parse_position, remove_background
from server.store import get_db, write_txn

log = logging.getLogger(__name__)
RENDER = "catalog.render"
PRUNE = "catalog.prune.hourly"


class _Overtaken(Exception):
    """A newer render of the same photo finished first."""


class _NotOurs(Exception):
    """The queue gave this job to another worker meanwhile (ours stalled past its lease)."""


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
        body = remove_background(image, opts, settings).body
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


def process(db: Any, settings: Settings, job: dict[str, Any], claim: Claim | None = None) -> str:
    """Render one catalog job (status running); returns its final status, done or superseded. A failure raises
    (the queue retries it); a claim no longer ours stores nothing."""
    photo = catalog.get_photo(db, job["photo_id"])
    profile = catalog.profile_row(db, job["profile_id"])
    if profile["version"] != job["profile_version"]:
        status = "superseded"  # a newer version is queued behind it
    else:
        rendered = render_photo(settings, photo, profile)
        body = rendered.body
        rid = uuid.uuid4().hex
        folder = settings.data_dir / "images" / "renders"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{rid}.{profile['format']}"
        path.write_bytes(body)
        try:
            with write_txn(db):
                if claim is not None and not still_ours(db, claim):
                    raise _NotOurs
                if db.execute("SELECT 1 FROM catalog_jobs WHERE photo_id = ? AND id > ? AND status = 'done'",
                              [photo["id"], job["id"]]).fetchone():
                    raise _Overtaken  # a newer job's render landed first (another worker): it stays current
                db["catalog_renders"].insert({
                    "id": rid, "photo_id": photo["id"], "profile_id": profile["id"],
                    "profile_version": profile["version"], "path": str(path.relative_to(settings.data_dir)),
                    "width": rendered.width, "height": rendered.height, "format": profile["format"],
                    "sha256": hashlib.sha256(body).hexdigest(), "bg_color": profile["bg_color"],
                    "masked_regions": json.dumps([list(r) for r in rendered.masked]), "created_at": now_iso()})
                db.execute("UPDATE catalog_jobs SET status = 'done', error = NULL, finished_at = ? WHERE id = ? "
                           "AND status = 'running'", [now_iso(), job["id"]])
            return "done"
        except _Overtaken:
            path.unlink(missing_ok=True)
            status = "superseded"
        except _NotOurs:
            path.unlink(missing_ok=True)
            raise
    with write_txn(db):
        db.execute("UPDATE catalog_jobs SET status = ?, error = NULL, finished_at = ? WHERE id = ? AND "
                   "status = 'running'", [status, now_iso(), job["id"]])
    return status


def _render_failed(args: dict[str, Any], error: str) -> None:
    """The queue gave up on a render job: its catalog job is failed, with the last error."""
    db = get_db()
    with write_txn(db):
        db.execute("UPDATE catalog_jobs SET status = 'failed', error = ?, finished_at = ? WHERE id = ? AND "
                   "status IN ('queued', 'running')", [error, now_iso(), args["render_job"]])


@queue.handler(RENDER, max_attempts=3, on_dead=_render_failed)
def run_render_job(args: dict[str, Any], claim: Claim) -> dict[str, Any]:
    """The queue's handler for a render: skip a job superseded, deleted or done meanwhile, else render it."""
    db, settings = get_db(), get_settings()
    with write_txn(db):
        cur = db.execute("UPDATE catalog_jobs SET status = 'running', started_at = ?, attempts = ?, claimed_by = ? "
                         "WHERE id = ? AND status IN ('queued', 'running', 'failed')",  # failed: a dead job retried
                         [now_iso(), claim.attempt, claim.token, args["render_job"]])
    if cur.rowcount != 1:
        return {"status": "skipped"}
    job = db["catalog_jobs"].get(args["render_job"])
    try:
        status = process(db, settings, job, claim)
    except _NotOurs:
        return {"status": "taken_over"}
    except Exception as exc:
        if not claim.final:  # the queue tries again after a backoff; the API says queued meanwhile
            with write_txn(db):
                db.execute("UPDATE catalog_jobs SET status = 'queued', error = ? WHERE id = ? AND status = 'running'",
                           [f"{getattr(exc, 'code', type(exc).__name__)}: {getattr(exc, 'detail', exc)}",
                            job["id"]])
        raise
    return {"status": status, "render_job": job["id"]}


@queue.handler(PRUNE, max_attempts=3)
def run_prune(args: dict[str, Any], claim: Claim) -> dict[str, Any]:
    """Hourly: delete renders replaced longer than keep_old_renders_days ago."""
    return {"pruned": catalog.prune_old_renders(get_db(), get_settings())}


def enqueue_render(db: Any, settings: Settings, render_job_id: int) -> int:
    """Inside the write transaction that made the catalog job: its queue job (sent once that commits)."""
    return queue.enqueue(db, settings, RENDER, {"render_job": render_job_id})


def run_pending(app: Flask, limit: int | None = None) -> int:
    """Run queued render jobs in this thread until none are left (or limit); returns how many rendered."""
    ran = queue.run_pending(app, kinds=(RENDER,), limit=limit)
    return sum(1 for _, _, result in ran if not result or result.get("status") != "skipped")
