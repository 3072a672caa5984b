"""scripts/epipolar_evidence.py (the offline study of how much a car fit's epipolar geometry constrains,
docs/decisions/0001): the chance share of a fundamental matrix, its lines' spread, and the decision under a
discounted inlier count."""

from __future__ import annotations

import numpy as np

from models.recognition.matcher import Match
from tests.helpers import load_script

# x_q^T F x_r = 0 for a camera moving sideways: every epipolar line is the reference point's own row
SIDEWAYS = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def _script():  # type: ignore[no-untyped-def]
    return load_script("epipolar_evidence")


def test_a_sideways_fit_passes_every_chance_pairing_on_the_same_row() -> None:
    ev = _script()
    q = np.array([[10, 0], [300, 0], [50, 100], [400, 100]], np.float32)
    r = q + np.array([120, 0], np.float32)  # the same rows, shifted along them
    # of the 12 wrong pairings (i != j), the 4 within a row are inside the band whatever their x
    assert ev.chance_share(SIDEWAYS, q, r, threshold=15.0) == 4 / 12
    assert ev.line_spread(SIDEWAYS, r) == 0.0  # all its lines are parallel
    converging = np.array([[0.0, -1.0, 100.0], [1.0, 0.0, -500.0], [-100.0, 500.0, 0.0]])  # [e]x, e = (500, 100)
    assert ev.line_spread(converging, r) > 10.0


def test_a_discount_on_the_chance_share_turns_a_chance_fit_down_and_no_weight_is_the_inlier_score() -> None:
    ev = _script()
    square = [[0, 0], [10, 0], [10, 10], [0, 10]]
    rows = [("far views", "a", True, [Match(1, 20, 0.9, square, body=0.1)], {1: "a"}),
            ("unknown cars", "x", False, [Match(2, 21, 0.9, square, body=0.1)], {2: "b"})]
    measures = [{1: {"share": 0.08}}, {2: {"share": 0.18}}]
    assert ev.figures(rows, measures, "inliers", (0.0,), 17.0) == {"far": 1.0, "unknown": 0.0}
    # 21 inliers less 100 x (0.18 - 0.12) = 15: under the midpoint; the right fit's share is under p0, no discount
    assert ev.figures(rows, measures, "share past p0", (1.0, 0.12), 17.0) == {"far": 1.0, "unknown": 1.0}
