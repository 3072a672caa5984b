"""scripts/eval_recognition.py's account of a missed lot photo (--lot-misses): which cause comes first."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPTS = Path(__file__).parents[1] / "scripts"


@pytest.fixture()
def script(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.syspath_prepend(str(SCRIPTS))  # the script imports lot_composites from its own folder
    spec = importlib.util.spec_from_file_location("eval_recognition", SCRIPTS / "eval_recognition.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def cause(script):  # type: ignore[no-untyped-def]
    module = script
    args = argparse.Namespace(midpoint=17.0)

    def of(found=False, search_inliers=0, iou=0.95, inliers=30, body=0.2, truth_body=0.2) -> str:
        outcome = SimpleNamespace(found=found, truth="car", inliers={"car": search_inliers})
        return module.lot_miss_cause(outcome, iou, inliers, body, truth_body, args)
    return of


def test_a_lot_miss_is_put_down_to_its_first_cause(cause) -> None:
    assert cause(found=True).startswith("d look-alikes")
    assert cause(iou=0.1, inliers=4, body=1.7).startswith("a mask")
    assert cause(iou=0.5, body=0.75, truth_body=0.3) == "b colour refused: another car in the mask"
    assert cause(iou=0.98, body=0.65, truth_body=0.65) == "b colour refused: the car's colour under the photo's light"
    assert cause(inliers=14, body=0.65).startswith("c too few inliers")
    assert cause(search_inliers=13, inliers=24).startswith("d the shortlist")
    assert cause(search_inliers=30, inliers=30) == "d another car won"


def test_recall_and_twins_count_a_twin_answered_ambiguous_as_issue_17_defines(script) -> None:
    """The rules eval_recognition, fit_recognition_score and embedding_evidence share."""
    a, b = script.TWINS[0]
    assert script.twin_map() == {a: b, b: a}
    assert script.twin_map({a, "other"}) == {}
    assert script.recall_right([a], a, b)
    assert script.recall_right([b, a], a, b)  # the car with its twin, both ambiguous
    assert not script.recall_right([a, "other"], a, b)  # with a look-alike that is not its twin
    assert not script.recall_right([a, b], a, None)
    assert not script.recall_right([], a, b)
    assert script.twin_ok([a], a, b) and script.twin_ok([a, b], a, b)
    assert not script.twin_ok([b], a, b)  # the other twin alone
    assert not script.twin_ok([a, "other"], a, b)
