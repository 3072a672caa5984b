"""The photo's main car: which of the car-like regions of a matte a lot photo is about.

A photo taken on the lot shows other cars, trailers, signs and people too; the car filter (models/car.py) keeps
every thick region. This module picks, among the connected regions of that mask, the main one by its prominence:
area, times how close its middle is to the frame's middle, times the model's mean confidence over it. A region
cut by the frame is not penalised for it (its area is only what is in view). Other regions are kept when they are
prominent too (at least `share` of the main region's score: several cars parked side by side are all the subject)
or when they touch a kept region within `gap` and are small beside the main one (at most `attach_max` of its area:
a mirror the filter split off, a bumper piece); the rest goes (a car further back, also one standing just behind
the main car without overlapping it, a sign, a person, a trailer standing apart). A car carrier is one region with
its load, so it stays.

`split` > 0 (off by default) first cuts each region at narrow necks (`split_pieces`); a piece cut off the main
car's region stays only on its own score. It found nothing to cut on the evaluation photos, where a car behind
overlaps the main one broadly, and costs ~20 ms, so it stays off.

`select_main` is reusable on any boolean foreground mask; recognition (features.main_subject) keeps one car with
`ONE_CAR`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class MainCarParams:
    """Knobs of the main-car choice; `gap` is a fraction of the image diagonal, `attach_max` of the main region's
    area (chosen on half A of the lot composites; decisions/0009)."""

    share: float = 0.35
    centre_weight: float = 0.6
    gap: float = 0.01
    split: float = 0.0
    split_min: float = 0.1
    attach_max: float = 0.2


# Recognition's choice (features.main_subject): one car only, however prominent the others, with what touches it
# (any size: recognition's lot figures were measured so; attach_max is not tried there yet).
ONE_CAR = MainCarParams(share=1.0, attach_max=float("inf"))


def region_scores(labels: np.ndarray, area: np.ndarray, centroids: np.ndarray, prob: np.ndarray | None,
                  params: MainCarParams = MainCarParams()) -> np.ndarray:
    """Prominence of the regions of a label image from their areas and centroids (index 0, background, scores 0)."""
    height, width = labels.shape
    count = len(area)
    area = area.astype(np.float64)
    cx, cy = centroids[:, 0], centroids[:, 1]
    # distance of the region's middle from the frame's, 0 at the middle and 1 at a corner
    off = np.hypot((cx - (width - 1) / 2) / (width / 2), (cy - (height - 1) / 2) / (height / 2)) / np.sqrt(2)
    centre = 1.0 - params.centre_weight * np.clip(off, 0, 1)
    if prob is None:
        conf = np.ones(count)
    else:
        conf = np.bincount(labels.ravel(), weights=prob.ravel().astype(np.float64), minlength=count)
        conf = conf / np.maximum(area, 1)
    score = area * centre * conf
    score[0] = 0.0
    return score


def _disk(radius: float) -> np.ndarray:
    r = max(1, int(round(radius)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def split_pieces(mask: np.ndarray, params: MainCarParams = MainCarParams()) -> tuple[int, np.ndarray]:
    """(count, labels): the regions of `mask`, each cut into its thick pieces where a narrow neck joins them
    (a car behind the main one, overlapping it): an opening with a disk of `split` x sqrt(region area) finds the
    pieces (at least `split_min` of the region's area each), every pixel of the region goes to the nearest."""
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    out = labels.copy()
    next_label = count
    for region in range(1, count):
        inside = labels == region
        area = int(np.count_nonzero(inside))
        radius = params.split * np.sqrt(area)
        if radius < 2:
            continue
        opened = cv2.morphologyEx(inside.astype(np.uint8), cv2.MORPH_OPEN, _disk(radius))
        n, pieces, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
        big = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= params.split_min * area]
        if len(big) < 2:
            continue
        seeds = np.zeros(mask.shape, np.uint8)
        for i in big:
            seeds[pieces == i] = 1
        # nearest seed piece for every pixel (labels of the zero pixels of the inverted seed mask)
        _, nearest = cv2.distanceTransformWithLabels(1 - seeds, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
        seed_ids = np.zeros(int(nearest.max()) + 1, np.int32)
        seed_ids[nearest[seeds > 0]] = pieces[seeds > 0]
        owner = seed_ids[nearest]
        for j, i in enumerate(big):
            out[inside & (owner == i)] = region if j == 0 else next_label + j - 1
        next_label += len(big) - 1
    return next_label, out


def select_main(mask: np.ndarray, prob: np.ndarray | None = None,
                params: MainCarParams = MainCarParams()) -> np.ndarray:
    """The main car's region of boolean `mask`, with the regions attached to it or as prominent as it.

    `prob` (same shape, [0,1]) is the model's confidence; without it every region counts as sure.
    """
    if params.split:
        count, labels = split_pieces(mask, params)
        area = np.bincount(labels.ravel(), minlength=count)
        ys, xs = np.indices(labels.shape)
        centroids = np.stack([np.bincount(labels.ravel(), weights=c.ravel(), minlength=count) / np.maximum(area, 1)
                              for c in (xs, ys)], axis=1)
        # the connected region each piece was cut from
        regions_count, regions = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        region_of = np.zeros(count, np.int64)
        region_of[labels.ravel()] = regions.ravel()
        region_area = np.bincount(regions.ravel(), minlength=regions_count)
    else:
        count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        area = stats[:, cv2.CC_STAT_AREA]
        regions_count, regions, region_of, region_area = count, labels, np.arange(count), area
    if count <= 2:
        return mask.astype(bool)
    score = region_scores(labels, area, centroids, prob, params)
    chosen = score >= params.share * score.max()
    chosen[0] = False
    # attach regions within `gap` of a chosen piece, until nothing more attaches; a piece cut off a region that
    # already holds a chosen piece touches it by construction, so it stays only on its own score
    radius = max(1, round(params.gap * float(np.hypot(*mask.shape))))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    attach_limit = params.attach_max * float(area[int(np.argmax(score))])
    while True:
        near = cv2.dilate(chosen[labels].astype(np.uint8), disk) > 0
        touched = np.zeros(regions_count, bool)
        touched[np.unique(regions[near & (regions > 0)])] = True
        touched[np.unique(region_of[chosen])] = False
        touched[0] = False
        touched &= region_area <= attach_limit
        if not touched.any():
            break
        chosen |= touched[region_of]
        chosen[0] = False
    return chosen[labels]
