"""Geometric verification: ratio-test matches, an epipolar (fundamental-matrix) model fitted with MAGSAC,
inliers -> a calibrated 0-1 score.

A car turning 45 degrees is not one plane: a single homography keeps only one face (side or front) and its inlier
count of a true far view (5-17 on the Carvana views) overlaps a wrong car's chance fit. The fundamental matrix holds
for every point of a rigid object, so the side, the front and the wheels all count; its epipolar threshold is kept
tight (0.8% of the query's longer side) because a loose one lets chance matches line up.

Calibration: the score is a logistic in the inlier count, score = 1 / (1 + exp(-(inliers - I0) / S)), with S = 3
(`INLIER_SCALE`) and a midpoint I0 per kind of object, so that the default min_score 0.5 means "as many inliers as
a wrong object's best chance fit rarely reaches":
- generic objects (`INLIER_MIDPOINT` 18): printed material sharing a font's glyphs gives chance fits of 13-17
  inliers (tests/recognition_synth.py's signs), so 0.5 sits at 18, 0.9 at about 25 and 0.1 at about 11;
- cars (`CAR_INLIER_MIDPOINT` 17; features from the car mask only): on ~1000 RootSIFT features a wrong car's best
  epipolar fit reaches 8-19 inliers (17 or more for 3 of 96 unknown-car queries on the Carvana views), a true view
  22.5 degrees away 17 to hundreds, one 45 degrees away 9-35; 0.5 sits at 17, 0.9 at about 24.
`scripts/eval_recognition.py` prints the inlier counts of right and wrong top matches and a min_score sweep (near,
far, unknown) to re-check this.

The region: the reference's inlier area mapped by a homography fitted on the epipolar inliers when that mapping is
a convex quadrilateral (a flat object, or one dominant face), else the convex hull of the inliers in the query.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from models.recognition import colour
from models.recognition.features import Features

INLIER_MIDPOINT = 18.0
CAR_INLIER_MIDPOINT = 17.0
INLIER_SCALE = 3.0
MIN_MATCHES = 8
RATIO = 0.8
MUTUAL_RATIO = 0.9
# Simulated views (search.search's `views`) triple the query's features and with them a wrong car's chance
# inliers (mutual matches: up to 20 on the Carvana views); their fits are scored with a midpoint this much higher.
VIEW_MIDPOINT_OFFSET = 4.0
EPIPOLAR_THRESHOLD = 0.008  # share of the query's longer side (pixels of the source image)


@dataclass
class Match:
    """A verified match of a query against one reference image."""

    image_id: int
    inliers: int
    score: float
    polygon: list[list[float]]  # the reference image's outline mapped into query pixels
    colour: float | None = None  # colour.distance of the inlier pairs (None: an image without colour)
    body: float | None = None  # distance between the two images' body colours (colour.signature)
    pairs: np.ndarray | None = field(default=None, repr=False, compare=False)  # inlier (query, reference) keypoint indices
    spread: float | None = None  # how much of the car the inliers cover (Grid.share; the lower of query and
    # reference), measured only when asked (verify's query_grid)


def score_from_inliers(inliers: int, midpoint: float = INLIER_MIDPOINT) -> float:
    """The calibrated 0-1 score for an inlier count (see the module docstring)."""
    if inliers < MIN_MATCHES:
        return 0.0
    return 1.0 / (1.0 + math.exp(-(inliers - midpoint) / INLIER_SCALE))


def _ratio_matches(a: Features, b: Features, ratio: float = RATIO) -> list[cv2.DMatch]:
    """Each of a's descriptors' nearest neighbour in b, kept when clearly nearer than the second (Lowe's test)."""
    pairs = _matcher().knnMatch(a.descriptors, b.descriptors, k=2)
    return [p[0] for p in pairs if len(p) == 2 and p[0].distance < ratio * p[1].distance]


def _mutual(query: Features, ref: Features) -> list[cv2.DMatch]:
    """Ratio-test matches that are also each other's ratio-passing best match from the reference's side: with
    several simulated views in the query, a reference keypoint's chance partner must beat all of them."""
    back = {m.queryIdx: m.trainIdx for m in _ratio_matches(ref, query, MUTUAL_RATIO)}
    return [m for m in _ratio_matches(query, ref) if back.get(m.trainIdx) == m.queryIdx]


def _matcher() -> cv2.BFMatcher:
    return cv2.BFMatcher(cv2.NORM_L2)


def _region(ref: Features, query: Features, h: np.ndarray, ref_pts: np.ndarray) -> list[list[float]] | None:
    """The reference's matched area (bounding box of its inlier keypoints) projected into query pixels."""
    x0, y0 = ref_pts.min(axis=0)
    x1, y1 = ref_pts.max(axis=0)
    corners = np.array([[[x0, y0]], [[x1, y0]], [[x1, y1]], [[x0, y1]]], dtype=np.float32)
    proj = cv2.perspectiveTransform(corners, h).reshape(-1, 2)
    if not np.all(np.isfinite(proj)):
        return None
    if not cv2.isContourConvex(proj.astype(np.float32)):
        return None
    proj[:, 0] = np.clip(proj[:, 0], 0, query.width)
    proj[:, 1] = np.clip(proj[:, 1], 0, query.height)
    return [[round(float(x), 1), round(float(y), 1)] for x, y in proj]


def _hull(query: Features, pts: np.ndarray) -> list[list[float]] | None:
    """The convex hull of the query's inlier points, or None when they span no area."""
    hull = cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2)
    if len(hull) < 3 or cv2.contourArea(hull) < 1.0:
        return None
    hull[:, 0] = np.clip(hull[:, 0], 0, query.width)
    hull[:, 1] = np.clip(hull[:, 1], 0, query.height)
    return [[round(float(x), 1), round(float(y), 1)] for x, y in hull]


