"""`kind="car"`: keep the car(s) and only the car(s) from a general saliency matte.

A general model also keeps other salient things: the Carvana backdrop's logo letters, parts of a turntable, signs.
Shape and confidence separate them without extra weights:

1. Opening the hard mask with a disk of radius `r` (a fraction of the image diagonal) keeps thick bodies (cars,
   however many) and removes thin strokes (letters, poles, wires). Every opened component at least `keep_frac`
   of the largest is a seed; anything not connected to a seed goes (detached letters, specks).
2. What the opening removed is put back piece by piece when it stays within `reach * r` of a seed (mirrors,
   antennas, sharp corners); a piece reaching further is a foreign object leaning on the car and goes, together
   with the rounded stub the opening left where it touched the car.
3. A low-confidence region hanging off the car that is mostly bordered by background, not by confident car,
   goes too (a turntable edge or floor the model half-believed), unless it is large against the confident car
   (then it is more likely car the model doubted: half of it for a region low down where floor could be, a
   seventh for one whose middle lies above the car's, which cannot be floor); glass inside the car stays.

All of this runs on a copy of the matte at `work_size` pixels on the long side, so it costs ~20 ms.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from models import main_car
from models.downscale import downscale


@dataclass(frozen=True)
class CarParams:
    """Knobs of the car-only filter; lengths are fractions of the working image's diagonal."""

    work_size: int = 512
    threshold: float = 0.5
    r_frac: float = 0.014
    keep_frac: float = 0.02
    band_frac: float = 0.0025
    reach: float = 2.0
    stub: float = 2.0
    core_conf: float = 0.98
    enclosure: float = 0.45
    unsure_max: float = 0.5
    unsure_max_high: float = 0.15
    main: main_car.MainCarParams | None = main_car.MainCarParams()


