"""Background removal: remove.bg's POST /v1.0/removebg (also /v1/removebg), and POST /v1/segment for prompts."""

from __future__ import annotations

import base64
import io
import json
import time
from typing import Any

import numpy as np
from apiflask import APIBlueprint
from flask import Flask, Response, jsonify, request
from PIL import Image

from core.encoding import decode_b64
from core.errors import InvalidBase64
from models import imaging
from models.registry import model_status
from server import json_limits, metrics
from server.auth import API_KEY_SECURITY, require_key
from server.blueprints import register
from server.config import get_settings
from server.placement import device_check
from server.readiness import CheckResult, register_check
from server.services import fetch_url, segmentation
from server.services import removebg as service
from server.services.metering import check
from server.services.removebg import RemoveBgError, parse_options

bp = APIBlueprint("removebg", __name__, tag="Background removal")


def init_app(app: Flask) -> None:
    """The remove.bg API, and the readiness of the segmenter (required unless [models] require=false) and SAM."""
    register(app, bp)
    register_check(app, _segmenter_check)
    register_check(app, _sam_check)
    register_check(app, device_check)  # where each model runs; a GPU left unused is a warning


def _segmenter_check() -> CheckResult:
    """The default segmenter's file is present and passes its checksum."""
    status = segmentation.segmenter(get_settings()).status()
    ok = bool(status["verified"])
    detail = (f"{status['name']} verified{' and loaded' if status['loaded'] else ''}" if ok else
              f"{status['name']}: {status['error']}")
    return CheckResult("segmenter", ok, detail, required=get_settings().models.require)


def _sam_check() -> CheckResult:
    """Segment Anything is optional: installed or not, the box is ready; the detail says which."""
    s = get_settings()
    rows = {r["name"]: r for r in model_status(s.models_dir)}
    row = rows.get(s.models.sam_model, {})
    if row.get("verified"):
        return CheckResult("sam", True, f"{s.models.sam_model} installed (slow on CPU: tens of seconds per image)",
                           required=False)
    return CheckResult("sam", False, f"{s.models.sam_model} not installed; /v1/segment and refine=sam answer 503",
                       required=False)


def _request_params() -> tuple[dict[str, Any], dict[str, bytes]]:
    """Parameters and uploaded files from a JSON, form or multipart request."""
    files: dict[str, bytes] = {}
    if request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise RemoveBgError("The JSON body must be an object.", code="invalid_parameters")
        params = dict(body)
    else:
        params = {k: v for k, v in request.form.items()}
        for name in ("image_file", "bg_image_file"):
            upload = request.files.get(name)
            if upload is not None:
                files[name] = upload.read()
    for name in ("image_file", "bg_image_file"):
        if name not in files and params.get(name) not in (None, ""):
            raise RemoveBgError(f"{name} must be a file upload in a multipart/form-data request (for base64 use "
                                f"image_file_b64).", code="failed_to_read_image", title="Could not read the image")
    return params, files


def _image_bytes(params: dict[str, Any], files: dict[str, bytes], max_bytes: int) -> bytes:
    sources = [n for n in ("image_file", "image_file_b64", "image_url")
               if (n in files) or params.get(n) not in (None, "")]
    if len(sources) > 1:
        raise RemoveBgError("Send exactly one of image_file, image_file_b64 or image_url.", code="multiple_sources")
    if not sources:
        raise RemoveBgError("No image given: send image_file, image_file_b64 or image_url.", code="missing_source")
    source = sources[0]
    if source == "image_file":
        return files["image_file"]
    if source == "image_file_b64":
        try:
            return decode_b64(str(params["image_file_b64"]), "image_file_b64")
        except InvalidBase64 as exc:
            raise RemoveBgError(exc.detail, code="failed_to_read_image", title="Could not read the image") from exc
    s = get_settings().removebg
    return fetch_url.fetch(str(params["image_url"]), s.url_allow_hosts, max_bytes, s.url_timeout_seconds)


def _bg_image(params: dict[str, Any], files: dict[str, bytes], max_bytes: int) -> Image.Image | None:
    given = [n for n in ("bg_color", "bg_image_file", "bg_image_url")
             if (n in files) or params.get(n) not in (None, "")]
    if len(given) > 1:
        raise RemoveBgError("Send at most one of bg_color, bg_image_file or bg_image_url.",
                            code="multiple_bg_sources")
    if "bg_image_file" in given:
        data = files["bg_image_file"]
    elif "bg_image_url" in given:
        s = get_settings().removebg
        data = fetch_url.fetch(str(params["bg_image_url"]), s.url_allow_hosts, max_bytes, s.url_timeout_seconds)
    else:
        return None
    return imaging.decode(data, max_bytes=max_bytes, what="background image")


REMOVEBG_DOC = dict(
    security=API_KEY_SECURITY,
    responses={
        200: {"description": "The image without background (PNG, JPG, WebP or ZIP), or JSON with "
                             "Accept: application/json.",
              "content": {"image/png": {"schema": {"type": "string", "format": "binary"}},
                          "application/json": {"schema": {"type": "object"}}}},
        400: "Invalid parameters or image (remove.bg's error codes)",
        402: "Not enough credits", 403: "Missing or invalid API key", 413: "Request too large",
        429: "Rate limit exceeded", 503: "Model not installed",
    },
)


