"""From verified matches to an answer: a score that weighs colour with the inliers, one best match per object, and
look-alikes ("twins": the same model in the same colour) answered together as ambiguous instead of one at random.

The score stays the inliers' calibrated probability (a logistic in the inlier count, midpoint per kind of
collection, scale INLIER_SCALE) while the body colours agree (colour.py's body-colour distance up to COLOUR_LIMIT
costs nothing: the same car under other light, or 22.5 degrees round), and falls towards 0 past it (times
2 x a logistic of scale COLOUR_SCALE, continuous at the limit): many inliers cannot outvote another colour, since a
look-alike of the same model in another paint fits as well as the car itself. LIGHTNESS_WEIGHT, COLOUR_LIMIT and
COLOUR_SCALE were chosen on one half of the 52 Carvana cars and checked on the other half and the 12 development
cars (README, recognition).

Evidence beyond the inlier count (issue 17): each match can carry `spread` (matcher.Grid.share: the share of the car's
keypoint grid cells its inliers occupy, the lower of query and reference; measured only when the Acceptance weighs
it, needs_spread) and each object its second view's inliers
(ObjectEvidence), and in car collections its embedding margin (margin.py); Acceptance is a logistic over these.
CAR_ACCEPTANCE weighs the inliers and the margin: logistic regressions over spread and second-view inliers fitted on
one half of the 52 cars (scripts/fit_recognition_score.py on eval_recognition.py --dump) did not hold on the other
half; the margin did (docs/decisions/0001). An object without a margin (references stored before car embeddings,
no other car of a compatible colour) is scored on its inliers as before (Acceptance.without_margin).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import cv2
import numpy as np

from models.recognition.matcher import INLIER_SCALE, MIN_MATCHES, Match

COLOUR_LIMIT = 0.4  # body-colour distance (colour.py) past which the score falls
COLOUR_SCALE = 0.05  # how fast: at COLOUR_LIMIT + 0.1 the score is 0.24 of the inliers' one
TWIN_RATIO = 0.5  # a runner-up object with at least this share of the best one's inliers is a look-alike
TWIN_OVERLAP = 0.5  # ... when the two matched regions of the photo overlap this much (else: two objects in view)


@dataclass(frozen=True)
class Acceptance:
    """A logistic over an object's evidence (evidence_features, FEATURE_NAMES): bias + weights . features, with the
    inlier weight's term centred on the collection's midpoint (so `midpoint` keeps shifting the score). An object
    without an embedding margin (margin.py: no car embeddings stored, or no other car to compare with) is scored
    without_margin: the same weights with no bias and no margin term, i.e. the inliers' score as before."""

    bias: float
    inliers: float
    spread: float
    second: float
    margin: float = 0.0

    def without_margin(self) -> Acceptance:
        """The score of an object that has no margin."""
        return replace(self, bias=0.0, margin=0.0) if self.margin else self


FEATURE_NAMES = ("inliers - midpoint", "spread", "second view inliers", "embedding margin")
INLIERS_ONLY = Acceptance(0.0, 1.0 / INLIER_SCALE, 0.0, 0.0)  # logistic((inliers - midpoint) / INLIER_SCALE)
# The car score: the inliers and the embedding margin (margin.py; recognition.car_margin), with colour on top. Bias
# and weight chosen on each half of the 52 cars (the grid point with the most far recall that loses neither near
# recall nor unknown rejection; both halves chose this one) and checked on the other half and the 12 development
# cars (docs/decisions/0001). Spread and second views stay unweighted: their fitted weights did not hold.
CAR_ACCEPTANCE = Acceptance(-0.25, 1.0 / INLIER_SCALE, 0.0, 0.0, 30.0)


def acceptance_for(use_colour: bool, acceptance: Acceptance | None = None) -> Acceptance:
    """The score to use: `acceptance` when given, else CAR_ACCEPTANCE in a car collection (`use_colour`), else
    inliers alone."""
    return acceptance or (CAR_ACCEPTANCE if use_colour else INLIERS_ONLY)


def needs_spread(acceptance: Acceptance) -> bool:
    """Whether this score weighs the inliers' spread, so that verification must measure it (search's spread)."""
    return acceptance.spread != 0.0


@dataclass
class ObjectEvidence:
    """An object's verified matches summed up: its best one, the inliers of its second-best image, the best
    match's own score (evidence_score of it alone) and the object's embedding margin (margin.py; None: unknown)."""

    best: Match
    second: int = 0
    best_score: float = 0.0
    margin: float | None = None


