"""The vehicle image catalog: vehicles, their photos by angle, studio profiles, renders and image delivery."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imagehash
import sqlite_utils
from PIL import Image, ImageOps, features
from sqlite_utils.migrations import Migrations

from core.clock import iso, now_iso
from core.encoding import decode_cursor, encode_cursor, printable_id
from models import imaging, plates
from models import vin as vins
from server.config import Settings
from server.errors import ApiError, BadRequest, NotFound
from server.services import catalog_recognition
from server.services.uploads import check_request_pixels
from server.store import write_txn

migrations = Migrations("forecourt-catalog")

STATUSES = ("in_stock", "sold", "archived")
ANGLES = ("front", "front_left", "left", "rear_left", "rear", "rear_right", "right", "front_right", "interior",
          "detail")
OUTPUT_FORMATS = ("jpg", "png", "webp")
SERVE_FORMATS = ("webp", "jpg", "png", *(("avif",) if features.check("avif") else ()))
FITS = ("contain", "cover", "fill", "pad")
MEDIA = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp", "avif": "image/avif"}
PIL_FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP", "avif": "AVIF"}
MAX_METADATA_BYTES = 1_000_000  # serialized, as recognition objects' metadata
MAX_STOCK_NUMBER = 100
VEHICLE_FIELDS = ("vin", "stock_number", "year", "make", "model", "trim", "body_style", "color", "status",
                  "metadata", "profile_id")


class CatalogError(ApiError):
    code, title, status = "catalog_error", "Catalog error", 400


def _row_id(value: Any, what: str, code: str) -> int:
    """An id SQLite can hold; anything else names no row."""
    if not isinstance(value, int) or not 0 < value < 2**63:
        raise NotFound(f"No {what} with id {value}.", code=code)
    return value


@migrations()
def m001_catalog(db: sqlite_utils.Database) -> None:
    """Vehicles, photos, studio profiles, renders and the render queue."""
    db["catalog_profiles"].create(
        {"id": int, "name": str, "bg_color": str, "add_shadow": int, "scale": float, "position": str,
         "width": int, "height": int, "format": str, "version": int, "is_default": int, "created_at": str,
         "updated_at": str}, pk="id", not_null={"name", "width", "height", "format", "version"})
    db["catalog_profiles"].create_index(["name"], unique=True)
    db["catalog_profiles"].insert({"name": "studio-white", "bg_color": "ffffff", "add_shadow": 1, "scale": 0.9,
                                   "position": "center", "width": 1200, "height": 800, "format": "jpg",
                                   "version": 1, "is_default": 1, "created_at": now_iso(), "updated_at": now_iso()})
    db["catalog_vehicles"].create(
        {"id": int, "vin": str, "stock_number": str, "year": int, "make": str, "model": str, "trim": str,
         "body_style": str, "color": str, "status": str, "metadata": str, "vin_info": str, "profile_id": int,
         "created_at": str, "updated_at": str},
        pk="id", not_null={"vin", "status", "created_at"}, foreign_keys=[("profile_id", "catalog_profiles", "id")])
    db["catalog_vehicles"].create_index(["vin"], unique=True)
    for col in ("make", "model", "year", "status", "stock_number"):
        db["catalog_vehicles"].create_index([col])
    db["catalog_photos"].create(
        {"id": int, "vehicle_id": int, "angle": str, "position": int, "is_primary": int, "path": str,
         "filename": str, "sha256": str, "phash": str, "width": int, "height": int, "plate_regions": str,
         "created_at": str},
        pk="id", not_null={"vehicle_id", "angle", "path", "sha256", "phash"},
        foreign_keys=[("vehicle_id", "catalog_vehicles", "id")])
    db["catalog_photos"].create_index(["vehicle_id", "position"])
    db["catalog_renders"].create(
        {"id": str, "photo_id": int, "profile_id": int, "profile_version": int, "path": str, "width": int,
         "height": int, "format": str, "sha256": str, "bg_color": str, "created_at": str},
        pk="id", foreign_keys=[("photo_id", "catalog_photos", "id")])
    db["catalog_renders"].create_index(["photo_id", "created_at"])
    db["catalog_jobs"].create(
        {"id": int, "photo_id": int, "profile_id": int, "profile_version": int, "status": str, "error": str,
         "attempts": int, "created_at": str, "started_at": str, "finished_at": str},
        pk="id", not_null={"photo_id", "profile_id", "profile_version", "status"},
        foreign_keys=[("photo_id", "catalog_photos", "id")])
    db["catalog_jobs"].create_index(["status", "id"])
    db["catalog_jobs"].create_index(["photo_id"])


@migrations()
def m002_profile_background_and_plates(db: sqlite_utils.Database) -> None:
    """Profiles get a background image and automatic plate detection; renders record the regions they masked."""
    db["catalog_profiles"].add_column("bg_image", str)
    db["catalog_profiles"].add_column("detect_plates", int, not_null_default=0)
    db["catalog_renders"].add_column("masked_regions", str)


@migrations()
def m003_job_owner(db: sqlite_utils.Database) -> None:
    """Jobs record the process that claimed them, so a dead worker's jobs are retried at once."""
    db["catalog_jobs"].add_column("claimed_by", str)


