"""The segmentation eval's lot photos (scripts/lot_composites.py): the other car is pasted cut out along its outline
(the convex hull of its parts in distractors/parts.json), never as the street photo's rectangle; the composites are
the same on every run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("lot_composites", REPO / "scripts" / "lot_composites.py")
lot_composites = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lot_composites)


def test_every_distractor_photo_has_a_car_outline(shared_data: Path) -> None:
    outlines = lot_composites.car_outlines(shared_data)
    photos = sorted(p.name for p in (shared_data / "distractors").glob("*.jpg"))
    assert sorted(outlines) == photos
    shares = [mask.mean() for mask in outlines.values()]
    assert 0.05 < min(shares) and max(shares) < 0.95  # a car, not the whole frame


def test_the_other_car_is_cut_out_along_its_outline(shared_data: Path) -> None:
    name = "car4.jpg"
    street = np.asarray(Image.open(shared_data / "distractors" / name).convert("RGB"))
    outline = lot_composites.car_outlines(shared_data)[name]
    car = np.asarray(Image.open(shared_data / "carvana" / "images" / "0ce66b539f52_05.jpg").convert("RGB"))
    car_mask = np.asarray(Image.open(shared_data / "carvana" / "masks" / "0ce66b539f52_05_mask.gif")) > 0
    made = {}
    for label, street_car in (("rectangle", None), ("cut out", outline), ("none", np.zeros_like(outline))):
        rgb, _ = lot_composites.composite(car, car_mask, street, np.random.default_rng(3), cut=False,
                                          street_car=street_car)
        made[label] = rgb.astype(np.int16)
    rectangle = np.abs(made["rectangle"] - made["none"]).max(axis=2) > 0  # where the street photo's rectangle is
    assert rectangle.mean() > 0.05
    same_as_rectangle = (np.abs(made["cut out"] - made["rectangle"]).max(axis=2) <= 1) & rectangle
    same_as_none = (np.abs(made["cut out"] - made["none"]).max(axis=2) <= 1) & rectangle
    # inside the rectangle, the cut-out composite shows the other car on part and the blurred street on the rest
    assert 0.1 < same_as_rectangle.sum() / rectangle.sum() < 0.9
    assert 0.1 < same_as_none.sum() / rectangle.sum() < 0.9


def test_the_composites_are_the_same_on_every_run(shared_data: Path) -> None:
    first = list(lot_composites.composites(shared_data, count=2))
    again = list(lot_composites.composites(shared_data, count=2))
    assert [n for n, _, _ in first] == [n for n, _, _ in again]
    assert all((a[1] == b[1]).all() and (a[2] == b[2]).all() for a, b in zip(first, again, strict=True))
