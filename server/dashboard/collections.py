"""Dashboard: recognition collections (make one, add objects with reference photos, scan a photo and see the match
drawn), through the recognition service's public functions, charged as the API charges."""

from __future__ import annotations

from typing import Any

from flask import flash, g, redirect, render_template, request, url_for

from licensing.errors import LicensingError
from models.errors import ModelError
from server.config import get_settings
from server.dashboard import bp
from server.dashboard.common import charged_scan, drawn_scan, friendly_message, login_required
from server.errors import ApiError
from server.services import recognition as rec
from server.services.metering import charge, check
from server.services.uploads import check_request_pixels
from server.store import get_db

PAGE = 50


def counts(collection_id: str) -> dict[str, Any]:
    """How many objects (shown as 'N+' past a page of 500) and reference images a collection holds."""
    db = get_db()
    objects, more = rec.list_objects(db, collection_id, None, 500)
    return {"objects": f"{len(objects)}{'+' if more else ''}", "images": rec.count_images(db, collection_id)}


def _collection_page(collection_id: str, scan: dict[str, Any] | None = None, error: str | None = None,
                     status: int = 200) -> Any:
    check("collection_read")
    db = get_db()
    coll = rec.get_collection(db, collection_id)
    objects, nxt = rec.list_objects(db, collection_id, request.args.get("cursor") or None, PAGE)
    alike: dict[str, list[str]] = {}
    for pair in rec.lookalikes(db, collection_id):
        alike.setdefault(pair["object_id"], []).append(pair["other_id"])
        alike.setdefault(pair["other_id"], []).append(pair["object_id"])
    return render_template("collection.html", coll=coll, counts=counts(collection_id), objects=objects,
                           next_cursor=nxt, scan=scan, error=error, lookalikes=alike,
                           coverage={c["object_id"]: c for c in rec.coverage(db, collection_id)}), status


@bp.get("/collections")
@login_required
def collections() -> Any:
    """Every recognition collection with its counts."""
    check("collection_read")
    rows = [{**c, **counts(c["id"])} for c in rec.list_collections(get_db())]
    return render_template("collections.html", rows=rows)


@bp.post("/collections")
@login_required
def create_collection() -> Any:
    """Make an empty collection."""
    try:
        check("collection_manage")
        coll = rec.create_collection(get_db(), request.form.get("name", ""),
                                     "car" if request.form.get("object_type") == "car" else "generic")
    except (ApiError, LicensingError) as exc:
        rows = [{**c, **counts(c["id"])} for c in rec.list_collections(get_db())]
        return render_template("collections.html", rows=rows, error=friendly_message(exc)), int(exc.status)
    flash(f"The collection “{coll['name']}” was made. Add objects with their reference photos below.")
    return redirect(url_for("dashboard.collection", collection_id=coll["id"]))


class _NotStored(Exception):
    """A photo examined but not stored (duplicate, no features): leaving the charge block refunds it."""


def add_reference_photos(collection_id: str, object_id: str, uploads: list[tuple[str, bytes]]) -> dict[str, int]:
    """Store reference photos of one object as POST /v1/collections/.../images does: each added photo costs one
    upload and one stored image; duplicates and featureless photos are refunded. Counts per outcome."""
    tally = {"added": 0, "duplicate": 0, "failed": 0}
    db, settings = get_db(), get_settings()
    check_request_pixels((data for _, data in uploads), settings.server.max_request_megapixels)
    for n, (name, data) in enumerate(uploads):  # one decoded photo at a time
        try:
            image = rec.decode_image(settings, data, name)
        except ModelError:
            if n == 0:
                raise  # a first photo that does not read stops the batch before any work
            tally["failed"] += 1
            continue
        try:
            with charge("uploads", 1), charge("stored_images", 1):
                result = rec.add_image(db, settings, collection_id, object_id, image)
                if result["status"] != "added":
                    raise _NotStored(result["status"])
        except _NotStored as exc:
            tally[str(exc) if str(exc) in tally else "failed"] += 1
            continue
        except LicensingError:
            if n == 0:
                raise
            tally["refused"] = len(uploads) - n  # the allowance ran out part-way
            break
        tally["added"] += 1
    return tally


@bp.post("/collections/<collection_id>/objects")
@login_required
def add_object(collection_id: str) -> Any:
    """Add (or update) an object with reference photos."""
    rec.get_collection(get_db(), collection_id)
    object_id = request.form.get("object_id", "").strip()
    uploads = [(f.filename or "photo", f.read()) for f in request.files.getlist("photos") if f and f.filename]
    if not object_id:
        return _collection_page(collection_id, error="Give the object an id, e.g. its stock number.", status=400)
    if not uploads:
        return _collection_page(collection_id, error="Choose at least one reference photo of the object.",
                                status=400)
    try:
        check("collection_manage")
        rec.put_object(get_db(), collection_id, object_id, {"name": request.form.get("name", "").strip() or None})
        g.principal = g.user  # uploads are charged to the signed-in user, without an API key
        tally = add_reference_photos(collection_id, object_id, uploads)
    except (ApiError, LicensingError, ModelError) as exc:
        return _collection_page(collection_id, error=friendly_message(exc), status=int(getattr(exc, "status", 400)))
    words = [f"{tally['added']} photo{'s' if tally['added'] != 1 else ''} added"]
    if tally["duplicate"]:
        words.append(f"{tally['duplicate']} skipped because another object already has them")
    if tally["failed"]:
        words.append(f"{tally['failed']} skipped because they could not be read or show too little detail to "
                     "recognise")
    if tally.get("refused"):
        words.append(f"{tally['refused']} not added because this month's uploads are used up")
    flash(f"{object_id}: {', '.join(words)}.")
    return redirect(url_for("dashboard.collection", collection_id=collection_id))


@bp.get("/collections/<collection_id>")
@login_required
def collection(collection_id: str) -> Any:
    """A collection's objects (a page at a time) and the scan form."""
    return _collection_page(collection_id)


@bp.post("/collections/<collection_id>/scan")
@login_required
def collection_scan(collection_id: str) -> Any:
    """Scan a photo against the collection (one scan is charged) and draw where each match was found."""
    db, settings = get_db(), get_settings()
    rec.get_collection(db, collection_id)
    upload = request.files.get("photo")
    if upload is None or not upload.filename:
        return _collection_page(collection_id, error="Choose a photo to scan first.", status=400)
    mode = request.form.get("mode", "single")
    try:
        image, out = charged_scan(upload, lambda image: rec.recognize(
            db, settings, collection_id, image, mode=mode if mode in rec.MODES else "single", limit=10))
    except (ApiError, LicensingError, ModelError) as exc:
        return _collection_page(collection_id, error=friendly_message(exc), status=int(getattr(exc, "status", 400)))
    return _collection_page(collection_id, scan=drawn_scan(image, out, "results", upload.filename))

