"""Recognition API: collections, objects, reference images, summaries and scans under /v1/collections."""

from __future__ import annotations

from typing import Any, Literal

from apiflask import APIBlueprint
from flask import Flask, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, JsonValue, StrictBool, StrictStr

from core.encoding import decode_b64
from licensing.errors import LicensingError
from models.errors import ModelError
from server.auth import API_KEY_SECURITY, require_key
from server.blueprints import register
from server.config import get_settings
from server.services import recognition as svc
from server.services.metering import charge, check, release
from server.services.uploads import check_request_pixels
from server.store import get_db

bp = APIBlueprint("recognition", __name__, tag="Recognition", url_prefix="/v1/collections")
_ERRORS = {400: "Invalid parameters", 402: "Allowance exhausted", 403: "Missing key or not allowed", 404: "Not found",
           413: "Image too large", 429: "Too many requests"}
DOC = dict(security=API_KEY_SECURITY, responses={200: "OK", **_ERRORS})
CREATE_DOC = dict(security=API_KEY_SECURITY, responses={200: "Replaced", 201: "Created", **_ERRORS})


class CollectionIn(BaseModel):
    """Other fields are ignored, as they always were."""

    name: StrictStr = Field(description="1-255 characters.")
    object_type: Literal["car", "generic"] = "generic"


class ObjectsQuery(BaseModel):
    cursor: str | None = Field(None, description="The next_cursor of the previous page.")
    limit: int = Field(50, ge=1, le=500)


class ObjectIn(BaseModel):
    """An object's fields; a PATCH changes only those it names. Other fields reach the service, which names them
    in its refusal."""

    model_config = ConfigDict(extra="allow")

    name: StrictStr | None = None
    metadata: JsonValue = Field(None, description="Any JSON, up to 1 MB.")
    active: StrictBool = True


def init_app(app: Flask) -> None:
    """The recognition API and the licensing purge of reference images."""
    register(app, bp)
    svc.init_app(app)


def _json() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise svc.RecognitionError("The body must be a JSON object.")
    return body


def _flag(raw: Any) -> bool:
    return str(raw).strip().lower() in ("1", "true", "yes", "on") if raw is not None else False


def _b64(raw: object, what: str) -> bytes:
    if not isinstance(raw, str) or not raw:
        raise svc.RecognitionError(f"{what} must be a base64 string.")
    return decode_b64(raw, what)


def _uploaded_images() -> list[tuple[str, bytes]]:
    """(name, bytes) of every image in a multipart upload (image_file, repeatable) or JSON/form base64."""
    out: list[tuple[str, bytes]] = []
    if request.is_json:
        body = _json()
        raws = body.get("images_b64") or ([body["image_file_b64"]] if body.get("image_file_b64") else [])
        if not isinstance(raws, list):
            raise svc.RecognitionError("images_b64 must be a list of base64 strings.")
        for i, raw in enumerate(raws):
            out.append((f"images_b64[{i}]", _b64(raw, f"images_b64[{i}]")))
        return out
    for field in ("image_file", "image_files", "images"):
        for f in request.files.getlist(field):
            out.append((f.filename or field, f.read()))
    for raw in request.form.getlist("image_file_b64"):
        out.append(("image_file_b64", _b64(raw, "image_file_b64")))
    return out


def _params() -> dict[str, Any]:
    return _json() if request.is_json else dict(request.form.items()) | dict(request.args.items())


# --- collections -------------------------------------------------------------------------------------------------
@bp.post("")
@bp.input(CollectionIn, location="json")
@bp.doc(**CREATE_DOC)
@require_key
def create_collection(json_data: CollectionIn) -> tuple[Response, int]:
    """Create a collection (name, object_type car or generic)."""
    check("collection_manage")
    return jsonify(svc.create_collection(get_db(), json_data.name, json_data.object_type)), 201


@bp.get("")
@bp.doc(**DOC)
@require_key
def list_collections() -> Response:
    """Every collection."""
    check("collection_read")
    return jsonify({"collections": svc.list_collections(get_db())})


@bp.get("/<collection_id>")
@bp.doc(**DOC)
@require_key
def get_collection(collection_id: str) -> Response:
    """One collection."""
    check("collection_read")
    return jsonify(svc._collection_out(svc.get_collection(get_db(), collection_id)))


