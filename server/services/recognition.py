"""Recognition service: collections, objects and reference images in SQLite, one FAISS index per collection in
<data_dir>/indexes (recognition_index; rebuilt in the background by recognition_rebuild), scans. Views call these
functions; the engine is models/recognition."""

from __future__ import annotations

import datetime as dt
import json
import math
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import sqlite_utils
from flask import Flask
from PIL import Image
from sqlite_utils.migrations import Migrations

from core.clock import now_iso
from core.encoding import decode_cursor, encode_cursor, printable_id
from models import imaging
from models.recognition import car_embedding, decide, margin
from models.recognition.car_embedding import CarEmbedder
from models.recognition.embedding import EmbeddingModel
from models.recognition.features import Features, blob_body, extract, main_subject, rating
from models.recognition.matcher import MIN_MATCHES
from models.recognition.search import search
from server.config import Settings, get_settings
from server.errors import ApiError, NotFound
from server.services import segmentation
from server.services.recognition_index import (
    car_embedder,
    car_index_model,
    embedded_count,
    embedder,
    forget_cached_indexes,
    index_gen,
    load_car_index,
    load_global,
    load_index,
    publish,
    stored_descriptors,
)
from server.services.recognition_rebuild import cancel_rebuilds, rebuild_state, request_rebuild
from server.store import get_db, write_txn

OBJECT_TYPES = ("car", "generic")
MAX_OBJECT_ID = 255
MAX_METADATA_BYTES = 1_000_000
MODES = ("single", "multi", "all")
DUPLICATE_SHARE = 0.5  # car collections: a copy's inliers are at least this share of the upload's keypoints
COVERAGE_GAP = 45.0  # degrees between neighbouring reference views past which the summary warns
# Long side recognition analyses at: features use recognition.max_side (800), colour 400 px, the segmenter's model
# 1024; the margin keeps the segmenter's edge refinement, and photos up to 2048 px are analysed as they come.
WORK_SIDE = 2048

migrations = Migrations("forecourt_recognition")


@migrations()
def m001_recognition(db: sqlite_utils.Database) -> None:
    """Collections, objects, reference images (with their features) and scans."""
    db["rec_collections"].create(
        {"id": str, "name": str, "object_type": str, "created_at": str, "index_gen": int},
        pk="id", not_null={"name", "object_type", "created_at"}, defaults={"index_gen": 0},
    )
    db["rec_objects"].create(
        {"collection_id": str, "object_id": str, "name": str, "metadata": str, "active": int,
         "created_at": str, "updated_at": str},
        pk=("collection_id", "object_id"), foreign_keys=[("collection_id", "rec_collections", "id")],
        defaults={"active": 1, "metadata": "{}"},
    )
    db["rec_images"].create(
        {"id": int, "collection_id": str, "object_id": str, "width": int, "height": int, "rating": int,
         "keypoints": int, "points": bytes, "descriptors": bytes, "created_at": str},
        pk="id",
    )
    db["rec_images"].create_index(["collection_id", "object_id"])
    db["rec_scans"].create({"id": int, "collection_id": str, "created_at": str, "matched": int}, pk="id")
    db["rec_scans"].create_index(["collection_id", "created_at"])


@migrations()
def m002_embeddings(db: sqlite_utils.Database) -> None:
    """A global embedding per reference image (when an embedding model is installed) and the model it came from."""
    db["rec_images"].add_column("embedding", bytes)
    db["rec_images"].add_column("embedding_model", str)
    db["rec_collections"].add_column("failed_uploads", int, not_null_default=0)


@migrations()
def m003_background_rebuilds(db: sqlite_utils.Database) -> None:
    """Index rebuilds queued by uploads (one row per collection while queued or running), and the last image id
    given out, so that ids are never reused (a rebuild's snapshot is "every image up to this id")."""
    db["rec_rebuilds"].create(
        {"collection_id": str, "state": str, "queued_at": str, "started_at": str, "claimed_by": str,
         "lease_until": float}, pk="collection_id", not_null={"state", "queued_at"})
    db["rec_counters"].create({"name": str, "value": int}, pk="name")


@migrations()
def m004_colour_angles_lookalikes(db: sqlite_utils.Database) -> None:
    """Each reference image's keypoint colours and illuminant (models/recognition/colour.py) and its view angle
    (degrees, given on upload), and the look-alikes found between objects (the same model in the same colour)."""
    db["rec_images"].add_column("colours", bytes)
    db["rec_images"].add_column("angle", float)
    db["rec_lookalikes"].create(
        {"collection_id": str, "object_id": str, "other_id": str, "score": float, "found_at": str},
        pk=("collection_id", "object_id", "other_id"))


@migrations()
def m005_car_embeddings(db: sqlite_utils.Database) -> None:
    """Each reference image's car embedding (models/recognition/car_embedding.py, float16) and the model it came
    from: the embedding margin's evidence in car collections. Images stored before have none."""
    db["rec_images"].add_column("car_embedding", bytes)
    db["rec_images"].add_column("car_embedding_model", str)


