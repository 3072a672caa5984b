"""Vehicle image catalog: vehicles, photos by angle, studio profiles, renders and (signed) image delivery."""

from __future__ import annotations

import json
import time
from typing import Any

from apiflask import APIBlueprint
from flask import Flask, Response, current_app, request, send_file
from pydantic import Field

from core.encoding import decode_b64
from models import plates
from server import json_limits
from server.auth import API_KEY_SECURITY, require_admin_key, require_key
from server.blueprints import register
from server.config import get_settings
from server.errors import BadRequest
from server.schemas import Strict
from server.services import catalog, catalog_jobs, catalog_recognition, signed_urls
from server.services import recognition as rec
from server.services.metering import charge, check
from server.services.removebg import SIZE_CREDITS
from server.store import get_db

bp = APIBlueprint("catalog", __name__, tag="Vehicle catalog")
_ERRORS = {400: "Invalid parameters", 402: "Not enough credits", 403: "Missing key or not allowed",
           404: "Not found", 409: "Conflict (duplicate VIN or profile name)", 413: "Request too large",
           429: "Too many requests"}
DOC = dict(security=API_KEY_SECURITY, responses={200: "OK", **_ERRORS})
CREATE_DOC = dict(security=API_KEY_SECURITY, responses={201: "Created", **_ERRORS})
DELETE_DOC = dict(security=API_KEY_SECURITY, responses={204: "Deleted", **_ERRORS})
_IMAGE = {200: {"description": "The image", "content": {m: {"schema": {"type": "string", "format": "binary"}}
                                                        for m in catalog.MEDIA.values()}},
          304: "Not modified (If-None-Match)"}
IMAGE_DOC = dict(security=API_KEY_SECURITY, responses={**_IMAGE, **_ERRORS})
PUBLIC_IMAGE_DOC = dict(responses={**_IMAGE, 400: "Invalid parameters", 403: "Bad or expired signature",
                                   404: "Not found"})


class VehicleIn(Strict):
    vin: str = Field(description="17-character VIN; validated and decoded.")
    stock_number: str | None = None
    year: int | None = Field(None, ge=1900, le=2100, description="Defaults to the model year in the VIN.")
    make: str | None = Field(None, max_length=100, description="Defaults to the maker the VIN's WMI names.")
    model: str | None = Field(None, max_length=100)
    trim: str | None = Field(None, max_length=100)
    body_style: str | None = Field(None, max_length=100)
    color: str | None = Field(None, max_length=100, description="Exterior colour.")
    status: str = Field("in_stock", description="in_stock, sold or archived.")
    metadata: dict[str, Any] = Field(default_factory=dict)
    profile_id: int | None = Field(None, description="Studio profile; empty uses the default profile.")


class VehiclePatch(Strict):
    vin: str | None = None
    stock_number: str | None = None
    year: int | None = Field(None, ge=1900, le=2100)
    make: str | None = Field(None, max_length=100)
    model: str | None = Field(None, max_length=100)
    trim: str | None = Field(None, max_length=100)
    body_style: str | None = Field(None, max_length=100)
    color: str | None = Field(None, max_length=100)
    status: str | None = None
    metadata: dict[str, Any] | None = None
    profile_id: int | None = None


class ProfileIn(Strict):
    name: str | None = Field(None, min_length=1, max_length=100)
    bg_color: str | None = Field(None, description="Hex colour or name, as remove.bg's bg_color.")
    add_shadow: bool | None = None
    scale: float | None = Field(None, ge=0.1, le=1, description="Share of the frame the car fills, 0.1 to 1.")
    position: str | None = Field(None, description="center or 'x% y%', as remove.bg's position.")
    width: int | None = Field(None, ge=16, le=8000)
    height: int | None = Field(None, ge=16, le=8000)
    format: str | None = Field(None, description="jpg, png or webp.")
    detect_plates: bool | None = Field(None, description="Also mask plates an installed OpenCV plate cascade finds "
                                                         "(400 plate_detector_unavailable without one).")


class PhotoPatch(Strict):
    angle: str | None = None
    position: int | None = Field(None, ge=0, le=1_000_000)
    primary: bool | None = None
    plate_regions: list[list[int]] | None = Field(None, description="[[x1, y1, x2, y2], ...] in original pixels.")


class SignIn(Strict):
    expires_in: int | None = Field(None, ge=60, le=31536000, description="Seconds; default from the settings.")
    width: int | None = Field(None, ge=1, le=16384)
    height: int | None = Field(None, ge=1, le=16384)
    format: str | None = None
    fit: str | None = None


class ImagesQuery(Strict):
    angle: str | None = Field(None, description="Only this angle (front, front_left, ... interior, detail).")


