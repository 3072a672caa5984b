"""Recognition indexes: where a collection's FAISS files live, this process's cache of them (by generation), and
building them from the features kept in the database (descriptors, and the global embeddings when an embedding
model is installed)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils

from models.errors import ModelCorrupt, ModelMissing
from models.recognition import car_embedding
from models.recognition.car_embedding import CarEmbedder
from models.recognition.embedding import EmbeddingModel, load_embedding
from models.recognition.index import FeatureIndex, GlobalIndex, IndexCorrupt
from server.config import Settings
from server.store import write_txn

log = logging.getLogger("forecourt.recognition")


# --- the index cache ---------------------------------------------------------------------------------------------
@dataclass
class _Cached:
    """This process's copy of a collection's descriptor index, at index generation gen."""

    index: FeatureIndex
    gen: int


_cache: dict[tuple[str, str], _Cached] = {}
_cache_lock = threading.Lock()


def index_path(settings: Settings, collection_id: str) -> Path:
    """Where a collection's FAISS index is saved."""
    return settings.data_dir / "indexes" / f"{collection_id}.faiss"


def _descriptor_total(db: sqlite_utils.Database, settings: Settings, collection_id: str) -> int:
    cap = settings.recognition.index_keypoints or 1 << 30
    row = db.execute("SELECT COALESCE(SUM(MIN(keypoints, ?)), 0) FROM rec_images WHERE collection_id = ?",
                     [cap, collection_id]).fetchone()
    return int(row[0])


def _indexed(settings: Settings, descriptors: np.ndarray) -> np.ndarray:
    """The descriptors of a reference image that go into the index (its strongest index_keypoints)."""
    cap = settings.recognition.index_keypoints
    return descriptors[:cap] if cap else descriptors


def stored_descriptors(settings: Settings, blob: bytes) -> np.ndarray:
    """The index's descriptors of a stored image: its quantised descriptors re-normalised, strongest first, capped."""
    d = np.frombuffer(blob, dtype=np.uint8).reshape(-1, 128).astype(np.float32)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6)
    return _indexed(settings, d)


def rebuild_descriptors(db: sqlite_utils.Database, settings: Settings, collection_id: str,
                         progress: Any = None, upto: int | None = None,
                         seen: set[int] | None = None) -> FeatureIndex:
    """A fresh descriptor index from the features in the database (flat, or IVF-PQ past ivf_threshold): every
    image of the collection, or those with id <= upto; the ids read are added to `seen`."""
    sql = "SELECT id, descriptors FROM rec_images WHERE collection_id = ?"
    args: list[Any] = [collection_id]
    if upto is not None:
        sql, args = sql + " AND id <= ?", [*args, upto]

    def items():  # type: ignore[no-untyped-def]
        for row in db.execute(sql + " ORDER BY id", args):
            if progress is not None:
                progress(1)
            if seen is not None:
                seen.add(int(row[0]))
            yield int(row[0]), stored_descriptors(settings, row[1])

    r = settings.recognition
    return FeatureIndex.build(items(), ivf_threshold=r.ivf_threshold, nprobe=r.nprobe, pq_m=r.pq_m)


def rebuild_index(db: sqlite_utils.Database, settings: Settings, collection_id: str,
                  progress: Any = None) -> FeatureIndex:
    """Build a collection's descriptor index from the features in the database and save it (progress(n) per
    image); the global-embedding index too when an embedding model is installed, and a car collection's
    car-embedding index."""
    index = rebuild_descriptors(db, settings, collection_id, progress)
    index.save(index_path(settings, collection_id))
    model = embedder(settings)
    if model is not None:
        rebuild_global(db, settings, collection_id, model)
    cars = car_index_model(db, settings, collection_id)
    if cars is not None:
        rebuild_car_index(db, settings, collection_id, cars)
    return index


def load_index(db: sqlite_utils.Database, settings: Settings, collection_id: str, gen: int) -> FeatureIndex:
    """This process's copy of the index at generation gen: cached, else from the file, else rebuilt.

    The cache lock is never held while waiting for the database's write lock (a writer in this process calls
    this from inside its write transaction); a rebuild runs inside a write transaction so that no upload lands
    between reading the features and saving the file."""
    key = (str(settings.data_dir), collection_id)
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None and cached.gen == gen:
            return cached.index
    path = index_path(settings, collection_id)
    index = None
    if path.exists():
        try:
            index = FeatureIndex.load(path)
        except IndexCorrupt:
            log.warning("recognition index %s is unreadable; rebuilding it from the database", path)
            index = None
    if index is None or index.ntotal != _descriptor_total(db, settings, collection_id):
        with write_txn(db):
            index = rebuild_index(db, settings, collection_id)
            gen = index_gen(db, collection_id)
    with _cache_lock:
        _cache[key] = _Cached(index, gen)
    return index


