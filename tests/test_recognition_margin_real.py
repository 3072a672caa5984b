"""The embedding margin with the real Lite0 weights (loaded and sha256-checked by car_embedding.CarEmbedder) on real
same-model photos of the shared data, small: a blue Ford Fusion's stock also holds a grey one (the same model in
another colour) and the two black Audi Q3 twins; SIFT matching, margins and the score all through the engine code
the server and scripts/eval_recognition.py call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.recognition import decide, margin
from models.recognition.car_embedding import DIM, CarEmbedder, from_blob, to_blob
from models.recognition.features import Features, extract
from models.recognition.index import FeatureIndex, GlobalIndex
from models.recognition.matcher import CAR_INLIER_MIDPOINT, MIN_MATCHES
from models.recognition.search import search
from tests.helpers import MODELS_DIR, car_photo

pytestmark = pytest.mark.slow  # the real Lite0 weights

FUSIONS = ("125cadcb9feb", "4dc8a7fe7c02")  # blue and grey Ford Fusion
TWINS = ("de3ca5ec1e59", "feaf59172a01")  # black Audi Q3 x 2 (eval_recognition.TWINS)
# other models of the 12 development cars, so that a car has others of a colour the colour check accepts
OTHERS = ("0ce66b539f52", "0d3adbbc9a8b", "0ed6904e1004", "2c57132da7a0", "3bca821c8c41", "c53e374fdd72",
          "c9acf5847ef1", "d0dab700c896", "d1a3af34e674", "fdc2c87853ce", "fecea3036c59")
SIDE = 800  # the features' own working size (recognition.max_side), where the inlier midpoint was calibrated
SCORE = decide.CAR_ACCEPTANCE  # the car score, with its margin term


def _photo(shared_data: Path, car: str, angle: int) -> tuple[np.ndarray, np.ndarray]:
    """A car photo (RGB) and its ground-truth mask at SIDE px wide (tests.helpers.car_photo)."""
    rgb, mask = car_photo(shared_data, car, angle, SIDE)
    return rgb, mask > 127


@pytest.fixture(scope="module")
def embedder() -> CarEmbedder:
    model = CarEmbedder(MODELS_DIR)
    model.load()
    return model


class Stock:
    """A car collection as the server keeps one: features, car vectors as stored (float16), their index."""

    def __init__(self, shared_data: Path, embedder: CarEmbedder, cars: tuple[str, ...], angles=(1, 3)) -> None:  # type: ignore[no-untyped-def]
        self.refs: dict[int, Features] = {}
        self.owner: dict[int, str] = {}
        self.vecs: dict[int, np.ndarray] = {}
        for car in cars:
            for a in angles:
                rgb, mask = _photo(shared_data, car, a)
                i = len(self.refs) + 1
                self.refs[i], self.owner[i] = extract(rgb, mask), car
                self.vecs[i] = from_blob(to_blob(embedder.embed(rgb, mask)))
        self.index = FeatureIndex.build((i, f.descriptors) for i, f in self.refs.items())
        self.cars = GlobalIndex.build(DIM, self.vecs.items(), fp16=True)

    def scan(self, query: Features, vec: np.ndarray, lookalikes: dict[str, set[str]] | None = None,
             use_margin: bool = True) -> tuple[list[decide.Candidate], dict[str, float]]:
        matches = search(self.index, query, lambda ids: {i: self.refs[i] for i in ids}, use_colour=True,
                         midpoint=CAR_INLIER_MIDPOINT)
        fitted = {self.owner[m.image_id] for m in matches if m.inliers >= MIN_MATCHES}
        near, complete = self.cars.nearest(vec, margin.NEIGHBOURS)
        neighbours = [margin.Neighbour(self.owner[i], s, self.refs[i].body) for i, s in near]
        own = lambda o: np.stack([v for i, v in self.vecs.items() if self.owner[i] == o])  # noqa: E731
        got = margin.margins(vec, fitted, own, neighbours, lookalikes, query.body, complete) if use_margin else {}
        return decide.per_object(matches, self.owner, CAR_INLIER_MIDPOINT, True, SCORE, got), got


def test_the_real_embedding_loads_checked_and_gives_unit_float16_vectors(embedder, shared_data) -> None:  # type: ignore[no-untyped-def]
    rgb, mask = _photo(shared_data, FUSIONS[0], 2)
    v = embedder.embed(rgb, mask)
    assert v.shape == (DIM,) and v.dtype == np.float32 and abs(float(np.linalg.norm(v)) - 1.0) < 1e-5
    assert len(to_blob(v)) == 2 * DIM  # 640 bytes a reference
    assert float(from_blob(to_blob(v)) @ v) > 0.9999
    assert embedder.embed(rgb, np.zeros_like(mask)) is None  # no car, no vector
    assert embedder.model_id.startswith("lite0-car320:")


def test_a_same_model_unit_in_another_colour_does_not_make_the_right_car_rejected(embedder, shared_data) -> None:  # type: ignore[no-untyped-def]
    stock = Stock(shared_data, embedder, FUSIONS + OTHERS)
    rgb, mask = _photo(shared_data, FUSIONS[0], 2)
    query = extract(rgb, mask)
    vec = embedder.embed(rgb, mask)
    own = max(float(v @ vec) for i, v in stock.vecs.items() if stock.owner[i] == FUSIONS[0])
    grey = max(float(v @ vec) for i, v in stock.vecs.items() if stock.owner[i] == FUSIONS[1])
    # the grey Fusion is about as near to the blue one's photo in the embedding as the blue one itself: taken as the
    # "other car", it would pull the right car's margin to about 0
    assert own - grey < 0.05
    grey_body = next(f.body for i, f in stock.refs.items() if stock.owner[i] == FUSIONS[1])
    assert margin.colour_refused(query.body, grey_body)
    cands, got = stock.scan(query, vec)
    assert cands[0].object_id == FUSIONS[0] and cands[0].score >= 0.5, [(c.object_id, c.score) for c in cands]
    assert [c.object_id for c in decide.twins(cands, 0.5)] == [FUSIONS[0]]
    # the colour check refuses the grey one, so the margin (when another car of a compatible colour is in stock;
    # else none, and the inliers' score) is taken against another car
    assert got.get(FUSIONS[0], margin.CLIP_HIGH) > own - grey


def test_twins_are_left_out_of_each_others_margin_and_still_answered_together(embedder, shared_data) -> None:  # type: ignore[no-untyped-def]
    stock = Stock(shared_data, embedder, TWINS + OTHERS)
    twins = {TWINS[0]: {TWINS[1]}, TWINS[1]: {TWINS[0]}}
    together = 0
    for angle in (2, 4, 6):
        rgb, mask = _photo(shared_data, TWINS[0], angle)
        query, vec = extract(rgb, mask), embedder.embed(rgb, mask)
        plain, _ = stock.scan(query, vec, use_margin=False)
        blind, without = stock.scan(query, vec)  # look-alikes not known: the twin is another car
        cands, got = stock.scan(query, vec, twins)
        if TWINS[0] in without:  # knowing the twin, the right Q3 is compared with the other models only
            assert got.get(TWINS[0], margin.CLIP_HIGH) >= without[TWINS[0]]  # none: no other car of its colour
        answer = [c.object_id for c in decide.twins(cands, 0.5)]
        before = [c.object_id for c in decide.twins(plain, 0.5)]
        assert set(answer) <= set(TWINS) and answer != [TWINS[1]], answer  # never the other twin alone
        if sorted(before) == sorted(TWINS):  # the margin never splits twins the inliers answered together
            assert sorted(answer) == sorted(TWINS)
            together += 1
    assert together >= 1
