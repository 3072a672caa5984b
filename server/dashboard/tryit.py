"""Dashboard: Try it: upload a car photo, pick options, see the cut-out over a checkerboard, download it."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from flask import abort, g, redirect, render_template, request, send_file, url_for
from PIL import Image

from licensing.errors import LicensingError
from models import imaging
from models.errors import ModelError
from models.registry import model_status
from server import json_limits
from server.config import get_settings
from server.dashboard import bp
from server.dashboard.common import friendly_message, login_required
from server.errors import ApiError
from server.services.metering import check
from server.services.removebg import Options, parse_options, run

TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{20,64}$")
KEEP_SECONDS = 2 * 3600
BEFORE_MAX_SIDE = 1600
DEFAULTS = {"type": "car", "size": "preview", "background": "transparent", "color": "#ffffff", "format": "png",
            "add_shadow": False, "crop": False, "refine": False, "semitransparency": True}


def _store() -> Path:
    return get_settings().data_dir / "tmp" / "tryit"


def sam_installed() -> bool:
    """Whether the configured Segment Anything checkpoint is installed and verified (refine with clicks)."""
    s = get_settings()
    return any(r["name"] == s.models.sam_model and r["verified"] for r in model_status(s.models_dir))


def _form_choices() -> dict[str, Any]:
    f = request.form
    choice = dict(DEFAULTS)
    choice.update({k: f.get(k, DEFAULTS[k]) for k in ("type", "size", "background", "color", "format")})
    choice.update({k: f.get(k) == "on" for k in ("add_shadow", "crop", "refine", "semitransparency")})
    return choice


def removebg_params(choice: dict[str, Any], points: list[list[float]] | None = None) -> dict[str, Any]:
    """The form's choices as remove.bg parameters for the background-removal service."""
    params: dict[str, Any] = {"type": "car" if choice["type"] == "car" else "auto",
                              "size": "full" if choice["size"] == "full" else "preview",
                              "format": "jpg" if choice["format"] == "jpg" else "png",
                              "add_shadow": "true" if choice["add_shadow"] else "false",
                              "crop": "true" if choice["crop"] else "false",
                              "semitransparency": "true" if choice.get("semitransparency", True) else "false"}
    if choice["background"] == "white":
        params["bg_color"] = "ffffff"
    elif choice["background"] == "color":
        params["bg_color"] = str(choice["color"]).lstrip("#")
    if choice["refine"] or points:
        params["refine"] = "sam"
    if points:
        params["refine_points"] = json.dumps(points)  # [[x, y, 1 keep | 0 remove], ...] as fractions of the image
    return params


def _clean_old(store: Path) -> None:
    cutoff = time.time() - KEEP_SECONDS
    if not store.is_dir():
        return
    for d in store.iterdir():
        try:
            if d.stat().st_mtime < cutoff:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass


def _run(source: bytes, filename: str, choice: dict[str, Any], points: list[list[float]] | None = None) -> str:
    """Remove the background (charging the signed-in user's credits) and keep the files for the result page."""
    s = get_settings()
    max_bytes = s.removebg.max_file_mb * 1024 * 1024
    check("background_removal")
    opts: Options = parse_options(removebg_params(choice, points))
    image = imaging.decode(source, max_bytes=max_bytes)
    g.principal = g.user  # charges from the dashboard are the user's, without an API key
    result = run(image, opts, s)  # the removebg service charges the credits; any error refunds them
    store = _store()
    _clean_old(store)
    token = secrets.token_urlsafe(18)
    folder = store / token
    folder.mkdir(parents=True)
    (folder / "source").write_bytes(source)
    (folder / f"result.{result.extension}").write_bytes(result.body)
    before = image.convert("RGB")
    if not choice["crop"]:
        before = before.resize((result.width, result.height), Image.Resampling.LANCZOS)
    else:
        before.thumbnail((BEFORE_MAX_SIDE, BEFORE_MAX_SIDE))
    before.save(folder / "before.jpg", "JPEG", quality=85)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(filename or "photo").stem).strip("-.")[:60] or "photo"
    meta = {"user_id": g.user.user_id, "created": time.time(), "filename": filename, "stem": stem,
            "ext": result.extension, "media_type": result.media_type, "width": result.width,
            "height": result.height, "credits": result.credits, "choice": choice, "points": points or [],
            "before_size": list(before.size)}
    (folder / "meta.json").write_text(json.dumps(meta))
    return token


