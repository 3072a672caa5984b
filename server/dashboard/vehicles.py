"""Dashboard: vehicles (add one by VIN, upload photos by angle, search, see the studio renders), through the catalog
service, charged as the API charges."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, g, redirect, render_template, request, send_file, url_for

from licensing.errors import LicensingError
from models.errors import ModelError
from server.config import get_settings
from server.dashboard import bp
from server.dashboard.common import charged_scan, drawn_scan, friendly_message, login_required
from server.errors import ApiError
from server.services import catalog, catalog_jobs, catalog_recognition
from server.services.metering import charge, check
from server.services.removebg import SIZE_CREDITS
from server.store import get_db

PAGE = 50


@bp.get("/vehicles")
@login_required
def vehicles() -> Any:
    """Search the vehicle catalog (free text and status), a page at a time."""
    return _vehicles_page()


def _vehicles_page(error: str | None = None, status: int = 200, form: dict[str, str] | None = None,
                   found: dict[str, Any] | None = None) -> Any:
    check("collection_read")
    q = request.args.get("q", "").strip()
    wanted = request.args.get("status", "")
    wanted = wanted if wanted in catalog.STATUSES else ""
    rows, nxt = catalog.search_vehicles(get_db(), q=q or None, status=wanted or None,
                                        cursor=request.args.get("cursor") or None, limit=PAGE)
    return render_template("vehicles.html", rows=rows, next_cursor=nxt, q=q, status=wanted,
                           statuses=catalog.STATUSES, error=error, form=form or {}, found=found,
                           pending_references=catalog_recognition.pending_count(get_db())), status


@bp.post("/vehicles/identify")
@login_required
def identify_vehicle() -> Any:
    """Find by photo: which in-stock vehicles a photo shows (POST /v1/vehicles/identify; one scan is charged)."""
    upload = request.files.get("photo")
    if upload is None or not upload.filename:
        return _vehicles_page(error="Choose a photo of the vehicle to find.", status=400)
    try:
        image, out = charged_scan(upload, lambda image: catalog_recognition.identify(
            get_db(), get_settings(), image, mode="single"))
    except (ApiError, LicensingError, ModelError) as exc:
        return _vehicles_page(error=friendly_message(exc), status=int(getattr(exc, "status", 400)))
    return _vehicles_page(found=drawn_scan(image, out, "vehicles", upload.filename))


@bp.post("/vehicles")
@login_required
def create_vehicle() -> Any:
    """Add a vehicle by its VIN (year and make are read from the VIN)."""
    fields = {k: request.form.get(k, "").strip() for k in ("vin", "stock_number", "model", "trim", "color")}
    try:
        check("collection_manage")
        v = catalog.create_vehicle(get_db(), {k: val for k, val in fields.items() if val})
    except (ApiError, LicensingError, ModelError) as exc:  # models.vin.InvalidVin is a ModelError
        return _vehicles_page(error=friendly_message(exc), status=int(getattr(exc, "status", 400)), form=fields)
    flash(f"The {v.get('year') or ''} {v.get('make') or ''} {v.get('model') or ''} was added. Upload its photos below.")
    return redirect(url_for("dashboard.vehicle", vehicle_id=v["id"]))


@bp.post("/vehicles/<int:vehicle_id>/photos")
@login_required
def upload_vehicle_photos(vehicle_id: int) -> Any:
    """Upload photos of one angle; each new one is queued for a studio render and charged as the API charges it."""
    db = get_db()
    catalog.get_vehicle(db, vehicle_id)
    angle = request.form.get("angle", "")
    uploads = [(f.filename or "photo", f.read(), angle, []) for f in request.files.getlist("photos")
               if f and f.filename]
    if not uploads:
        return _vehicle_page(vehicle_id, "Choose at least one photo of the vehicle.", 400)
    try:
        check("background_removal")
        settings = get_settings()
        prepared = catalog.prepare_photos(db, settings, vehicle_id, uploads)
        new = sum(1 for p in prepared if p.duplicate_of is None)
        size = catalog_jobs.working_size(settings.catalog.render_size, catalog.vehicle_profile(db, vehicle_id))
        g.principal = g.user
        if new:
            with charge("credits", SIZE_CREDITS[size] * new):
                result = catalog.store_photos(db, settings, vehicle_id, prepared)
        else:
            result = catalog.store_photos(db, settings, vehicle_id, prepared)
    except (ApiError, LicensingError, ModelError) as exc:
        return _vehicle_page(vehicle_id, friendly_message(exc), int(getattr(exc, "status", 400)))
    stored, dupes = len(result["photos"]), len(result["duplicates"])
    flash(f"{stored} photo{'s' if stored != 1 else ''} uploaded; the studio versions appear here when ready."
          + (f" {dupes} skipped: already uploaded." if dupes else ""))
    return redirect(url_for("dashboard.vehicle", vehicle_id=vehicle_id))


def _vehicle_page(vehicle_id: int, error: str | None = None, status: int = 200) -> Any:
    check("collection_read")
    db = get_db()
    return render_template("vehicle.html", v=catalog.get_vehicle(db, vehicle_id),
                           photos=catalog.list_photos(db, vehicle_id), angles=catalog.ANGLES, error=error), status


@bp.get("/vehicles/<int:vehicle_id>")
@login_required
def vehicle(vehicle_id: int) -> Any:
    """One vehicle: its details and its photos with their studio renders."""
    return _vehicle_page(vehicle_id)


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