class VehicleQuery(Strict):
    make: str | None = None
    model: str | None = None
    year: int | None = Field(None, ge=1900, le=2100)
    color: str | None = None
    status: str | None = None
    q: str | None = None
    cursor: str | None = None
    limit: int = Field(50, ge=1, le=200)


# --- vehicles --------------------------------------------------------------------------------------------------
@bp.post("/v1/vehicles")
@bp.input(VehicleIn, location="json")
@bp.doc(**CREATE_DOC)
@require_key
def create_vehicle(json_data: VehicleIn) -> tuple[dict[str, Any], int]:
    """Add a vehicle; the VIN is validated and its model year, region, country and maker decoded."""
    check("collection_manage")
    return catalog.create_vehicle(get_db(), json_data.model_dump(exclude_none=True)), 201


@bp.get("/v1/vehicles")
@bp.input(VehicleQuery, location="query")
@bp.doc(**DOC)
@require_key
def list_vehicles(query_data: VehicleQuery) -> Response:
    """Search vehicles by make, model, year, colour, status and free text; opaque cursor and a Link header."""
    filters = query_data.model_dump(exclude={"cursor", "limit"})
    rows, nxt = catalog.search_vehicles(get_db(), **filters, cursor=query_data.cursor, limit=query_data.limit)
    resp = current_app.json.response({"data": rows, "next_cursor": nxt})
    if nxt:
        args = {k: v for k, v in request.args.items() if k != "cursor"} | {"cursor": nxt}
        from urllib.parse import urlencode

        resp.headers["Link"] = f'<{request.base_url}?{urlencode(args)}>; rel="next"'
    return resp


@bp.post("/v1/vehicles/identify")
@bp.doc(**DOC)
@require_key
def identify_vehicle() -> dict[str, Any]:
    """Which inventory vehicles a photo shows (a customer's photo, a lot audit): one image (multipart `image_file`
    or JSON `image_file_b64`), `mode` single|multi|all, `limit`, `min_score`. Answers `vehicles` best first with
    vehicle_id, vin, stock_number, score, `ambiguous` (look-alikes of the same model and colour the photo cannot
    tell apart are all answered) and polygon. Every exterior photo of an in-stock vehicle is a reference, free;
    the scan is charged as a recognition scan."""
    check("recognition")
    params: dict[str, Any]
    if request.is_json:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise BadRequest("The body must be a JSON object.", code="invalid_parameters")
        params = body
        raw = body.get("image_file_b64")
        if raw is not None and not isinstance(raw, str):
            raise BadRequest("image_file_b64 must be a base64 string.", code="invalid_parameters")
        raws = [decode_b64(raw, "image_file_b64")] if raw else []
    else:
        params = dict(request.form.items()) | dict(request.args.items())
        raws = [f.read() for field in ("image_file", "photo") for f in request.files.getlist(field)]
        raws += [decode_b64(r, "image_file_b64") for r in request.form.getlist("image_file_b64")]
    if len(raws) != 1:
        raise BadRequest("Send exactly one photo (multipart image_file, or image_file_b64).", code="missing_source")
    try:
        limit = int(params.get("limit", 10))
        min_score = float(params["min_score"]) if params.get("min_score") not in (None, "") else None
    except (TypeError, ValueError) as exc:
        raise BadRequest("limit must be an integer and min_score a number.", code="invalid_parameters") from exc
    settings = get_settings()
    image = rec.decode_image(settings, raws[0], "image")
    db = get_db()
    with charge("scans", 1):
        return catalog_recognition.identify(db, settings, image, mode=str(params.get("mode", "single")),
                                            limit=limit, min_score=min_score)


@bp.get("/v1/vehicles/<int:vehicle_id>")
@bp.doc(**DOC)
@require_key
def get_vehicle(vehicle_id: int) -> dict[str, Any]:
    """One vehicle with its render progress."""
    return catalog.get_vehicle(get_db(), vehicle_id)


@bp.patch("/v1/vehicles/<int:vehicle_id>")
@bp.input(VehiclePatch, location="json")
@bp.doc(**DOC)
@require_key
def patch_vehicle(vehicle_id: int, json_data: VehiclePatch) -> dict[str, Any]:
    """Change some fields; a new profile re-renders every photo (old renders served meanwhile)."""
    check("collection_manage")
    return catalog.update_vehicle(get_db(), get_settings(), vehicle_id, json_data.model_dump(exclude_unset=True))


@bp.delete("/v1/vehicles/<int:vehicle_id>")
@bp.doc(**DELETE_DOC)
@require_key
def delete_vehicle(vehicle_id: int) -> tuple[str, int]:
    """Remove a vehicle with its photos and renders."""
    check("collection_manage")
    catalog.delete_vehicle(get_db(), get_settings(), vehicle_id)
    return "", 204


