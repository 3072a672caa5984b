"""The car-only filter on drawn mattes: letters and leaning objects go, cars (all of them) and their mirrors stay.

The same filter on a real Carvana photo is in test_models_segmenter.py.
"""

from __future__ import annotations

import cv2
import numpy as np

from models.car import car_keep_mask, fuse_passes, keep_cars

H, W = 640, 960


def car(canvas: np.ndarray, x: int, y: int, w: int, h: int) -> None:
    """A car-ish silhouette: body, cabin, two wheels, a mirror."""
    cv2.rectangle(canvas, (x, y + h // 3), (x + w, y + h - h // 6), 1.0, -1)
    cv2.ellipse(canvas, (x + w // 2, y + h // 3), (w // 3, h // 3), 0, 180, 360, 1.0, -1)
    for cx in (x + w // 5, x + 4 * w // 5):
        cv2.circle(canvas, (cx, y + h - h // 6), h // 6, 1.0, -1)
    cv2.rectangle(canvas, (x + w // 6 - w // 25, y + h // 4), (x + w // 6, y + h // 3), 1.0, -1)  # mirror


def letters(canvas: np.ndarray, x: int, y: int, height: int, count: int, stroke: int) -> None:
    """Backdrop lettering: V shapes with thick strokes."""
    for i in range(count):
        left = x + i * height
        cv2.line(canvas, (left, y), (left + height // 3, y + height), 1.0, stroke)
        cv2.line(canvas, (left + height // 3, y + height), (left + 2 * height // 3, y), 1.0, stroke)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_detached_and_leaning_letters_are_removed_and_the_car_kept() -> None:
    truth = np.zeros((H, W), np.float32)
    car(truth, 200, 260, 560, 300)
    matte = truth.copy()
    letters(matte, 20, 130, 150, 6, 26)  # the middle letters reach down onto the roof
    keep = car_keep_mask(matte)
    car_px = truth > 0.5
    assert iou(keep & (matte > 0.5), car_px) > 0.97
    letter_px = (matte > 0.5) & ~car_px
    assert (keep & letter_px).sum() < 0.03 * letter_px.sum()
    # the mirror (thin, close to the body) survives
    mirror = np.zeros_like(car_px)
    mirror[260 + 300 // 4:260 + 300 // 3, 200 + 560 // 6 - 560 // 25:200 + 560 // 6] = True
    assert keep[mirror].mean() > 0.9


def test_several_cars_of_different_sizes_are_all_kept() -> None:
    truth = np.zeros((H, W), np.float32)
    car(truth, 40, 300, 480, 260)
    car(truth, 600, 380, 240, 130)
    car(truth, 860, 440, 80, 45)  # far away, small but solid
    keep = car_keep_mask(truth)
    assert iou(keep, truth > 0.5) > 0.97


def test_a_low_confidence_floor_region_hanging_off_the_car_is_removed_but_glass_inside_is_kept() -> None:
    truth = np.zeros((H, W), np.float32)
    car(truth, 200, 200, 480, 260)
    matte = truth.copy()
    matte[260:300, 330:560] = 0.7                                   # windows: half-believed, inside the car
    floor = np.zeros_like(matte)
    cv2.ellipse(floor, (800, 420), (160, 60), 0, 0, 360, 0.75, -1)  # half-believed floor touching the rear
    matte = np.maximum(matte, floor * (truth == 0))
    keep = car_keep_mask(matte)
    assert keep[260:300, 330:560].mean() > 0.99
    floor_px = (floor > 0) & (truth == 0)
    assert keep[floor_px].mean() < 0.05
    assert iou(keep & (matte > 0.5), truth > 0.5) > 0.97


def test_a_large_doubted_upper_body_stays_while_an_equally_large_floor_patch_goes() -> None:
    """A white car on a pale backdrop: the model half-believes the whole cabin and upper body (about a quarter of
    the car, bordered mostly by background). Above the confident car's middle it cannot be floor, so it stays."""
    truth = np.zeros((H, W), np.float32)
    car(truth, 200, 200, 480, 260)
    matte = truth.copy()
    upper = np.zeros_like(matte, dtype=bool)
    upper[:300] = truth[:300] > 0.5
    matte[upper] = 0.75
    keep = car_keep_mask(matte)
    assert keep[upper].mean() > 0.95
    assert iou(keep & (matte > 0.5), truth > 0.5) > 0.97
    # the same share of the car as a half-believed patch of floor under it still goes
    floor = np.zeros_like(matte)
    cv2.ellipse(floor, (440, 470), (260, 45), 0, 0, 360, 0.75, -1)
    floored = np.maximum(truth, floor * (truth == 0))
    floor_px = (floor > 0) & (truth == 0)
    assert floor_px.sum() > 0.15 * (truth > 0.5).sum()
    assert car_keep_mask(floored)[floor_px].mean() < 0.05


def test_keep_cars_returns_the_matte_at_full_size_with_soft_edges_intact() -> None:
    truth = np.zeros((1280, 1918), np.float32)
    car(truth, 400, 500, 1100, 600)
    soft = cv2.GaussianBlur(truth, (0, 0), 2.0)
    letters(soft, 60, 80, 300, 6, 50)
    out = keep_cars(soft)
    assert out.shape == soft.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    edge = (truth > 0) & (soft > 0.05) & (soft < 0.95)
    assert np.abs(out[edge] - soft[edge]).max() < 0.35
    assert np.abs(out[edge] - soft[edge]).mean() < 0.02
    assert out[:350].max() < 0.5, "the lettering above the car is gone"


def test_an_empty_matte_stays_empty_and_a_speck_only_matte_is_left_alone() -> None:
    assert not car_keep_mask(np.zeros((200, 300), np.float32)).any()
    specks = np.zeros((200, 300), np.float32)
    specks[50:53, 50:53] = 1.0
    assert car_keep_mask(specks).sum() == 9


def test_a_floor_patch_only_one_pass_believes_is_judged_by_the_passes_agreement() -> None:
    truth = np.zeros((H, W), np.float32)
    car(truth, 200, 260, 480, 260)
    fused = truth.copy()
    floor = np.zeros_like(fused)
    cv2.rectangle(floor, (600, 470), (900, 600), 1.0, -1)  # floor beside the front wheel, touching the car
    floor[truth > 0.5] = 0
    fused[floor > 0] = 0.99  # the max of two passes: one of them was sure of the floor
    agree = np.where(floor > 0, 0.45, fused).astype(np.float32)  # the other pass only half believed it
    car_px, floor_px = truth > 0.5, floor > 0
    assert car_keep_mask(fused)[floor_px].mean() > 0.9, "one pass alone cannot tell the floor from the car"
    keep = car_keep_mask(fused, confidence=agree)
    assert keep[floor_px].mean() < 0.05 and iou(keep, car_px) > 0.97
    # keep_cars takes the same confidence at full size
    alpha = keep_cars(fused, confidence=agree)
    assert (alpha[floor_px] > 0.5).mean() < 0.05 and (alpha[car_px] > 0.5).mean() > 0.97


def test_fuse_passes_takes_a_part_one_pass_missed_whole_and_the_mean_along_the_edges() -> None:
    """Two passes that disagree by a pixel along the outline and on a whole door: the door comes back at full
    strength, the outline is the passes' mean (not the wider of the two), confidence is their minimum."""
    truth = np.zeros((H, W), np.float32)
    car(truth, 200, 260, 560, 300)
    one = cv2.GaussianBlur(truth, (0, 0), 1.5)
    shifted = np.roll(one, 2, axis=1)  # the other pass's edge two pixels to the right
    door = np.zeros_like(truth, dtype=bool)
    door[300:360, 330:450] = True
    missing = shifted.copy()
    missing[door] = 0.05  # the other pass misses the door
    alpha, confidence = fuse_passes(one.copy(), missing)
    assert np.allclose(confidence, np.minimum(one, missing))
    inside = np.zeros_like(door)
    inside[304:356, 334:446] = True  # the door but its outermost pixels (found at the working size)
    assert (alpha[inside] >= np.maximum(one, missing)[inside] - 1e-6).all(), "the missed door is taken whole"
    rim = (np.abs(one - shifted) > 0.05) & ~(cv2.dilate(door.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0)
    assert np.allclose(alpha[rim], ((one + shifted) / 2)[rim], atol=1e-6), "the outline is the mean"
    assert ((alpha >= 0.5).sum() - (truth >= 0.5).sum()) < ((np.maximum(one, missing) >= 0.5).sum()
                                                            - (truth >= 0.5).sum())
