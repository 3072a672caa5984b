"""The pluggable global-embedding shortlist, driven by a tiny TorchScript backbone with a sha256 manifest."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest

from core.files import sha256_file
from models.errors import ModelCorrupt, ModelMissing
from models.recognition import embedding as emb
from models.recognition.index import FeatureIndex, GlobalIndex
from server.services import recognition_index as svc_index
from server.store import get_db
from tests.recognition_synth import jpeg, pattern, scene


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    d = tmp_path / "models"
    emb.save_module(emb.tiny_backbone(dim=32), d / "recognition" / "tiny", "tiny", dim=32, input_size=128)
    emb.forget_loaded()
    yield d
    emb.forget_loaded()


@pytest.fixture
def settings_dict(settings_dict: dict, models_dir: Path) -> dict:
    return {**settings_dict, "models": {"dir": str(models_dir), "require": False},
            "recognition": {"embedding": "tiny", "shortlist": 3}}


def _upload(client, headers, cid, oid, image: bytes):  # type: ignore[no-untyped-def]
    return client.post(f"/v1/collections/{cid}/objects/{oid}/images", headers=headers,
                       data={"image_file": [(io.BytesIO(image), "a.jpg")]}, content_type="multipart/form-data")


def _scan(client, headers, cid, image: bytes):  # type: ignore[no-untyped-def]
    return client.post(f"/v1/collections/{cid}/recognize", headers=headers,
                       json={"image_file_b64": base64.b64encode(image).decode()})


def test_manifest_checks_every_file(models_dir: Path) -> None:
    folder = models_dir / "recognition" / "tiny"
    model = emb.load_embedding(folder)
    vec = model.embed(scene(pattern(1), seed=1))
    assert vec.shape == (32,) and abs(float(np.linalg.norm(vec)) - 1) < 1e-5
    assert model.model_id.startswith("tiny:")
    emb.forget_loaded()
    with open(folder / "tiny.pt", "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(ModelCorrupt):
        emb.load_embedding(folder)
    (folder / "tiny.pt").unlink()
    with pytest.raises(ModelMissing):
        emb.load_embedding(folder)
    with pytest.raises(ModelMissing):
        emb.load_embedding(models_dir / "recognition" / "absent")


def test_masked_background_does_not_change_the_embedding(models_dir: Path) -> None:
    model = emb.load_embedding(models_dir / "recognition" / "tiny")
    a, b = scene(pattern(3), seed=1, at=(20, 60)), scene(pattern(3), seed=2, at=(20, 60))
    mask = np.zeros(a.shape[:2], np.float32)
    mask[60:300, 20:260] = 1
    assert not np.allclose(model.embed(a), model.embed(b))
    np.testing.assert_allclose(model.embed(a, mask), model.embed(b, mask), atol=1e-5)


def test_global_index_add_remove_search_save(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(50, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    index = GlobalIndex.build(16, ((i + 1, v) for i, v in enumerate(vecs)))
    assert index.search(vecs[9], 1) == [10]
    assert index.search(vecs[9], 3, allowed={3, 4})[:1] in ([3], [4])
    index.remove([10])
    assert 10 not in index.search(vecs[9], 5)
    index.save(tmp_path / "g.faiss")
    assert GlobalIndex.load(tmp_path / "g.faiss", 16).ntotal == 49
    ivf = GlobalIndex.build(16, ((i + 1, v) for i, v in enumerate(np.repeat(vecs, 30, axis=0))), ivf_threshold=1000)
    assert ivf.kind == "ivfsq8" and ivf.ntotal == 1500


def test_scans_shortlist_by_embedding_not_votes(app, client, admin, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cid = client.post("/v1/collections", json={"name": "Signs"}, headers=admin.headers).json["id"]
    for i in (1, 2, 3):
        client.put(f"/v1/collections/{cid}/objects/o{i}", json={}, headers=admin.headers)
        assert _upload(client, admin.headers, cid, f"o{i}", jpeg(scene(pattern(i), seed=i))).json["images"][0][
            "status"] == "added"

    def no_votes(*a, **k):  # type: ignore[no-untyped-def]
        raise AssertionError("the shortlist must come from the embedding")

    monkeypatch.setattr(FeatureIndex, "vote", no_votes)
    for i in (1, 2, 3):
        r = _scan(client, admin.headers, cid, jpeg(scene(pattern(i), seed=40 + i)))
        assert r.status_code == 200 and r.json["results"][0]["object_id"] == f"o{i}", r.json
    s = client.get(f"/v1/collections/{cid}/summary", headers=admin.headers).json
    assert s["index"]["shortlist"] == "embedding" and s["pending_index_work"] == 0
    settings = app.extensions["forecourt.settings"]
    model = svc_index.embedder(settings)  # no app context: a service takes its settings
    path = svc_index.global_path(settings, cid, model)
    # Removing an image takes it out of the embedding index; a corrupt file is rebuilt from the database.
    image_id = client.get(f"/v1/collections/{cid}/objects/o2/images", headers=admin.headers).json["images"][0]["id"]
    client.delete(f"/v1/collections/{cid}/objects/o2/images/{image_id}", headers=admin.headers)
    assert _scan(client, admin.headers, cid, jpeg(scene(pattern(2), seed=50))).json["results"] == []
    path.write_bytes(b"garbage")
    svc_index.forget_cached_indexes()
    assert _scan(client, admin.headers, cid, jpeg(scene(pattern(3), seed=51))).json["results"][0]["object_id"] == "o3"
    with app.app_context():
        assert GlobalIndex.load(path, model.dim).ntotal == 2


def test_images_stored_before_the_model_keep_votes(app, client, admin, models_dir) -> None:  # type: ignore[no-untyped-def]
    cid = client.post("/v1/collections", json={"name": "Signs"}, headers=admin.headers).json["id"]
    client.put(f"/v1/collections/{cid}/objects/o1", json={}, headers=admin.headers)
    _upload(client, admin.headers, cid, "o1", jpeg(scene(pattern(1), seed=1)))
    with app.app_context():
        get_db().execute("UPDATE rec_images SET embedding = NULL, embedding_model = NULL")
    svc_index.forget_cached_indexes()
    s = client.get(f"/v1/collections/{cid}/summary", headers=admin.headers).json
    assert s["pending_index_work"] == 1 and s["index"]["shortlist"] == "votes"
    assert _scan(client, admin.headers, cid, jpeg(scene(pattern(1), seed=5))).json["results"][0]["object_id"] == "o1"
    manifest = json.loads((models_dir / "recognition" / "tiny" / "manifest.json").read_text())
    assert manifest["files"][0]["sha256"] == sha256_file(models_dir / "recognition" / "tiny" / "tiny.pt")


def test_cli_installs_a_torchvision_backbone_with_its_manifest(tmp_path: Path, cli_runner) -> None:  # type: ignore[no-untyped-def]
    import torch
    import torchvision

    from server.cli import cli

    weights = tmp_path / "mnv3.pth"
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), weights)
    runner, env = cli_runner
    models = tmp_path / "installed-models"
    env = {**env, "FORECOURT_MODELS__DIR": str(models)}
    result = runner.invoke(cli, ["index", "install-embedding", "mobilenet_v3_small", str(weights), "--name", "mnv3",
                                 "--input-size", "160"], env=env)
    assert result.exit_code == 0, result.output
    assert 'embedding = "mnv3"' in result.output
    model = emb.load_embedding(models / "recognition" / "mnv3")
    assert model.dim == 576 and model.embed(scene(pattern(1), seed=1)).shape == (576,)
    bad = runner.invoke(cli, ["index", "install-embedding", "no_such_net", str(weights)], env=env)
    assert bad.exit_code != 0 and "no_such_net" in bad.output