# --- photos ----------------------------------------------------------------------------------------------------
@bp.post("/v1/vehicles/<int:vehicle_id>/photos")
@bp.doc(**CREATE_DOC)
@require_key
def upload_photos(vehicle_id: int) -> tuple[dict[str, Any], int]:
    """Upload one or many photos (multipart `photo` files, an `angle` field per file in the same order, optional
    `plate_regions` JSON per file). Originals are kept untouched; duplicates are reported, not stored; each stored
    photo is queued for a studio render, charged as remove.bg charges its working size (1 credit, preview 0.25);
    re-renders after a profile change are free."""
    check("background_removal")
    files = request.files.getlist("photo")
    angles = request.form.getlist("angle")
    regions_raw = request.form.getlist("plate_regions")
    if not files:
        raise BadRequest("Send one or more files in the `photo` field.", code="missing_source")
    if len(angles) == 1 and len(files) > 1 and "," in angles[0]:
        angles = [a.strip() for a in angles[0].split(",")]
    if len(angles) != len(files):
        raise BadRequest(f"Send one `angle` per photo: got {len(files)} photos and {len(angles)} angles.",
                         code="invalid_angle")
    if regions_raw and len(regions_raw) != len(files):
        raise BadRequest("Send one `plate_regions` per photo (use [] for none), or none at all.",
                         code="invalid_plate_region")
    uploads = []
    for i, f in enumerate(files):
        try:
            regions = plates.parse_regions(json_limits.loads(regions_raw[i])) if regions_raw else []
        except json.JSONDecodeError as exc:
            raise BadRequest("plate_regions must be JSON, e.g. [[10, 20, 110, 60]].",
                             code="invalid_plate_region") from exc
        uploads.append((f.filename or f"photo-{i + 1}", f.read(), angles[i].strip().lower(), regions))
    settings = get_settings()
    db = get_db()
    prepared = catalog.prepare_photos(db, settings, vehicle_id, uploads)
    size = catalog_jobs.working_size(settings.catalog.render_size, catalog.vehicle_profile(db, vehicle_id))
    per_photo = SIZE_CREDITS[size]
    new = sum(1 for p in prepared if p.duplicate_of is None)
    if not new:  # nothing to render, nothing to charge
        return catalog.store_photos(db, settings, vehicle_id, prepared), 201
    with charge("credits", per_photo * new):
        result = catalog.store_photos(db, settings, vehicle_id, prepared)
    return result, 201


@bp.get("/v1/vehicles/<int:vehicle_id>/photos")
@bp.doc(**DOC)
@require_key
def list_photos(vehicle_id: int) -> dict[str, Any]:
    """A vehicle's photos in order with the current render and the render job of each."""
    db = get_db()
    return {"data": catalog.list_photos(db, vehicle_id), "progress": catalog.job_progress(db, vehicle_id=vehicle_id)}


@bp.patch("/v1/photos/<int:photo_id>")
@bp.input(PhotoPatch, location="json")
@bp.doc(**DOC)
@require_key
def patch_photo(photo_id: int, json_data: PhotoPatch) -> dict[str, Any]:
    """Change a photo's angle, order, primary flag or plate regions."""
    check("collection_manage")
    return catalog.update_photo(get_db(), get_settings(), photo_id, json_data.model_dump(exclude_unset=True))


@bp.delete("/v1/photos/<int:photo_id>")
@bp.doc(**DELETE_DOC)
@require_key
def delete_photo(photo_id: int) -> tuple[str, int]:
    """Remove a photo, its renders and cached sizes."""
    check("collection_manage")
    catalog.delete_photo(get_db(), get_settings(), photo_id)
    return "", 204


# --- profiles --------------------------------------------------------------------------------------------------
@bp.get("/v1/profiles")
@bp.doc(**DOC)
@require_key
def list_profiles() -> dict[str, Any]:
    """Every studio profile."""
    return {"data": catalog.list_profiles(get_db())}


@bp.post("/v1/profiles")
@bp.input(ProfileIn, location="json")
@bp.doc(**CREATE_DOC)
@require_admin_key
def create_profile(json_data: ProfileIn) -> tuple[dict[str, Any], int]:
    """Add a studio profile (admin)."""
    if not json_data.name:
        raise BadRequest("A profile needs a name.", code="invalid_parameters")
    return catalog.create_profile(get_db(), get_settings(), json_data.model_dump(exclude_none=True)), 201


@bp.get("/v1/profiles/<int:profile_id>")
@bp.doc(**DOC)
@require_key
def get_profile(profile_id: int) -> dict[str, Any]:
    """One profile with the progress of its renders."""
    db = get_db()
    return {**catalog.get_profile(db, profile_id), "progress": catalog.job_progress(db, profile_id=profile_id)}


