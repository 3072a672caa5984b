"""SAM end to end on a tiny, randomly initialised checkpoint: the real loader (weights_only) and predictor code."""

from __future__ import annotations

import pickle
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.errors import InvalidPrompt, ModelCorrupt, ModelMissing, UnknownModel
from models.sam import SamSegmenter, get_sam, load_sam
from tests.fakes_sam import save_tiny_sam, tiny_sam


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_sam(tmp_path_factory.mktemp("sam"))


@pytest.fixture
def photo() -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 255, (150, 200, 3), dtype=np.uint8))


def test_load_sam_restores_every_weight_of_the_checkpoint(checkpoint: Path) -> None:
    model = load_sam(checkpoint, tiny_sam, device="cpu")
    saved = torch.load(checkpoint, weights_only=True)
    loaded = model.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert not model.training


def test_predict_returns_a_mask_at_the_image_size_and_is_repeatable(checkpoint: Path, photo: Image.Image) -> None:
    sam = SamSegmenter(checkpoint, tiny_sam, device="cpu")
    mask = sam.predict(photo, points=[[60, 40]], labels=[1])
    assert mask.dtype == bool and mask.shape == (150, 200)
    assert 0 < mask.sum() < mask.size
    assert np.array_equal(sam.predict(photo, points=[[60, 40]], labels=[1]), mask)
    boxed = sam.predict(photo, box=[20, 10, 120, 100])
    assert boxed.shape == (150, 200)
    both = sam.predict(photo, points=[[60, 40], [150, 120]], labels=[1, 0], box=[20, 10, 180, 140])
    assert both.shape == (150, 200)


def test_predict_embeds_each_new_image_once(checkpoint: Path, photo: Image.Image,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    sam = SamSegmenter(checkpoint, tiny_sam, device="cpu")
    sam.load()
    calls = []
    original = sam._predictor.set_image
    monkeypatch.setattr(sam._predictor, "set_image", lambda *a, **k: calls.append(1) or original(*a, **k))
    sam.predict(photo, points=[[10, 10]])
    sam.predict(photo, points=[[100, 100]])
    assert len(calls) == 1
    other = Image.fromarray(np.asarray(photo)[::-1].copy())
    sam.predict(other, points=[[10, 10]])
    assert len(calls) == 2


@pytest.mark.parametrize("prompt, message", [
    ({}, "at least one point or a box"),
    ({"points": [[10, 10]], "labels": [2]}, "one 0"),
    ({"points": [[10, 10], [20, 20]], "labels": [1]}, "one 0"),
    ({"points": [[500, 10]]}, "inside"),
    ({"points": [10, 10]}, "pairs"),
    ({"box": [50, 10, 20, 100]}, "x0 < x1"),
    ({"box": [0, 0, 300, 100]}, "inside"),
    ({"labels": [1], "box": [0, 0, 10, 10]}, "labels without points"),
])
def test_invalid_prompts_are_refused_with_a_clear_error(checkpoint: Path, photo: Image.Image, prompt: dict,
                                                        message: str) -> None:
    sam = SamSegmenter(checkpoint, tiny_sam, device="cpu")
    with pytest.raises(InvalidPrompt, match=message) as info:
        sam.predict(photo, **prompt)
    assert info.value.status == 400 and info.value.code == "invalid_prompt"


def test_a_checkpoint_for_another_architecture_is_refused(checkpoint: Path, photo: Image.Image) -> None:
    sam = SamSegmenter(checkpoint, partial(tiny_sam, embed_dim=48), device="cpu")
    with pytest.raises(ModelCorrupt, match="does not fit"):
        sam.predict(photo, points=[[10, 10]])


class Gadget:
    """Not a tensor: a pickle that weights_only loading must refuse."""


def test_a_pickle_with_code_or_a_truncated_file_is_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as fh:
        pickle.dump({"weight": Gadget()}, fh)
    with pytest.raises(ModelCorrupt, match="cannot read"):
        load_sam(evil, tiny_sam, device="cpu")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(ModelCorrupt):
        load_sam(truncated, tiny_sam, device="cpu")


def test_get_sam_needs_the_installed_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ModelMissing, match="forecourt models install sam-vit-b") as info:
        get_sam("sam-vit-b", tmp_path, device="cpu")
    assert info.value.status == 503 and info.value.code == "model_unavailable"
    with pytest.raises(UnknownModel):
        get_sam("isnet-general", tmp_path)