def _deleted(what: str, images: int) -> Response:
    """The answer to a delete; the reference images it removed no longer count as stored."""
    if images:
        release("stored_images", images)
    return jsonify({"deleted": what, "images_deleted": images})


@bp.delete("/<collection_id>")
@bp.doc(**DOC)
@require_key
def delete_collection(collection_id: str) -> Response:
    """Delete a collection, its objects and images."""
    check("collection_manage")
    return _deleted(collection_id, svc.delete_collection(get_db(), get_settings(), collection_id))


@bp.get("/<collection_id>/summary")
@bp.doc(**DOC)
@require_key
def summary(collection_id: str) -> Response:
    """Objects, images, active, processing, failed, scans this and last month, pending index work (images without
    the installed embedding, plus a queued or running index rebuild, shown as index.rebuild: queued or running),
    `lookalikes` (pairs of objects whose photos match each other) and per object the view angles its references
    `coverage` (gap_warning past 45 degrees)."""
    check("collection_read")
    return jsonify(svc.summary(get_db(), get_settings(), collection_id))


# --- objects -----------------------------------------------------------------------------------------------------
@bp.get("/<collection_id>/objects")
@bp.input(ObjectsQuery, location="query")
@bp.doc(**DOC)
@require_key
def list_objects(collection_id: str, query_data: ObjectsQuery) -> Response:
    """A page of objects; follow next_cursor (also in the Link header) for the next."""
    check("collection_read")
    limit = query_data.limit
    objects, cursor = svc.list_objects(get_db(), collection_id, query_data.cursor, limit)
    resp = jsonify({"objects": objects, "next_cursor": cursor})
    if cursor:
        resp.headers["Link"] = f'<{request.base_url}?cursor={cursor}&limit={limit}>; rel="next"'
    return resp


@bp.put("/<collection_id>/objects/<object_id>")
@bp.input(ObjectIn, location="json")
@bp.doc(**CREATE_DOC)
@require_key
def put_object(collection_id: str, object_id: str, json_data: ObjectIn) -> tuple[Response, int]:
    """Create or replace an object (name, metadata, active)."""
    check("collection_manage")
    obj, created = svc.put_object(get_db(), collection_id, object_id, json_data.model_dump(exclude_unset=True))
    return jsonify(obj), 201 if created else 200


@bp.get("/<collection_id>/objects/<object_id>")
@bp.doc(**DOC)
@require_key
def get_object(collection_id: str, object_id: str) -> Response:
    """One object."""
    check("collection_read")
    return jsonify(svc.get_object(get_db(), collection_id, object_id))


@bp.patch("/<collection_id>/objects/<object_id>")
@bp.input(ObjectIn, location="json")
@bp.doc(**DOC)
@require_key
def patch_object(collection_id: str, object_id: str, json_data: ObjectIn) -> Response:
    """Change some of an object's fields."""
    check("collection_manage")
    return jsonify(svc.patch_object(get_db(), collection_id, object_id, json_data.model_dump(exclude_unset=True)))


@bp.delete("/<collection_id>/objects/<object_id>")
@bp.doc(**DOC)
@require_key
def delete_object(collection_id: str, object_id: str) -> Response:
    """Delete an object and its images."""
    check("collection_manage")
    return _deleted(object_id, svc.delete_object(get_db(), get_settings(), collection_id, object_id))


