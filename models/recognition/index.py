"""A FAISS index of RootSIFT descriptors whose ids encode (image id, keypoint number); saved atomically."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

import faiss
import numpy as np

from models.recognition.features import MAX_KEYPOINTS

KP_BITS = 12  # 4096 keypoints per image at most: id = image_id << KP_BITS | keypoint
assert MAX_KEYPOINTS < (1 << KP_BITS)
DIM = 128


def descriptor_ids(image_id: int, count: int) -> np.ndarray:
    """The FAISS ids of an image's descriptors."""
    return (np.int64(image_id) << KP_BITS) + np.arange(count, dtype=np.int64)


# Past this many lists the coarse step (which lists to probe) would compare each query descriptor with every list
# centre: 300 x 5477 at 100k images took a third of the vote. An HNSW graph over the centres finds the same lists
# (identical shortlists on the bench's queries) in a quarter of the time.
HNSW_NLIST = 1024
HNSW_EF_SEARCH = 32


def _train_ivf(sample: np.ndarray, factory: str, nlist: int, nprobe: int) -> faiss.Index:
    """An empty inner-product IVF index (faiss factory string) trained on a random subset of sample."""
    total, dim = sample.shape
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.niter = 10
    quantizer = faiss.downcast_index(ivf.quantizer)
    hnsw = isinstance(quantizer, faiss.IndexHNSW)
    flat = faiss.IndexFlatIP(dim) if hnsw else None  # kept referenced: faiss does not own a clustering index
    if hnsw:
        ivf.clustering_index = flat  # k-means with exact assignments (BLAS), then the centres go into the graph
    rng = np.random.default_rng(0)
    n = min(total, max(nlist * 30, 4096))
    index.train(np.ascontiguousarray(sample[rng.choice(total, size=n, replace=False)], dtype=np.float32))
    ivf.clustering_index = None
    ivf.nprobe = nprobe
    if hnsw:
        quantizer.hnsw.efSearch = max(HNSW_EF_SEARCH, 2 * nprobe)
    return index


class IndexCorrupt(Exception):
    """The index file cannot be read; rebuild it from the database."""