def index_gen(db: sqlite_utils.Database, collection_id: str) -> int:
    """The collection's index generation (bumped by every change to its index)."""
    row = db.execute("SELECT index_gen FROM rec_collections WHERE id = ?", [collection_id]).fetchone()
    return int(row[0]) if row else 0


def forget_cached_indexes() -> None:
    """Drop every cached index (tests simulating a restart)."""
    with _cache_lock:
        _cache.clear()
        _vector_cache.clear()


# --- the embedding indexes: the global embedding's (shortlist, when a model is installed) and the car embedding's ---
# (car collections: the margin's other cars, models/recognition/margin.py). Both keep one vector per reference image
# in a column of rec_images, tagged with the model that gave it, and a GlobalIndex file per collection and model.
@dataclass(frozen=True)
class _Vectors:
    """Where one kind of embedding lives: its rec_images columns, its index file's tag, how a stored vector reads,
    whether the index keeps float16."""

    column: str
    model_column: str
    tag: str
    decode: Callable[[bytes], np.ndarray]
    fp16: bool = False


_GLOBAL = _Vectors("embedding", "embedding_model", "emb", lambda b: np.frombuffer(b, dtype=np.float32))
_CARS = _Vectors("car_embedding", "car_embedding_model", "car", car_embedding.from_blob, fp16=True)


@dataclass
class _CachedGlobal:
    """This process's copy of a collection's embedding index, at index generation gen."""

    index: GlobalIndex
    gen: int


_vector_cache: dict[tuple[str, str, str, str], _CachedGlobal] = {}


def _vectors_key(settings: Settings, collection_id: str, kind: _Vectors, model_id: str) -> tuple[str, str, str, str]:
    return str(settings.data_dir), collection_id, kind.tag, model_id


def _vectors_path(settings: Settings, collection_id: str, kind: _Vectors, model_id: str) -> Path:
    return settings.data_dir / "indexes" / f"{collection_id}.{kind.tag}-{model_id.rsplit(':', 1)[-1]}.faiss"


def _vectors_count(db: sqlite_utils.Database, collection_id: str, kind: _Vectors, model_id: str) -> int:
    return int(db.execute(f"SELECT COUNT(*) FROM rec_images WHERE collection_id = ? AND {kind.model_column} = ?",
                          [collection_id, model_id]).fetchone()[0])


def _rebuild_vectors(db: sqlite_utils.Database, settings: Settings, collection_id: str, kind: _Vectors,
                     model_id: str, dim: int) -> GlobalIndex:
    rows = db.execute(f"SELECT id, {kind.column} FROM rec_images WHERE collection_id = ? AND {kind.model_column} = ? "
                      "ORDER BY id", [collection_id, model_id])
    index = GlobalIndex.build(dim, ((int(i), kind.decode(b)) for i, b in rows),
                              ivf_threshold=settings.recognition.global_ivf_threshold,
                              nprobe=settings.recognition.nprobe, fp16=kind.fp16)
    index.save(_vectors_path(settings, collection_id, kind, model_id))
    return index


def _load_vectors(db: sqlite_utils.Database, settings: Settings, collection_id: str, gen: int, kind: _Vectors,
                  model_id: str, dim: int) -> GlobalIndex:
    """Like load_index: this process's copy when it is at generation gen, else the saved file, rebuilt from the
    database when it is unreadable or does not hold every stored vector of this model."""
    key = _vectors_key(settings, collection_id, kind, model_id)
    with _cache_lock:
        cached = _vector_cache.get(key)
        if cached is not None and cached.gen == gen:
            return cached.index
    path = _vectors_path(settings, collection_id, kind, model_id)
    index = None
    if path.exists():
        try:
            index = GlobalIndex.load(path, dim)
        except IndexCorrupt:
            log.warning("recognition index %s is unreadable; rebuilding it from the database", path)
    if index is None or index.ntotal != _vectors_count(db, collection_id, kind, model_id):
        with write_txn(db):
            index = _rebuild_vectors(db, settings, collection_id, kind, model_id, dim)
            gen = index_gen(db, collection_id)
    with _cache_lock:
        _vector_cache[key] = _CachedGlobal(index, gen)
    return index


def embedder(settings: Settings) -> EmbeddingModel | None:
    """The installed embedding model named by recognition.embedding, or None (shortlist by descriptor votes)."""
    name = settings.recognition.embedding
    if not name:
        return None
    return load_embedding(settings.models_dir / "recognition" / name)


