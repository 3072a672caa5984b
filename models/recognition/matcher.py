"""Geometric verification: ratio-test matches, a RANSAC homography, inliers -> a calibrated 0-1 score.

Calibration: the score is a logistic in the RANSAC inlier count, score = 1 / (1 + exp(-(inliers - I0) / S)),
with I0 = 14 and S = 3 (`INLIER_MIDPOINT`, `INLIER_SCALE`). A wrong object's best RANSAC fit on ~1000 RootSIFT
features rarely passes 10 inliers (chance fits of 4-8 are common), a true view 22.5 degrees away gives tens to
hundreds. So the default min_score 0.5 sits at 14 inliers, 0.9 at about 21 and 0.1 at about 7;
`scripts/eval_recognition.py` prints the inlier counts of right and wrong top matches to re-check this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from models.recognition.features import Features

INLIER_MIDPOINT = 14.0
INLIER_SCALE = 3.0
MIN_MATCHES = 8
RATIO = 0.8


@dataclass
class Match:
    """A verified match of a query against one reference image."""

    image_id: int
    inliers: int
    score: float
    polygon: list[list[float]]  # the reference image's outline mapped into query pixels


def score_from_inliers(inliers: int) -> float:
    """The calibrated 0-1 score for an inlier count (see the module docstring)."""
    if inliers < MIN_MATCHES:
        return 0.0
    return 1.0 / (1.0 + math.exp(-(inliers - INLIER_MIDPOINT) / INLIER_SCALE))


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


def verify(query: Features, ref: Features, image_id: int = 0) -> Match:
    """Match query against ref (Lowe ratio test), fit a homography with RANSAC, score the inliers."""
    empty = Match(image_id, 0, 0.0, [])
    if len(query) < MIN_MATCHES or len(ref) < MIN_MATCHES:
        return empty
    pairs = _matcher().knnMatch(query.descriptors, ref.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO * p[1].distance]
    if len(good) < MIN_MATCHES:
        return empty
    q = np.float32([query.points[m.queryIdx] for m in good])
    r = np.float32([ref.points[m.trainIdx] for m in good])
    threshold = max(3.0, 0.01 * max(query.width, query.height))
    h, inlier_mask = cv2.findHomography(r, q, cv2.RANSAC, threshold, maxIters=2000, confidence=0.995)
    if h is None or inlier_mask is None:
        return empty
    keep = inlier_mask.ravel().astype(bool)
    # One query point matched many times is one piece of evidence, not many.
    inliers = min(len(np.unique(q[keep], axis=0)), len(np.unique(r[keep], axis=0)))
    polygon = _region(ref, query, h, r[keep]) if inliers >= MIN_MATCHES else None
    if polygon is None:
        return Match(image_id, inliers, 0.0, [])
    return Match(image_id, inliers, score_from_inliers(inliers), polygon)