# --- images ------------------------------------------------------------------------------------------------------
@bp.post("/<collection_id>/objects/<object_id>/images")
@bp.doc(**DOC)
@require_key
def add_images(collection_id: str, object_id: str) -> Response:
    """Add one or many reference images (multipart image_file, repeatable, or base64; optional `angle` in degrees
    per image: 0 front, 90 side, 180 rear); each gets a 0-5 rating, the duplicates found (every object it matches
    at min_score or more), the `lookalikes` (other objects it matches at min_score or more: the same model in the
    same colour; also kept in the summary), and status added, duplicate (matches another object at
    recognition.duplicate_score, 0.95; force=true adds it), failed (no usable features, or a later image that does
    not read, with its code) or refused (the upload allowance ran out mid-batch). Only added images are charged.
    All the images together may decode to at most server.max_request_megapixels (413 before any is decoded); they
    are decoded one at a time."""
    check("collection_manage")
    db, settings = get_db(), get_settings()
    svc.get_object(db, collection_id, object_id)
    uploads = _uploaded_images()
    if not uploads:
        raise svc.RecognitionError("No image given: send image_file (multipart) or images_b64 (JSON).",
                                   code="missing_source")
    force = _flag(_params().get("force"))
    angles = _angles(len(uploads))
    check_request_pixels((data for _, data in uploads), settings.server.max_request_megapixels)
    results: list[dict[str, Any]] = []
    for n, (name, data) in enumerate(uploads):  # one decoded image at a time: memory stays one image's
        try:
            image = svc.decode_image(settings, data, name)
        except ModelError as exc:
            if n == 0:
                raise  # the request's answer when its first image does not read
            results.append({"name": name, "status": "failed", "id": None, "code": exc.code, "detail": exc.detail})
            continue
        try:
            with charge("uploads", 1), charge("stored_images", 1):
                result = svc.add_image(db, settings, collection_id, object_id, image, force=force, angle=angles[n])
                if result["status"] != "added":
                    raise _NotStored(result)  # refunds both: nothing is charged for an image not stored
        except _NotStored as exc:
            result = exc.result
        except LicensingError as exc:
            if n == 0:
                raise  # 402/403 for the request when not even the first image may be stored
            result = {"status": "refused", "id": None, "code": exc.code, "detail": exc.detail}
        results.append({"name": name, **result})
    return jsonify({"images": results})


def _angles(count: int) -> list[float | None]:
    """The view angle of each uploaded image in degrees (`angle`, one per image in upload order, or one for all;
    JSON: `angle` or a list `angles`), None where not given; checked before any image is examined."""
    if request.is_json:
        body = _json()
        raw = body.get("angles", body.get("angle"))
        values = raw if isinstance(raw, list) else [raw] * count
    else:
        values = request.form.getlist("angle") or request.args.getlist("angle") or [None]
        if len(values) == 1:
            values = values * count
    if len(values) != count:
        raise svc.RecognitionError(f"Send one angle per image (or one for all): got {count} images and "
                                   f"{len(values)} angles.", code="invalid_angle")
    return [svc.check_angle(v) for v in values]


class _NotStored(Exception):
    """An image that was examined but not stored (duplicate, no features): its reservations are refunded."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__(result.get("status", ""))
        self.result = result


@bp.get("/<collection_id>/objects/<object_id>/images")
@bp.doc(**DOC)
@require_key
def list_images(collection_id: str, object_id: str) -> Response:
    """An object's reference images."""
    check("collection_read")
    return jsonify({"images": svc.list_images(get_db(), collection_id, object_id)})


@bp.delete("/<collection_id>/objects/<object_id>/images/<int:image_id>")
@bp.doc(**DOC)
@require_key
def delete_image(collection_id: str, object_id: str, image_id: int) -> Response:
    """Delete one reference image."""
    check("collection_manage")
    svc.delete_image(get_db(), get_settings(), collection_id, object_id, image_id)
    release("stored_images", 1)
    return jsonify({"deleted": image_id})


# --- recognize ---------------------------------------------------------------------------------------------------
@bp.post("/<collection_id>/recognize")
@bp.doc(**DOC)
@require_key
def recognize(collection_id: str) -> Response:
    """Which objects a photo shows: mode single|multi|all, limit, min_score; results with score, polygon and
    `ambiguous` (look-alikes the photo cannot tell apart are all answered, in mode single too)."""
    check("recognition")
    db, settings = get_db(), get_settings()
    svc.get_collection(db, collection_id)
    params = _params()
    uploads = _uploaded_images()
    if len(uploads) != 1:
        raise svc.RecognitionError("Send exactly one image (image_file or image_file_b64).", code="missing_source")
    try:
        limit = int(params.get("limit", 10))
        min_score = float(params["min_score"]) if params.get("min_score") not in (None, "") else None
    except (TypeError, ValueError) as exc:
        raise svc.RecognitionError("limit must be an integer and min_score a number.") from exc
    image = svc.decode_image(settings, uploads[0][1], "image")
    with charge("scans", 1):
        out = svc.recognize(db, settings, collection_id, image, mode=str(params.get("mode", "single")),
                            limit=limit, min_score=min_score)
    return jsonify(out)
