"""The embedding margin of each verified object (issue 17, docs/decisions/0001): how much nearer the query's car is
to the object's own references than to any other car of the collection, in the car embedding (car_embedding.py).

margin = (best cosine between the query's car crop and the object's reference crops) - (the best cosine of any
OTHER object of the collection). A chance SIFT fit between two models of one colour usually has another car nearer
to the query than the object it fitted; the right car usually is the nearest one. Left out of the other objects:
the object's own look-alikes (the same model in the same colour, recorded at upload; they stay answered together,
decide.twins) and objects whose body colour the colour check refuses against the query's (a unit of the same model
in another colour is not evidence against the right car). Clipped to [-CLIP, CLIP_HIGH]: a fit nearer to the query
than every other car gains at most CLIP_HIGH (chosen with the weight on halves of the 52 cars, docs/decisions/0001),
so a collection with no near other car (a dealer with one sedan) cannot make a chance fit certain, while a nearer
other car lowers a fit down to -CLIP.

Both the server (server/services/recognition.py) and scripts/eval_recognition.py call `margins`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from models.recognition import colour, decide

CLIP = 0.1  # a margin below -CLIP tells no more (offline, right fits' margins lie in -0.01..+0.1, wrong -0.1..+0.05)
CLIP_HIGH = 0.06  # nor one above CLIP_HIGH: 0.1 let small collections' chance fits through (unknown -0.02..-0.06)
NEIGHBOURS = 64  # the collection's reference images nearest to the query searched for the best other object


@dataclass(frozen=True)
class Neighbour:
    """A reference image near the query in the embedding: its object, the cosine, and its body colour
    (colour.signature, None when unknown)."""

    object_id: str
    similarity: float
    body: np.ndarray | None = None


def colour_refused(query_body: np.ndarray | None, body: np.ndarray | None) -> bool:
    """Whether the colour check refuses this body colour against the query's (decide.COLOUR_LIMIT, whole car)."""
    if query_body is None or body is None:
        return False
    return colour.distance(np.asarray(query_body)[None, :], np.asarray(body)[None, :], 1.0) > decide.COLOUR_LIMIT


def best_other(object_id: str, neighbours: Iterable[Neighbour], lookalikes: Mapping[str, set[str]],
               query_body: np.ndarray | None, complete: bool) -> float | None:
    """The best similarity of another object (nearest first in `neighbours`), skipping the object's look-alikes
    and colour-refused objects. When every neighbour is skipped: None if `neighbours` held the whole collection
    (`complete`: no other car to compare with), else the last (lowest) similarity seen, an upper bound of the
    rest."""
    skip = lookalikes.get(object_id, set())
    last = None
    for n in neighbours:
        last = n.similarity
        if n.object_id == object_id or n.object_id in skip or colour_refused(query_body, n.body):
            continue
        return n.similarity
    return None if complete else last


def margins(query: np.ndarray | None, objects: Iterable[str], own: Callable[[str], np.ndarray],
            neighbours: list[Neighbour], lookalikes: Mapping[str, set[str]] | None = None,
            query_body: np.ndarray | None = None, complete: bool = True) -> dict[str, float]:
    """Each object's margin (see the module), for the objects whose references have embeddings (`own(object)`:
    an (n, d) array of its reference vectors, n = 0 when none) and that have another object to compare with;
    objects without one are left out (their score then has no margin term, decide.evidence_score)."""
    out: dict[str, float] = {}
    if query is None:
        return out
    q = np.asarray(query, np.float32)
    for obj in objects:
        refs = own(obj)
        if not len(refs):
            continue
        other = best_other(obj, neighbours, lookalikes or {}, query_body, complete)
        if other is None:
            continue
        mine = float((np.asarray(refs, np.float32) @ q).max())
        out[obj] = float(np.clip(mine - other, -CLIP, CLIP_HIGH))
    return out