def _meta(token: str) -> tuple[Path, dict[str, Any]]:
    if not TOKEN_RE.match(token):
        abort(404)
    folder = _store() / token
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        abort(404)
    if meta.get("user_id") != g.user.user_id:
        abort(404)
    return folder, meta


def _page(choice: dict[str, Any], error: str | None = None, status: int = 200, token: str | None = None,
          meta: dict[str, Any] | None = None) -> Any:
    s = get_settings()
    return render_template("tryit.html", choice=choice, error=error, token=token, meta=meta, sam=sam_installed(),
                           max_mb=s.removebg.max_file_mb), status


FAILURES = (ApiError, LicensingError, ModelError)


@bp.get("/try")
@login_required
def tryit() -> Any:
    """The upload form."""
    return _page(dict(DEFAULTS))


@bp.post("/try")
@login_required
def tryit_run() -> Any:
    """Run the upload and show the result (or say plainly why not)."""
    choice = _form_choices()
    upload = request.files.get("photo")
    if upload is None or not upload.filename:
        return _page(choice, "Choose a photo first: press “Choose photo” and pick a car photo.", 400)
    try:
        token = _run(upload.read(), upload.filename, choice)
    except FAILURES as exc:
        return _page(choice, friendly_message(exc), int(getattr(exc, "status", 400)))
    return redirect(url_for("dashboard.tryit_result", token=token))


@bp.get("/try/<token>")
@login_required
def tryit_result(token: str) -> Any:
    """The result page: before/after over a checkerboard, download, and refine with clicks where SAM is installed."""
    _folder, meta = _meta(token)
    return _page(meta["choice"], token=token, meta=meta)


@bp.post("/try/<token>/refine")
@login_required
def tryit_refine(token: str) -> Any:
    """Run the same photo again with Segment Anything, steered by the points clicked (keep or remove)."""
    folder, meta = _meta(token)
    try:
        raw = json_limits.loads(request.form.get("points") or "[]")
        points = [[min(max(float(x), 0.0), 1.0), min(max(float(y), 0.0), 1.0), 1 if int(lab) else 0]
                  for x, y, lab in raw][:50]
    except (TypeError, ValueError):
        points = []
    if not points:
        return _page(meta["choice"], "Click on the picture first: on the car to keep it, on the background to "
                                     "remove it.", 400, token, meta)
    try:
        new = _run((folder / "source").read_bytes(), meta["filename"], meta["choice"], points)
    except FAILURES as exc:
        return _page(meta["choice"], friendly_message(exc), int(getattr(exc, "status", 400)), token, meta)
    return redirect(url_for("dashboard.tryit_result", token=new))


@bp.get("/try/<token>/before.jpg")
@login_required
def tryit_before(token: str) -> Any:
    """The uploaded photo, at the result's size."""
    folder, _meta_ = _meta(token)
    return send_file(folder / "before.jpg", mimetype="image/jpeg", max_age=0)


@bp.get("/try/<token>/result")
@login_required
def tryit_image(token: str) -> Any:
    """The result image, shown on the page."""
    folder, meta = _meta(token)
    return send_file(folder / f"result.{meta['ext']}", mimetype=meta["media_type"], max_age=0)


@bp.get("/try/<token>/download")
@login_required
def tryit_download(token: str) -> Any:
    """The result image as a download."""
    folder, meta = _meta(token)
    return send_file(folder / f"result.{meta['ext']}", mimetype=meta["media_type"], as_attachment=True,
                     download_name=f"{meta['stem']}-no-bg.{meta['ext']}", max_age=0)