def global_path(settings: Settings, collection_id: str, model: EmbeddingModel) -> Path:
    """Where a collection's global-embedding index for this model is saved."""
    return _vectors_path(settings, collection_id, _GLOBAL, model.model_id)


def rebuild_global(db: sqlite_utils.Database, settings: Settings, collection_id: str,
                   model: EmbeddingModel) -> GlobalIndex:
    """Build and save a collection's global index from the embeddings this model gave (others are skipped)."""
    return _rebuild_vectors(db, settings, collection_id, _GLOBAL, model.model_id, model.dim)


def embedded_count(db: sqlite_utils.Database, collection_id: str, model: EmbeddingModel) -> int:
    """How many of the collection's images have an embedding from this model."""
    return _vectors_count(db, collection_id, _GLOBAL, model.model_id)


def load_global(db: sqlite_utils.Database, settings: Settings, collection_id: str, gen: int,
                model: EmbeddingModel) -> GlobalIndex:
    """Like load_index, for the global-embedding index of this model."""
    return _load_vectors(db, settings, collection_id, gen, _GLOBAL, model.model_id, model.dim)


def publish(db: sqlite_utils.Database, settings: Settings, collection_id: str, gen: int, index: FeatureIndex,
            gindex: GlobalIndex | None = None, model: EmbeddingModel | None = None,
            cindex: GlobalIndex | None = None, cars: CarEmbedder | None = None) -> None:
    """Inside the write transaction that changed them: save a collection's indexes (descriptors; the global and
    car embeddings' when given), move it to generation gen (so every worker reloads them) and keep them as this
    process's cached copies."""
    index.save(index_path(settings, collection_id))
    if gindex is not None and model is not None:
        gindex.save(global_path(settings, collection_id, model))
    if cindex is not None and cars is not None:
        cindex.save(car_index_path(settings, collection_id, cars))
    db.execute("UPDATE rec_collections SET index_gen = ? WHERE id = ?", [gen, collection_id])
    with _cache_lock:
        _cache[(str(settings.data_dir), collection_id)] = _Cached(index, gen)
        if gindex is not None and model is not None:
            _vector_cache[_vectors_key(settings, collection_id, _GLOBAL, model.model_id)] = _CachedGlobal(gindex, gen)
        if cindex is not None and cars is not None:
            _vector_cache[_vectors_key(settings, collection_id, _CARS, cars.model_id)] = _CachedGlobal(cindex, gen)


# --- the car-embedding index (car collections: the margin's other cars, models/recognition/margin.py) ------------
_car_warned: set[str] = set()


def car_embedder(settings: Settings) -> CarEmbedder | None:
    """The car embedder (recognition.car_embedding on and the Lite0 weights fetched and intact), else None: a
    missing or damaged weights file is logged once and the car collections go on without the margin."""
    if not settings.recognition.car_embedding:
        return None
    model = car_embedding.get_car_embedder(settings.models_dir, settings.models.device)
    try:
        model.load()
    except (ModelMissing, ModelCorrupt) as exc:
        if str(settings.models_dir) not in _car_warned:
            _car_warned.add(str(settings.models_dir))
            log.warning("car embeddings are off: %s (`forecourt models fetch efficientnet-lite0`)", exc)
        return None
    return model


def car_index_model(db: sqlite_utils.Database, settings: Settings, collection_id: str) -> CarEmbedder | None:
    """The car embedder whose vectors a car collection's index holds, its weights not loaded (removing references
    and rebuilding the index need its id and size only); None for other collections or with
    recognition.car_embedding off."""
    if not settings.recognition.car_embedding:
        return None
    row = db.execute("SELECT object_type FROM rec_collections WHERE id = ?", [collection_id]).fetchone()
    if row is None or row[0] != "car":
        return None
    return car_embedding.get_car_embedder(settings.models_dir, settings.models.device)


def car_index_path(settings: Settings, collection_id: str, cars: CarEmbedder) -> Path:
    """Where a collection's car-embedding index is saved."""
    return _vectors_path(settings, collection_id, _CARS, cars.model_id)


def rebuild_car_index(db: sqlite_utils.Database, settings: Settings, collection_id: str,
                      cars: CarEmbedder) -> GlobalIndex:
    """Build and save a collection's car-embedding index (float16) from the embeddings this model gave."""
    return _rebuild_vectors(db, settings, collection_id, _CARS, cars.model_id, cars.dim)


def load_car_index(db: sqlite_utils.Database, settings: Settings, collection_id: str, gen: int,
                   cars: CarEmbedder) -> GlobalIndex:
    """Like load_index, for the car-embedding index."""
    return _load_vectors(db, settings, collection_id, gen, _CARS, cars.model_id, cars.dim)