def migrate(db: sqlite_utils.Database) -> None:
    """Apply the catalog's schema steps."""
    migrations.apply(db)


# --- vehicles --------------------------------------------------------------------------------------------------
def _vehicle_out(db: sqlite_utils.Database, row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["metadata"] = json.loads(row["metadata"] or "{}")
    out["vin_info"] = json.loads(row["vin_info"] or "{}")
    out["profile_id"] = row["profile_id"] or default_profile(db)["id"]
    out["photo_count"] = db["catalog_photos"].count_where("vehicle_id = ?", [row["id"]])
    out["renders"] = job_progress(db, vehicle_id=row["id"])
    return out


def _clean_vehicle_fields(db: sqlite_utils.Database, fields: dict[str, Any]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for key, value in fields.items():
        if key not in VEHICLE_FIELDS:
            continue
        if key == "vin":
            info = vins.decode(value)
            clean["vin"], clean["vin_info"] = info.vin, json.dumps(info.as_dict())
        elif key == "status":
            if value not in STATUSES:
                raise BadRequest(f"status must be one of {', '.join(STATUSES)}.", code="invalid_status")
            clean["status"] = value
        elif key == "metadata":
            clean["metadata"] = json.dumps(value or {})
            if len(clean["metadata"].encode()) > MAX_METADATA_BYTES:
                raise BadRequest("metadata is larger than 1 MB.", code="metadata_too_large")
        elif key == "stock_number" and value is not None:
            clean[key] = (value.strip() if isinstance(value, str) else value) or None  # "" clears it
            if clean[key] is not None and not printable_id(clean[key], MAX_STOCK_NUMBER):
                raise BadRequest(f"stock_number must be 1-{MAX_STOCK_NUMBER} printable characters (no control "
                                 f"characters such as NUL or newline).", code="invalid_parameters",
                                 title="Invalid parameters")
        elif key == "profile_id":
            if value is not None:
                get_profile(db, int(value))
            clean["profile_id"] = value
        else:
            clean[key] = value.strip() if isinstance(value, str) else value
    return clean


def create_vehicle(db: sqlite_utils.Database, fields: dict[str, Any]) -> dict[str, Any]:
    """Add a vehicle; the VIN is validated and decoded, year and make filled from it when not given."""
    clean = _clean_vehicle_fields(db, {"status": "in_stock", **fields})
    info = json.loads(clean["vin_info"])
    clean.setdefault("year", info["model_year"])
    clean.setdefault("make", info["maker"])
    clean.setdefault("metadata", "{}")
    with write_txn(db):
        if db["catalog_vehicles"].count_where("vin = ?", [clean["vin"]]):
            raise CatalogError(f"A vehicle with VIN {clean['vin']} is already in the catalog.",
                               code="duplicate_vin", title="Duplicate VIN", status=409)
        clean["created_at"] = clean["updated_at"] = now_iso()
        vid = db["catalog_vehicles"].insert(clean).last_pk
    return get_vehicle(db, vid)


def _vehicle_row(db: sqlite_utils.Database, vehicle_id: int) -> dict[str, Any]:
    rows = list(db["catalog_vehicles"].rows_where("id = ?", [_row_id(vehicle_id, "vehicle", "vehicle_not_found")]))
    if not rows:
        raise NotFound(f"No vehicle with id {vehicle_id}.", code="vehicle_not_found")
    return rows[0]


def get_vehicle(db: sqlite_utils.Database, vehicle_id: int) -> dict[str, Any]:
    """One vehicle with its decoded VIN and render progress."""
    return _vehicle_out(db, _vehicle_row(db, vehicle_id))


def update_vehicle(db: sqlite_utils.Database, settings: Settings, vehicle_id: int,
                   fields: dict[str, Any]) -> dict[str, Any]:
    """Change some fields; a new profile queues re-renders of every photo."""
    before = _vehicle_row(db, vehicle_id)
    clean = _clean_vehicle_fields(db, fields)
    with write_txn(db):
        if "vin" in clean and clean["vin"] != before["vin"] and db["catalog_vehicles"].count_where(
                "vin = ?", [clean["vin"]]):
            raise CatalogError(f"A vehicle with VIN {clean['vin']} is already in the catalog.",
                               code="duplicate_vin", title="Duplicate VIN", status=409)
        clean["updated_at"] = now_iso()
        db["catalog_vehicles"].update(vehicle_id, clean)
        if "profile_id" in clean and clean["profile_id"] != before["profile_id"]:
            profile = vehicle_profile(db, vehicle_id)
            for photo in db["catalog_photos"].rows_where("vehicle_id = ?", [vehicle_id]):
                enqueue(db, settings, photo["id"], profile)
    if clean.get("status", "in_stock") != "in_stock":  # sold or archived: no longer a stock unit to recognise
        catalog_recognition.forget_vehicle(db, settings, vehicle_id)
    elif clean.get("status") == "in_stock" and before["status"] != "in_stock":  # back in stock
        catalog_recognition.queue_vehicle(db, settings, vehicle_id)
    return get_vehicle(db, vehicle_id)


def delete_vehicle(db: sqlite_utils.Database, settings: Settings, vehicle_id: int) -> None:
    """Remove a vehicle with its photos, renders and jobs (files too)."""
    _vehicle_row(db, vehicle_id)
    photo_ids = [r["id"] for r in db["catalog_photos"].rows_where("vehicle_id = ?", [vehicle_id], select="id")]
    for pid in photo_ids:
        delete_photo(db, settings, pid)
    catalog_recognition.forget_vehicle(db, settings, vehicle_id)
    with write_txn(db):
        db["catalog_vehicles"].delete(vehicle_id)


def search_vehicles(db: sqlite_utils.Database, *, make: str | None = None, model: str | None = None,
                    year: int | None = None, color: str | None = None, status: str | None = None,
                    q: str | None = None, cursor: str | None = None, limit: int = 50
                    ) -> tuple[list[dict[str, Any]], str | None]:
    """Vehicles matching every given filter, oldest first, and the cursor of the next page (or None)."""
    where, args = ["1 = 1"], []
    for col, value in (("make", make), ("model", model), ("color", color)):
        if value:
            where.append(f"{col} = ? COLLATE NOCASE")
            args.append(value)
    if year is not None:
        where.append("year = ?")
        args.append(year)
    if status:
        if status not in STATUSES:
            raise BadRequest(f"status must be one of {', '.join(STATUSES)}.", code="invalid_status")
        where.append("status = ?")
        args.append(status)
    if q:
        like = f"%{q.replace('%', '').replace('_', '')}%"
        where.append("(vin LIKE ? OR stock_number LIKE ? OR make LIKE ? OR model LIKE ? OR trim LIKE ? "
                     "OR color LIKE ? OR metadata LIKE ?)")
        args.extend([like] * 7)
    if cursor:
        where.append("id > ?")
        args.append(decode_cursor(cursor, int))
    rows = list(db["catalog_vehicles"].rows_where(" AND ".join(where), args, order_by="id", limit=limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    return [_vehicle_out(db, r) for r in rows], (encode_cursor(rows[-1]["id"]) if more else None)


# --- studio profiles --------------------------------------------------------------------------------------------
PROFILE_FIELDS = ("name", "bg_color", "add_shadow", "scale", "position", "width", "height", "format",
                  "detect_plates")


def _profile_out(db: sqlite_utils.Database, row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["add_shadow"], out["is_default"] = bool(row["add_shadow"]), bool(row["is_default"])
    out["detect_plates"] = bool(row.get("detect_plates"))
    out["bg_image"] = bool(row.get("bg_image"))  # the file itself stays private
    return out


def default_profile(db: sqlite_utils.Database) -> dict[str, Any]:
    """The profile used by vehicles that name none."""
    return next(db["catalog_profiles"].rows_where("is_default = 1", limit=1))


def get_profile(db: sqlite_utils.Database, profile_id: int) -> dict[str, Any]:
    """One profile or 404."""
    rows = list(db["catalog_profiles"].rows_where("id = ?", [_row_id(profile_id, "studio profile",
                                                                         "profile_not_found")]))
    if not rows:
        raise NotFound(f"No studio profile with id {profile_id}.", code="profile_not_found")
    return _profile_out(db, rows[0])


def list_profiles(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Every profile."""
    return [_profile_out(db, r) for r in db["catalog_profiles"].rows_where(order_by="id")]


def _check_profile(settings: Settings, fields: dict[str, Any]) -> dict[str, Any]:
    from server.services.removebg import parse_bg_color, parse_position

    clean = {k: v for k, v in fields.items() if k in PROFILE_FIELDS and v is not None}
    if "format" in clean:
        clean["format"] = "jpg" if clean["format"] == "jpeg" else clean["format"]
        if clean["format"] not in OUTPUT_FORMATS:
            raise BadRequest(f"format must be one of {', '.join(OUTPUT_FORMATS)}.", code="invalid_format")
    if "add_shadow" in clean:
        clean["add_shadow"] = int(bool(clean["add_shadow"]))
    if "detect_plates" in clean:
        clean["detect_plates"] = int(bool(clean["detect_plates"]))
        if clean["detect_plates"] and not plates.detector_available(settings.catalog.plate_cascade):
            raise BadRequest("No plate detector is installed on this server (OpenCV's pip build ships no plate "
                             "cascade; see catalog.plate_cascade). Give plate regions with each photo instead.",
                             code="plate_detector_unavailable", title="Plate detector unavailable")
    # the remove.bg parsers own the meaning of colour and position; colours are stored as 6 hex digits
    if "bg_color" in clean:
        clean["bg_color"] = "{:02x}{:02x}{:02x}".format(*parse_bg_color(str(clean["bg_color"]))[:3])
    if "position" in clean:
        parse_position(str(clean["position"]))
    return clean


def create_profile(db: sqlite_utils.Database, settings: Settings, fields: dict[str, Any]) -> dict[str, Any]:
    """Add a studio profile."""
    clean = _check_profile(settings, fields)
    base = {"bg_color": "ffffff", "add_shadow": 1, "scale": 0.9, "position": "center", "width": 1200,
            "height": 800, "format": "jpg"}
    with write_txn(db):
        if db["catalog_profiles"].count_where("name = ?", [clean.get("name")]):
            raise CatalogError(f"A profile named {clean.get('name')!r} exists.", code="duplicate_profile",
                               title="Duplicate profile", status=409)
        pid = db["catalog_profiles"].insert({**base, **clean, "version": 1, "is_default": 0, "created_at": now_iso(),
                                             "updated_at": now_iso()}).last_pk
    return get_profile(db, pid)


def update_profile(db: sqlite_utils.Database, settings: Settings, profile_id: int,
                   fields: dict[str, Any]) -> dict[str, Any]:
    """Change a profile: its version goes up and every affected photo is queued for a re-render."""
    before = get_profile(db, profile_id)
    clean = _check_profile(settings, fields)
    changed = {k: v for k, v in clean.items() if before.get(k) != v and k != "name"}
    with write_txn(db):
        if "name" in clean and clean["name"] != before["name"] and db["catalog_profiles"].count_where(
                "name = ?", [clean["name"]]):
            raise CatalogError(f"A profile named {clean['name']!r} exists.", code="duplicate_profile",
                               title="Duplicate profile", status=409)
        db["catalog_profiles"].update(profile_id, {**clean, "updated_at": now_iso()})
        if changed:
            _new_version(db, settings, profile_id)
    return get_profile(db, profile_id)


def _new_version(db: sqlite_utils.Database, settings: Settings, profile_id: int) -> None:
    """Inside a write transaction: bump a profile's version and queue a re-render of every affected photo."""
    db.execute("UPDATE catalog_profiles SET version = version + 1 WHERE id = ?", [profile_id])
    profile = get_profile(db, profile_id)
    for photo_id in affected_photos(db, profile):
        enqueue(db, settings, photo_id, profile)


def set_profile_background(db: sqlite_utils.Database, settings: Settings, profile_id: int,
                           data: bytes | None) -> dict[str, Any]:
    """Give a profile a background image (bytes; cropped to fill the canvas) or take it away (None); re-renders."""
    before = get_profile(db, profile_id)
    path = None
    if data is not None:
        img = imaging.decode(data, max_bytes=settings.catalog.max_photo_mb * 1024 * 1024, what="background image")
        folder = settings.data_dir / "images" / "backgrounds"
        folder.mkdir(parents=True, exist_ok=True)
        file = folder / f"{uuid.uuid4().hex}.png"
        img.convert("RGB").save(file, "PNG")
        path = str(file.relative_to(settings.data_dir))
    with write_txn(db):
        db["catalog_profiles"].update(profile_id, {"bg_image": path, "updated_at": now_iso()})
        if path or before["bg_image"]:
            _new_version(db, settings, profile_id)
    # the old file is kept: renders made with it stay valid and jobs already claimed may still read it
    return get_profile(db, profile_id)


def profile_row(db: sqlite_utils.Database, profile_id: int) -> dict[str, Any]:
    """A profile as stored (with its background image's path), for the renderer."""
    get_profile(db, profile_id)
    return dict(db["catalog_profiles"].get(profile_id))


def profile_background(settings: Settings, row: dict[str, Any]) -> Image.Image | None:
    """A stored profile's background image, or None for a plain colour."""
    if not row.get("bg_image"):
        return None
    with Image.open(settings.data_dir / row["bg_image"]) as img:
        return img.convert("RGB")


def affected_photos(db: sqlite_utils.Database, profile: dict[str, Any]) -> list[int]:
    """Photos whose vehicle renders with this profile."""
    cond = "v.profile_id = ?" + (" OR v.profile_id IS NULL" if profile["is_default"] else "")
    return [r[0] for r in db.execute(f"SELECT p.id FROM catalog_photos p JOIN catalog_vehicles v "
                                     f"ON v.id = p.vehicle_id WHERE {cond}", [profile["id"]]).fetchall()]


def vehicle_profile(db: sqlite_utils.Database, vehicle_id: int) -> dict[str, Any]:
    """The profile a vehicle's photos render with."""
    pid = _vehicle_row(db, vehicle_id)["profile_id"]
    return get_profile(db, pid) if pid else _profile_out(db, default_profile(db))


def enqueue(db: sqlite_utils.Database, settings: Settings, photo_id: int, profile: dict[str, Any]) -> None:
    """Inside a write transaction: queue a render of a photo with a profile version (a job on the job queue, sent
    once the transaction commits); older queued renders of that photo are superseded."""
    db.execute("UPDATE catalog_jobs SET status = 'superseded', finished_at = ? "
               "WHERE photo_id = ? AND status = 'queued'", [now_iso(), photo_id])
    job_id = db["catalog_jobs"].insert({"photo_id": photo_id, "profile_id": profile["id"],
                                        "profile_version": profile["version"], "status": "queued", "attempts": 0,
                                        "created_at": now_iso()}).last_pk
    from server.services.catalog_jobs import enqueue_render  # the render handler lives beside the renderer

    enqueue_render(db, settings, job_id)


def job_progress(db: sqlite_utils.Database, *, vehicle_id: int | None = None,
                 profile_id: int | None = None) -> dict[str, int]:
    """Counts of render jobs by status for a vehicle or a profile."""
    where, args = [], []
    if vehicle_id is not None:
        where.append("p.vehicle_id = ?")
        args.append(vehicle_id)
    if profile_id is not None:
        where.append("j.profile_id = ?")
        args.append(profile_id)
    counts = {s: 0 for s in ("queued", "running", "done", "failed", "superseded")}
    sql = ("SELECT j.status, count(*) FROM catalog_jobs j JOIN catalog_photos p ON p.id = j.photo_id "
           + ("WHERE " + " AND ".join(where) if where else "") + " GROUP BY j.status")
    for status, n in db.execute(sql, args).fetchall():
        counts[status] = n
    return counts


# --- photos ----------------------------------------------------------------------------------------------------
def _photo_out(db: sqlite_utils.Database, row: dict[str, Any]) -> dict[str, Any]:
    out = {k: row[k] for k in ("id", "vehicle_id", "angle", "position", "filename", "width", "height",
                               "created_at")}
    out["primary"] = bool(row["is_primary"])
    out["plate_regions"] = json.loads(row["plate_regions"] or "[]")
    render = current_render(db, row["id"])
    out["render"] = _render_out(render) if render else None
    job = next(db["catalog_jobs"].rows_where("photo_id = ? AND status != 'superseded'", [row["id"]],
                                             order_by="id desc", limit=1), None)
    out["job"] = {"status": job["status"], "profile_version": job["profile_version"], "error": job["error"]} \
        if job else None
    return out


def _render_out(render: dict[str, Any]) -> dict[str, Any]:
    return {"id": render["id"], "url": f"/v1/images/{render['id']}", "width": render["width"],
            "height": render["height"], "format": render["format"], "profile_id": render["profile_id"],
            "profile_version": render["profile_version"],
            "masked_regions": json.loads(render.get("masked_regions") or "[]"), "created_at": render["created_at"]}


def get_photo(db: sqlite_utils.Database, photo_id: int) -> dict[str, Any]:
    """One photo row or 404."""
    rows = list(db["catalog_photos"].rows_where("id = ?", [_row_id(photo_id, "photo", "photo_not_found")]))
    if not rows:
        raise NotFound(f"No photo with id {photo_id}.", code="photo_not_found")
    return rows[0]


@dataclass
class PreparedPhoto:
    """An upload decoded and hashed, and the photo it duplicates if any."""

    filename: str
    data: bytes
    angle: str
    regions: list[plates.Region]
    width: int
    height: int
    sha256: str
    phash: str
    duplicate_of: int | None = None


def _twin(known: list[tuple[int, str, Any]], sha: str, phash: Any, distance: int) -> int | None:
    return next((pid for pid, s, h in known if s == sha or (h - phash) <= distance), None)


def _known_photos(db: sqlite_utils.Database, vehicle_id: int) -> list[tuple[int, str, Any]]:
    return [(r["id"], r["sha256"], imagehash.hex_to_hash(r["phash"]))
            for r in db["catalog_photos"].rows_where("vehicle_id = ?", [vehicle_id], select="id, sha256, phash")]


def prepare_photos(db: sqlite_utils.Database, settings: Settings, vehicle_id: int,
                   uploads: list[tuple[str, bytes, str, list[plates.Region]]]) -> list[PreparedPhoto]:
    """Decode and hash uploads (filename, bytes, angle, plate regions); mark duplicates of stored photos. Their
    pixels together are bounded by server.max_request_megapixels (413 before any is decoded)."""
    _vehicle_row(db, vehicle_id)
    for _, _, angle, _ in uploads:
        if angle not in ANGLES:
            raise BadRequest(f"angle must be one of {', '.join(ANGLES)}, not {angle!r}.", code="invalid_angle")
    check_request_pixels((data for _, data, _, _ in uploads), settings.server.max_request_megapixels)
    max_bytes = settings.catalog.max_photo_mb * 1024 * 1024
    known = _known_photos(db, vehicle_id)
    out = []
    for filename, data, angle, regions in uploads:  # one decoded photo at a time; only its hashes are kept
        img = imaging.decode(data, max_bytes=max_bytes, what=f"photo {filename}")
        sha, ph = hashlib.sha256(data).hexdigest(), imagehash.phash(img.convert("RGB"))
        out.append(PreparedPhoto(filename, data, angle, regions, img.width, img.height, sha, str(ph),
                                 _twin(known, sha, ph, settings.catalog.duplicate_distance)))
    return out


def store_photos(db: sqlite_utils.Database, settings: Settings, vehicle_id: int,
                 prepared: list[PreparedPhoto]) -> dict[str, Any]:
    """Keep the originals untouched on disk, skip duplicates (also within the batch), queue a render of each."""
    folder = settings.data_dir / "images" / "originals" / str(vehicle_id)
    folder.mkdir(parents=True, exist_ok=True)
    profile = vehicle_profile(db, vehicle_id)
    stored: list[int] = []
    duplicates: list[dict[str, Any]] = []
    with write_txn(db):
        known = _known_photos(db, vehicle_id)
        position = db.execute("SELECT max(position) FROM catalog_photos WHERE vehicle_id = ?",
                              [vehicle_id]).fetchone()[0] or 0
        has_primary = db["catalog_photos"].count_where("vehicle_id = ? AND is_primary = 1", [vehicle_id]) > 0
        for p in prepared:
            ph = imagehash.hex_to_hash(p.phash)
            twin = _twin(known, p.sha256, ph, settings.catalog.duplicate_distance)
            if twin is not None:
                duplicates.append({"filename": p.filename, "duplicate_of": twin})
                continue
            ext = (Image.open(io.BytesIO(p.data)).format or "bin").lower().replace("jpeg", "jpg")
            path = folder / f"{uuid.uuid4().hex}.{ext}"
            path.write_bytes(p.data)
            position += 1
            pid = db["catalog_photos"].insert({
                "vehicle_id": vehicle_id, "angle": p.angle, "position": position,
                "is_primary": int(not has_primary), "path": str(path.relative_to(settings.data_dir)),
                "filename": p.filename, "sha256": p.sha256, "phash": p.phash, "width": p.width,
                "height": p.height, "plate_regions": json.dumps([list(r) for r in p.regions]),
                "created_at": now_iso()}).last_pk
            has_primary = True
            known.append((pid, p.sha256, ph))
            enqueue(db, settings, pid, profile)
            catalog_recognition.queue_photo(db, settings, pid)  # a reference for identify: exterior, in stock
            stored.append(pid)
    return {"photos": [_photo_out(db, get_photo(db, pid)) for pid in stored], "duplicates": duplicates}


def list_photos(db: sqlite_utils.Database, vehicle_id: int) -> list[dict[str, Any]]:
    """A vehicle's photos in order, each with its current render and job."""
    _vehicle_row(db, vehicle_id)
    return [_photo_out(db, r) for r in db["catalog_photos"].rows_where("vehicle_id = ?", [vehicle_id],
                                                                       order_by="position, id")]


def update_photo(db: sqlite_utils.Database, settings: Settings, photo_id: int,
                 fields: dict[str, Any]) -> dict[str, Any]:
    """Change a photo's angle, order, primary flag or plate regions (new regions queue a re-render)."""
    row = get_photo(db, photo_id)
    with write_txn(db):
        if fields.get("angle") is not None:
            if fields["angle"] not in ANGLES:
                raise BadRequest(f"angle must be one of {', '.join(ANGLES)}.", code="invalid_angle")
            db["catalog_photos"].update(photo_id, {"angle": fields["angle"]})
            catalog_recognition.photo_angle_changed(db, settings, photo_id, fields["angle"])
        if fields.get("position") is not None:
            db["catalog_photos"].update(photo_id, {"position": int(fields["position"])})
        if fields.get("primary"):
            db.execute("UPDATE catalog_photos SET is_primary = (id = ?) WHERE vehicle_id = ?",
                       [photo_id, row["vehicle_id"]])
        if fields.get("plate_regions") is not None:
            regions = plates.parse_regions(fields["plate_regions"])
            db["catalog_photos"].update(photo_id, {"plate_regions": json.dumps([list(r) for r in regions])})
            enqueue(db, settings, photo_id, vehicle_profile(db, row["vehicle_id"]))
    return _photo_out(db, get_photo(db, photo_id))


def delete_photo(db: sqlite_utils.Database, settings: Settings, photo_id: int) -> None:
    """Remove a photo, its renders, cached sizes and jobs."""
    row = get_photo(db, photo_id)
    renders = list(db["catalog_renders"].rows_where("photo_id = ?", [photo_id]))
    catalog_recognition.forget_photo(db, settings, photo_id)
    with write_txn(db):
        db.execute("DELETE FROM catalog_jobs WHERE photo_id = ?", [photo_id])
        db.execute("DELETE FROM catalog_renders WHERE photo_id = ?", [photo_id])
        db["catalog_photos"].delete(photo_id)
        if row["is_primary"]:  # the first photo left takes over as primary
            db.execute("UPDATE catalog_photos SET is_primary = 1 WHERE id = (SELECT id FROM catalog_photos WHERE "
                       "vehicle_id = ? ORDER BY position, id LIMIT 1)", [row["vehicle_id"]])
    _remove_render_files(settings, renders)
    (settings.data_dir / row["path"]).unlink(missing_ok=True)
    shutil.rmtree(cutout_dir(settings, photo_id), ignore_errors=True)


def _remove_render_files(settings: Settings, renders: list[dict[str, Any]]) -> None:
    for r in renders:
        (settings.data_dir / r["path"]).unlink(missing_ok=True)
        shutil.rmtree(settings.data_dir / "images" / "cache" / r["id"], ignore_errors=True)


def prune_old_renders(db: sqlite_utils.Database, settings: Settings, at: dt.datetime | None = None) -> int:
    """Delete renders that a newer render of the same photo replaced more than `keep_old_renders_days` ago, with
    their cached sizes; returns how many. Until then old links and embeds keep working."""
    cutoff = (at or dt.datetime.now(dt.UTC)) - dt.timedelta(days=settings.catalog.keep_old_renders_days)
    stamp = iso(cutoff.timestamp())
    with write_txn(db):
        old = [dict(zip(("id", "path"), r, strict=True)) for r in db.execute(
            "SELECT r.id, r.path FROM catalog_renders r WHERE EXISTS (SELECT 1 FROM catalog_renders n WHERE "
            "n.photo_id = r.photo_id AND n.created_at <= ? AND (n.created_at > r.created_at OR "
            "(n.created_at = r.created_at AND n.rowid > r.rowid)))", [stamp]).fetchall()]
        for r in old:
            db.execute("DELETE FROM catalog_renders WHERE id = ?", [r["id"]])
    _remove_render_files(settings, old)
    return len(old)


def cutout_dir(settings: Settings, photo_id: int) -> Path:
    """Where a photo's cached cutouts (background removed, before framing) live."""
    return settings.data_dir / "images" / "cutouts" / str(photo_id)


# --- renders and delivery ---------------------------------------------------------------------------------------
def current_render(db: sqlite_utils.Database, photo_id: int) -> dict[str, Any] | None:
    """The newest finished render of a photo (older ones stay served until a newer one lands)."""
    return next(db["catalog_renders"].rows_where("photo_id = ?", [photo_id], order_by="created_at desc, rowid desc",
                                                 limit=1), None)


def vehicle_images(db: sqlite_utils.Database, vehicle_id: int, angle: str | None = None) -> list[dict[str, Any]]:
    """The current render of every photo (or of one angle's), in photo order."""
    if angle is not None and angle not in ANGLES:
        raise BadRequest(f"angle must be one of {', '.join(ANGLES)}.", code="invalid_angle")
    out = []
    for photo in list_photos(db, vehicle_id):
        if photo["render"] and angle in (None, photo["angle"]):
            out.append({"photo_id": photo["id"], "angle": photo["angle"], "primary": photo["primary"],
                        **photo["render"]})
    return out


def get_render(db: sqlite_utils.Database, render_id: str) -> dict[str, Any]:
    """One render or 404."""
    rows = list(db["catalog_renders"].rows_where("id = ?", [render_id]))
    if not rows:
        raise NotFound(f"No image with id {render_id}.", code="image_not_found")
    return rows[0]


def parse_variant(params: dict[str, Any], render: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Validate width, height, format and fit of a served image."""
    variant: dict[str, Any] = {"width": None, "height": None, "format": render["format"], "fit": "contain"}
    for key in ("width", "height"):
        raw = params.get(key)
        if raw not in (None, ""):
            try:
                value = int(raw)
            except (TypeError, ValueError):
                value = 0
            if not 1 <= value <= settings.catalog.max_served_pixels:
                raise BadRequest(f"{key} must be a whole number from 1 to {settings.catalog.max_served_pixels}.",
                                 code=f"invalid_{key}")
            variant[key] = value
    fmt = str(params.get("format") or render["format"]).lower()
    fmt = "jpg" if fmt == "jpeg" else fmt
    if fmt not in SERVE_FORMATS:
        raise BadRequest(f"format must be one of {', '.join(SERVE_FORMATS)}.", code="invalid_format")
    variant["format"] = fmt
    fit = str(params.get("fit") or "contain").lower()
    if fit not in FITS:
        raise BadRequest(f"fit must be one of {', '.join(FITS)}.", code="invalid_fit")
    variant["fit"] = fit
    return variant


def etag(render: dict[str, Any], variant: dict[str, Any]) -> str:
    """A strong validator for one variant of one render."""
    key = f"{render['sha256']}:{variant['width']}:{variant['height']}:{variant['format']}:{variant['fit']}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _resize(img: Image.Image, variant: dict[str, Any], bg: str) -> Image.Image:
    w, h = variant["width"], variant["height"]
    if w is None and h is None:
        return img
    if w is None or h is None:  # one side given: keep the aspect ratio
        ratio = (w / img.width) if w else (h / img.height)
        return img.resize((max(1, round(img.width * ratio)), max(1, round(img.height * ratio))), Image.LANCZOS)
    if variant["fit"] == "cover":
        return ImageOps.fit(img, (w, h), Image.LANCZOS)
    if variant["fit"] == "fill":
        return img.resize((w, h), Image.LANCZOS)
    if variant["fit"] == "pad":
        return ImageOps.pad(img, (w, h), Image.LANCZOS, color=f"#{bg}")
    return ImageOps.contain(img, (w, h), Image.LANCZOS)


def serve_path(settings: Settings, render: dict[str, Any], variant: dict[str, Any]) -> tuple[Path, bool]:
    """The file for a variant, made and cached on disk on first request; also whether it was a cache hit."""
    original = settings.data_dir / render["path"]
    if variant["width"] is None and variant["height"] is None and variant["format"] == render["format"]:
        return original, True
    cache = settings.data_dir / "images" / "cache" / render["id"]
    path = cache / f"{etag(render, variant)}.{variant['format']}"
    if path.exists():
        return path, True
    cache.mkdir(parents=True, exist_ok=True)
    with Image.open(original) as src:
        img = _resize(src.convert("RGB"), variant, render["bg_color"] or "ffffff")
    tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
    save = {"quality": 85} if variant["format"] in ("jpg", "webp", "avif") else {"optimize": True}
    img.save(tmp, PIL_FORMATS[variant["format"]], **save)
    tmp.replace(path)  # atomic: concurrent requests for one variant never see half a file
    return path, False