def object_evidence(matches: list[Match], midpoint: float, use_colour: bool = True,
                    acceptance: Acceptance | None = None) -> ObjectEvidence:
    """One object's matches summed up: the best one scored alone (colour included; each match scored once), and
    the most inliers of its other images."""
    scores = [evidence_score(m, midpoint, use_colour, acceptance) for m in matches]
    k = max(range(len(matches)), key=lambda i: (scores[i], matches[i].inliers))
    second = max((m.inliers for i, m in enumerate(matches) if i != k), default=0)
    return ObjectEvidence(matches[k], second, scores[k])


def evidence_features(ev: ObjectEvidence, midpoint: float = 0.0) -> list[float]:
    """The features of Acceptance, in FEATURE_NAMES order (a missing margin as 0)."""
    return [ev.best.inliers - midpoint, ev.best.spread or 0.0, float(min(ev.second, ev.best.inliers)),
            ev.margin or 0.0]


def evidence_score(m: Match | ObjectEvidence, midpoint: float, use_colour: bool = True,
                   acceptance: Acceptance | None = None) -> float:
    """The calibrated probability that the match (or the object's matches) is the object: inliers, how much of it
    they cover and a second view (`acceptance`: CAR_ACCEPTANCE by default in a car collection, i.e. with
    `use_colour`, else inliers alone), then colour (`use_colour`: car collections, where it was calibrated)."""
    ev = m if isinstance(m, ObjectEvidence) else ObjectEvidence(m)
    best = ev.best
    if best.inliers < MIN_MATCHES or best.score <= 0.0:
        return 0.0
    a = acceptance_for(use_colour, acceptance)
    if ev.margin is None:
        a = a.without_margin()
    x = evidence_features(ev, midpoint)
    p = _logistic(a.bias + a.inliers * x[0] + a.spread * x[1] + a.second * x[2] + a.margin * x[3])
    if use_colour and best.body is not None and best.body > COLOUR_LIMIT:
        p *= 2.0 * _logistic((COLOUR_LIMIT - best.body) / COLOUR_SCALE)
    return p


def _logistic(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))


@dataclass
class Candidate:
    """An object's best match and its score (evidence_score)."""

    object_id: str
    match: Match
    score: float


def per_object(matches: Iterable[Match], owners: dict[int, str], midpoint: float,
               use_colour: bool = True, acceptance: Acceptance | None = None,
               margins: Mapping[str, float] | None = None) -> list[Candidate]:
    """Each object's evidence (its best match, its second view's inliers, its embedding margin from `margins`
    when known) scored, best object first; `acceptance`: CAR_ACCEPTANCE when use_colour (a car collection), else
    inliers alone."""
    acceptance = acceptance_for(use_colour, acceptance)
    by_obj: dict[str, list[Match]] = {}
    for m in matches:
        obj = owners.get(m.image_id)
        if obj is not None:
            by_obj.setdefault(obj, []).append(m)
    out = []
    for obj, ms in by_obj.items():
        ev = object_evidence(ms, midpoint, use_colour, acceptance)
        ev.margin = (margins or {}).get(obj)
        # the object's score is its best match's own unless a second view or the margin counts too
        more = (acceptance.second != 0.0 and ev.second > 0) or (acceptance.margin != 0.0 and ev.margin is not None)
        score = evidence_score(ev, midpoint, use_colour, acceptance) if more else ev.best_score
        out.append(Candidate(obj, ev.best, score))
    return sorted(out, key=lambda c: (-c.score, -c.match.inliers))


def overlap(a: list[list[float]], b: list[list[float]]) -> float:
    """How much two matched regions (convex polygons in query pixels) overlap: the intersection's area over the
    smaller one's; 0 when either is empty."""
    if len(a) < 3 or len(b) < 3:
        return 0.0
    pa, pb = np.array(a, np.float32), np.array(b, np.float32)
    small = min(cv2.contourArea(pa), cv2.contourArea(pb))
    if small <= 0:
        return 0.0
    area, _ = cv2.intersectConvexConvex(cv2.convexHull(pa), cv2.convexHull(pb))
    return float(area) / small


def twins(candidates: list[Candidate], min_score: float, ratio: float = TWIN_RATIO) -> list[Candidate]:
    """The candidates a single answer cannot choose between: the best one and every other accepted object (score
    >= min_score, so of a compatible colour) with at least `ratio` of its inliers, found in the same part of the
    photo (regions overlapping TWIN_OVERLAP; two objects side by side are not look-alikes). One candidate means no
    doubt; none, no match."""
    accepted = [c for c in candidates if c.score >= min_score]
    if not accepted:
        return []
    top = accepted[0]
    return [top] + [c for c in accepted[1:] if c.match.inliers >= ratio * top.match.inliers
                    and overlap(top.match.polygon, c.match.polygon) >= TWIN_OVERLAP]
