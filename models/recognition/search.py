"""A query end to end: a shortlist (descriptor votes in the FAISS index, or a global embedding's nearest
neighbours), each candidate verified geometrically, ranked by the calibrated score."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from models.recognition.decide import evidence_score
from models.recognition.features import Features
from models.recognition.index import FeatureIndex
from models.recognition.matcher import INLIER_MIDPOINT, VIEW_MIDPOINT_OFFSET, Grid, Match, verify

MIN_QUERY_FEATURES = 20
VIEW_TOP = 3
VIEW_SKIP_SCORE = 0.9
# A decisive match (search's stop_score): 27 inliers for generic objects (18 + 3 ln 19), 26 for cars; the wrong
# cars' best epipolar fits reach 10-20 on the Carvana views (scripts/eval_recognition.py prints them).
STOP_SCORE = 0.95


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
           view_top: int = VIEW_TOP, stop_score: float | None = None, after_stop: int = 0, use_colour: bool = False,
           midpoint: float = INLIER_MIDPOINT, spread: bool = False,
           timings: dict[str, float] | None = None) -> list[Match]:
    """Verified matches for the shortlisted reference images, best first; a query with too few features
    (tiny, blank, featureless) gets none. `candidates` (e.g. from a global embedding) replaces the vote.

    `stop_score`: verify the shortlist in vote order, loading each reference when its turn comes, and stop at the
    first match scoring at least this (a decisive one; a wrong car's best fit stays well below it), so a known
    object costs one or two verifications instead of `shortlist`. The best match is then the same as with full
    verification unless a later candidate scores higher still, i.e. another object is in the photo too: use it
    for a single answer, not for mode multi / all. `after_stop` more shortlisted images are verified after the
    decisive one, so that a look-alike object (decide.twins) is seen too; `use_colour`: decisive by
    decide.evidence_score with colour (car collections).

    `views` (features.extract_views of the query) are matched too, with the query's own features, against the
    first `view_top` shortlisted images whose plain verification scored below VIEW_SKIP_SCORE: a view far from
    the references finds the inliers a 45-degree turn costs, and only a few candidates pay for it.

    `midpoint`: the score calibration's inlier midpoint for this kind of object (matcher.INLIER_MIDPOINT,
    CAR_INLIER_MIDPOINT); the simulated views' fits use it plus VIEW_MIDPOINT_OFFSET.

    `spread`: measure each match's Match.spread (the query's keypoint grid built once), for an Acceptance that
    weighs it (decide.needs_spread); off, verification skips it.

    `timings` (optional) receives seconds spent in shortlist, load and verify, and the count verified."""
    clock = time.perf_counter
    t0 = clock()
    if len(query) < MIN_QUERY_FEATURES:
        return []
    if candidates is not None:
        ranked = [i for i in candidates if allowed is None or i in allowed][:shortlist]
    elif index is not None:
        ranked = shortlist_by_votes(index, query, shortlist=shortlist, vote_keypoints=vote_keypoints,
                                    allowed=allowed)
    else:
        return []
    t1 = clock()
    t_load = 0.0
    grid = Grid(query.points) if spread else None
    refs: dict[int, Features] = {}
    matches: list[Match] = []
    if stop_score is None:
        refs = load(ranked)
        t_load = clock() - t1
        matches = [verify(query, refs[i], i, midpoint=midpoint, query_grid=grid) for i in ranked if i in refs]
    else:
        extra = None  # images still to verify once a decisive match is found
        for i in ranked:
            if extra is not None:
                if extra <= 0:
                    break
                extra -= 1
            t = clock()
            refs.update(load([i]))
            t_load += clock() - t
            if i in refs:
                matches.append(verify(query, refs[i], i, midpoint=midpoint, query_grid=grid))
                if extra is None and evidence_score(matches[-1], midpoint, use_colour) >= stop_score:
                    extra = after_stop
    if views is not None and len(views) and view_top > 0:
        both = Features(np.concatenate([query.points, views.points]),
                        np.concatenate([query.descriptors, views.descriptors]), query.width, query.height)
        if query.colours is not None and views.colours is not None:
            both.colours, both.light, both.body = (np.concatenate([query.colours, views.colours]), query.light,
                                                   query.body)
            both.paint_points, both.paint = query.paint_points, query.paint
        both_grid = Grid(both.points) if spread else None
        for k, m in enumerate(matches[:view_top]):
            if m.score < VIEW_SKIP_SCORE:
                v = verify(both, refs[m.image_id], m.image_id, mutual=True, midpoint=midpoint + VIEW_MIDPOINT_OFFSET,
                           query_grid=both_grid)
                if v.score > m.score:
                    matches[k] = v
    if timings is not None:
        timings["shortlist"] = timings.get("shortlist", 0.0) + t1 - t0
        timings["load"] = timings.get("load", 0.0) + t_load
        timings["verify"] = timings.get("verify", 0.0) + clock() - t1 - t_load
        timings["verified"] = timings.get("verified", 0.0) + len(matches)
    return sorted((m for m in matches if m.inliers > 0), key=lambda m: (-m.score, -m.inliers))
