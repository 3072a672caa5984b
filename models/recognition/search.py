"""A query end to end: a shortlist (descriptor votes in the FAISS index, or a global embedding's nearest
neighbours), each candidate verified geometrically, ranked by the calibrated score."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from models.recognition.features import Features
from models.recognition.index import FeatureIndex
from models.recognition.matcher import VIEW_INLIER_MIDPOINT, Match, verify

MIN_QUERY_FEATURES = 20
VIEW_TOP = 3
VIEW_SKIP_SCORE = 0.9


def shortlist_by_votes(index: FeatureIndex, query: Features, *, shortlist: int = 10, vote_keypoints: int = 0,
                       allowed: set[int] | None = None) -> list[int]:
    """The reference images with the most descriptor votes, best first (vote_keypoints > 0: only the query's
    strongest keypoints vote, which bounds the search cost)."""
    desc = query.descriptors[:vote_keypoints] if vote_keypoints > 0 else query.descriptors
    votes = index.vote(desc, allowed=allowed)
    return sorted(votes, key=lambda i: -votes[i])[:shortlist]


def search(index: FeatureIndex | None, query: Features, load: Callable[[list[int]], dict[int, Features]], *,
           shortlist: int = 10, allowed: set[int] | None = None, vote_keypoints: int = 0,
           candidates: Sequence[int] | None = None, views: Features | None = None,
           view_top: int = VIEW_TOP) -> list[Match]:
    """Verified matches for the shortlisted reference images, best first; a query with too few features
    (tiny, blank, featureless) gets none. `candidates` (e.g. from a global embedding) replaces the vote.

    `views` (features.extract_views of the query) are matched too, with the query's own features, against the
    first `view_top` shortlisted images whose plain verification scored below VIEW_SKIP_SCORE: a view far from
    the references finds the inliers a 45-degree turn costs, and only a few candidates pay for it."""
    if len(query) < MIN_QUERY_FEATURES:
        return []
    if candidates is not None:
        ranked = [i for i in candidates if allowed is None or i in allowed][:shortlist]
    elif index is not None:
        ranked = shortlist_by_votes(index, query, shortlist=shortlist, vote_keypoints=vote_keypoints,
                                    allowed=allowed)
    else:
        return []
    refs = load(ranked)
    matches = [verify(query, refs[i], i) for i in ranked if i in refs]
    if views is not None and len(views) and view_top > 0:
        both = Features(np.concatenate([query.points, views.points]),
                        np.concatenate([query.descriptors, views.descriptors]), query.width, query.height)
        for k, m in enumerate(matches[:view_top]):
            if m.score < VIEW_SKIP_SCORE:
                v = verify(both, refs[m.image_id], m.image_id, mutual=True, midpoint=VIEW_INLIER_MIDPOINT)
                if v.score > m.score:
                    matches[k] = v
    return sorted((m for m in matches if m.inliers > 0), key=lambda m: (-m.score, -m.inliers))
