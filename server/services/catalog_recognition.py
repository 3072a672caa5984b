"""The catalog's own recognition collection ("which stock unit is this?").

Every exterior photo of an in-stock vehicle becomes a reference image of that vehicle in one car collection the
catalog keeps itself (COLLECTION_ID), with its view angle from the photo's angle. Storing a photo queues a
`catalog.reference` job on the job queue (server/jobs; the car mask costs about a second a photo, too slow for the
upload request); references cost nothing, a scan (identify) is metered as a scan. A vehicle's references go with
the vehicle, with a deleted photo, and when the vehicle is sold or archived; back in stock, its photos are queued
again.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlite_utils
from PIL import Image
from sqlite_utils.migrations import Migrations

from core.clock import now_iso
from models import imaging
from server.config import Settings, get_settings
from server.errors import NotFound
from server.jobs import queue
from server.jobs.store import Claim
from server.services import recognition as rec
from server.store import get_db, write_txn

log = logging.getLogger(__name__)
migrations = Migrations("forecourt-catalog-recognition")

COLLECTION_ID = "col_catalog"
COLLECTION_NAME = "Vehicle catalog"
# catalog photo angles as view angles in degrees (0 front, 90 the car's left side, 180 rear)
ANGLE_DEGREES = {"front": 0.0, "front_left": 45.0, "left": 90.0, "rear_left": 135.0, "rear": 180.0,
                 "rear_right": 225.0, "right": 270.0, "front_right": 315.0}
REFERENCE = "catalog.reference"
_EXTERIOR = ",".join(f"'{a}'" for a in ANGLE_DEGREES)


@migrations()
def m001_references(db: sqlite_utils.Database) -> None:
    """Which catalog photo is which reference image (state done, or failed with the error: no usable features)."""
    db["catalog_references"].create(
        {"photo_id": int, "vehicle_id": int, "image_id": int, "state": str, "error": str}, pk="photo_id",
        not_null={"vehicle_id", "state"})
    db["catalog_references"].create_index(["vehicle_id"])


def migrate(db: sqlite_utils.Database) -> None:
    """Apply this module's schema (after the catalog's and recognition's)."""
    migrations.apply(db)


def object_id(vehicle_id: int) -> str:
    """The recognition object of a vehicle."""
    return f"vehicle-{vehicle_id}"


def vehicle_of(obj: str) -> int | None:
    """The vehicle id of a recognition object of the catalog collection (None for anything else)."""
    head, _, tail = obj.partition("-")
    return int(tail) if head == "vehicle" and tail.isdigit() else None


def ensure_collection(db: sqlite_utils.Database) -> str:
    """The catalog's car collection, made on first use (again after someone deleted it)."""
    if db.execute("SELECT 1 FROM rec_collections WHERE id = ?", [COLLECTION_ID]).fetchone() is None:
        with write_txn(db):
            db.execute("INSERT OR IGNORE INTO rec_collections (id, name, object_type, created_at, index_gen) "
                       "VALUES (?, ?, 'car', ?, 0)", [COLLECTION_ID, COLLECTION_NAME, now_iso()])
            db.execute("DELETE FROM catalog_references")  # references of a deleted collection are gone with it
    return COLLECTION_ID


def _vehicle_fields(db: sqlite_utils.Database, vehicle_id: int) -> dict[str, Any]:
    v = db["catalog_vehicles"].get(vehicle_id)
    name = " ".join(str(x) for x in (v["year"], v["make"], v["model"], v["color"]) if x) or v["vin"]
    return {"name": name[:255], "metadata": {"vehicle_id": vehicle_id, "vin": v["vin"],
                                              "stock_number": v["stock_number"]}}


def index_photo(db: sqlite_utils.Database, settings: Settings, photo: dict[str, Any]) -> dict[str, Any]:
    """Make one claimed photo a reference image of its vehicle (free of charge); the add_image answer."""
    collection = ensure_collection(db)
    obj = object_id(photo["vehicle_id"])
    if db.execute("SELECT 1 FROM rec_objects WHERE collection_id = ? AND object_id = ?",
                  [collection, obj]).fetchone() is None:
        rec.put_object(db, collection, obj, _vehicle_fields(db, photo["vehicle_id"]))
    data = (settings.data_dir / photo["path"]).read_bytes()
    image = imaging.decode(data, max_bytes=len(data) + 1)
    result = rec.add_image(db, settings, collection, obj, image.convert("RGB"), force=True,
                           angle=ANGLE_DEGREES.get(photo["angle"]))
    with write_txn(db):
        still = db.execute("SELECT 1 FROM catalog_photos p JOIN catalog_vehicles v ON v.id = p.vehicle_id "
                           "WHERE p.id = ? AND v.status = 'in_stock'", [photo["id"]]).fetchone()
        if still is not None:
            db.execute("INSERT OR REPLACE INTO catalog_references (photo_id, vehicle_id, image_id, state, error) "
                       "VALUES (?, ?, ?, ?, ?)", [photo["id"], photo["vehicle_id"], result["id"],
                                                  "done" if result["id"] else "failed", result.get("detail")])
    if still is None and result["id"]:  # deleted or sold while it was being indexed
        _drop_images(db, settings, [(obj, int(result["id"]))])
    return result


