"""Recognition speed and memory: query latency at 10k / 100k reference images, FAISS search at 1M, index memory
per million images, indexing throughput, the car mask's time, and a plain peer measured in the same run.

    .venv/bin/python scripts/bench_recognition.py ../shared/data [--sizes 10000,100000] [--million 1000000]
        [--queries 20] [--peer-refs 100] [--index-keypoints 300] [--vote-keypoints 300] [--nprobe 16]
        [--pq-m 64] [--stop-score 0.95] [--no-segmenter] [--cache DIR]          # ~10 min on 2 cores

Reference images are the Carvana cars' odd angles and the 100 distractors (real features, whole image), plus
synthetic reference images to reach each size, added to the index in bulk (see Synthetic). Known queries are
even angles (every car), unknown queries Roboflow photos of cars not in the collection.

Latency of a scan without decoding: query RootSIFT + shortlist + loading the shortlisted references' stored
features + verification, p50 / p95, with the median of each part. The car mask of a `car` collection is timed on
its own (it is the segmenter's cost, not search's). Shortlists:
- votes (the default backend): the query's strongest keypoints search an IVF-PQ index of every reference's
  strongest keypoints (recognition.vote_keypoints / index_keypoints / nprobe / pq_m); mode single stops at the first
  decisive match (recognition.stop_score), mode multi/all verifies the whole shortlist;
- embedding (the optional backend): one vector per image in an IVF-SQ8 index; the query's embedding is timed
  with the installed model when --embedding-dir is given, else reported as not included.
The peer is the plain approach: SIFT match + RANSAC against every reference, at --peer-refs references.

`--car-margin` (a car collection with recognition.car_margin): mode single at each size again, plus what the margin
adds when a car fitted: the query's car embedding (Lite0 on the car's box, its ground-truth mask; the weights from
--models-dir), the nearest references in a float16 index of `size` car vectors (the real ones and random ones),
and the margins (models/recognition/margin.py).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import time
from pathlib import Path

import faiss
import numpy as np
from PIL import Image

from models.recognition import FeatureIndex, car_embedding, extract, margin, search, verify
from models.recognition.features import MAX_KEYPOINTS, MAX_SIDE, Features
from models.recognition.index import KP_BITS, GlobalIndex
from models.recognition.matcher import MIN_MATCHES
from models.recognition.search import STOP_SCORE


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.array(xs) * 1000, p))


def load_average() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def segmenter_ms(args: argparse.Namespace, rgb: np.ndarray) -> tuple[float, float] | None:
    """p50 / p95 of the car mask of one query (the model loaded and warmed first)."""
    from models.registry import get_segmenter

    try:
        seg = get_segmenter(args.segmenter, models_dir=args.models_dir) if args.segmenter else \
            get_segmenter(models_dir=args.models_dir)
        seg.mask(rgb, kind="car")
    except Exception as exc:  # noqa: BLE001 - a missing model only skips this figure
        print(f"car mask: not measured ({exc})")
        return None
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        seg.mask(rgb, kind="car")
        times.append(time.perf_counter() - t0)
    return pct(times, 50), pct(times, 95)


def load_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def real_features(paths: list[Path], cache: Path | None) -> list[Features]:
    out = []
    for p in paths:
        c = cache / f"{p.stem}.none.npz" if cache else None
        if c is not None and c.exists():
            z = np.load(c)
            out.append(Features(z["points"], z["descriptors"], int(z["size"][0]), int(z["size"][1])))
            continue
        f = extract(load_rgb(p))
        if c is not None:
            c.parent.mkdir(parents=True, exist_ok=True)
            np.savez(c, points=f.points, descriptors=f.descriptors, size=np.array([f.width, f.height]))
        out.append(f)
    return out


class Synthetic:
    """Synthetic reference images at scale, written into the index in bulk.

    Their descriptors come from a pool of `pool_size` made-up RootSIFT descriptors, each spliced from two real
    ones (the first half of one's 4x4 cells, the second half of another's) plus a little noise, so they look like
    descriptors and crowd the same IVF lists, without being near-copies of a real reference. The pool is encoded
    once; each IVF list's packed 4-bit codes are then repeated (whole 32-code blocks) under new ids until every
    synthetic image has its `cap` indexed descriptors, so 100k images take a minute, not the hours 30M IVF
    assignments would. The repeats are exact duplicates (a query descriptor near one meets ~size*cap/pool_size of
    them), which if anything crowds real matches out of the k nearest more than distinct images would.
    A synthetic image's full features (for RANSAC) are its indexed descriptors plus more from the pool, as many
    as a real reference has, at random points, stored and loaded in the server's compact form (uint8 blobs)."""

    def __init__(self, real_pool: np.ndarray, keypoint_counts: list[int], pool_size: int, seed: int = 5) -> None:
        rng = np.random.default_rng(seed)
        n = len(real_pool)
        a, b = real_pool[rng.integers(0, n, pool_size)], real_pool[rng.integers(0, n, pool_size)]
        d = np.concatenate([a[:, :64], b[:, 64:]], axis=1) + rng.normal(0, 0.02, (pool_size, 128)).astype(np.float32)
        d = np.abs(d)
        self.pool = (d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32)
        self.counts = keypoint_counts
        self.first = 0
        self.cap = 0
        self.entries = np.zeros(0, np.int64)  # pool entry of each (synthetic image, indexed keypoint)

    def fill(self, index: FeatureIndex, first: int, last: int, cap: int) -> int:
        """Add images first..last (cap descriptors each) to the empty lists of a trained IVF-PQ fast-scan index;
        returns how many descriptors went in."""
        ivf = faiss.extract_index_ivf(index.index)
        tmp = faiss.clone_index(index.index)
        tmp.reset()
        tmp.add_with_ids(self.pool, np.arange(len(self.pool), dtype=np.int64))
        src = faiss.downcast_InvertedLists(faiss.extract_index_ivf(tmp).invlists)
        dst = faiss.downcast_InvertedLists(ivf.invlists)
        per_block, block = src.n_per_block, src.block_size
        lists = []
        for lno in range(ivf.nlist):
            nb = src.list_size(lno) // per_block
            if nb:
                codes = faiss.rev_swig_ptr(src.get_codes(lno), nb * block).copy()
                pool_ids = faiss.rev_swig_ptr(src.get_ids(lno), nb * per_block).astype(np.int64)
                lists.append((lno, codes, pool_ids))
        kept = sum(len(p) for _, _, p in lists)
        need = (last - first + 1) * cap
        repeats = -(-need // kept)
        slots = np.random.default_rng(first).permutation(need)  # slot k holds descriptor slots[k] (image, kp)
        self.first, self.cap = first, cap
        self.entries = np.full(need, -1, np.int64)
        pos = 0
        for lno, codes, pool_ids in lists:
            n = min(repeats * len(pool_ids), need - pos)
            n -= n % per_block
            if n <= 0:
                continue
            which = slots[pos:pos + n]
            ids = (np.int64(first) + which // cap << KP_BITS) + which % cap
            packed = np.tile(codes, -(-n // len(pool_ids)))[: n // per_block * block]
            if dst.list_size(lno):
                raise ValueError("fill needs empty lists")
            dst.add_entries(lno, n, faiss.swig_ptr(np.ascontiguousarray(ids)), faiss.swig_ptr(packed))
            self.entries[which] = np.tile(pool_ids, -(-n // len(pool_ids)))[:n]
            pos += n
        ivf.ntotal += pos
        index.index.ntotal = ivf.ntotal
        del tmp
        return pos

    def features(self, image_id: int) -> Features:
        rng = np.random.default_rng(image_id)
        n = max(self.cap, self.counts[image_id % len(self.counts)])
        local = (image_id - self.first) * self.cap
        picks = self.entries[local:local + self.cap] if 0 <= local < len(self.entries) else np.zeros(0, np.int64)
        picks = np.where(picks >= 0, picks, rng.integers(0, len(self.pool), len(picks)))
        extra = rng.integers(0, len(self.pool), n - len(picks))
        desc = self.pool[np.concatenate([picks, extra])]
        pts = (rng.random((n, 2)) * [1918, 1280]).astype(np.float32)
        return Features(pts, desc, 1918, 1280)


def main() -> None:
    """Parse arguments, measure, print one line per figure."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--sizes", default="10000,100000", help="Reference image counts for the vote backend")
    ap.add_argument("--embedding-sizes", default="10000,100000", help="Counts for the embedding shortlist")
    ap.add_argument("--million", type=int, default=1_000_000, help="Vectors in the FAISS search-time test")
    ap.add_argument("--embedding-dim", type=int, default=512)
    ap.add_argument("--embedding-dir", type=Path, default=None, help="An installed embedding model to time")
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--unknown-queries", type=int, default=10, help="Photos of cars not in the collection")
    ap.add_argument("--peer-refs", type=int, default=100)
    ap.add_argument("--index-keypoints", type=int, default=300)
    ap.add_argument("--vote-keypoints", type=int, default=300)
    ap.add_argument("--shortlist", type=int, default=10)
    ap.add_argument("--nprobe", type=int, default=16)
    ap.add_argument("--pq-m", type=int, default=64, help="recognition.pq_m (PQ sub-quantizers, 4 bits each)")
    ap.add_argument("--stop-score", type=float, default=STOP_SCORE, help="search's stop_score (mode single)")
    ap.add_argument("--pool", type=int, default=1_000_000, help="Distinct synthetic descriptors")
    ap.add_argument("--models-dir", type=Path, default=Path("var/models"))
    ap.add_argument("--segmenter", default="", help="Time this segmenter's car mask (default: the configured one)")
    ap.add_argument("--no-segmenter", action="store_true", help="Skip timing the car mask")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--car-margin", action="store_true", help="Time the embedding margin too (see above)")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    faiss.omp_set_num_threads(min(2, os.cpu_count() or 1))
    print(f"cpu: {os.cpu_count()} cores, faiss {faiss.__version__}, {load_average()}")

    images = args.data / "carvana" / "images"
    cars = sorted({p.name.rsplit("_", 1)[0] for p in images.glob("*_01.jpg")})
    ref_paths = [images / f"{c}_{a:02d}.jpg" for c in cars for a in range(1, 17, 2)]
    ref_paths += sorted((args.data / "distractors").glob("*.jpg"))
    query_paths = [images / f"{c}_{a:02d}.jpg" for c in cars for a in range(2, 17, 2)]
    query_paths = query_paths[:: max(1, len(query_paths) // args.queries)][: args.queries]
    unknown_paths = sorted((args.data / "roboflow" / "images").glob("*.*"))[: args.unknown_queries]

    # --- indexing throughput: features per image (decode + RootSIFT), index adds per image -----------------------
    t = time.perf_counter()
    sample = [load_rgb(p) for p in ref_paths[:20]]
    t_dec = (time.perf_counter() - t) / len(sample)
    t = time.perf_counter()
    for rgb in sample:
        extract(rgb)
    t_ext = (time.perf_counter() - t) / len(sample)
    print(f"indexing: decode {t_dec * 1000:.0f} ms + RootSIFT {t_ext * 1000:.0f} ms per 1918x1280 photo "
          f"= {1 / (t_dec + t_ext):.1f} images/s per core (the car mask, when used, comes on top)")
    refs = real_features(ref_paths, args.cache)

    def featurise(paths: list[Path]) -> tuple[list[Features], list[float]]:
        feats, secs = [], []
        for p in paths:
            rgb = load_rgb(p)
            t0 = time.perf_counter()
            feats.append(extract(rgb))
            secs.append(time.perf_counter() - t0)
        return feats, secs

    qfeats, qsecs = featurise(query_paths)
    ufeats, usecs = featurise(unknown_paths)
    print(f"query features (RootSIFT at {MAX_SIDE} px, up to {MAX_KEYPOINTS} keypoints; decoding excluded): "
          f"p50 {pct(qsecs, 50):.0f} ms, {np.median([len(f) for f in qfeats]):.0f} keypoints "
          f"({qfeats[0].width}x{qfeats[0].height} photos); unknown-car photos {pct(usecs, 50):.0f} ms "
          f"({ufeats[0].width}x{ufeats[0].height})")
    if not args.no_segmenter:
        mask_ms = segmenter_ms(args, load_rgb(query_paths[0]))
        if mask_ms is not None:
            print(f"car mask for `car` collections (segmenter, not search; comes on top of every figure below): "
                  f"p50 {mask_ms[0]:.0f} ms, p95 {mask_ms[1]:.0f} ms per 1918x1280 query")
    truth = [ref_paths.index(images / f"{p.stem[:-3]}_{int(p.stem[-2:]) - 1:02d}.jpg") for p in query_paths]
    nreal = len(refs)
    cap = args.index_keypoints
    real_pool = np.concatenate([f.descriptors[:cap] for f in refs])
    synth = Synthetic(real_pool, [len(f) for f in refs], args.pool)
    # Real references are read like the server reads them: uint8 blobs from SQLite, re-normalised.
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE rec_images (id INTEGER PRIMARY KEY, width, height, points BLOB, descriptors BLOB)")
    db.executemany("INSERT INTO rec_images VALUES (?, ?, ?, ?, ?)",
                   [(i + 1, f.width, f.height, *f.to_blobs()) for i, f in enumerate(refs)])
    load_real = {i + 1: Features.from_blobs(*f.to_blobs(), f.width, f.height) for i, f in enumerate(refs)}

    def load(ids: list[int]) -> dict[int, Features]:
        out = {}
        real = [i for i in ids if i <= nreal]
        if real:
            marks = ",".join("?" * len(real))
            for i, w, h, pts, desc in db.execute(
                    f"SELECT id, width, height, points, descriptors FROM rec_images WHERE id IN ({marks})", real):
                out[int(i)] = Features.from_blobs(pts, desc, w, h)
        for i in ids:
            if i > nreal:
                f = synth.features(i)
                out[i] = Features.from_blobs(*f.to_blobs(), f.width, f.height)
        return out

    def run(index: FeatureIndex | None, feats: list[Features], secs: list[float], stop: float | None,
            candidates=None, known: bool = True, cars=None) -> dict[str, float]:  # type: ignore[no-untyped-def]
        """Per query: features + search (+ the margin: `cars` = (embedder, car index, query photos)); p50/p95 of
        the total, medians of the parts, rank-1 hits."""
        totals, parts, hits = [], {"shortlist": [], "load": [], "verify": [], "verified": [], "margin": []}, 0
        for n, q in enumerate(feats):
            tm: dict[str, float] = {}
            t0 = time.perf_counter()
            ms = search(index, q, load, shortlist=args.shortlist, vote_keypoints=args.vote_keypoints,
                        stop_score=stop, timings=tm,
                        candidates=None if candidates is None else candidates(n))
            if cars is not None and any(m.inliers >= MIN_MATCHES for m in ms):
                t1 = time.perf_counter()
                margins_of(cars, n, q, ms)
                tm["margin"] = time.perf_counter() - t1
            totals.append(time.perf_counter() - t0 + secs[n])
            for k in parts:
                parts[k].append(tm.get(k, 0.0))
            if known:
                hits += bool(ms) and ms[0].score >= 0.5 and ms[0].image_id - 1 in _near(truth[n])
            else:
                hits += not ms or ms[0].score < 0.5  # answered no match
        out = {"p50": pct(totals, 50), "p95": pct(totals, 95), "hit": hits / len(feats)}
        out.update({k: float(np.median(v)) * (1 if k == "verified" else 1000) for k, v in parts.items()})
        return out

    def line(r: dict[str, float]) -> str:
        margin_part = f", margin {r['margin']:.0f} ms" if r["margin"] else ""
        return (f"p50 {r['p50']:.0f} ms, p95 {r['p95']:.0f} ms (medians: shortlist {r['shortlist']:.0f} ms, "
                f"load {r['load']:.1f} ms, verify {r['verify']:.0f} ms for {r['verified']:.0f} images{margin_part})")

    owner = {i + 1: p.name.rsplit("_", 1)[0] for i, p in enumerate(ref_paths)}

    def margins_of(cars, n: int, q: Features, ms: list) -> dict[str, float]:  # type: ignore[no-untyped-def,type-arg]
        """The server's margin step (recognition.car_margins, less its SQLite reads): embed, search, margins."""
        embedder, cindex, photos, ref_vecs = cars
        vec = embedder.embed(*photos[n])
        near, complete = cindex.nearest(vec, margin.NEIGHBOURS)
        neighbours = [margin.Neighbour(owner.get(i, f"synthetic:{i}"), s) for i, s in near]
        fitted = {owner.get(m.image_id, f"synthetic:{m.image_id}") for m in ms if m.inliers >= MIN_MATCHES}
        own = lambda o: np.stack([v for i, v in ref_vecs.items() if owner[i] == o]  # noqa: E731
                                 or [np.zeros(car_embedding.DIM, np.float32)])
        return margin.margins(vec, fitted, own, neighbours, None, None, complete)

    cars_setup = None
    if args.car_margin:
        embedder = car_embedding.CarEmbedder(args.models_dir)
        embedder.load()
        masks = args.data / "carvana" / "masks"

        def photo(p: Path) -> tuple[np.ndarray, np.ndarray | None]:
            m = masks / f"{p.stem}_mask.gif"
            return load_rgb(p), (np.asarray(Image.open(m)) > 0 if m.exists() else None)

        ref_vecs = {i + 1: embedder.embed(*photo(p)) for i, p in enumerate(ref_paths)}
        cars_setup = (embedder, [photo(p) for p in query_paths], ref_vecs)

    # --- the plain peer against ours, same references, same run --------------------------------------------------
    peer_refs = list(range(1, min(args.peer_refs, nreal) + 1))
    peer_times = []
    for n, q in enumerate(qfeats[: min(10, len(qfeats))]):
        t0 = time.perf_counter()
        best = max((verify(q, load_real[i], i) for i in peer_refs), key=lambda m: m.inliers)
        peer_times.append(time.perf_counter() - t0 + qsecs[n])
        del best
    small = FeatureIndex.build((i, load_real[i].descriptors[:cap]) for i in peer_refs)
    ours_small = run(small, qfeats[: len(peer_times)], qsecs, args.stop_score)
    peer_p50 = pct(peer_times, 50)
    print(f"peer (plain SIFT + RANSAC against all {len(peer_refs)} references): p50 {peer_p50:.0f} ms; "
          f"ours at the same {len(peer_refs)}: p50 {ours_small['p50']:.0f} ms; "
          f"ratio {peer_p50 / ours_small['p50']:.1f}x faster (query features included in both); {load_average()}")

    # --- votes shortlist at each size ---------------------------------------------------------------------------
    for size in [int(s) for s in args.sizes.split(",") if s]:
        t = time.perf_counter()
        total = size * cap
        train = np.concatenate([real_pool, synth.pool[:200_000]])
        index = FeatureIndex(FeatureIndex.trained_ivf(train, nprobe=args.nprobe, pq_m=args.pq_m,
                                                      nlist=int(min(8192, max(64, np.sqrt(total))))))
        t_train = time.perf_counter() - t
        t = time.perf_counter()
        synth.fill(index, nreal + 1, size, cap)  # fill wants empty lists: synthetic first, then the real ones
        for i, f in load_real.items():
            index.add(i, f.descriptors[:cap])
        t_add = time.perf_counter() - t
        mem = index.memory_bytes
        print(f"votes index at {size} images: {index.ntotal} descriptors, {index.kind} "
              f"(nlist {faiss.extract_index_ivf(index.index).nlist}, nprobe {args.nprobe}, PQ{args.pq_m}x4, k 5); "
              f"{mem / 2**20:.0f} MiB = {mem / size * 1e6 / 2**30:.1f} GiB per million images; "
              f"train {t_train:.0f} s, bulk add {t_add:.0f} s (synthetic)")
        first = run(index, qfeats, qsecs, args.stop_score)
        full = run(index, qfeats, qsecs, None)
        unknown = run(index, ufeats, usecs, args.stop_score, known=False)
        print(f"votes at {size}, mode single (stop at score {args.stop_score}): {line(first)}; "
              f"right car at rank 1 {first['hit']:.2f}; {peer_p50 / first['p50']:.1f}x faster than the peer at "
              f"{len(peer_refs)}; {load_average()}")
        print(f"votes at {size}, every shortlisted image verified (mode multi/all): {line(full)}; "
              f"right car at rank 1 {full['hit']:.2f}")
        print(f"votes at {size}, unknown cars ({len(ufeats)} photos, mode single): {line(unknown)}; "
              f"answered no match {unknown['hit']:.2f}")
        if cars_setup is not None:
            embedder, photos, ref_vecs = cars_setup
            cindex = GlobalIndex(car_embedding.DIM, fp16=True)
            fill = np.random.default_rng(1).normal(size=(size - nreal, car_embedding.DIM)).astype(np.float32)
            fill /= np.linalg.norm(fill, axis=1, keepdims=True)
            cindex.index.add_with_ids(fill, np.arange(nreal + 1, size + 1, dtype=np.int64))
            cindex.index.add_with_ids(np.stack(list(ref_vecs.values())), np.array(list(ref_vecs), np.int64))
            with_margin = run(index, qfeats, qsecs, args.stop_score, cars=(embedder, cindex, photos, ref_vecs))
            print(f"votes at {size}, mode single with the car margin ({cindex.ntotal} car vectors, float16, "
                  f"{cindex.memory_bytes / 2**20:.0f} MiB): {line(with_margin)}; {load_average()}")
        del index

    # --- embedding shortlist: FAISS search time and memory, latency with RANSAC --------------------------------
    d = args.embedding_dim
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2048, d)).astype(np.float32)

    def vectors(n: int, seed: int) -> np.ndarray:
        r = np.random.default_rng(seed)
        v = centres[r.integers(0, len(centres), n)] + r.normal(0, 0.6, (n, d)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    t = time.perf_counter()
    gi = GlobalIndex(d, GlobalIndex.trained_ivf(vectors(60_000, 1), nprobe=args.nprobe, nlist=2048))
    for start in range(0, args.million, 100_000):
        n = min(100_000, args.million - start)
        gi.index.add_with_ids(vectors(n, 100 + start), np.arange(start + 1, start + n + 1, dtype=np.int64))
    t_build = time.perf_counter() - t
    qs = vectors(200, 7)
    gi.search(qs[0], args.shortlist)
    st = []
    for v in qs:
        t0 = time.perf_counter()
        gi.search(v, args.shortlist)
        st.append(time.perf_counter() - t0)
    faiss.omp_set_num_threads(1)
    st1 = []
    for v in qs:
        t0 = time.perf_counter()
        gi.search(v, args.shortlist)
        st1.append(time.perf_counter() - t0)
    faiss.omp_set_num_threads(min(2, os.cpu_count() or 1))
    flat = faiss.IndexFlatIP(d)
    flat.add(vectors(min(args.million, 200_000), 3))
    ft = []
    for v in qs[:20]:
        t0 = time.perf_counter()
        flat.search(v.reshape(1, -1), args.shortlist)
        ft.append(time.perf_counter() - t0)
    mem = gi.memory_bytes
    print(f"FAISS embedding search at {gi.ntotal} vectors ({d}-d, {gi.kind}, nprobe {args.nprobe}): "
          f"p50 {pct(st, 50):.2f} ms, p95 {pct(st, 95):.2f} ms (1 OpenMP thread: p50 {pct(st1, 50):.2f} ms, "
          f"p95 {pct(st1, 95):.2f} ms); index {mem / 2**20:.0f} MiB per "
          f"{gi.ntotal / 1e6:g} million; built in {t_build:.0f} s; exact flat search at {flat.ntotal} vectors "
          f"p50 {pct(ft, 50):.1f} ms ({np.median(ft) / np.median(st):.0f}x slower); {load_average()}")
    del gi, flat

    embed_ms = None
    if args.embedding_dir is not None:
        from models.recognition.embedding import load_embedding

        model = load_embedding(args.embedding_dir)
        rgb = load_rgb(query_paths[0])
        model.embed(rgb)
        t = time.perf_counter()
        for _ in range(5):
            model.embed(rgb)
        embed_ms = (time.perf_counter() - t) / 5 * 1000
        print(f"embedding model {model.name}: {embed_ms:.0f} ms per query")
    for size in [int(s) for s in args.embedding_sizes.split(",") if s]:
        gi = GlobalIndex(d, GlobalIndex.trained_ivf(vectors(60_000, 1), nprobe=args.nprobe,
                                                    nlist=int(min(4096, max(64, 4 * np.sqrt(size))))))
        real_vecs = vectors(nreal, 11)
        gi.index.add_with_ids(real_vecs, np.arange(1, nreal + 1, dtype=np.int64))
        gi.index.add_with_ids(vectors(size - nreal, 12), np.arange(nreal + 1, size + 1, dtype=np.int64))

        def candidates(n: int, gi: GlobalIndex = gi, real_vecs: np.ndarray = real_vecs) -> list[int]:
            # The query's vector lies near its true reference's (a working embedding), among size distractors.
            v = real_vecs[truth[n]] + np.random.default_rng(n).normal(0, 0.02, d).astype(np.float32)
            return gi.search(v / np.linalg.norm(v), args.shortlist)

        r = run(None, qfeats, qsecs, args.stop_score, candidates)
        extra = f" + embedding {embed_ms:.0f} ms" if embed_ms is not None else " (query embedding not included)"
        print(f"embedding shortlist at {size} images, mode single: {line(r)}{extra}; right car at rank 1 "
              f"{r['hit']:.2f} (synthetic vectors: speed, not accuracy); {load_average()}")


def _near(ref_index: int) -> set[int]:
    """The reference slots holding the same car within one angle step (odd angles a-1 and a+1)."""
    return {ref_index, ref_index + 1} if (ref_index + 1) % 8 else {ref_index, ref_index - 7}


if __name__ == "__main__":
    main()
