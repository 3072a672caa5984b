"""Dashboard: recognition collections (browse objects, scan a photo and see the match drawn) and vehicles (browse the
catalog with its photos). Both call the recognition and catalog services' public functions."""

from __future__ import annotations

import base64
import io
from typing import Any

from flask import abort, g, render_template, request, send_file
from PIL import Image

from licensing.errors import LicensingError
from models.errors import ModelError
from server.blueprints.dashboard import bp, friendly_message, login_required
from server.config import get_settings
from server.errors import ApiError
from server.services import catalog
from server.services import recognition as rec
from server.services.metering import charge, check
from server.store import get_db

PAGE = 50
SCAN_PREVIEW_SIDE = 1000


def _scan_preview(image: Image.Image) -> tuple[str, float, tuple[int, int]]:
    """The scanned photo as a small JPEG data URL, the factor from photo pixels to preview pixels, and its size."""
    preview = image.convert("RGB")
    preview.thumbnail((SCAN_PREVIEW_SIDE, SCAN_PREVIEW_SIDE))
    buf = io.BytesIO()
    preview.save(buf, "JPEG", quality=80)
    return ("data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode(), preview.width / image.width,
            preview.size)


def counts(collection_id: str) -> dict[str, Any]:
    """How many objects (shown as 'N+' past a page of 500) and reference images a collection holds."""
    objects, more = rec.list_objects(collection_id, None, 500)
    return {"objects": f"{len(objects)}{'+' if more else ''}", "images": rec.count_images(collection_id)}


def _collection_page(collection_id: str, scan: dict[str, Any] | None = None, error: str | None = None,
                     status: int = 200) -> Any:
    check("collection_read")
    coll = rec.get_collection(collection_id)
    objects, nxt = rec.list_objects(collection_id, request.args.get("cursor") or None, PAGE)
    return render_template("collection.html", coll=coll, counts=counts(collection_id), objects=objects,
                           next_cursor=nxt, scan=scan, error=error), status


@bp.get("/collections")
@login_required
def collections() -> Any:
    """Every recognition collection with its counts."""
    check("collection_read")
    rows = [{**c, **counts(c["id"])} for c in rec.list_collections()]
    return render_template("collections.html", rows=rows)


@bp.get("/collections/<collection_id>")
@login_required
def collection(collection_id: str) -> Any:
    """A collection's objects (a page at a time) and the scan form."""
    return _collection_page(collection_id)


@bp.post("/collections/<collection_id>/scan")
@login_required
def collection_scan(collection_id: str) -> Any:
    """Scan a photo against the collection (one scan is charged) and draw where each match was found."""
    rec.get_collection(collection_id)
    upload = request.files.get("photo")
    if upload is None or not upload.filename:
        return _collection_page(collection_id, error="Choose a photo to scan first.", status=400)
    mode = request.form.get("mode", "single")
    try:
        check("recognition")
        image = rec.decode_image(upload.read(), "photo")
        g.principal = g.user  # the scan is charged to the signed-in user, without an API key
        with charge("scans", 1):
            out = rec.recognize(collection_id, image, mode=mode if mode in rec.MODES else "single", limit=10)
    except (ApiError, LicensingError, ModelError) as exc:
        return _collection_page(collection_id, error=friendly_message(exc), status=int(getattr(exc, "status", 400)))
    src, factor, size = _scan_preview(image)
    for r in out["results"]:
        r["points"] = " ".join(f"{x * factor:.1f},{y * factor:.1f}" for x, y in (r.get("polygon") or []))
    return _collection_page(collection_id, scan={**out, "src": src, "size": size, "filename": upload.filename})


# --- vehicles ------------------------------------------------------------------------------------------------------
@bp.get("/vehicles")
@login_required
def vehicles() -> Any:
    """Search the vehicle catalog (free text and status), a page at a time."""
    check("collection_read")
    q = request.args.get("q", "").strip()
    status = request.args.get("status", "")
    status = status if status in catalog.STATUSES else ""
    rows, nxt = catalog.search_vehicles(get_db(), q=q or None, status=status or None,
                                        cursor=request.args.get("cursor") or None, limit=PAGE)
    return render_template("vehicles.html", rows=rows, next_cursor=nxt, q=q, status=status,
                           statuses=catalog.STATUSES)


@bp.get("/vehicles/<int:vehicle_id>")
@login_required
def vehicle(vehicle_id: int) -> Any:
    """One vehicle: its details and its photos with their studio renders."""
    check("collection_read")
    db = get_db()
    return render_template("vehicle.html", v=catalog.get_vehicle(db, vehicle_id),
                           photos=catalog.list_photos(db, vehicle_id))


@bp.get("/vehicles/images/<render_id>")
@login_required
def vehicle_image(render_id: str) -> Any:
    """A render for the dashboard's own pages (the API's /v1/images needs a key), at most 800 px wide."""
    db = get_db()
    try:
        render = catalog.get_render(db, render_id)
        width = min(int(request.args.get("width", 400)), 800)
        variant = catalog.parse_variant({"width": str(max(width, 1)), "format": "jpg"}, render, get_settings())
    except (ApiError, ValueError):
        abort(404)
    path, _hit = catalog.serve_path(get_settings(), render, variant)
    return send_file(path, mimetype="image/jpeg", max_age=300)