@queue.handler(REFERENCE, max_attempts=3)
def run_reference_job(args: dict[str, Any], claim: Claim) -> dict[str, Any]:
    """The queue's handler: make one photo a reference image, unless it is gone, no longer exterior, its vehicle
    not in stock, or it is one already."""
    db, settings = get_db(), get_settings()
    row = db.execute("SELECT p.id FROM catalog_photos p JOIN catalog_vehicles v ON v.id = p.vehicle_id "
                     "LEFT JOIN catalog_references r ON r.photo_id = p.id WHERE p.id = ? AND v.status = 'in_stock' "
                     f"AND p.angle IN ({_EXTERIOR}) AND r.photo_id IS NULL", [args["photo"]]).fetchone()
    if row is None:
        return {"status": "skipped"}
    result = index_photo(db, settings, dict(db["catalog_photos"].get(args["photo"])))
    return {"status": result["status"], "image_id": result["id"]}


def queue_photo(db: sqlite_utils.Database, settings: Settings, photo_id: int) -> None:
    """Inside the write transaction that stored or changed a photo: queue making it a reference (the job skips a
    photo that is not an exterior one of an in-stock vehicle)."""
    queue.enqueue(db, settings, REFERENCE, {"photo": photo_id}, unique_key=f"{REFERENCE}:{photo_id}")


def queue_vehicle(db: sqlite_utils.Database, settings: Settings, vehicle_id: int) -> None:
    """Queue every exterior photo of a vehicle (back in stock) that is not a reference."""
    with write_txn(db):
        for (photo_id,) in db.execute(
                "SELECT p.id FROM catalog_photos p LEFT JOIN catalog_references r ON r.photo_id = p.id "
                f"WHERE p.vehicle_id = ? AND p.angle IN ({_EXTERIOR}) AND r.photo_id IS NULL",
                [vehicle_id]).fetchall():
            queue_photo(db, settings, photo_id)


def _drop_images(db: sqlite_utils.Database, settings: Settings, items: list[tuple[str, int]]) -> None:
    for obj, image_id in items:
        try:
            rec.delete_image(db, settings, COLLECTION_ID, obj, image_id)
        except NotFound:
            pass


def forget_photo(db: sqlite_utils.Database, settings: Settings, photo_id: int) -> None:
    """A photo is being deleted: its reference image goes with it."""
    rows = list(db.query("SELECT vehicle_id, image_id FROM catalog_references WHERE photo_id = ?", [photo_id]))
    with write_txn(db):
        db.execute("DELETE FROM catalog_references WHERE photo_id = ?", [photo_id])
    _drop_images(db, settings, [(object_id(r["vehicle_id"]), int(r["image_id"])) for r in rows if r["image_id"]])


def photo_angle_changed(db: sqlite_utils.Database, settings: Settings, photo_id: int, angle: str) -> None:
    """A photo's angle was changed: its reference takes the new view angle, goes when no longer exterior, or is
    made when it became exterior."""
    if angle not in ANGLE_DEGREES:
        forget_photo(db, settings, photo_id)
        return
    with write_txn(db):
        db.execute("UPDATE rec_images SET angle = ? WHERE id = (SELECT image_id FROM catalog_references "
                   "WHERE photo_id = ?)", [ANGLE_DEGREES[angle], photo_id])
        # an interior or detail photo turned exterior (skipped when it is one already)
        queue_photo(db, settings, photo_id)


def forget_vehicle(db: sqlite_utils.Database, settings: Settings, vehicle_id: int) -> None:
    """A vehicle is deleted, sold or archived: its recognition object and every reference image go."""
    with write_txn(db):
        db.execute("DELETE FROM catalog_references WHERE vehicle_id = ?", [vehicle_id])
    try:
        rec.delete_object(db, settings, COLLECTION_ID, object_id(vehicle_id))
    except NotFound:
        pass


def identify(db: sqlite_utils.Database, settings: Settings, image: Image.Image, *, mode: str = "single",
             limit: int = 10, min_score: float | None = None) -> dict[str, Any]:
    """Which inventory vehicles a photo shows: vehicle id, VIN, stock number, score, ambiguous, polygon, best
    first (recognition.recognize on the catalog's collection)."""
    ensure_collection(db)
    out = rec.recognize(db, settings, COLLECTION_ID, image, mode=mode, limit=limit, min_score=min_score)
    vehicles = []
    for r in out["results"]:
        vid = vehicle_of(r["object_id"])
        row = db["catalog_vehicles"].get(vid) if vid is not None and db["catalog_vehicles"].count_where(
            "id = ?", [vid]) else None
        if row is None:
            continue
        vehicles.append({"vehicle_id": vid, "vin": row["vin"], "stock_number": row["stock_number"],
                         "year": row["year"], "make": row["make"], "model": row["model"], "color": row["color"],
                         "status": row["status"], "score": r["score"], "ambiguous": r["ambiguous"],
                         "inliers": r["inliers"], "polygon": r["polygon"]})
    return {"vehicles": vehicles, "mode": out["mode"], "min_score": out["min_score"],
            "ambiguous": out["ambiguous"], "search_time_ms": out["search_time_ms"]}


def pending_count(db: sqlite_utils.Database) -> int:
    """Exterior photos of in-stock vehicles not made references yet."""
    return int(db.execute(
        "SELECT COUNT(*) FROM catalog_photos p JOIN catalog_vehicles v ON v.id = p.vehicle_id "
        "LEFT JOIN catalog_references r ON r.photo_id = p.id "
        f"WHERE v.status = 'in_stock' AND p.angle IN ({_EXTERIOR}) AND r.photo_id IS NULL").fetchone()[0])
