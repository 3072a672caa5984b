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


class IndexCorrupt(Exception):
    """The index file cannot be read; rebuild it from the database."""


class FeatureIndex:
    """Descriptors of many reference images: add/remove by image, search, vote, save/load atomically.

    Exact inner-product search (IndexIDMap2 over IndexFlatIP) below `ivf_threshold` descriptors; an IndexIVFFlat
    (trained on the descriptors present at build time) above it. Both take incremental adds and removes.
    """

    def __init__(self, index: faiss.Index | None = None) -> None:
        self.index = index if index is not None else faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))
        self.lock = threading.RLock()

    # --- building --------------------------------------------------------------------------------------------
    @classmethod
    def build(cls, items: Iterable[tuple[int, np.ndarray]], *, ivf_threshold: int = 2_000_000,
              nprobe: int = 16) -> FeatureIndex:
        """A fresh index from (image id, descriptors) pairs; IVF when the total passes ivf_threshold."""
        ids_l, vecs_l = [], []
        for image_id, desc in items:
            if len(desc):
                ids_l.append(descriptor_ids(image_id, len(desc)))
                vecs_l.append(np.ascontiguousarray(desc, dtype=np.float32))
        total = sum(len(v) for v in vecs_l)
        if total > ivf_threshold:
            vecs = np.concatenate(vecs_l)
            nlist = int(min(65536, max(64, np.sqrt(total))))
            quantizer = faiss.IndexFlatIP(DIM)
            ivf = faiss.IndexIVFFlat(quantizer, DIM, nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(0)
            sample = vecs[rng.choice(total, size=min(total, nlist * 40), replace=False)]
            ivf.train(sample)
            ivf.nprobe = nprobe
            out = cls(ivf)
        else:
            out = cls()
        for ids, vecs in zip(ids_l, vecs_l, strict=True):
            out.index.add_with_ids(vecs, ids)
        return out

    @property
    def kind(self) -> str:
        """flat or ivf."""
        return "ivf" if isinstance(self.index, faiss.IndexIVF) else "flat"

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
        votes: dict[int, float] = {}
        for row_s, row_i in zip(sims, ids, strict=True):
            seen: set[int] = set()
            for s, i in zip(row_s, row_i, strict=True):
                if i < 0 or s < min_similarity:
                    continue
                image_id = int(i) >> KP_BITS
                if image_id in seen or (allowed is not None and image_id not in allowed):
                    continue
                seen.add(image_id)
                votes[image_id] = votes.get(image_id, 0.0) + float(s)
        return votes

    # --- persistence -----------------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write atomically: a temporary file in the same folder, fsync, then rename over the old file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            with self.lock:
                faiss.write_index(self.index, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def load(cls, path: Path) -> FeatureIndex:
        """Read an index file; raise IndexCorrupt when it is unreadable or not a descriptor index."""
        try:
            index = faiss.read_index(str(path))
        except Exception as exc:  # faiss raises RuntimeError with a C++ message
            raise IndexCorrupt(f"{path}: {exc}") from exc
        if index.d != DIM:
            raise IndexCorrupt(f"{path}: dimension {index.d}, expected {DIM}")
        return cls(index)
