"""`forecourt removebg INPUT_DIR OUTPUT_DIR`: batch background removal on the job queue, with a progress bar,
threads and resume."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from server.jobs import queue

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".tif", ".tiff", ".bmp"}
TMP_MARK = ".fc-tmp"


def _inputs(folder: Path, output_dir: Path) -> list[Path]:
    out = output_dir.resolve()
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                  and out not in p.resolve().parents)


def _output_stem(src: Path, input_dir: Path, output_dir: Path) -> Path:
    return output_dir / src.relative_to(input_dir).with_suffix("")


def _extensions(fmt: str, channels: str | None) -> tuple[str, ...]:
    """The extensions a finished output may have (format=auto picks PNG or JPG per image)."""
    if fmt == "auto":
        return ("png",) if channels == "alpha" else ("png", "jpg")
    return ("png",) if channels == "alpha" and fmt == "zip" else (fmt,)


def _done(stem: Path, extensions: tuple[str, ...]) -> bool:
    return any(stem.with_name(f"{stem.name}.{ext}").exists() for ext in extensions)


@click.command("removebg")
@click.argument("input_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("output_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--size", default="full", show_default=True, help="preview, medium, hd, full, 50MP or auto (and the "
              "aliases small, regular, 4k).")
@click.option("--type", "type_", default="car", show_default=True,
              help="auto, car, person, product, animal, graphic, transportation.")
@click.option("--type-level", default=None, help="none, 1, 2 or latest.")
@click.option("--format", "fmt", default="png", show_default=True, help="auto, png, jpg, webp or zip.")
@click.option("--roi", default=None, help="Region of interest 'x1 y1 x2 y2', px or %.")
@click.option("--crop/--no-crop", default=False, help="Crop to the subject (and its shadow).")
@click.option("--crop-margin", default=None, help="1, 2 or 4 values, px or % of the subject (max 50% / 500px).")
@click.option("--scale", default=None, help="original or 10%-100%.")
@click.option("--position", default=None, help="original, center, or 1-2 percentages.")
@click.option("--channels", default=None, help="rgba or alpha.")
@click.option("--bg-color", default=None, help="Background colour (hex or name).")
@click.option("--bg-image", "bg_image_file", default=None, type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="Background image file.")
@click.option("--add-shadow/--no-shadow", default=False, help="Add a shadow (car contact shadow by default).")
@click.option("--shadow-type", default=None, help="car, 3D, drop or none.")
@click.option("--shadow-opacity", default=None, help="0-100.")
@click.option("--semitransparency/--no-semitransparency", default=None, help="See-through regions (default on).")
@click.option("--refine", default=None, help="none or sam (needs a SAM checkpoint; slow on CPU).")
@click.option("--workers", default=None, type=click.IntRange(1, 64),
              help="Images in parallel (default: [removebg] batch_workers, 2).")
@click.pass_obj
def removebg_command(obj: Any, input_dir: Path, output_dir: Path, size: str, type_: str, type_level: str | None,
                     fmt: str, roi: str | None, crop: bool, crop_margin: str | None, scale: str | None,
                     position: str | None, channels: str | None, bg_color: str | None, bg_image_file: Path | None,
                     add_shadow: bool, shadow_type: str | None, shadow_opacity: str | None,
                     semitransparency: bool | None, refine: str | None, workers: int | None) -> None:
    """Remove the background of every image under INPUT_DIR into OUTPUT_DIR (same tree), with the API's options
    and its metering (credits per image; nothing charged for a failed image).

    Each output is written atomically, so an interrupted run resumes where it stopped without redoing finished
    files. Exit status 1 when any image failed (listed at the end), 2 on bad options or a missing model.
    """
    from models import imaging
    from models.errors import ModelError
    from server import create_app
    from server.errors import ApiError
    from server.services import removebg as service
    from server.services import segmentation

    params = {"size": size, "type": type_, "type_level": type_level, "format": fmt, "roi": roi, "crop": crop,
              "crop_margin": crop_margin, "scale": scale, "position": position, "channels": channels,
              "bg_color": bg_color, "add_shadow": add_shadow, "shadow_type": shadow_type,
              "shadow_opacity": shadow_opacity, "semitransparency": semitransparency, "refine": refine}
    params = {k: v for k, v in params.items() if v is not None}
    app = create_app(obj.settings)
    max_bytes = obj.settings.removebg.max_file_mb * 1024 * 1024
    try:  # refuse bad options, a bad background and a missing model before touching any file
        with app.app_context():
            opts = service.parse_options(params)
            if bg_image_file is not None:
                if bg_color:
                    raise service.RemoveBgError("Give --bg-color or --bg-image, not both.",
                                                code="multiple_bg_sources")
                opts.bg_image = imaging.decode(bg_image_file.read_bytes(), max_bytes=max_bytes,
                                               what="background image")
            segmentation.segmenter(obj.settings).load()
            if opts.refine == "sam":
                service.get_sam(obj.settings)
    except (ApiError, ModelError) as exc:
        click.echo(f"error: {exc.detail}", err=True)
        sys.exit(2)

    extensions = _extensions(opts.format, opts.channels)
    for stale in output_dir.rglob(f"*{TMP_MARK}") if output_dir.exists() else []:
        stale.unlink(missing_ok=True)  # left by an interrupted run
    todo, done = [], 0
    for src in _inputs(input_dir, output_dir):
        if _done(_output_stem(src, input_dir, output_dir), extensions):
            done += 1
        else:
            todo.append(src)
    click.echo(f"{len(todo)} to do, {done} already done (resumed)" if done else f"{len(todo)} images to do")

    failures = _run_on_queue(app, obj.settings, todo, input_dir, output_dir, params, bg_image_file,
                             workers or obj.settings.removebg.batch_workers)
    for src, detail in sorted(failures):
        click.echo(f"failed: {src}: {detail}", err=True)
    click.echo(f"done: {len(todo) - len(failures)} written, {len(failures)} failed, {done} skipped")
    if failures:
        sys.exit(1)


def _run_on_queue(app: Any, settings: Any, todo: list[Path], input_dir: Path, output_dir: Path,
                  params: dict[str, Any], bg_image_file: Path | None, threads: int) -> list[tuple[Path, str]]:
    """Put one job per image on the job queue (one queued or running job per output, so a re-run after an
    interruption takes over its own leftovers), run them in `threads` threads here (a server or `forecourt worker`
    sharing the queue may take some), and wait until every one is done or dead; returns the failures."""
    from core.sqlite import write_txn
    from server.jobs import queue, store
    from server.store import close_thread_connections, get_db

    jobs: dict[int, Path] = {}
    with app.app_context():
        db = get_db()
        with write_txn(db):
            for src in todo:
                args = {"src": str(src.resolve()), "stem": str(_output_stem(src, input_dir, output_dir).resolve()),
                        "params": params, "bg_image": str(bg_image_file.resolve()) if bg_image_file else None}
                key = "removebg.file:" + hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:32]
                jobs[queue.enqueue(db, settings, BATCH_FILE, args, unique_key=key, while_running=True)] = src
    states: dict[int, dict[str, Any]] = {}
    lock = threading.Lock()

    def drain() -> None:
        with app.app_context():
            db = get_db()
            try:
                while True:
                    with lock:
                        waiting = [j for j in jobs if states.get(j, {}).get("state") not in ("done", "dead")]
                    if not waiting:
                        return
                    for job_id in waiting:
                        claim = store.claim(db, job_id, settings.queue.lease_seconds, ignore_backoff=True)
                        if claim is not None:
                            queue.run_claimed(db, settings, claim)
                    rows = {j: store.get(db, j) or {"state": "dead", "error": "the job was deleted"} for j in waiting}
                    with lock:
                        states.update(rows)
                    if all(r["state"] == "running" for r in rows.values() if r["state"] not in ("done", "dead")):
                        queue.reap_once(app)  # only others' jobs are left: a dead consumer's are queued again
                        time.sleep(0.2)
            finally:
                close_thread_connections()

    pool = [threading.Thread(target=drain, name=f"removebg-batch-{i}", daemon=True) for i in range(threads)]
    with tqdm(total=len(jobs), unit="img", file=sys.stderr, dynamic_ncols=True) as bar:
        for t in pool:
            t.start()
        shown = 0
        while any(t.is_alive() for t in pool):
            for t in pool:
                t.join(0.2)
            with lock:
                settled = sum(1 for j in jobs if states.get(j, {}).get("state") in ("done", "dead"))
            bar.update(settled - shown)
            shown = settled
    return [(jobs[j], _failure_text(states[j].get("error"))) for j in jobs if states[j]["state"] == "dead"]


def _failure_text(error: str | None) -> str:
    return (error or "failed").removeprefix("RemoveBgError: ")


BATCH_FILE = "removebg.file"


@queue.handler(BATCH_FILE, max_attempts=2)
def run_batch_file(args: dict[str, Any], claim: Any) -> dict[str, Any]:
    """One image of `forecourt removebg`: its background removed with the batch's options (and metering, as the
    API), written atomically beside its siblings in the output tree."""
    from flask import current_app, g

    from models import imaging
    from server.config import get_settings
    from server.services import removebg as service

    settings = get_settings()
    max_bytes = settings.removebg.max_file_mb * 1024 * 1024
    src, stem = Path(args["src"]), Path(args["stem"])
    with current_app.test_request_context(f"/cli/removebg/{src.name}"):
        g.request_id = "cli-" + uuid.uuid4().hex[:12]
        opts = service.parse_options(args["params"])
        if args.get("bg_image"):
            opts.bg_image = imaging.decode(Path(args["bg_image"]).read_bytes(), max_bytes=max_bytes,
                                           what="background image")
        image = imaging.decode(src.read_bytes(), max_bytes=max_bytes, draft_megapixels=opts.draft_megapixels)
        result = service.run(image, opts, settings)
    out = stem.with_name(f"{stem.name}.{result.extension}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}{TMP_MARK}")
    tmp.write_bytes(result.body)
    os.replace(tmp, out)
    return {"output": str(out)}