@bp.post("/v1.0/removebg")
@bp.post("/v1/removebg")
@bp.doc(**REMOVEBG_DOC)
@require_key
def removebg() -> Response:
    """Remove the background of an image (remove.bg-compatible).

    Multipart, form or JSON. Source: one of `image_file`, `image_file_b64`, `image_url` (URL input only for the
    admin's allow-listed hosts). Parameters as remove.bg: `size`, `type`, `type_level`, `format`, `roi`, `crop`,
    `crop_margin`, `scale`, `position`, `channels`, `bg_color`, `bg_image_file`, `bg_image_url`, `add_shadow`,
    `shadow_type` (car, 3D, drop, none), `shadow_opacity`, `semitransparency`. Plus `refine=sam` where Segment
    Anything is installed, optionally with `refine_points` (JSON `[[x, y, label], ...]`, x and y as fractions of
    the image, label 1 keep / 0 remove).

    `type=auto` (the default) detects the foreground's type (an ImageNet classifier on the box): a car photo gets
    type=car's pipeline and `X-Type: car`. `X-Type` is remove.bg's: at `type_level=1` (default) person, product,
    animal, car or other; at `2`/`latest` also car_interior, car_part, transportation, graphics; none at `none`.

    Sizes: `preview` 0.25 MP for 0.25 credits; `medium` 1.5 MP, `hd` 4 MP, `full` 25 MP and `50MP` for 1 credit
    (PNG output at most 10 MP); `auto` takes full when the credits allow and the image is larger than a preview.
    Nothing is charged on any error. `Accept: application/json` gives `{"data": {"result_b64", "foreground_top",
    "foreground_left", "foreground_width", "foreground_height"}}`.
    """
    check("background_removal")
    max_bytes = get_settings().removebg.max_file_mb * 1024 * 1024
    params, files = _request_params()
    opts = parse_options(params)
    opts.bg_image = _bg_image(params, files, max_bytes)
    data = _image_bytes(params, files, max_bytes)
    with metrics.stage("decode"):
        image = imaging.decode(data, max_bytes=max_bytes, draft_megapixels=opts.draft_megapixels)
    result = service.run(image, opts, get_settings())  # charges on success only
    headers = {"X-Credits-Charged": f"{result.credits:g}", "X-Width": str(result.width),
               "X-Height": str(result.height)}
    if result.type is not None:  # type_level=none: no X-Type, as remove.bg
        headers["X-Type"] = result.type
    fg = result.foreground
    if fg is not None:
        headers.update({"X-Foreground-Top": str(fg.top), "X-Foreground-Left": str(fg.left),
                        "X-Foreground-Width": str(fg.width), "X-Foreground-Height": str(fg.height)})
    if request.accept_mimetypes.best == "application/json":
        resp = jsonify({"data": {
            "result_b64": base64.b64encode(result.body).decode(),
            "foreground_top": fg.top if fg else 0, "foreground_left": fg.left if fg else 0,
            "foreground_width": fg.width if fg else 0, "foreground_height": fg.height if fg else 0}})
    else:
        resp = Response(result.body, mimetype=result.media_type)
        resp.headers["Content-Disposition"] = f'inline; filename="no-bg.{result.extension}"'
    resp.headers.update(headers)
    return resp


@bp.post("/v1/segment")
@bp.doc(security=API_KEY_SECURITY, responses={
    200: {"description": "The mask as a PNG (white = object)",
          "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}},
    400: "Invalid prompt or image", 403: "Missing or invalid API key", 429: "Rate limit exceeded",
    503: "Segment Anything is not installed"})
@require_key
def segment() -> Response:
    """Segment the object the prompts point at (Segment Anything).

    Send `image_file` (or `image_file_b64`) with `points` (JSON list of [x, y]), `labels` (1 = object, 0 =
    background, one per point) and/or `box` ([x0, y0, x1, y1]). Needs a SAM checkpoint installed by the admin
    (`forecourt models install sam-vit-b FILE`); slow on CPU (tens of seconds for vit_b).
    """
    check("background_removal")
    max_bytes = get_settings().removebg.max_file_mb * 1024 * 1024
    params, files = _request_params()
    points = _json_param(params, "points")
    labels = _json_param(params, "labels")
    box = _json_param(params, "box")
    if points is None and box is None:
        raise RemoveBgError("Give points (with labels) and/or a box.", code="invalid_prompt",
                            title="Invalid segmentation prompt")
    image = imaging.decode(_image_bytes(params, files, max_bytes), max_bytes=max_bytes)
    sam = service.get_sam(get_settings())
    started = time.perf_counter()
    try:
        mask = sam.predict(image.convert("RGB"), points=points, labels=labels, box=box)
    except (TypeError, ValueError) as exc:
        raise RemoveBgError(f"The prompt could not be used: {exc}", code="invalid_prompt",
                            title="Invalid segmentation prompt") from exc
    metrics.observe_inference(sam.name, time.perf_counter() - started)
    buf = io.BytesIO()
    Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255, "L").save(buf, "PNG")
    resp = Response(buf.getvalue(), mimetype="image/png")
    resp.headers["X-Width"], resp.headers["X-Height"] = str(image.width), str(image.height)
    return resp


def _json_param(params: dict[str, Any], name: str) -> Any:
    value = params.get(name)
    if value in (None, ""):
        return None
    if isinstance(value, str):
        try:
            return json_limits.loads(value)
        except json.JSONDecodeError as exc:
            raise RemoveBgError(f"{name} must be JSON, e.g. [[100, 200]].", code="invalid_prompt") from exc
    return value