COVERAGE_GRID = 8  # cells a side of the grid laid over the object's keypoints (Grid)


class Grid:
    """An image's keypoints on a grid x grid layout of their bounding box, built once per image: how much of the
    object a set of inliers spreads over (`share`). Features come from the car mask, so the occupied cells outline
    the car. A chance fit clusters on a wheel, a badge or a font's glyphs; the same car seen again matches over its
    whole body."""

    def __init__(self, points: np.ndarray, grid: int = COVERAGE_GRID) -> None:
        if len(points) == 0:
            self.cell, self.cells = np.zeros(0, np.int64), 0
            return
        lo = points.min(axis=0)
        span = np.maximum(points.max(axis=0) - lo, 1e-6)
        c = np.clip(((points - lo) / span * grid).astype(np.int64), 0, grid - 1)
        self.cell = c[:, 0] * grid + c[:, 1]  # each keypoint's cell
        self.cells = len(np.unique(self.cell))  # cells holding any keypoint

    def share(self, keypoints: np.ndarray) -> float:
        """The share of the occupied cells that hold one of these keypoints (indices into the image's points)."""
        if not self.cells or len(keypoints) == 0:
            return 0.0
        return len(np.unique(self.cell[keypoints])) / self.cells


def verify(query: Features, ref: Features, image_id: int = 0, *, mutual: bool = False,
           midpoint: float = INLIER_MIDPOINT, query_grid: Grid | None = None) -> Match:
    """Match query against ref (Lowe ratio test; `mutual`: in both directions), fit a fundamental matrix with
    MAGSAC, score the inliers (logistic with this midpoint). `query_grid` (Grid(query.points), built once per
    query): also measure the inliers' spread (Match.spread), which only an Acceptance weighing it needs."""
    empty = Match(image_id, 0, 0.0, [])
    if len(query) < MIN_MATCHES or len(ref) < MIN_MATCHES:
        return empty
    good = _mutual(query, ref) if mutual else _ratio_matches(query, ref)
    if len(good) < MIN_MATCHES:
        return empty
    q = np.array([query.points[m.queryIdx] for m in good], dtype=np.float32)
    r = np.array([ref.points[m.trainIdx] for m in good], dtype=np.float32)
    threshold = max(2.0, EPIPOLAR_THRESHOLD * max(query.width, query.height))
    h_threshold = max(3.0, 0.01 * max(query.width, query.height))
    inlier_mask: np.ndarray | None = None
    try:
        f, inlier_mask = cv2.findFundamentalMat(r, q, cv2.USAC_MAGSAC, threshold, 0.999, 10000)
        if f is None:
            inlier_mask = None
    except cv2.error:  # a degenerate set, e.g. every match on one plane: the homography explains it
        inlier_mask = None
    if inlier_mask is None:
        f, inlier_mask = cv2.findHomography(r, q, cv2.RANSAC, h_threshold, maxIters=2000, confidence=0.995)
        if f is None:
            return empty
    if inlier_mask is None:
        return empty
    keep = inlier_mask.ravel().astype(bool)
    # One query point matched many times is one piece of evidence, not many.
    inliers = min(len(np.unique(q[keep], axis=0)), len(np.unique(r[keep], axis=0)))
    if inliers < MIN_MATCHES:
        return Match(image_id, inliers, 0.0, [])
    polygon = None
    h, _ = cv2.findHomography(r[keep], q[keep], cv2.RANSAC, h_threshold)
    if h is not None:
        polygon = _region(ref, query, h, r[keep])
    if polygon is None:
        polygon = _hull(query, q[keep])
    if polygon is None:
        return Match(image_id, inliers, 0.0, [])
    qi = np.array([m.queryIdx for m in good])[keep]
    ri = np.array([m.trainIdx for m in good])[keep]
    local, body = _colour(query, ref, qi, ri, polygon)
    spread = None if query_grid is None else min(query_grid.share(qi), Grid(ref.points).share(ri))
    return Match(image_id, inliers, score_from_inliers(inliers, midpoint), polygon, local, body,
                 np.stack([qi, ri], axis=1), spread)


def _colour(query: Features, ref: Features, qi: np.ndarray, ri: np.ndarray,
            polygon: list[list[float]] | None = None) -> tuple[float | None, float | None]:
    """colour.distance of the inlier pairs and of the two body colours; None when either image has no colour. The
    bodies differ only when the query's whole car mask and, when the mask holds more than the match covers (another
    car merged into it on a lot photo), the matched region (colour.body_within) both differ from the reference."""
    if query.colours is None or ref.colours is None or query.light is None or ref.light is None:
        return None, None
    local = colour.distance(colour.chroma(query.colours[qi], query.light), colour.chroma(ref.colours[ri], ref.light))
    body = None
    if query.body is not None and ref.body is not None:
        body = colour.distance(query.body[None, :], ref.body[None, :], 1.0)
        if polygon and query.paint_points is not None and query.paint is not None:
            part = colour.body_within(query.paint_points, query.paint, polygon)
            if part is not None:
                body = min(body, colour.distance(part[None, :], ref.body[None, :], 1.0))
    return local, body
