"""From verified matches to an answer: a score that weighs colour with the inliers, one best match per object, and
look-alikes ("twins": the same model in the same colour) answered together as ambiguous instead of one at random.

The score stays the inliers' calibrated probability (a logistic in the inlier count, midpoint per kind of
collection, scale INLIER_SCALE) while the body colours agree (colour.py's body-colour distance up to COLOUR_LIMIT
costs nothing: the same car under other light, or 22.5 degrees round), and falls towards 0 past it (times
2 x a logistic of scale COLOUR_SCALE, continuous at the limit): many inliers cannot outvote another colour, since a
look-alike of the same model in another paint fits as well as the car itself. LIGHTNESS_WEIGHT, COLOUR_LIMIT and
COLOUR_SCALE were chosen on one half of the 52 Carvana cars and checked on the other half and the 12 development
cars (README, recognition).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from models.recognition.matcher import INLIER_SCALE, MIN_MATCHES, Match

COLOUR_LIMIT = 0.4  # body-colour distance (colour.py) past which the score falls
COLOUR_SCALE = 0.05  # how fast: at COLOUR_LIMIT + 0.1 the score is 0.24 of the inliers' one
TWIN_RATIO = 0.5  # a runner-up object with at least this share of the best one's inliers is a look-alike
TWIN_OVERLAP = 0.5  # ... when the two matched regions of the photo overlap this much (else: two objects in view)


def evidence_score(m: Match, midpoint: float, use_colour: bool = True) -> float:
    """The calibrated probability that the match is the object: inliers, then colour (`use_colour`: car
    collections, where it was calibrated)."""
    if m.inliers < MIN_MATCHES or m.score <= 0.0:
        return 0.0
    p = _logistic((m.inliers - midpoint) / INLIER_SCALE)
    if use_colour and m.body is not None and m.body > COLOUR_LIMIT:
        p *= 2.0 * _logistic((COLOUR_LIMIT - m.body) / COLOUR_SCALE)
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
               use_colour: bool = True) -> list[Candidate]:
    """Each object's best match by evidence score, best object first."""
    best: dict[str, Candidate] = {}
    for m in matches:
        obj = owners.get(m.image_id)
        if obj is None:
            continue
        c = Candidate(obj, m, evidence_score(m, midpoint, use_colour))
        if obj not in best or (c.score, c.match.inliers) > (best[obj].score, best[obj].match.inliers):
            best[obj] = c
    return sorted(best.values(), key=lambda c: (-c.score, -c.match.inliers))


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
