"""Recognition speed and memory: query latency at 10k / 100k reference images, FAISS search at 1M, index memory
per million images, indexing throughput, and a plain peer measured in the same run.

    .venv/bin/python scripts/bench_recognition.py ../shared/data [--sizes 10000,100000] [--million 1000000]
        [--queries 40] [--peer-refs 200] [--index-keypoints 300] [--vote-keypoints 300] [--cache DIR]

Reference images are the Carvana cars' odd angles and the 100 distractors (real features), plus synthetic
reference images to reach each size: their descriptors are real descriptors drawn from the pool with a little
noise (so they crowd the same IVF lists real ones do), their keypoints random. Queries are the even angles.

Latency is a scan without decoding: query features, shortlist, RANSAC on the shortlist. Two shortlists:
- votes (the default backend): the query's strongest keypoints search an IVF-PQ index of every reference's
  strongest keypoints (recognition.vote_keypoints / index_keypoints);
- embedding (the optional backend): one vector per image in an IVF-SQ8 index; the query's embedding is timed
  with the installed model when --embedding-dir is given, else reported separately as not measured.
The peer is the plain approach: SIFT match + RANSAC against every reference, at --peer-refs references.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faiss  # noqa: E402

from models.recognition import FeatureIndex, extract, search, verify  # noqa: E402
from models.recognition.features import Features  # noqa: E402
from models.recognition.index import GlobalIndex, descriptor_ids  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(np.array(xs) * 1000, p))


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
    """Deterministic synthetic reference images built from a pool of real descriptors."""

    def __init__(self, pool: np.ndarray, keypoints: int = 1000) -> None:
        self.pool, self.keypoints = pool, keypoints

    def descriptors(self, image_id: int, n: int) -> np.ndarray:
        rng = np.random.default_rng(image_id)
        d = self.pool[rng.integers(0, len(self.pool), n)] + rng.normal(0, 0.02, (n, 128)).astype(np.float32)
        d = np.abs(d)
        return d / np.linalg.norm(d, axis=1, keepdims=True)

    def features(self, image_id: int) -> Features:
        rng = np.random.default_rng(image_id + 1 << 40)
        pts = (rng.random((self.keypoints, 2)) * [800, 533]).astype(np.float32)
        return Features(pts, self.descriptors(image_id, self.keypoints), 800, 533)


def main() -> None:
    """Parse arguments, measure, print one line per figure."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--sizes", default="10000", help="Reference image counts for the vote backend")
    ap.add_argument("--embedding-sizes", default="10000,100000", help="Counts for the embedding shortlist")
    ap.add_argument("--million", type=int, default=1_000_000, help="Vectors in the FAISS search-time test")
    ap.add_argument("--embedding-dim", type=int, default=512)
    ap.add_argument("--embedding-dir", type=Path, default=None, help="An installed embedding model to time")
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--peer-refs", type=int, default=200)
    ap.add_argument("--index-keypoints", type=int, default=300)
    ap.add_argument("--vote-keypoints", type=int, default=300)
    ap.add_argument("--shortlist", type=int, default=10)
    ap.add_argument("--nprobe", type=int, default=16)
    ap.add_argument("--cache", type=Path, default=None)
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    faiss.omp_set_num_threads(min(2, os.cpu_count() or 1))
    print(f"cpu: {os.cpu_count()} cores, faiss {faiss.__version__}, load average {os.getloadavg()[0]:.1f}")

    images = args.data / "carvana" / "images"
    cars = sorted({p.name.rsplit("_", 1)[0] for p in images.glob("*_01.jpg")})
    ref_paths = [images / f"{c}_{a:02d}.jpg" for c in cars for a in range(1, 17, 2)]
    ref_paths += sorted((args.data / "distractors").glob("*.jpg"))
    query_paths = [images / f"{c}_{a:02d}.jpg" for c in cars for a in range(2, 17, 2)][: args.queries]

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
    t = time.perf_counter()
    qfeats = [extract(load_rgb(p)) for p in query_paths]
    t_query_feat = (time.perf_counter() - t) / len(qfeats)
    truth = [ref_paths.index(images / f"{p.stem[:-3]}_{int(p.stem[-2:]) - 1:02d}.jpg") for p in query_paths]
    pool = np.concatenate([f.descriptors[: args.index_keypoints] for f in refs])
    synth = Synthetic(pool)
    nreal = len(refs)
    load_real = {i + 1: f for i, f in enumerate(refs)}

    def load(ids: list[int]) -> dict[int, Features]:
        return {i: load_real[i] if i in load_real else synth.features(i) for i in ids}

    def timed_queries(index: FeatureIndex | None, candidates=None) -> tuple[list[float], float]:  # type: ignore[no-untyped-def]
        times, hits = [], 0
        for n, q in enumerate(qfeats):
            t0 = time.perf_counter()
            ms = search(index, q, load, shortlist=args.shortlist, vote_keypoints=args.vote_keypoints,
                        candidates=None if candidates is None else candidates(n))
            times.append(time.perf_counter() - t0 + t_query_feat)
            hits += bool(ms) and ms[0].score >= 0.5 and ms[0].image_id - 1 in _near(truth[n])
        return times, hits / len(qfeats)

    # --- the plain peer against ours, same references, same run --------------------------------------------------
    peer_refs = list(range(1, min(args.peer_refs, nreal) + 1))
    peer_times = []
    for q in qfeats[: min(10, len(qfeats))]:
        t0 = time.perf_counter()
        best = max((verify(q, load_real[i], i) for i in peer_refs), key=lambda m: m.inliers)
        peer_times.append(time.perf_counter() - t0 + t_query_feat)
        del best
    small = FeatureIndex.build((i, load_real[i].descriptors[: args.index_keypoints]) for i in peer_refs)
    ours_small = []
    for q in qfeats[: min(10, len(qfeats))]:
        t0 = time.perf_counter()
        search(small, q, load, shortlist=args.shortlist, vote_keypoints=args.vote_keypoints)
        ours_small.append(time.perf_counter() - t0 + t_query_feat)
    print(f"peer (plain SIFT + RANSAC against all {len(peer_refs)} references): p50 {pct(peer_times, 50):.0f} ms; "
          f"ours at the same {len(peer_refs)}: p50 {pct(ours_small, 50):.0f} ms; "
          f"ratio {np.median(peer_times) / np.median(ours_small):.1f}x faster (query features "
          f"{t_query_feat * 1000:.0f} ms included in both)")

    # --- votes shortlist at each size ---------------------------------------------------------------------------
    for size in [int(s) for s in args.sizes.split(",") if s]:
        t = time.perf_counter()
        train = np.concatenate([pool, synth.descriptors(10**9, min(len(pool), 200_000))])
        cap = args.index_keypoints
        total = size * cap
        index = FeatureIndex(FeatureIndex.trained_ivf(train, nprobe=args.nprobe,
                                                      nlist=int(min(8192, max(256, np.sqrt(total))))))
        t_train = time.perf_counter() - t
        t = time.perf_counter()
        for i, f in load_real.items():
            index.add(i, f.descriptors[:cap])
        chunk = 500
        for start in range(nreal + 1, size + 1, chunk):
            ids = range(start, min(size, start + chunk - 1) + 1)
            vecs = np.concatenate([synth.descriptors(i, cap) for i in ids])
            index.index.add_with_ids(vecs, np.concatenate([descriptor_ids(i, cap) for i in ids]))
        t_add = time.perf_counter() - t
        mem = index.memory_bytes
        times, hit = timed_queries(index)
        print(f"votes at {size} images ({index.ntotal} descriptors, {index.kind}): p50 {pct(times, 50):.0f} ms, "
              f"p95 {pct(times, 95):.0f} ms, right car at rank 1 (+-22.5 deg) {hit:.2f}; "
              f"index {mem / 2**20:.0f} MiB = {mem / size * 1e6 / 2**30:.1f} GiB per million images; "
              f"train {t_train:.0f} s, add {size / t_add:.0f} images/s")
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
    flat = faiss.IndexFlatIP(d)
    flat.add(vectors(min(args.million, 200_000), 3))
    ft = []
    for v in qs[:20]:
        t0 = time.perf_counter()
        flat.search(v.reshape(1, -1), args.shortlist)
        ft.append(time.perf_counter() - t0)
    mem = gi.memory_bytes
    print(f"FAISS embedding search at {gi.ntotal} vectors ({d}-d, {gi.kind}, nprobe {args.nprobe}): "
          f"p50 {pct(st, 50):.2f} ms, p95 {pct(st, 95):.2f} ms; index {mem / 2**20:.0f} MiB per "
          f"{gi.ntotal / 1e6:g} million; built in {t_build:.0f} s; exact flat search at {flat.ntotal} vectors "
          f"p50 {pct(ft, 50):.1f} ms ({np.median(ft) / np.median(st):.0f}x slower)")
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

        times, hit = timed_queries(None, candidates)
        extra = f" + embedding {embed_ms:.0f} ms" if embed_ms is not None else " (query embedding not included)"
        print(f"embedding shortlist at {size} images: p50 {pct(times, 50):.0f} ms, p95 {pct(times, 95):.0f} ms"
              f"{extra}; right car at rank 1 {hit:.2f} (synthetic vectors: speed, not accuracy)")


def _near(ref_index: int) -> set[int]:
    """The reference slots holding the same car within one angle step (odd angles a-1 and a+1)."""
    return {ref_index, ref_index + 1} if (ref_index + 1) % 8 else {ref_index, ref_index - 7}


if __name__ == "__main__":
    main()