def migrate(db: sqlite_utils.Database) -> None:
    """Apply the recognition schema."""
    migrations.apply(db)


def init_app(app: Flask) -> None:
    """Hook the reference-image purge into licensing (the schema is applied by server.prepare_data_dir)."""
    try:
        from server.services.licensing import on_purge

        with app.app_context():
            on_purge("reference_images")(_purge_hook)
    except (ImportError, ValueError):  # pragma: no cover - licensing without that purge kind
        pass


def _purge_hook() -> int:
    """The licensing purge's entry point (it runs in an app context, with no arguments)."""
    return purge_reference_images(get_db(), get_settings())


# --- errors ------------------------------------------------------------------------------------------------------
class RecognitionError(ApiError):
    code, title, status = "invalid_parameters", "Invalid parameters", 400


# --- collections -------------------------------------------------------------------------------------------------
def _collection_out(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "object_type": row["object_type"], "created_at": row["created_at"]}


def create_collection(db: sqlite_utils.Database, name: str, object_type: str = "generic") -> dict[str, Any]:
    """A new, empty collection."""
    name = name.strip() if isinstance(name, str) else ""
    if not name or len(name) > 255:
        raise RecognitionError("name is required (1-255 characters).")
    if not isinstance(object_type, str) or object_type not in OBJECT_TYPES:
        raise RecognitionError(f"object_type must be one of {', '.join(OBJECT_TYPES)}.")
    row = {"id": "col_" + secrets.token_hex(8), "name": name, "object_type": object_type, "created_at": now_iso(),
           "index_gen": 0}
    with write_txn(db):
        db["rec_collections"].insert(row)
    return _collection_out(row)