class FeatureIndex:
    """Descriptors of many reference images: add/remove by image, search, vote, save/load atomically.

    Exact inner-product search (IndexIDMap2 over IndexFlatIP) below `ivf_threshold` descriptors; an IVF-PQ index
    (trained on the descriptors present at build time) above it. Both take incremental adds and removes.
    """

    def __init__(self, index: faiss.Index | None = None) -> None:
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
        self.lock = threading.RLock()

    # --- building --------------------------------------------------------------------------------------------
    @classmethod
    def build(cls, items: Iterable[tuple[int, np.ndarray]], *, ivf_threshold: int = 20_000,
              nprobe: int = 16, pq_m: int = 64) -> FeatureIndex:
        """A fresh index from (image id, descriptors) pairs: exact (flat) up to ivf_threshold descriptors, past it
        an IVF index with 4-bit fast-scan product-quantised codes (`pq_m` / 2 bytes per descriptor instead of 512,
        plus its 8-byte id), trained on a sample
        of the descriptors present now; later adds go into the trained lists."""
        ids_l, vecs_l = [], []
        for image_id, desc in items:
            if len(desc):
                ids_l.append(descriptor_ids(image_id, len(desc)))
                vecs_l.append(np.ascontiguousarray(desc, dtype=np.float32))
        total = sum(len(v) for v in vecs_l)
        if total > ivf_threshold:
            out = cls(cls.trained_ivf(np.concatenate(vecs_l), nprobe=nprobe, pq_m=pq_m))
        else:
            out = cls()
        for ids, vecs in zip(ids_l, vecs_l, strict=True):
            out.index.add_with_ids(vecs, ids)
        return out

    @staticmethod
    def trained_ivf(sample: np.ndarray, *, nprobe: int = 16, pq_m: int = 64,
                    nlist: int | None = None) -> faiss.Index:
        """An empty IVF-PQ (4-bit fast scan) inner-product index trained on (a random subset of) sample."""
        total = len(sample)
        nlist = nlist or int(min(8192, max(64, np.sqrt(total))))
        coarse = f"IVF{nlist}_HNSW32" if nlist >= HNSW_NLIST else f"IVF{nlist}"
        return _train_ivf(sample, f"{coarse},PQ{pq_m}x4fs", nlist, nprobe)

    @property
    def kind(self) -> str:
        """flat or ivfpq."""
        return "ivfpq" if isinstance(self.index, faiss.IndexIVF) else "flat"

    def outgrown(self, ivf_threshold: int) -> bool:
        """True when a rebuild would make a faster index: a flat one past ivf_threshold descriptors (its search
        cost grows with every descriptor), or an IVF one that holds over 4x the descriptors its lists were sized
        for (nlist ~ sqrt(descriptors at training); each probed list gets longer as the collection grows)."""
        ivf = faiss.try_extract_index_ivf(self.index)
        if ivf is None:
            return self.ntotal > ivf_threshold
        return ivf.nlist < 8192 and self.ntotal > 4 * ivf.nlist * ivf.nlist

    @property
    def memory_bytes(self) -> int:
        """Bytes the index takes in memory (its serialised size, which tracks it closely)."""
        with self.lock:
            return int(faiss.serialize_index(self.index).nbytes)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    def add(self, image_id: int, descriptors: np.ndarray) -> None:
        """Add one image's descriptors."""
        if not len(descriptors):
            return
        with self.lock:
            self.index.add_with_ids(np.ascontiguousarray(descriptors, dtype=np.float32),
                                    descriptor_ids(image_id, len(descriptors)))

    def remove(self, image_ids: Iterable[int]) -> int:
        """Remove every descriptor of these images; returns how many went."""
        removed = 0
        with self.lock:
            for image_id in image_ids:
                sel = faiss.IDSelectorRange(int(image_id) << KP_BITS, (int(image_id) + 1) << KP_BITS)
                removed += int(self.index.remove_ids(sel))
        return removed

    # --- searching -------------------------------------------------------------------------------------------
    def vote(self, descriptors: np.ndarray, *, k: int = 5, min_similarity: float = 0.8,
             allowed: set[int] | None = None) -> dict[int, float]:
        """Votes per image id: each query descriptor votes once for each image among its k nearest neighbours
        whose similarity passes min_similarity (weighted by similarity); `allowed` limits the images counted."""
        if not len(descriptors) or not self.ntotal:
            return {}
        with self.lock:
            sims, ids = self.index.search(np.ascontiguousarray(descriptors, dtype=np.float32), min(k, self.ntotal))
        keep = (ids >= 0) & (sims >= min_similarity)
        rows = np.nonzero(keep)[0]
        images, s = ids[keep] >> KP_BITS, sims[keep]
        if allowed is not None and len(images):
            ok = np.isin(images, np.fromiter(allowed, dtype=np.int64, count=len(allowed)))
            rows, images, s = rows[ok], images[ok], s[ok]
        # One vote per (query descriptor, image): the first (most similar) of its neighbours in that image.
        _, first = np.unique(np.stack([rows, images]), axis=1, return_index=True)
        totals: dict[int, float] = {}
        for image_id, sim in zip(images[first].tolist(), s[first].tolist(), strict=True):
            totals[image_id] = totals.get(image_id, 0.0) + sim
        return totals

    # --- persistence -----------------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write atomically: a temporary file in the same folder, fsync, then rename over the old file."""
        with self.lock:
            _atomic_write(self.index, path)

    @classmethod
    def load(cls, path: Path) -> FeatureIndex:
        """Read an index file; raise IndexCorrupt when it is unreadable or not a descriptor index."""
        index = _read(path)
        if index.d != DIM:
            raise IndexCorrupt(f"{path}: dimension {index.d}, expected {DIM}")
        return cls(index)