@bp.patch("/v1/profiles/<int:profile_id>")
@bp.input(ProfileIn, location="json")
@bp.doc(**DOC)
@require_admin_key
def patch_profile(profile_id: int, json_data: ProfileIn) -> dict[str, Any]:
    """Change a profile (admin): affected photos re-render in the background; old renders stay served."""
    db = get_db()
    out = catalog.update_profile(db, get_settings(), profile_id, json_data.model_dump(exclude_none=True))
    return {**out, "progress": catalog.job_progress(db, profile_id=profile_id)}


@bp.put("/v1/profiles/<int:profile_id>/background")
@bp.doc(**DOC)
@require_admin_key
def put_profile_background(profile_id: int) -> dict[str, Any]:
    """Set a profile's background image (multipart `image`; cropped to fill the canvas); re-renders its photos."""
    upload = request.files.get("image")
    if upload is None:
        raise BadRequest("Send the background as a multipart file named `image`.", code="missing_source")
    db = get_db()
    out = catalog.set_profile_background(db, get_settings(), profile_id, upload.read())
    return {**out, "progress": catalog.job_progress(db, profile_id=profile_id)}


@bp.delete("/v1/profiles/<int:profile_id>/background")
@bp.doc(**DOC)
@require_admin_key
def delete_profile_background(profile_id: int) -> dict[str, Any]:
    """Go back to the profile's background colour; re-renders its photos."""
    db = get_db()
    out = catalog.set_profile_background(db, get_settings(), profile_id, None)
    return {**out, "progress": catalog.job_progress(db, profile_id=profile_id)}


# --- delivery --------------------------------------------------------------------------------------------------
@bp.get("/v1/vehicles/<int:vehicle_id>/images")
@bp.input(ImagesQuery, location="query")
@bp.doc(**DOC)
@require_key
def vehicle_images(vehicle_id: int, query_data: ImagesQuery) -> dict[str, Any]:
    """The current render of each photo with its angle, in photo order (`angle` keeps one angle)."""
    db = get_db()
    return {"data": catalog.vehicle_images(db, vehicle_id, angle=query_data.angle),
            "progress": catalog.job_progress(db, vehicle_id=vehicle_id)}


def _send(render: dict[str, Any], params: dict[str, Any], cache_control: str) -> Response:
    settings = get_settings()
    variant = catalog.parse_variant(params, render, settings)
    tag = catalog.etag(render, variant)
    if request.if_none_match.contains(tag):
        resp = Response(status=304)
    else:
        path, hit = catalog.serve_path(settings, render, variant)
        resp = send_file(path, mimetype=catalog.MEDIA[variant["format"]], conditional=False, etag=False)
        resp.headers["X-Cache"] = "HIT" if hit else "MISS"
    resp.set_etag(tag)
    resp.headers["Cache-Control"] = cache_control
    return resp


@bp.get("/v1/images/<render_id>")
@bp.doc(**IMAGE_DOC)
@require_key
def get_image(render_id: str) -> Response:
    """A render, resized (`width`, `height`, `fit` = contain|cover|fill|pad) and converted (`format` = webp, jpg,
    png, avif where supported); sizes are cached on disk; ETag and Cache-Control."""
    render = catalog.get_render(get_db(), render_id)
    return _send(render, request.args.to_dict(), f"private, max-age={get_settings().catalog.cache_max_age}")


@bp.post("/v1/images/<render_id>/signed-url")
@bp.input(SignIn, location="json")
@bp.doc(**DOC)
@require_key
def sign_image(render_id: str, json_data: SignIn) -> dict[str, Any]:
    """A public URL for a render (HMAC-signed, expires) that a website can embed without an API key."""
    settings = get_settings()
    render = catalog.get_render(get_db(), render_id)
    params = {k: str(v) for k, v in json_data.model_dump(exclude_none=True, exclude={"expires_in"}).items()}
    catalog.parse_variant(params, render, settings)
    ttl = json_data.expires_in or settings.catalog.signed_url_ttl_seconds
    path = signed_urls.sign(current_app.config["SECRET_KEY"], f"/v1/public/images/{render_id}", params, ttl)
    return {"url": request.host_url.rstrip("/") + path, "path": path, "expires_at": int(time.time()) + ttl}


@bp.get("/v1/public/images/<render_id>")
@bp.doc(**PUBLIC_IMAGE_DOC)
def public_image(render_id: str) -> Response:
    """A render through a signed URL (no API key); the signature covers the size, format and expiry."""
    params = request.args.to_dict()
    expires = signed_urls.verify(current_app.config["SECRET_KEY"], request.path, params)
    render = catalog.get_render(get_db(), render_id)
    max_age = max(0, min(get_settings().catalog.cache_max_age, expires - int(time.time())))
    return _send(render, {k: v for k, v in params.items() if k not in ("expires", "signature")},
                 f"public, max-age={max_age}")


def init_app(app: Flask) -> None:
    """The catalog API (its renders run on the job queue, server/jobs)."""
    register(app, bp)
