"""Colour is identity: the body colour at matched keypoints, with the light discounted, on real Carvana photos
(ground-truth car masks, no model weights).

The same car under other light (white balance, exposure, gamma) keeps its score; the same car in other paint (grey
to blue-grey, white to red, black to dark blue, made by repainting the body in the photo, so that the geometry
fits perfectly) and real units of one model in another colour (a blue and a grey Ford Fusion, a silver and a black
Audi A3 from the shared data) score below min_score however many inliers they have."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.recognition import colour, decide, extract, verify
from models.recognition.matcher import CAR_INLIER_MIDPOINT, score_from_inliers
from tests.helpers import car_photo

SIDE = 900  # small copies keep the test quick; features are taken at 800 px anyway


def _photo(shared_data: Path, car: str, angle: int) -> tuple[np.ndarray, np.ndarray]:
    """A car photo (RGB) and its ground-truth mask at SIDE px wide (tests.helpers.car_photo)."""
    rgb, mask = car_photo(shared_data, car, angle, SIDE)
    return rgb, mask > 0


def _relight(rgb: np.ndarray, gains: tuple[float, float, float], gamma: float = 1.0) -> np.ndarray:
    lin = (rgb.astype(np.float32) / 255.0) ** 2.2 * np.array(gains, np.float32)
    return np.clip(np.clip(lin, 0, 1) ** (1 / (2.2 * gamma)) * 255 + 0.5, 0, 255).astype(np.uint8)


def _repaint(rgb: np.ndarray, mask: np.ndarray, paint: tuple[float, float, float],
             lightness: float = 1.0) -> np.ndarray:
    """The car's body in another paint: every car pixel that is not near-black keeps its luminance (times
    `lightness`) but takes the paint's chromaticity (linear RGB)."""
    lin = (rgb.astype(np.float32) / 255.0) ** 2.2
    lum = lin @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    p = np.array(paint, np.float32)
    p = p / float(p @ np.array([0.2126, 0.7152, 0.0722], np.float32))
    body = mask & (lum > 0.01)
    out = lin.copy()
    out[body] = np.clip(lum[body, None] * lightness * p, 0, 1)
    return np.clip(out ** (1 / 2.2) * 255 + 0.5, 0, 255).astype(np.uint8)


def _score(query_rgb: np.ndarray, query_mask: np.ndarray, ref_rgb: np.ndarray, ref_mask: np.ndarray):
    m = verify(extract(query_rgb, query_mask), extract(ref_rgb, ref_mask), midpoint=CAR_INLIER_MIDPOINT)
    return m, decide.evidence_score(m, CAR_INLIER_MIDPOINT)


@pytest.mark.parametrize("gains, gamma", [
    ((1.25, 1.0, 0.75), 1.0),  # warm light (tungsten-ish white balance)
    ((0.8, 1.0, 1.25), 1.0),  # cool light (shade)
    ((0.55, 0.55, 0.55), 1.0),  # a stop darker
    ((1.3, 1.3, 1.3), 1.1),  # brighter, another tone curve
    ((1.15, 1.0, 0.8), 0.9),  # warm and flatter
])
def test_the_same_car_under_other_light_keeps_its_score(shared_data: Path, gains, gamma) -> None:
    ref_rgb, ref_mask = _photo(shared_data, "0ce66b539f52", 1)
    q_rgb, q_mask = _photo(shared_data, "0ce66b539f52", 2)
    plain, plain_score = _score(q_rgb, q_mask, ref_rgb, ref_mask)
    assert plain.inliers >= 30 and plain_score > 0.95
    m, score = _score(_relight(q_rgb, gains, gamma), q_mask, ref_rgb, ref_mask)
    assert m.body is not None and m.body <= decide.COLOUR_LIMIT, m.body
    assert score == pytest.approx(score_from_inliers(m.inliers, CAR_INLIER_MIDPOINT))  # colour cost nothing
    assert score > 0.9, (m.inliers, m.body)


@pytest.mark.parametrize("car, paint, lightness, what", [
    ("0ce66b539f52", (0.7, 0.88, 1.5), 1.0, "silver-grey to blue-grey"),
    ("3bca821c8c41", (1.0, 0.12, 0.1), 0.45, "white to red"),
    ("c53e374fdd72", (0.2, 0.35, 1.0), 1.6, "black to dark blue"),
])
def test_the_same_car_in_other_paint_is_another_object(shared_data: Path, car, paint, lightness, what) -> None:
    ref_rgb, ref_mask = _photo(shared_data, car, 1)
    q_rgb, q_mask = _photo(shared_data, car, 2)
    m, score = _score(_repaint(q_rgb, q_mask, paint, lightness), q_mask, ref_rgb, ref_mask)
    assert m.inliers >= 25, what  # the geometry fits: only colour can tell
    assert m.body is not None and m.body > decide.COLOUR_LIMIT, (what, m.body)
    assert score < 0.5, (what, m.inliers, m.body)


@pytest.mark.parametrize("a, b, what", [
    ("125cadcb9feb", "4dc8a7fe7c02", "blue and grey Ford Fusion"),
    ("9dfaeb835626", "c53e374fdd72", "silver and black Audi A3"),
])
def test_real_units_of_one_model_in_other_colours_do_not_match(shared_data: Path, a, b, what) -> None:
    """The two cars at the same angle: the geometry fits as well as a true match does, the colour does not."""
    for angle in (3, 7):
        qa, ma = _photo(shared_data, a, angle)
        qb, mb = _photo(shared_data, b, angle)
        m, score = _score(qa, ma, qb, mb)
        assert m.inliers >= 17, (what, angle, m.inliers)  # enough to pass min_score on inliers alone
        assert score < 0.5, (what, angle, m.inliers, m.body)


def test_illuminant_cancels_a_global_white_balance_and_exposure(shared_data: Path) -> None:
    rgb, mask = _photo(shared_data, "c53e374fdd72", 4)
    pts = np.argwhere(mask)[:: max(1, int(mask.sum()) // 300)][:, ::-1].astype(np.float32)
    base = colour.chroma(colour.keypoint_colours(rgb, pts, mask), colour.illuminant(rgb))
    moved = _relight(rgb, (0.7, 0.85, 1.1))
    after = colour.chroma(colour.keypoint_colours(moved, pts, mask), colour.illuminant(moved))
    assert colour.distance(base, after) < 0.1
    body, moved_body = colour.signature(rgb, mask, colour.illuminant(rgb)), colour.signature(
        moved, mask, colour.illuminant(moved))
    assert colour.distance(body[None], moved_body[None], 1.0) < 0.1


def test_a_match_takes_the_body_colour_of_its_own_part_of_a_merged_car_mask() -> None:
    # a lot photo's car mask holding a white car (left) merged with a red one (right): a match on the white car
    # takes the white body colour; a match covering most of the mask keeps the whole mask's
    rgb = np.zeros((200, 400, 3), np.uint8)
    rgb[:, :200] = (235, 235, 230)
    rgb[:, 200:] = (200, 30, 30)
    mask = np.ones((200, 400), bool)
    light = np.ones(3, np.float32)
    points, paint = colour.paint_pixels(rgb, mask, light)
    white = colour.body_of(colour.chroma(np.array([[235, 235, 230]]), light))
    part = colour.body_within(points, paint, [[10, 10], [150, 10], [150, 190], [10, 190]])
    assert part is not None and np.linalg.norm(part[:2] - white[:2]) < 0.05
    assert colour.body_within(points, paint, [[0, 0], [400, 0], [400, 200], [0, 200]]) is None
