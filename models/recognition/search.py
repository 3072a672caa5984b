"""A query end to end: vote for a shortlist in the FAISS index, verify each candidate geometrically, rank."""

from __future__ import annotations

from collections.abc import Callable

from models.recognition.features import Features
from models.recognition.index import FeatureIndex
from models.recognition.matcher import Match, verify

MIN_QUERY_FEATURES = 20


def search(index: FeatureIndex, query: Features, load: Callable[[list[int]], dict[int, Features]], *,
           shortlist: int = 10, allowed: set[int] | None = None) -> list[Match]:
    """Verified matches for the shortlisted reference images, best first; a query with too few features
    (tiny, blank, featureless) gets none."""
    if len(query) < MIN_QUERY_FEATURES:
        return []
    votes = index.vote(query.descriptors, allowed=allowed)
    ranked = sorted(votes, key=lambda i: -votes[i])[:shortlist]
    refs = load(ranked)
    matches = [verify(query, refs[i], i) for i in ranked if i in refs]
    return sorted((m for m in matches if m.inliers > 0), key=lambda m: (-m.score, -m.inliers))
