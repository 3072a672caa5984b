"""The embedding margin (models/recognition/margin.py) in the car score: how much nearer the query's car is to the
matched object's references than to the best OTHER car of the collection, look-alikes and cars of another colour
left out of the others. Units with a fake embedding (hand-made vectors, named fake); the server's plumbing with a
fake embedder; tests/test_recognition_margin_real.py drives the real Lite0 weights on real photos."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.recognition import decide, margin
from models.recognition.index import GlobalIndex
from models.recognition.matcher import CAR_INLIER_MIDPOINT, Match
from server.services import recognition as rec
from server.services import recognition_index as svc_index
from server.store import get_db
from tests.recognition_synth import jpeg, pattern, scene

RED, WHITE = np.array([0.5, -0.6, 0.0], np.float32), np.array([0.0, 0.0, 0.5], np.float32)  # colour.signature-like


def fake_vector(*parts: float) -> np.ndarray:
    """A fake embedding: a unit vector from a few numbers."""
    v = np.array(parts, np.float32)
    return v / np.linalg.norm(v)


def _match(image_id: int, inliers: int, body: float = 0.1) -> Match:
    return Match(image_id, inliers, 1.0, [[0, 0], [100, 0], [100, 100]], body=body)


def test_the_margin_is_the_own_best_minus_the_best_other_object() -> None:
    query = fake_vector(1, 0, 0)
    refs = {"mine": np.stack([fake_vector(1, 0.3, 0), fake_vector(1, 1, 0)]),
            "other": np.stack([fake_vector(1, 0.45, 0)])}
    near = [margin.Neighbour(o, float(refs[o][0] @ query)) for o in ("mine", "other")]
    got = margin.margins(query, ["mine", "other"], lambda o: refs[o], near)
    assert got["mine"] == pytest.approx(float(refs["mine"][0] @ query - refs["other"][0] @ query))
    assert got["other"] == pytest.approx(-got["mine"])  # the chance fit: another car is nearer to the query
    assert got["mine"] > 0 > got["other"]


def test_look_alikes_and_cars_the_colour_check_refuses_are_not_the_other_car() -> None:
    query = fake_vector(1, 0, 0)
    near = [margin.Neighbour("mine", 0.95, RED), margin.Neighbour("twin", 0.97, RED),
            margin.Neighbour("same model in white", 0.96, WHITE), margin.Neighbour("another model", 0.90, RED)]
    own = lambda o: np.stack([fake_vector(1, 0.33, 0)])  # noqa: E731  (cosine 0.95 with the query)
    plain = margin.margins(query, ["mine"], own, near)
    assert plain["mine"] < 0  # the twin is nearer than the car itself
    got = margin.margins(query, ["mine"], own, near, lookalikes={"mine": {"twin"}}, query_body=RED)
    assert got["mine"] == pytest.approx(0.95 - 0.90, abs=1e-3)  # the next car of a compatible colour
    assert margin.colour_refused(RED, WHITE) and not margin.colour_refused(RED, RED)
    assert not margin.colour_refused(None, WHITE)  # no colour known: every car counts


def test_no_other_car_gives_no_margin_and_a_partial_list_bounds_it() -> None:
    query = fake_vector(1, 0, 0)
    own = lambda o: np.stack([fake_vector(1, 0, 0)])  # noqa: E731
    alone = [margin.Neighbour("mine", 1.0)]
    assert margin.margins(query, ["mine"], own, alone, complete=True) == {}
    # the nearest neighbours searched were all the object's own: the others are at most the last similarity seen
    assert margin.margins(query, ["mine"], own, alone, complete=False)["mine"] == pytest.approx(0.0)
    assert margin.margins(None, ["mine"], own, alone) == {}
    assert margin.margins(query, ["mine"], lambda o: np.zeros((0, 3), np.float32), alone) == {}  # no embeddings


def test_the_margin_is_clipped() -> None:
    query = fake_vector(1, 0, 0)
    far = [margin.Neighbour("other", -0.5)]
    assert margin.margins(query, ["mine"], lambda o: np.stack([query]), far)["mine"] == margin.CLIP_HIGH
    near = [margin.Neighbour("other", 1.0)]
    assert margin.margins(query, ["mine"], lambda o: np.stack([-query]), near)["mine"] == -margin.CLIP


MARGIN_SCORE = decide.Acceptance(bias=-1.0, inliers=1 / 3, spread=0.0, second=0.0, margin=40.0)


def test_the_default_car_score_weighs_the_margin() -> None:
    assert decide.CAR_ACCEPTANCE.margin > 0
    m = _match(1, 17)
    with_margin = decide.per_object([m], {1: "a"}, CAR_INLIER_MIDPOINT, margins={"a": 0.05})[0].score
    assert with_margin > decide.per_object([m], {1: "a"}, CAR_INLIER_MIDPOINT)[0].score


def test_the_margin_moves_the_score_and_without_one_it_is_the_inliers_score() -> None:
    owners = {1: "a"}
    m = _match(1, 17)
    inliers_only = decide.per_object([m], owners, CAR_INLIER_MIDPOINT)[0].score
    assert inliers_only == pytest.approx(0.5)
    none = decide.per_object([m], owners, CAR_INLIER_MIDPOINT, acceptance=MARGIN_SCORE)[0].score
    assert none == pytest.approx(inliers_only)  # an old collection (no car embeddings) scores as before
    up = decide.per_object([m], owners, CAR_INLIER_MIDPOINT, acceptance=MARGIN_SCORE, margins={"a": 0.05})[0]
    down = decide.per_object([m], owners, CAR_INLIER_MIDPOINT, acceptance=MARGIN_SCORE, margins={"a": -0.05})[0]
    assert 0.0 < down.score < 0.5 < up.score < 1.0
    assert up.score == pytest.approx(1 / (1 + np.exp(-(-1.0 + 40 * 0.05))))
    # colour still vetoes whatever the margin
    red = decide.per_object([_match(1, 40, body=0.8)], owners, CAR_INLIER_MIDPOINT, acceptance=MARGIN_SCORE,
                            margins={"a": margin.CLIP_HIGH})[0]
    assert red.score < 0.05


def test_twins_keep_their_margins_and_are_answered_together() -> None:
    """Two units of one model and colour: each one's look-alike is left out of its other cars, so both keep the
    margin against the rest of the stock and decide.twins answers both."""
    query = fake_vector(1, 0, 0)
    refs = {"q3 a": np.stack([fake_vector(1, 0.3, 0)]), "q3 b": np.stack([fake_vector(1, 0.31, 0)]),
            "sedan": np.stack([fake_vector(1, 0.9, 0.2)])}
    near = sorted((margin.Neighbour(o, float(v[0] @ query), RED) for o, v in refs.items()),
                  key=lambda n: -n.similarity)
    got = margin.margins(query, ["q3 a", "q3 b"], lambda o: refs[o], near, {"q3 a": {"q3 b"}, "q3 b": {"q3 a"}}, RED)
    assert got["q3 a"] > 0 and got["q3 b"] > 0
    owners = {1: "q3 a", 2: "q3 b"}
    cands = decide.per_object([_match(1, 20), _match(2, 19)], owners, CAR_INLIER_MIDPOINT, acceptance=MARGIN_SCORE,
                              margins=got)
    assert {c.object_id for c in decide.twins(cands, 0.5)} == {"q3 a", "q3 b"}


def test_an_fp16_index_gives_nearest_with_similarities_and_says_when_it_saw_all(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((50, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    index = GlobalIndex.build(16, enumerate(vecs, start=1), fp16=True)
    near, complete = index.nearest(vecs[4], 3)
    assert near[0][0] == 5 and near[0][1] == pytest.approx(1.0, abs=1e-3) and not complete
    assert index.nearest(vecs[4], 60)[1]
    near, complete = index.nearest(vecs[4], 3, allowed={1, 2})
    assert {i for i, _ in near} == {1, 2} and complete
    assert index.remove([5]) == 1
    index.save(tmp_path / "car.faiss")
    again = GlobalIndex.load(tmp_path / "car.faiss", 16)
    assert again.ntotal == 49 and again.nearest(vecs[4], 1)[0][0][0] != 5
    assert again.memory_bytes < 50 * 16 * 4  # float16: half of float32's


# --- the server's plumbing, with a fake car embedder ----------------------------------------------------------------
class FakeCarEmbedder:
    """A fake car embedder: the mean colour of the car's pixels in 3 numbers and a constant, so different images
    give different unit vectors; no weights."""

    name, dim, model_id = "fake-car", 4, "fake-car:0"

    def load(self) -> None:
        pass

    def embed(self, rgb: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        pixels = rgb[mask > 0.5] if mask is not None else rgb.reshape(-1, 3)
        v = np.r_[pixels.astype(np.float32).mean(axis=0) / 255.0, 1.0].astype(np.float32)
        return v / np.linalg.norm(v)


class FullMask:
    """A fake car segmenter: the whole photo is the car."""

    def mask(self, rgb: np.ndarray, kind: str = "car") -> np.ndarray:
        return np.ones(rgb.shape[:2], np.float32)


@pytest.fixture
def settings_dict(settings_dict: dict) -> dict:
    return {**settings_dict, "recognition": {"car_margin": True}}


@pytest.fixture
def fake_cars(monkeypatch) -> FakeCarEmbedder:  # type: ignore[no-untyped-def]
    fake = FakeCarEmbedder()
    monkeypatch.setattr(svc_index, "car_embedder", lambda settings: fake)
    monkeypatch.setattr(rec, "car_embedder", lambda settings: fake)
    # removals and rebuilds keep a car collection's index with the embedder unloaded (car_index_model)
    monkeypatch.setattr(svc_index.car_embedding, "get_car_embedder", lambda models_dir, device: fake)
    monkeypatch.setattr(rec.segmentation, "segmenter", lambda settings: FullMask())
    return fake


def _b64(image: bytes) -> str:
    return base64.b64encode(image).decode()


def test_car_embeddings_are_stored_indexed_weighed_and_removed(app, client, admin, fake_cars,  # type: ignore[no-untyped-def]
                                                               monkeypatch) -> None:
    h = admin.headers
    cid = client.post("/v1/collections", json={"name": "Lot", "object_type": "car"}, headers=h).json["id"]
    for i in (1, 2, 3):
        client.put(f"/v1/collections/{cid}/objects/o{i}", json={}, headers=h)
        r = client.post(f"/v1/collections/{cid}/objects/o{i}/images", headers=h,
                        json={"images_b64": [_b64(jpeg(scene(pattern(i), seed=i)))]})
        assert r.json["images"][0]["status"] == "added", r.json
    settings = app.extensions["forecourt.settings"]
    with app.app_context():
        rows = list(get_db().query("SELECT car_embedding, car_embedding_model FROM rec_images"))
    assert len(rows) == 3 and all(len(r["car_embedding"]) == 4 * 2 and r["car_embedding_model"] == "fake-car:0"
                                  for r in rows)
    seen = []
    margins = rec.car_margins
    monkeypatch.setattr(rec, "car_margins", lambda *a: seen.append(margins(*a)) or seen[-1])
    r = client.post(f"/v1/collections/{cid}/recognize", headers=h,
                    json={"image_file_b64": _b64(jpeg(scene(pattern(2), seed=2)))})
    assert r.json["results"][0]["object_id"] == "o2", r.json
    # the objects that fitted by chance are farther from the query's car than o2; o2 itself has no other car of a
    # colour the colour check accepts (every pattern has its own colours), so no margin: the inliers' score
    assert seen[-1] and all(-margin.CLIP <= v < 0 for k, v in seen[-1].items() if k != "o2"), seen
    assert "o2" not in seen[-1]
    best = r.json["results"][0]
    assert best["score"] == pytest.approx(decide.evidence_score(_match(1, best["inliers"]), CAR_INLIER_MIDPOINT),
                                          abs=1e-3)
    path = svc_index.car_index_path(settings, cid, fake_cars)
    with app.app_context():
        assert GlobalIndex.load(path, 4).ntotal == 3
    assert client.delete(f"/v1/collections/{cid}/objects/o3", headers=h).status_code == 200
    with app.app_context():
        assert GlobalIndex.load(path, 4).ntotal == 2
    # an index file lost or damaged is rebuilt from the stored embeddings
    path.write_bytes(b"garbage")
    svc_index.forget_cached_indexes()
    client.post(f"/v1/collections/{cid}/recognize", headers=h,
                json={"image_file_b64": _b64(jpeg(scene(pattern(1), seed=1)))})
    with app.app_context():
        assert GlobalIndex.load(path, 4).ntotal == 2


def test_a_generic_collection_never_loads_the_car_embedder(app, client, admin, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Uploads, removals and index rebuilds of a generic collection keep no car embeddings, so they never load the
    Lite0 network (torch: +740 MB in a worker), and leave no car index."""
    from models.recognition.car_embedding import CarEmbedder

    loads = []
    monkeypatch.setattr(CarEmbedder, "load", lambda self: loads.append(self))
    h = admin.headers
    cid = client.post("/v1/collections", json={"name": "Print"}, headers=h).json["id"]
    for i in (1, 2):
        client.put(f"/v1/collections/{cid}/objects/o{i}", json={}, headers=h)
        r = client.post(f"/v1/collections/{cid}/objects/o{i}/images", headers=h,
                        json={"images_b64": [_b64(jpeg(scene(pattern(i), seed=i)))]})
        assert r.json["images"][0]["status"] == "added", r.json
    assert client.delete(f"/v1/collections/{cid}/objects/o2", headers=h).status_code == 200
    settings = app.extensions["forecourt.settings"]
    with app.app_context():
        svc_index.rebuild_index(get_db(), settings, cid)
        assert svc_index.car_index_model(get_db(), settings, cid) is None
    assert loads == []
    assert not list((settings.data_dir / "indexes").glob(f"{cid}.car-*"))