def list_collections(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Every collection, oldest first."""
    return [_collection_out(r) for r in db.query("SELECT * FROM rec_collections ORDER BY created_at, id")]


def get_collection(db: sqlite_utils.Database, collection_id: str) -> dict[str, Any]:
    """One collection's row, or NotFound."""
    rows = list(db.query("SELECT * FROM rec_collections WHERE id = ?", [collection_id]))
    if not rows:
        raise NotFound(f"No collection {collection_id!r}.", code="collection_not_found")
    return rows[0]


def delete_collection(db: sqlite_utils.Database, settings: Settings, collection_id: str) -> int:
    """Delete a collection with its objects and images; returns how many images went."""
    get_collection(db, collection_id)
    with write_txn(db):
        n = db.execute("SELECT COUNT(*) FROM rec_images WHERE collection_id = ?", [collection_id]).fetchone()[0]
        db.execute("DELETE FROM rec_images WHERE collection_id = ?", [collection_id])
        db.execute("DELETE FROM rec_objects WHERE collection_id = ?", [collection_id])
        db.execute("DELETE FROM rec_scans WHERE collection_id = ?", [collection_id])
        cancel_rebuilds(db, collection_id)
        db.execute("DELETE FROM rec_lookalikes WHERE collection_id = ?", [collection_id])
        db.execute("DELETE FROM rec_collections WHERE id = ?", [collection_id])
    for path in (settings.data_dir / "indexes").glob(f"{collection_id}.*faiss"):
        path.unlink(missing_ok=True)
    return int(n)


# --- objects -----------------------------------------------------------------------------------------------------
def _object_out(row: dict[str, Any], images: int | None = None) -> dict[str, Any]:
    out = {"object_id": row["object_id"], "name": row["name"], "metadata": json.loads(row["metadata"] or "{}"),
           "active": bool(row["active"]), "created_at": row["created_at"], "updated_at": row["updated_at"]}
    if images is not None:
        out["images"] = images
    return out


def _check_object_fields(fields: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "name" in fields:
        if fields["name"] is not None and not isinstance(fields["name"], str):
            raise RecognitionError("name must be a string.")
        out["name"] = fields["name"]
    if "metadata" in fields:
        meta = fields["metadata"]
        if meta is None:
            meta = {}
        text = json.dumps(meta, separators=(",", ":"))
        if len(text.encode()) > MAX_METADATA_BYTES:
            raise RecognitionError("metadata is larger than 1 MB.", code="metadata_too_large")
        out["metadata"] = text
    if "active" in fields:
        if not isinstance(fields["active"], bool):
            raise RecognitionError("active must be true or false.")
        out["active"] = int(fields["active"])
    unknown = set(fields) - {"name", "metadata", "active"}
    if unknown:
        raise RecognitionError(f"Unknown fields: {', '.join(sorted(unknown))}.")
    return out


def _check_object_id(object_id: str) -> None:
    if not printable_id(object_id, MAX_OBJECT_ID):
        raise RecognitionError(f"object_id must be 1-{MAX_OBJECT_ID} printable characters (no control characters "
                               f"such as NUL or newline, no space at either end).", code="invalid_object_id")


def put_object(db: sqlite_utils.Database, collection_id: str, object_id: str,
               fields: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Create or replace an object's name, metadata and active flag; returns (object, created)."""
    get_collection(db, collection_id)
    _check_object_id(object_id)
    values = {"name": None, "metadata": "{}", "active": 1, **_check_object_fields(fields)}
    with write_txn(db):
        existing = list(db.query("SELECT created_at FROM rec_objects WHERE collection_id = ? AND object_id = ?",
                                 [collection_id, object_id]))
        now = now_iso()
        row = {"collection_id": collection_id, "object_id": object_id, **values,
               "created_at": existing[0]["created_at"] if existing else now, "updated_at": now}
        db["rec_objects"].upsert(row, pk=("collection_id", "object_id"))
    return get_object(db, collection_id, object_id), not existing


def _object_row(db: sqlite_utils.Database, collection_id: str, object_id: str) -> dict[str, Any]:
    rows = list(db.query("SELECT * FROM rec_objects WHERE collection_id = ? AND object_id = ?",
                         [collection_id, object_id]))
    if not rows:
        raise NotFound(f"No object {object_id!r} in collection {collection_id!r}.", code="object_not_found")
    return rows[0]


def get_object(db: sqlite_utils.Database, collection_id: str, object_id: str) -> dict[str, Any]:
    """One object with its image count."""
    row = _object_row(db, collection_id, object_id)
    n = db.execute("SELECT COUNT(*) FROM rec_images WHERE collection_id = ? AND object_id = ?",
                   [collection_id, object_id]).fetchone()[0]
    return _object_out(row, int(n))


def patch_object(db: sqlite_utils.Database, collection_id: str, object_id: str,
                 fields: dict[str, Any]) -> dict[str, Any]:
    """Change some of an object's fields."""
    _object_row(db, collection_id, object_id)
    values = _check_object_fields(fields)
    with write_txn(db):
        db["rec_objects"].update((collection_id, object_id), {**values, "updated_at": now_iso()})
    return get_object(db, collection_id, object_id)


def list_objects(db: sqlite_utils.Database, collection_id: str, cursor: str | None = None,
                 limit: int = 50) -> tuple[list[dict[str, Any]], str | None]:
    """A page of objects ordered by object_id and the cursor of the next page (None at the end)."""
    get_collection(db, collection_id)
    if not 1 <= limit <= 500:
        raise RecognitionError("limit must be between 1 and 500.")
    after = decode_cursor(cursor, str) if cursor else ""
    rows = list(db.query(
        "SELECT o.*, (SELECT COUNT(*) FROM rec_images i WHERE i.collection_id = o.collection_id "
        "AND i.object_id = o.object_id) AS n FROM rec_objects o WHERE o.collection_id = ? AND o.object_id > ? "
        "ORDER BY o.object_id LIMIT ?", [collection_id, after, limit + 1]))
    more = len(rows) > limit
    rows = rows[:limit]
    return [_object_out(r, r["n"]) for r in rows], (encode_cursor(rows[-1]["object_id"]) if more else None)


def delete_object(db: sqlite_utils.Database, settings: Settings, collection_id: str, object_id: str) -> int:
    """Delete an object and its images; returns how many images went."""
    _object_row(db, collection_id, object_id)
    ids = [r["id"] for r in db.query("SELECT id FROM rec_images WHERE collection_id = ? AND object_id = ?",
                                     [collection_id, object_id])]
    _remove_images(db, settings, collection_id, ids)
    with write_txn(db):
        db.execute("DELETE FROM rec_objects WHERE collection_id = ? AND object_id = ?", [collection_id, object_id])
        db.execute("DELETE FROM rec_lookalikes WHERE collection_id = ? AND (object_id = ? OR other_id = ?)",
                   [collection_id, object_id, object_id])
    return len(ids)


# --- features ----------------------------------------------------------------------------------------------------
@dataclass
class Analysis:
    """What recognition keeps of an image: local features, the global embedding when a model is installed, and in
    a car collection the car's box for its car embedding (car_vector, computed when first asked for)."""

    features: Features
    embedding: np.ndarray | None = None
    model: EmbeddingModel | None = None
    cars: CarEmbedder | None = None
    car_source: tuple[np.ndarray, np.ndarray | None] | None = None
    _car_vector: np.ndarray | None = None

    def car_vector(self) -> np.ndarray | None:
        """The car embedding (car_embedding.py) of the image's car, once; None without a car embedder or a car."""
        if self._car_vector is None and self.cars is not None and self.car_source is not None:
            self._car_vector = self.cars.embed(*self.car_source)
            self.car_source = None
        return self._car_vector


def working_copy(settings: Settings, image: Image.Image) -> Image.Image:
    """The image at the size recognition analyses: its long side at most WORK_SIDE (or recognition.max_side when
    larger), so a 25-megapixel upload costs its decoded pixels once and not a float copy per stage at full size."""
    side = max(WORK_SIDE, settings.recognition.max_side)
    w, h = image.size
    if max(w, h) <= side:
        return image
    scale = side / max(w, h)
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BOX)


def analyse(settings: Settings, image: Image.Image, object_type: str) -> Analysis:
    """RootSIFT features with their colours (and the embedding) of an image; for car collections from the car only
    (the segmenter's car mask, and of the cars in view the one the photo is about, features.main_subject), so a
    shared studio backdrop does not make every car match every car, nor a car parked behind count.

    A large image is analysed at its working_copy; the features' positions and size are the image's own pixels
    either way, so stored references, polygons and thresholds do not depend on the upload's resolution."""
    work = working_copy(settings, image)
    rgb = np.asarray(work.convert("RGB"))
    del work
    s = settings.recognition
    mask = None
    if object_type == "car":
        mask = main_subject(segmentation.segmenter(settings).mask(rgb, kind="car"))
    feats = extract(rgb, mask, max_side=s.max_side, max_keypoints=s.max_keypoints, sharpen=s.sharpen_blurred)
    if (feats.width, feats.height) != image.size:
        feats = _in_pixels_of(feats, image.size)
    out = Analysis(feats)
    if object_type == "car" and mask is not None:
        out.cars = car_embedder(settings)
        if out.cars is not None:
            out.car_source = car_embedding.car_crop(rgb, mask)
    model = embedder(settings)
    if model is not None:
        out.embedding, out.model = model.embed(rgb, mask), model
    return out


def _in_pixels_of(feats: Features, size: tuple[int, int]) -> Features:
    """Features of a working copy with their positions (keypoints and paint grid) in the pixels of the full image."""
    factor = np.array([size[0] / feats.width, size[1] / feats.height], np.float32)
    return replace(feats, points=(feats.points * factor).astype(np.float32), width=size[0], height=size[1],
                   paint_points=None if feats.paint_points is None else
                   (feats.paint_points * factor).astype(np.float32))


def features_of(settings: Settings, image: Image.Image, object_type: str) -> Features:
    """RootSIFT features of an image (see analyse)."""
    return analyse(settings, image, object_type).features


def decode_image(settings: Settings, data: bytes, what: str = "image") -> Image.Image:
    """Decode an uploaded image within the recognition limits."""
    s = settings.recognition
    return imaging.decode(data, max_bytes=s.max_file_mb * 1024 * 1024, max_megapixels=s.max_query_megapixels,
                          what=what)


def _load_features(db: sqlite_utils.Database, ids: list[int]) -> dict[int, Features]:
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    return {int(r["id"]): Features.from_blobs(r["points"], r["descriptors"], r["width"], r["height"], r["colours"])
            for r in db.query(f"SELECT id, points, descriptors, width, height, colours FROM rec_images "
                              f"WHERE id IN ({marks})", ids)}


# --- images ------------------------------------------------------------------------------------------------------
def _image_out(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "object_id": row["object_id"], "width": row["width"], "height": row["height"],
            "rating": row["rating"], "keypoints": row["keypoints"], "created_at": row["created_at"]}


def add_image(db: sqlite_utils.Database, settings: Settings, collection_id: str, object_id: str,
              image: Image.Image, *, force: bool = False, angle: float | None = None) -> dict[str, Any]:
    """Extract, rate and check one reference image for duplicates and look-alikes, then store it (with its view
    `angle` in degrees when known) and add it to the index.

    Every object it already matches (score >= the default min_score) is reported in `duplicates`; when one of them
    is another object matched decisively (score >= recognition.duplicate_score) the image gets status "duplicate"
    and is not added unless force is true. A weaker match is reported but added: a look-alike car photographed
    at the same angle in the same booth reaches the min_score by chance, and is not a copy. Other objects matched at
    min_score or more (a compatible colour: the same model in the same colour) are `lookalikes`, kept for the
    summary, so the dealer knows to add a distinguishing photo (plate, interior, a scratch)."""
    coll = get_collection(db, collection_id)
    _object_row(db, collection_id, object_id)
    angle = check_angle(angle)
    analysis = analyse(settings, image, coll["object_type"])
    feats = analysis.features
    stars = rating(feats)
    midpoint = _midpoint(settings, coll)
    car = coll["object_type"] == "car"
    matches = _matches(db, settings, coll, analysis, allowed=None)
    owners = _owners(db, [m.image_id for m in matches])
    min_score = settings.recognition.min_score
    scored = [(m, decide.evidence_score(m, midpoint, car)) for m in matches if m.image_id in owners]
    duplicates = [{"object_id": owners[m.image_id], "image_id": m.image_id, "score": round(score, 3)}
                  for m, score in scored if score >= min_score]
    refuse = settings.recognition.duplicate_score
    # In a car collection a copy of a photo shares most of its keypoints; a twin of the same model shot at the same
    # angle in the same booth reaches duplicate_score with a fraction of them, and is a look-alike, not a copy.
    copies = {m.image_id for m, _ in scored if not car or m.inliers >= DUPLICATE_SHARE * len(feats)}
    other = [d for d in duplicates if d["object_id"] != object_id and d["score"] >= refuse
             and d["image_id"] in copies]
    lookalikes = [{"object_id": c.object_id, "score": round(c.score, 3)}
                  for c in decide.per_object(matches, owners, midpoint, car)
                  if c.object_id != object_id and c.score >= min_score]
    out: dict[str, Any] = {"rating": stars, "keypoints": len(feats), "duplicates": duplicates,
                           "lookalikes": lookalikes}
    if other and not force:
        return {**out, "status": "duplicate", "id": None}
    if len(feats) == 0:
        with write_txn(db):
            db.execute("UPDATE rec_collections SET failed_uploads = failed_uploads + 1 WHERE id = ?", [collection_id])
        return {**out, "status": "failed", "id": None, "detail": "No usable features in this image."}
    points, desc = feats.to_blobs()
    car_vec = analysis.car_vector()
    cars = analysis.cars if car_vec is not None else None
    with write_txn(db):
        gen = int(db.execute("SELECT index_gen FROM rec_collections WHERE id = ?", [collection_id]).fetchone()[0])
        index = load_index(db, settings, collection_id, gen)
        model = analysis.model
        gindex = load_global(db, settings, collection_id, gen, model) if model is not None else None
        cindex = load_car_index(db, settings, collection_id, gen, cars) if cars is not None else None
        image_id = _next_image_id(db)
        db["rec_images"].insert({
            "id": image_id, "collection_id": collection_id, "object_id": object_id, "width": feats.width,
            "height": feats.height, "rating": stars, "keypoints": len(feats), "points": points, "descriptors": desc,
            "colours": feats.colour_blob(), "angle": angle,
            "embedding": analysis.embedding.tobytes() if analysis.embedding is not None else None,
            "embedding_model": model.model_id if model is not None else None,
            "car_embedding": car_embedding.to_blob(car_vec) if cars is not None else None,
            "car_embedding_model": cars.model_id if cars is not None else None,
            "created_at": now_iso()})
        # The index holds the stored (quantised) descriptors, exactly what a rebuild would give.
        index.add(image_id, stored_descriptors(settings, desc))
        if index.outgrown(settings.recognition.ivf_threshold):
            # Flat past ivf_threshold, or an IVF index 4x past the size its lists were made for: a rebuild keeps the
            # vote's cost near constant (once per 4x growth). It runs in the background; until it lands this index,
            # with the image just added, answers correctly, only slower.
            request_rebuild(db, settings, collection_id)
        if gindex is not None and analysis.embedding is not None:
            gindex.add(image_id, analysis.embedding)
        if cindex is not None and car_vec is not None:
            cindex.add(image_id, car_embedding.from_blob(car_embedding.to_blob(car_vec)))  # as stored
        publish(db, settings, collection_id, gen + 1, index, gindex, model, cindex, cars)
        _record_lookalikes(db, collection_id, object_id, lookalikes)
    return {**out, "status": "added", "id": image_id}


def check_angle(angle: Any) -> float | None:
    """A view angle in degrees (0 front, 90 one side, 180 rear, 270 the other), normalised to [0, 360); None stays
    None (not known)."""
    if angle is None or angle == "":
        return None
    try:
        value = float(angle)
    except (TypeError, ValueError) as exc:
        raise RecognitionError("angle must be a number of degrees (0 front, 90 side, 180 rear, 270 other side).",
                               code="invalid_angle") from exc
    if not math.isfinite(value) or not -360.0 <= value <= 720.0:
        raise RecognitionError("angle must be between 0 and 360 degrees.", code="invalid_angle")
    return value % 360.0


def _record_lookalikes(db: sqlite_utils.Database, collection_id: str, object_id: str,
                       lookalikes: list[dict[str, Any]]) -> None:
    """Inside a write transaction: remember each look-alike pair both ways round, with the best score seen."""
    now = now_iso()
    for item in lookalikes:
        for a, b in ((object_id, item["object_id"]), (item["object_id"], object_id)):
            db.execute("INSERT INTO rec_lookalikes (collection_id, object_id, other_id, score, found_at) "
                       "VALUES (?, ?, ?, ?, ?) ON CONFLICT (collection_id, object_id, other_id) DO UPDATE SET "
                       "score = MAX(score, excluded.score), found_at = excluded.found_at",
                       [collection_id, a, b, item["score"], now])


def _next_image_id(db: sqlite_utils.Database) -> int:
    """Inside a write transaction: a new image id, above every id given out before (SQLite would reuse the id of
    a deleted last row, which a rebuild's "images after the snapshot" would miss)."""
    last = db.execute("SELECT MAX(COALESCE((SELECT MAX(id) FROM rec_images), 0), "
                      "COALESCE((SELECT value FROM rec_counters WHERE name = 'image_id'), 0))").fetchone()[0]
    db.execute("INSERT OR REPLACE INTO rec_counters (name, value) VALUES ('image_id', ?)", [int(last) + 1])
    return int(last) + 1


def list_images(db: sqlite_utils.Database, collection_id: str, object_id: str) -> list[dict[str, Any]]:
    """An object's reference images."""
    _object_row(db, collection_id, object_id)
    return [_image_out(r) for r in db.query(
        "SELECT id, object_id, width, height, rating, keypoints, created_at FROM rec_images "
        "WHERE collection_id = ? AND object_id = ? ORDER BY id", [collection_id, object_id])]


def delete_image(db: sqlite_utils.Database, settings: Settings, collection_id: str, object_id: str,
                 image_id: int) -> None:
    """Delete one reference image."""
    if not 0 < image_id < 1 << 50:  # ids are SQLite rowids that also fit the index's (image << 12 | keypoint)
        raise NotFound(f"No image {image_id} on object {object_id!r}.", code="image_not_found")
    rows = list(db.query("SELECT id FROM rec_images WHERE id = ? AND collection_id = ? AND object_id = ?",
                         [image_id, collection_id, object_id]))
    if not rows:
        raise NotFound(f"No image {image_id} on object {object_id!r}.", code="image_not_found")
    _remove_images(db, settings, collection_id, [image_id])


def _remove_images(db: sqlite_utils.Database, settings: Settings, collection_id: str, ids: list[int]) -> None:
    if not ids:
        return
    with write_txn(db):
        gen = int(db.execute("SELECT index_gen FROM rec_collections WHERE id = ?", [collection_id]).fetchone()[0])
        index = load_index(db, settings, collection_id, gen)
        model = embedder(settings)
        gindex = load_global(db, settings, collection_id, gen, model) if model is not None else None
        cars = car_index_model(db, settings, collection_id)
        cindex = load_car_index(db, settings, collection_id, gen, cars) if cars is not None else None
        db.execute(f"DELETE FROM rec_images WHERE id IN ({','.join('?' * len(ids))})", ids)
        index.remove(ids)
        if gindex is not None:
            gindex.remove(ids)
        if cindex is not None:
            cindex.remove(ids)
        publish(db, settings, collection_id, gen + 1, index, gindex, model, cindex, cars)


def count_images(db: sqlite_utils.Database, collection_id: str, object_id: str | None = None) -> int:
    """How many reference images a collection (or one of its objects) holds."""
    sql, args = "SELECT COUNT(*) FROM rec_images WHERE collection_id = ?", [collection_id]
    if object_id is not None:
        sql, args = sql + " AND object_id = ?", [*args, object_id]
    return int(db.execute(sql, args).fetchone()[0])


def purge_reference_images(db: sqlite_utils.Database, settings: Settings) -> int:
    """The licensing purge: delete every reference image and index; returns how many images went."""
    with write_txn(db):
        n = int(db.execute("SELECT COUNT(*) FROM rec_images").fetchone()[0])
        db.execute("DELETE FROM rec_images")
        cancel_rebuilds(db)
        db.execute("UPDATE rec_collections SET index_gen = index_gen + 1")
    for path in (settings.data_dir / "indexes").glob("*.faiss"):
        path.unlink(missing_ok=True)
    forget_cached_indexes()
    return n


# --- recognize ---------------------------------------------------------------------------------------------------
def _owners(db: sqlite_utils.Database, ids: list[int]) -> dict[int, str]:
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    return {int(r["id"]): r["object_id"]
            for r in db.query(f"SELECT id, object_id FROM rec_images WHERE id IN ({marks})", ids)}


def _midpoint(settings: Settings, coll: dict[str, Any]) -> float:
    """The score calibration's inlier midpoint for the collection's kind (car_inlier_midpoint for cars)."""
    r = settings.recognition
    return r.car_inlier_midpoint if coll["object_type"] == "car" else r.inlier_midpoint


def _matches(db: sqlite_utils.Database, settings: Settings, coll: dict[str, Any], analysis: Analysis,
             allowed: set[int] | None, single: bool = False) -> list:  # type: ignore[type-arg]
    """Shortlist (the embedding's nearest neighbours when every image has this model's embedding, else
    descriptor votes), then RANSAC; `single` (one answer wanted) stops at the first decisive match
    (recognition.stop_score) after verifying recognition.twin_checks more, so a look-alike is seen. Scores use the
    collection's calibration (car_inlier_midpoint for cars)."""
    r = settings.recognition
    stop = r.stop_score if single and r.stop_score > 0 else None
    midpoint = _midpoint(settings, coll)
    car = coll["object_type"] == "car"
    spread = car and decide.needs_spread(decide.CAR_ACCEPTANCE)  # measured only when the car score weighs it
    gen = index_gen(db, coll["id"])
    load = lambda ids: _load_features(db, ids)  # noqa: E731
    model = analysis.model
    if model is not None and analysis.embedding is not None:
        total = int(db.execute("SELECT COUNT(*) FROM rec_images WHERE collection_id = ?", [coll["id"]]).fetchone()[0])
        if embedded_count(db, coll["id"], model) == total:
            gindex = load_global(db, settings, coll["id"], gen, model)
            candidates = gindex.search(analysis.embedding, r.shortlist, allowed)
            return search(None, analysis.features, load, shortlist=r.shortlist, allowed=allowed,
                          candidates=candidates, stop_score=stop, after_stop=r.twin_checks, use_colour=car,
                          midpoint=midpoint, spread=spread)
    index = load_index(db, settings, coll["id"], gen)
    return search(index, analysis.features, load, shortlist=r.shortlist, allowed=allowed,
                  vote_keypoints=r.vote_keypoints, stop_score=stop, after_stop=r.twin_checks, use_colour=car,
                  midpoint=midpoint, spread=spread)


def car_margins(db: sqlite_utils.Database, settings: Settings, collection_id: str, analysis: Analysis,
                objects: set[str], allowed: set[int] | None) -> dict[str, float]:
    """The embedding margin (models/recognition/margin.py) of each object that fitted: its references' car
    embeddings against the query's, the other cars from the collection's car-embedding index (its margin.NEIGHBOURS
    nearest references, inactive objects left out), their body colours and the objects' recorded look-alikes. The
    query is embedded only when some object fitted; objects without car embeddings get none."""
    if not objects or analysis.cars is None:
        return {}
    query = analysis.car_vector()
    if query is None:
        return {}
    cars = analysis.cars
    gen = index_gen(db, collection_id)
    near, complete = load_car_index(db, settings, collection_id, gen, cars).nearest(query, margin.NEIGHBOURS, allowed)
    if not near:
        return {}
    ids = [i for i, _ in near]
    rows = {int(r["id"]): r for r in db.query(
        f"SELECT id, object_id, colours FROM rec_images WHERE id IN ({','.join('?' * len(ids))})", ids)}
    neighbours = [margin.Neighbour(rows[i]["object_id"], sim, blob_body(rows[i]["colours"]))
                  for i, sim in near if i in rows]
    marks = ",".join("?" * len(objects))
    own: dict[str, list[np.ndarray]] = {}
    for r in db.query(f"SELECT object_id, car_embedding FROM rec_images WHERE collection_id = ? AND object_id IN "
                      f"({marks}) AND car_embedding_model = ?", [collection_id, *objects, cars.model_id]):
        own.setdefault(r["object_id"], []).append(car_embedding.from_blob(r["car_embedding"]))
    twins: dict[str, set[str]] = {}
    for r in db.query(f"SELECT object_id, other_id FROM rec_lookalikes WHERE collection_id = ? AND object_id IN "
                      f"({marks})", [collection_id, *objects]):
        twins.setdefault(r["object_id"], set()).add(r["other_id"])
    empty = np.zeros((0, cars.dim), np.float32)
    return margin.margins(query, objects, lambda o: np.stack(own[o]) if o in own else empty, neighbours, twins,
                          analysis.features.body, complete)


def recognize(db: sqlite_utils.Database, settings: Settings, collection_id: str, image: Image.Image, *,
              mode: str = "single", limit: int = 10, min_score: float | None = None) -> dict[str, Any]:
    """Which objects the image shows: results best first with score (inliers and colour together, decide.py),
    polygon and `ambiguous`, and search_time_ms. Look-alikes the photo cannot tell apart (the same model in the
    same colour, decide.twins) are all answered, each with ambiguous true, in mode single too."""
    start = time.perf_counter()
    coll = get_collection(db, collection_id)
    if mode not in MODES:
        raise RecognitionError(f"mode must be one of {', '.join(MODES)}.", code="invalid_mode")
    if not 1 <= limit <= 100:
        raise RecognitionError("limit must be between 1 and 100.")
    threshold = settings.recognition.min_score if min_score is None else float(min_score)
    if not 0.0 <= threshold <= 1.0:
        raise RecognitionError("min_score must be between 0 and 1.")
    results: list[dict[str, Any]] = []
    ambiguous = False
    if min(image.size) >= settings.recognition.min_query_side:
        analysis = analyse(settings, image, coll["object_type"])
        inactive = {r[0] for r in db.execute(
            "SELECT i.id FROM rec_images i JOIN rec_objects o ON o.collection_id = i.collection_id "
            "AND o.object_id = i.object_id WHERE i.collection_id = ? AND o.active = 0", [collection_id])}
        allowed = None
        if inactive:
            allowed = {r[0] for r in db.execute("SELECT id FROM rec_images WHERE collection_id = ?",
                                                [collection_id])} - inactive
        matches = _matches(db, settings, coll, analysis, allowed, single=mode == "single")
        owners = _owners(db, [m.image_id for m in matches])
        margins = {}
        if coll["object_type"] == "car" and settings.recognition.car_margin:
            fitted = {owners[m.image_id] for m in matches if m.image_id in owners and m.inliers >= MIN_MATCHES}
            margins = car_margins(db, settings, collection_id, analysis, fitted, allowed)
        candidates = decide.per_object(matches, owners, _midpoint(settings, coll), coll["object_type"] == "car",
                                       margins=margins)
        group = {c.object_id for c in decide.twins(candidates, threshold, settings.recognition.twin_ratio)}
        ambiguous = len(group) > 1
        if mode == "single":
            candidates = [c for c in candidates if c.object_id in group] or candidates[:0]
        elif mode == "multi":
            candidates = [c for c in candidates if c.score >= threshold]
        for c in candidates[: max(limit, len(group))]:
            row = _object_row(db, collection_id, c.object_id)
            results.append({"object_id": c.object_id, "name": row["name"],
                            "metadata": json.loads(row["metadata"] or "{}"), "score": round(c.score, 4),
                            "inliers": c.match.inliers, "image_id": c.match.image_id, "polygon": c.match.polygon,
                            "ambiguous": ambiguous and c.object_id in group})
    with write_txn(db):
        db["rec_scans"].insert({"collection_id": collection_id, "created_at": now_iso(),
                                "matched": int(any(r["score"] >= threshold for r in results))})
    return {"results": results, "mode": mode, "min_score": threshold, "ambiguous": ambiguous,
            "search_time_ms": round((time.perf_counter() - start) * 1000, 1)}


def summary(db: sqlite_utils.Database, settings: Settings, collection_id: str) -> dict[str, Any]:
    """Counts for a collection: objects, images, active, processing, failed, scans this and last month, index
    (with its queued or running rebuild, also counted in pending_index_work)."""
    coll = get_collection(db, collection_id)
    one = lambda sql, *a: int(db.execute(sql, [collection_id, *a]).fetchone()[0])  # noqa: E731
    today = dt.datetime.now(dt.UTC).date()
    this_month = today.replace(day=1)
    last_month = (this_month - dt.timedelta(days=1)).replace(day=1)
    index = load_index(db, settings, collection_id, int(coll["index_gen"]))
    images = one("SELECT COUNT(*) FROM rec_images WHERE collection_id = ?")
    model = embedder(settings)
    # With an embedding model installed, images stored before it (no embedding) keep the shortlist on votes.
    pending = images - embedded_count(db, collection_id, model) if model is not None else 0
    rebuild = rebuild_state(db, collection_id)  # the index outgrew its kind: queued or running
    return {
        "collection": _collection_out(coll),
        "objects": one("SELECT COUNT(*) FROM rec_objects WHERE collection_id = ?"),
        "active": one("SELECT COUNT(*) FROM rec_objects WHERE collection_id = ? AND active = 1"),
        "images": images,
        "processing": 0,  # an upload is in the index before its request answers
        "failed": int(coll.get("failed_uploads") or 0),  # uploads refused for having no usable features
        "pending_index_work": pending + int(rebuild is not None),
        "scans_this_month": one("SELECT COUNT(*) FROM rec_scans WHERE collection_id = ? AND created_at >= ?",
                                this_month.isoformat()),
        "scans_last_month": one("SELECT COUNT(*) FROM rec_scans WHERE collection_id = ? AND created_at >= ? "
                                "AND created_at < ?", last_month.isoformat(), this_month.isoformat()),
        "index": {"kind": index.kind, "descriptors": index.ntotal, "memory_bytes": index.memory_bytes,
                  "shortlist": "embedding" if model is not None and pending == 0 else "votes",
                  "embedding_model": model.model_id if model is not None else None, "rebuild": rebuild},
        "lookalikes": lookalikes(db, collection_id),
        "coverage": coverage(db, collection_id),
    }


def lookalikes(db: sqlite_utils.Database, collection_id: str) -> list[dict[str, Any]]:
    """Pairs of objects whose images matched each other at min_score or more (the same model in the same colour),
    each pair once, best score first."""
    return [{"object_id": r["object_id"], "other_id": r["other_id"], "score": r["score"]}
            for r in db.query("SELECT object_id, other_id, score FROM rec_lookalikes WHERE collection_id = ? "
                              "AND object_id < other_id ORDER BY score DESC, object_id", [collection_id])]


def angle_gaps(angles: list[float]) -> float:
    """The widest turn (degrees) between neighbouring view angles around the car; 360 with none known."""
    if not angles:
        return 360.0
    a = sorted(angles)
    return max([b - x for x, b in zip(a, a[1:], strict=False)] + [a[0] + 360.0 - a[-1]])


def coverage(db: sqlite_utils.Database, collection_id: str) -> list[dict[str, Any]]:
    """Per object, the view angles its references cover (given on upload; images without one counted as
    `unknown_angles`), the widest gap between them, and `gap_warning` past COVERAGE_GAP degrees: scans more than
    ~30 degrees from every reference are where recognition fails."""
    per: dict[str, dict[str, Any]] = {}
    for r in db.query("SELECT o.object_id, i.id AS image_id, i.angle FROM rec_objects o LEFT JOIN rec_images i ON "
                      "i.collection_id = o.collection_id AND i.object_id = o.object_id "
                      "WHERE o.collection_id = ? ORDER BY o.object_id, i.angle", [collection_id]):
        item = per.setdefault(r["object_id"], {"object_id": r["object_id"], "angles": [], "unknown_angles": 0})
        if r["angle"] is not None:
            item["angles"].append(round(float(r["angle"]), 1))
        elif r["image_id"] is not None:
            item["unknown_angles"] += 1
    for item in per.values():
        item["angles"] = sorted(set(item["angles"]))
        item["widest_gap"] = round(angle_gaps(item["angles"]), 1)
        item["gap_warning"] = item["widest_gap"] > COVERAGE_GAP
    return list(per.values())
