"""The main-car choice on drawn masks: the car the photo is about stays with what is attached to it; a car further
back, a sign and a person standing apart go; a car cut by the frame is kept whole; cars parked side by side stay.

The same choice on real photos (composites of a Carvana car on a street) is in test_main_car_real.py.
"""

from __future__ import annotations

import cv2
import numpy as np

from models.car import CarParams, keep_cars
from models.main_car import MainCarParams, select_main, split_pieces
from tests.test_models_car import H, W, car


def drawn(*cars: tuple[int, int, int, int]) -> list[np.ndarray]:
    """One boolean mask per car-ish silhouette (x, y, w, h)."""
    out = []
    for box in cars:
        canvas = np.zeros((H, W), np.float32)
        car(canvas, *box)
        out.append(canvas > 0.5)
    return out


def test_the_big_central_car_stays_and_a_car_further_back_a_sign_and_a_person_go() -> None:
    main, far = drawn((220, 260, 520, 300), (20, 120, 160, 90))
    sign = np.zeros((H, W), bool)
    sign[60:150, 800:900] = True  # a sign board (its pole is too thin to be in the car filter's mask)
    person = np.zeros((H, W), bool)
    person[330:600, 880:930] = True
    kept = select_main(main | far | sign | person)
    assert (kept == main).all()


def test_cars_parked_side_by_side_are_all_the_subject() -> None:
    left, right = drawn((30, 250, 420, 240), (500, 270, 400, 220))
    kept = select_main(left | right)
    assert (kept == (left | right)).all()


def test_a_car_cut_by_the_frame_is_kept_whole_up_to_the_edge() -> None:
    (whole,) = drawn((-260, 200, 760, 380))  # a third of it out of the left edge
    (small,) = drawn((640, 300, 180, 100))  # a small complete car near the middle
    kept = select_main(whole | small)
    assert kept[whole].all()
    assert not kept[small].any()


def test_what_touches_the_main_car_stays_with_it() -> None:
    (main,) = drawn((220, 260, 520, 300))
    mirror_piece = np.zeros((H, W), bool)
    mirror_piece[380:400, 746:760] = True  # split off by the filter, 6 px from the body
    kept = select_main(main | mirror_piece)
    assert kept[mirror_piece].all() and kept[main].all()


def test_a_car_carrier_is_one_foreground() -> None:
    truck, load = drawn((60, 360, 840, 240), (200, 180, 420, 200))
    deck = np.zeros((H, W), bool)
    deck[370:390, 60:900] = True
    carrier = truck | load | deck
    kept = select_main(carrier, params=MainCarParams(split=0))
    assert (kept == carrier).all()


def test_a_region_joined_by_a_narrow_neck_is_cut_into_its_pieces() -> None:
    left, right = drawn((40, 240, 420, 240), (560, 240, 360, 220))
    neck = np.zeros((H, W), bool)
    neck[400:412, 440:580] = True
    count, labels = split_pieces(left | right | neck, MainCarParams(split=0.12))
    assert count == 3  # background and two pieces
    assert len(np.unique(labels[left & ~neck])) == 1 and len(np.unique(labels[right & ~neck])) == 1
    assert labels[left & ~neck][0] != labels[right & ~neck][0]


def test_the_model_confidence_decides_between_two_equal_regions() -> None:
    left, right = drawn((40, 250, 400, 240), (520, 250, 400, 240))
    prob = np.where(left, 0.99, np.where(right, 0.3, 0.0)).astype(np.float32)
    kept = select_main(left | right, prob, MainCarParams(share=0.5))
    assert (kept == left).all()


def test_one_region_or_none_is_left_alone() -> None:
    empty = np.zeros((H, W), bool)
    assert not select_main(empty).any()
    (only,) = drawn((300, 300, 200, 100))
    assert (select_main(only) == only).all()


def test_keep_cars_drops_the_car_further_back_and_main_none_keeps_it() -> None:
    main, far = drawn((220, 260, 520, 300), (20, 100, 170, 95))
    matte = cv2.GaussianBlur((main | far).astype(np.float32), (5, 5), 0)
    with_main = keep_cars(matte) > 0.5
    assert not with_main[far].any() and with_main[main].mean() > 0.99
    without = keep_cars(matte, CarParams(main=None)) > 0.5
    assert without[far].mean() > 0.99


def test_a_car_further_back_joined_by_a_neck_goes_when_split_and_stays_when_not() -> None:
    main, far = drawn((300, 260, 520, 300), (20, 330, 200, 110))
    neck = np.zeros((H, W), bool)
    neck[390:400, 215:305] = True  # a thin strip of shadow or kerb the matte joins them by
    joined = main | far | neck
    assert cv2.connectedComponents(joined.astype(np.uint8))[0] == 2
    split = select_main(joined, params=MainCarParams(split=0.05))
    assert split[main].all()
    assert not split[far & ~neck].any()  # cut off at the neck, touching the main car is no reason to keep it
    assert (select_main(joined) == joined).all()  # without the split it is one region


def test_a_car_just_behind_that_touches_the_main_one_goes_and_a_small_piece_that_touches_stays() -> None:
    main, behind = drawn((300, 260, 520, 300), (40, 200, 300, 170))
    behind &= ~cv2.dilate(main.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)  # 4 px apart: within gap
    bumper = np.zeros((H, W), bool)
    bumper[470:500, 826:850] = True  # a piece the filter split off, 6 px from the body
    joined = main | behind | bumper
    assert cv2.connectedComponents(joined.astype(np.uint8))[0] == 4
    kept = select_main(joined)
    assert kept[main].all() and kept[bumper].all()
    assert not kept[behind].any()
    assert (select_main(joined, params=MainCarParams(attach_max=float("inf"))) == joined).all()  # as before