class GlobalIndex:
    """One global embedding per reference image (id = image id): exact inner product up to ivf_threshold
    images, an IVF index with 8-bit scalar-quantised vectors past it (`build`); adds, removes, atomic saves.
    `fp16`: vectors kept as float16 (half the memory; the car embedding's margin index), flat or IVF alike."""

    def __init__(self, dim: int, index: faiss.Index | None = None, fp16: bool = False) -> None:
        self.dim = dim
        if index is None:
            flat = (faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
                    if fp16 else faiss.IndexFlatIP(dim))
            index = faiss.IndexIDMap2(flat)
        self.index = index
        self.lock = threading.RLock()

    @classmethod
    def build(cls, dim: int, items: Iterable[tuple[int, np.ndarray]], *, ivf_threshold: int = 200_000,
              nprobe: int = 16, fp16: bool = False) -> GlobalIndex:
        """A fresh index from (image id, vector) pairs."""
        pairs = [(i, v) for i, v in items]
        if len(pairs) > ivf_threshold:
            vecs = np.stack([v for _, v in pairs]).astype(np.float32)
            out = cls(dim, cls.trained_ivf(vecs, nprobe=nprobe, codec="SQfp16" if fp16 else "SQ8"))
        else:
            out = cls(dim, fp16=fp16)
        if pairs:
            out.index.add_with_ids(np.stack([v for _, v in pairs]).astype(np.float32),
                                   np.array([i for i, _ in pairs], dtype=np.int64))
        return out

    @staticmethod
    def trained_ivf(sample: np.ndarray, *, nprobe: int = 16, nlist: int | None = None,
                    codec: str = "SQ8") -> faiss.Index:
        """An empty IVF (SQ8, or `codec`) inner-product index trained on (a random subset of) sample."""
        total = len(sample)
        nlist = nlist or int(min(16384, max(64, 4 * np.sqrt(total))))
        return _train_ivf(sample, f"IVF{nlist},{codec}", nlist, nprobe)

    @property
    def kind(self) -> str:
        return "ivfsq8" if isinstance(self.index, faiss.IndexIVF) else "flat"

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def memory_bytes(self) -> int:
        with self.lock:
            return int(faiss.serialize_index(self.index).nbytes)

    def add(self, image_id: int, vector: np.ndarray) -> None:
        with self.lock:
            self.index.add_with_ids(np.ascontiguousarray(vector.reshape(1, -1), dtype=np.float32),
                                    np.array([image_id], dtype=np.int64))

    def remove(self, image_ids: Iterable[int]) -> int:
        ids = np.array(list(image_ids), dtype=np.int64)
        if not len(ids):
            return 0
        with self.lock:
            return int(self.index.remove_ids(faiss.IDSelectorBatch(ids)))

    def search(self, vector: np.ndarray, k: int, allowed: set[int] | None = None) -> list[int]:
        """Up to k image ids, nearest first (asks for more when `allowed` filters some out)."""
        return [i for i, _ in self.nearest(vector, k, allowed)[0]]

    def nearest(self, vector: np.ndarray, k: int,
                allowed: set[int] | None = None) -> tuple[list[tuple[int, float]], bool]:
        """Up to k (image id, inner product), nearest first (asks for more when `allowed` filters some out), and
        whether they are every allowed image of the index (the search saw them all)."""
        if not self.ntotal:
            return [], True
        want = min(self.ntotal, k if allowed is None else k * 4 + 16)
        with self.lock:
            sims, ids = self.index.search(np.ascontiguousarray(vector.reshape(1, -1), dtype=np.float32), want)
        out = [(int(i), float(s)) for i, s in zip(ids[0], sims[0], strict=True)
               if i >= 0 and (allowed is None or int(i) in allowed)]
        seen_all = want >= self.ntotal or (allowed is not None and len(out) >= len(allowed))
        return out[:k], seen_all and len(out) <= k

    def save(self, path: Path) -> None:
        with self.lock:
            _atomic_write(self.index, path)

    @classmethod
    def load(cls, path: Path, dim: int) -> GlobalIndex:
        index = _read(path)
        if index.d != dim:
            raise IndexCorrupt(f"{path}: dimension {index.d}, expected {dim}")
        return cls(dim, index)


def _atomic_write(index: faiss.Index, path: Path) -> None:
    """Write atomically: a temporary file in the same folder, fsync, then rename over the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        faiss.write_index(index, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read(path: Path) -> faiss.Index:
    try:
        return faiss.read_index(str(path))
    except Exception as exc:  # faiss raises RuntimeError with a C++ message
        raise IndexCorrupt(f"{path}: {exc}") from exc
