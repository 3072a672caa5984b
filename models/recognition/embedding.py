"""The pluggable global-embedding backend: one vector per image from a CNN backbone, used for the shortlist.

An embedding model is a folder `<models_dir>/recognition/<name>/` holding a TorchScript module and a
`manifest.json` that names every file with its sha256 and size, the output dimension, the input size and the
normalisation. The admin installs it (`export_torchvision` writes one from a torchvision backbone and weights
downloaded by hand, or any TorchScript module can be described by `write_manifest`); every file is checked
against the manifest when the model loads, so a damaged or swapped file never runs. Tests build a tiny backbone
(`tiny_backbone`) to drive the same code.

The module maps a (1, 3, S, S) float tensor to either a (1, C, h, w) feature map, pooled here with GeM (p = 3), or a
(1, C) vector; the result is L2-normalised. For car collections the background is replaced by the mean colour
before the forward pass, so the shortlist, like the local features, sees the car only.
"""

from __future__ import annotations

import json
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from core.files import sha256_file
from models.errors import ModelCorrupt, ModelMissing

MANIFEST = "manifest.json"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_lock = threading.Lock()
_loaded: dict[str, EmbeddingModel] = {}


@dataclass
class EmbeddingModel:
    """A loaded embedding model."""

    name: str
    dim: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    module: Any  # torch.jit.ScriptModule
    model_id: str  # name + the module file's sha256 prefix: embeddings of two model_ids never mix

    def embed(self, rgb: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """A unit-length float32 vector of an RGB uint8 image (mask > 0.5 keeps the object, the rest goes grey)."""
        import torch

        img = rgb.astype(np.float32) / 255.0
        if mask is not None:
            keep = (np.asarray(mask, dtype=np.float32) > 0.5)[..., None]
            img = np.where(keep, img, np.array(self.mean, np.float32))
        img = cv2.resize(img, (self.input_size, self.input_size), interpolation=cv2.INTER_AREA)
        img = (img - np.array(self.mean, np.float32)) / np.array(self.std, np.float32)
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
        with torch.inference_mode():
            out = self.module(x)
            if out.ndim == 4:  # GeM pooling of a feature map
                out = out.clamp(min=1e-6).pow(3).mean(dim=(2, 3)).pow(1.0 / 3)
            vec = out.reshape(-1).float().numpy()
        if vec.shape[0] != self.dim:
            raise ModelCorrupt(f"{self.name} gave a {vec.shape[0]}-d vector; its manifest says {self.dim}")
        return (vec / max(float(np.linalg.norm(vec)), 1e-12)).astype(np.float32)


def write_manifest(folder: Path, name: str, module_file: str, *, dim: int, input_size: int,
                   mean: tuple[float, float, float] = IMAGENET_MEAN, std: tuple[float, float, float] = IMAGENET_STD,
                   source: str = "", license: str = "") -> dict[str, Any]:
    """Describe an installed TorchScript module with the sha256 and size of its file."""
    path = folder / module_file
    manifest = {"name": name, "module": module_file, "dim": dim, "input_size": input_size, "mean": list(mean),
                "std": list(std), "source": source, "license": license,
                "files": [{"name": module_file, "sha256": sha256_file(path), "size": path.stat().st_size}]}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def load_embedding(folder: Path) -> EmbeddingModel:
    """Load (once per process) the model in folder after checking every file against its manifest."""
    folder = Path(folder)
    key = str(folder.resolve())
    with _lock:
        if key in _loaded:
            return _loaded[key]
        mpath = folder / MANIFEST
        if not mpath.exists():
            raise ModelMissing(f"No embedding model at {folder} (its {MANIFEST} is missing).")
        try:
            manifest = json.loads(mpath.read_text())
            files = manifest["files"]
            dim, size = int(manifest["dim"]), int(manifest["input_size"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelCorrupt(f"{mpath} is not a valid embedding manifest: {exc}") from exc
        digests = {}
        for entry in files:
            path = folder / entry["name"]
            if not path.exists():
                raise ModelMissing(f"{path} is missing; install the files its manifest names.")
            digest = sha256_file(path)
            if digest != entry["sha256"] or path.stat().st_size != int(entry["size"]):
                raise ModelCorrupt(f"{path} does not match its manifest's sha256; reinstall it.")
            digests[entry["name"]] = digest
        if manifest["module"] not in digests:
            raise ModelCorrupt(f"{mpath}: the module file is not among its checked files.")
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(folder / manifest["module"]), map_location="cpu").eval()
        model = EmbeddingModel(
            name=str(manifest["name"]), dim=dim, input_size=size, mean=tuple(manifest.get("mean", IMAGENET_MEAN)),
            std=tuple(manifest.get("std", IMAGENET_STD)), module=module,
            model_id=f"{manifest['name']}:{digests[manifest['module']][:16]}")
        _loaded[key] = model
        return model


def forget_loaded() -> None:
    """Drop loaded models (tests)."""
    with _lock:
        _loaded.clear()


def tiny_backbone(dim: int = 32, seed: int = 0) -> Any:
    """A small random conv net (3 -> dim channels, stride 8) for tests: deterministic, no weights to fetch."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, dim, 3, stride=2, padding=1), nn.ReLU(),
    )
    return net.eval()


def save_module(module: Any, folder: Path, name: str, *, dim: int, input_size: int, **manifest: Any) -> Path:
    """Trace module into folder/<name>.pt (TorchScript) and write its manifest."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated but still the portable format
        traced = torch.jit.trace(module.eval(), torch.zeros(1, 3, input_size, input_size))
    file = f"{name}.pt"
    traced.save(str(folder / file))
    write_manifest(folder, name, file, dim=dim, input_size=input_size, **manifest)
    return folder


def export_torchvision(arch: str, weights: Path, folder: Path, *, input_size: int = 224) -> Path:
    """Install a torchvision classification backbone (e.g. resnet50) from a weights file downloaded by hand: its
    convolutional trunk (GeM-pooled here) becomes the embedding model."""
    import torch
    import torchvision
    from torch import nn

    net = getattr(torchvision.models, arch)(weights=None)
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    if hasattr(net, "fc"):  # resnet / resnext / regnet
        trunk = nn.Sequential(*list(net.children())[:-2])
    elif hasattr(net, "features"):  # efficientnet / mobilenet / convnext / vgg
        trunk = net.features
    else:
        raise ValueError(f"{arch}: no convolutional trunk found")
    with torch.inference_mode():
        dim = int(trunk(torch.zeros(1, 3, input_size, input_size)).shape[1])
    return save_module(trunk, folder, arch, dim=dim, input_size=input_size, source=f"torchvision {arch}",
                       license="see the weights' source")