def test_references_stored_before_car_embeddings_keep_the_inliers_score(app, client, admin,  # type: ignore[no-untyped-def]
                                                                       fake_cars) -> None:
    h = admin.headers
    cid = client.post("/v1/collections", json={"name": "Old", "object_type": "car"}, headers=h).json["id"]
    for i in (1, 2):
        client.put(f"/v1/collections/{cid}/objects/o{i}", json={}, headers=h)
        client.post(f"/v1/collections/{cid}/objects/o{i}/images", headers=h,
                    json={"images_b64": [_b64(jpeg(scene(pattern(i), seed=i)))]})
    with app.app_context():
        get_db().execute("UPDATE rec_images SET car_embedding = NULL, car_embedding_model = NULL")
    svc_index.forget_cached_indexes()
    r = client.post(f"/v1/collections/{cid}/recognize", headers=h,
                    json={"image_file_b64": _b64(jpeg(scene(pattern(1), seed=1)))}).json
    best = r["results"][0]
    assert best["object_id"] == "o1"
    assert best["score"] == pytest.approx(decide.evidence_score(_match(1, best["inliers"]), CAR_INLIER_MIDPOINT),
                                          abs=1e-3)


def test_a_small_photo_through_the_fake_embedder_keeps_the_unit_length() -> None:
    img = np.asarray(Image.open(io.BytesIO(jpeg(scene(pattern(1), seed=1)))).convert("RGB"))
    v = FakeCarEmbedder().embed(img, np.ones(img.shape[:2]))
    assert v.shape == (4,) and abs(float(np.linalg.norm(v)) - 1.0) < 1e-6
