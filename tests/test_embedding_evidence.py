"""scripts/embedding_evidence.py (the offline study of an embedding's margin as car acceptance evidence,
docs/decisions/0001): its AUC, and its score with the embedding weighted 0 being the inlier score of decide.py."""

from __future__ import annotations

from models.recognition import decide
from models.recognition.matcher import CAR_INLIER_MIDPOINT, Match
from tests.helpers import load_script


def _script():  # type: ignore[no-untyped-def]
    return load_script("embedding_evidence")


def _evidence(image_id: int, inliers: int) -> decide.ObjectEvidence:
    m = Match(image_id, inliers, 1.0, [[0, 0], [10, 0], [10, 10], [0, 10]], body=0.1)
    return decide.object_evidence([m], CAR_INLIER_MIDPOINT, True, decide.INLIERS_ONLY)


def test_auc_counts_ties_as_half() -> None:
    ev = _script()
    assert ev.auc([3, 4], [1, 2]) == 1.0
    assert ev.auc([1], [2]) == 0.0
    assert ev.auc([2], [2]) == 0.5


def test_a_zero_weight_scores_by_inliers_alone_and_the_margin_turns_a_chance_fit_down() -> None:
    ev = _script()
    # a right far fit at 20 inliers whose car is the embedding's nearest, an unknown car's chance fit at 21 inliers
    # whose nearest car is another one
    table = [("far", "a", [("a", _evidence(1, 20), {"margin": 0.05})]),
             ("unknown", "x", [("b", _evidence(2, 21), {"margin": -0.05})])]
    inliers_only = ev.figures(table, "margin", (0.0, 0.0))
    assert inliers_only == {"far": 1.0, "unknown": 0.0}  # both accepted, as decide.py's inlier score does
    assert all(decide.evidence_score(objs[0][1], CAR_INLIER_MIDPOINT) >= 0.5 for _, _, objs in table)
    assert ev.figures(table, "margin", (0.0, 40.0)) == {"far": 1.0, "unknown": 1.0}
    # tuning for unknown rejection >= 0.97 with the most far recall picks a weight on the margin
    assert ev.figures(table, "margin", ev.tune(table, "margin", [0.0, 40.0])) == {"far": 1.0, "unknown": 1.0}