def _disk(radius: float) -> np.ndarray:
    r = max(1, int(round(radius)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def fuse_passes(prob: np.ndarray, mirrored: np.ndarray, missed_frac: float = 0.003,
                work_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """(matte, confidence) of two model passes (the photo and its mirror image, flipped back).

    Where one pass misses a part of the car that the other finds (a wrapped door, a spoiler: a region at least
    2 x `missed_frac` of the diagonal thick), the matte takes the larger probability; elsewhere their mean. A plain
    per-pixel maximum also takes the wider of the two edges everywhere, which fattens the outline (and keeps a floor
    patch only one pass believes). Confidence is their minimum. The missed parts are found at `work_size` pixels
    on the long side (a few ms). `prob` is overwritten.
    """
    confidence = np.minimum(prob, mirrored)
    high = np.maximum(prob, mirrored)
    height, width = prob.shape
    missed = ((high > 0.5) & (confidence <= 0.5)).view(np.uint8)
    # the opening drops what the nearest-neighbour downscale aliases
    missed, scale = downscale(missed, work_size, cv2.INTER_NEAREST)
    radius = missed_frac * float(np.hypot(*missed.shape))
    alpha = prob
    alpha += mirrored
    alpha *= np.float32(0.5)
    if missed.any() and radius >= 1:
        thick = cv2.morphologyEx(missed, cv2.MORPH_OPEN, _disk(radius))
        if thick.any():
            thick = cv2.dilate(thick, _disk(2 if scale == 1 else 1))  # with the soft rim around the part
            if scale < 1:
                thick = cv2.resize(thick, (width, height), interpolation=cv2.INTER_NEAREST)
            np.copyto(alpha, high, where=thick > 0)
    return alpha, confidence


def car_keep_mask(prob: np.ndarray, params: CarParams = CarParams(),
                  confidence: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask (same shape as `prob`) of the pixels that belong to cars; `prob` is a [0,1] matte.

    `confidence` (same shape, default `prob`) decides what counts as confident car in step 3; with two model passes
    it is their minimum, so a region only one pass believes is judged like one the model half-believed.
    """
    p = params
    height, width = prob.shape
    diag = float(np.hypot(height, width))
    r = p.r_frac * diag
    band = max(1, round(p.band_frac * diag))
    hard = prob > p.threshold
    hard_u8 = hard.astype(np.uint8)

    opened = cv2.morphologyEx(hard_u8, cv2.MORPH_OPEN, _disk(r))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    if n <= 1:  # nothing thick enough to be a car: leave the matte alone rather than erase it
        return hard
    areas = stats[1:, cv2.CC_STAT_AREA]
    is_seed = np.zeros(n, bool)
    is_seed[1:] = areas >= p.keep_frac * areas.max()
    seeds = (cv2.dilate(is_seed[labels].astype(np.uint8), _disk(band)) > 0) & hard

    # 2. pieces the opening removed: back if they stay near a seed, gone (with their stub) if they reach far
    rest = hard & ~seeds
    keep = seeds
    n_rest, rest_labels = cv2.connectedComponents(rest.astype(np.uint8), connectivity=8)
    if n_rest > 1:
        dist = cv2.distanceTransform((~seeds).astype(np.uint8), cv2.DIST_L2, 5)
        touches = np.zeros(n_rest, bool)
        touches[np.unique(rest_labels[rest & (dist <= 1.5)])] = True
        near = touches.copy()
        near[np.unique(rest_labels[dist > p.reach * r])] = False
        near[0] = False
        keep = seeds | near[rest_labels]
        leaning = rest & touches[rest_labels] & ~near[rest_labels]
        if p.stub and leaning.any():
            around = cv2.dilate(leaning.astype(np.uint8), _disk(p.stub * r)) > 0
            smooth = cv2.morphologyEx(keep.astype(np.uint8), cv2.MORPH_OPEN, _disk(p.stub * r)) > 0
            keep &= ~(around & ~smooth)

    # 3. low-confidence regions bordered mostly by background rather than by confident car
    sure = prob if confidence is None else confidence
    core = cv2.dilate(((sure > p.core_conf) & keep).astype(np.uint8), _disk(band)) > 0
    unsure = (keep & ~core).astype(np.uint8)
    n_unsure, unsure_labels, unsure_stats, centroids = cv2.connectedComponentsWithStats(unsure, connectivity=8)
    if n_unsure > 1 and core.any():
        square = np.ones((3, 3), np.uint8)
        ring = (cv2.dilate(unsure, square) > 0) & (unsure == 0)
        owner = cv2.dilate(unsure_labels.astype(np.float32), square).astype(np.int32)
        ring &= owner > 0
        by_core = np.bincount(owner[ring & core], minlength=n_unsure)
        by_background = np.bincount(owner[ring & ~keep], minlength=n_unsure)
        enclosed = by_core / np.maximum(by_core + by_background, 1)
        area = unsure_stats[:, cv2.CC_STAT_AREA]
        # A region as large as a good part of the car is more likely car the model doubted than floor; one whose
        # middle lies above the confident car's cannot be floor at all, so a smaller share of the car suffices.
        moments = cv2.moments(core.astype(np.uint8), binaryImage=True)
        core_middle = moments["m01"] / moments["m00"]
        share = np.where(centroids[:, 1] > core_middle, p.unsure_max, p.unsure_max_high)
        drop = (enclosed < p.enclosure) & (area >= r * r) & (area <= share * np.count_nonzero(core))
        drop[0] = False
        keep &= ~drop[unsure_labels]
    return keep


def keep_cars(alpha: np.ndarray, params: CarParams = CarParams(), confidence: np.ndarray | None = None) -> np.ndarray:
    """`alpha` (float32 HxW in [0,1]) with everything that is not a car set to 0 (`confidence`: see car_keep_mask)."""
    height, width = alpha.shape
    small, _ = downscale(alpha, params.work_size)
    sure = None if confidence is None else downscale(confidence, params.work_size)[0]
    keep = car_keep_mask(small, params, sure)
    if params.main is not None:  # a lot photo: the main car and what is attached to it (models/main_car.py)
        keep = main_car.select_main(keep, small, params.main)
    # let kept regions spill one pixel into background so their soft edges survive the upscale
    hard = small > params.threshold
    keep = keep | ((cv2.dilate(keep.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0) & ~hard)
    if keep.all():
        return alpha
    keep_full = cv2.resize(keep.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return alpha * keep_full
