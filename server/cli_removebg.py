"""`forecourt removebg INPUT_DIR OUTPUT_DIR`: batch background removal with a progress bar, workers and resume."""

from __future__ import annotations

import os
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import click
from tqdm import tqdm

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".tif", ".tiff", ".bmp"}


def _inputs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _output_path(src: Path, input_dir: Path, output_dir: Path, ext: str) -> Path:
    return (output_dir / src.relative_to(input_dir)).with_suffix("." + ext)


def _ext_for(fmt: str, params: dict) -> str:
    if fmt == "auto":
        return "png" if not params.get("bg_color") and params.get("channels", "rgba") == "rgba" else "jpg"
    return fmt


@click.command("removebg")
@click.argument("input_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("output_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--size", default="full", show_default=True, help="preview, full, 50MP, auto (and aliases).")
@click.option("--type", "type_", default="car", show_default=True, help="auto, car, person, product, ...")
@click.option("--format", "fmt", default="png", show_default=True, help="auto, png, jpg, webp, zip.")
@click.option("--bg-color", default=None, help="Background colour (hex or name).")
@click.option("--add-shadow/--no-shadow", default=False, help="Car contact shadow.")
@click.option("--shadow-opacity", default=None, help="0-100.")
@click.option("--crop/--no-crop", default=False, help="Crop to the subject.")
@click.option("--crop-margin", default=None, help="1, 2 or 4 values, px or %.")
@click.option("--scale", default=None, help="original or 10%-100%.")
@click.option("--position", default=None, help="original, center, or 1-2 percentages.")
@click.option("--channels", default=None, help="rgba or alpha.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64), help="Images in parallel.")
@click.pass_obj
def removebg_command(obj, input_dir: Path, output_dir: Path, size: str, type_: str, fmt: str, bg_color: str | None,
                     add_shadow: bool, shadow_opacity: str | None, crop: bool, crop_margin: str | None,
                     scale: str | None, position: str | None, channels: str | None, workers: int) -> None:
    """Remove the background of every image under INPUT_DIR into OUTPUT_DIR (same tree); metered like the API.

    Finished files are written atomically, so an interrupted run resumes where it stopped without redoing them.
    """
    from flask import g

    from server import create_app
    from server.errors import ApiError
    from server.services.metering import charge
    from server.services.removebg import parse_options, remove_background

    params = {"size": size, "type": type_, "format": fmt, "bg_color": bg_color, "add_shadow": add_shadow,
              "shadow_opacity": shadow_opacity, "crop": crop, "crop_margin": crop_margin, "scale": scale,
              "position": position, "channels": channels}
    params = {k: v for k, v in params.items() if v is not None}
    app = create_app(obj.settings)
    from models.errors import ModelError
    from server.services.removebg import _segmenter

    try:
        with app.app_context():
            parse_options(params)  # refuse bad options before touching any file
            _segmenter().load()  # and a missing or corrupt model before starting
    except (ApiError, ModelError) as exc:
        click.echo(f"error: {exc.detail}", err=True)
        sys.exit(2)
    ext = "zip" if fmt == "zip" else _ext_for(fmt, params)
    if channels == "alpha":
        ext = "png"
    todo, done = [], 0
    for src in _inputs(input_dir):
        if _output_path(src, input_dir, output_dir, ext).exists():
            done += 1
        else:
            todo.append(src)
    click.echo(f"{len(todo)} to do, {done} already done (resumed)" if done else f"{len(todo)} images to do")
    failures: list[tuple[Path, str]] = []
    lock = threading.Lock()

    def work(src: Path) -> None:
        from models import imaging

        with app.test_request_context(f"/cli/removebg/{src.name}"):
            g.request_id = "cli-" + uuid.uuid4().hex[:12]
            opts = parse_options(params)
            image = imaging.decode(src.read_bytes())
            with charge("credits", opts.credits):
                result = remove_background(image, opts)
            out = _output_path(src, input_dir, output_dir, result.extension)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(result.body)
            os.replace(tmp, out)

    with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(total=len(todo), unit="img") as bar:
        futures = {pool.submit(work, src): src for src in todo}
        for fut in as_completed(futures):
            try:
                fut.result()
            except Exception as exc:  # noqa: BLE001 - one bad file must not stop the batch
                detail = getattr(exc, "detail", None) or str(exc)
                with lock:
                    failures.append((futures[fut], str(detail)))
            bar.update(1)
    for src, detail in failures:
        click.echo(f"failed: {src}: {detail}", err=True)
    click.echo(f"done: {len(todo) - len(failures)} written, {len(failures)} failed, {done} skipped")
    if failures:
        sys.exit(1)
