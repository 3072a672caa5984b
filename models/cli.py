"""`forecourt models ...`: fetch, install, list and verify model files (directories from the CLI context)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from models.device import cpu_has_int8_dot
from models.errors import ModelError
from models.fetch import DEFAULT_CACHE_DIR, fetch, install, verify
from models.manifest import MANIFEST
from models.registry import get_segmenter
from models.segmenters import BACKENDS


def _dirs() -> tuple[Path, Path]:
    obj = click.get_current_context().obj
    models_dir = getattr(obj, "models_dir", None)
    if models_dir is None:
        raise click.ClickException("no models directory configured")
    cache_dir = getattr(obj, "cache_dir", None) or DEFAULT_CACHE_DIR
    return Path(models_dir), Path(cache_dir).expanduser()


def _fail(exc: ModelError) -> None:
    raise click.ClickException(f"{exc.title}: {exc.detail} [{exc.code}]")


@click.group("models")
def models_group() -> None:
    """Model files: fetch, install by hand, list, verify."""


@models_group.command("fetch")
@click.argument("names", nargs=-1)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--no-prepare", is_flag=True, help="Do not build the CPU-optimised graph now (it is built on first use).")
def fetch_command(names: tuple[str, ...], quiet: bool, no_prepare: bool) -> None:
    """Download NAMES (default: every downloadable model); a verified file is left alone."""
    models_dir, cache_dir = _dirs()
    names = names or tuple(name for name, spec in MANIFEST.items() if spec.fetchable)
    for name in names:
        try:
            path = fetch(name, models_dir, cache_dir, progress=not quiet and sys.stderr.isatty())
        except ModelError as exc:
            _fail(exc)
        click.echo(f"{name}: ok {path}")
        if not no_prepare and MANIFEST[name].backend in BACKENDS and cpu_has_int8_dot():
            seg = get_segmenter(name, models_dir, device="cpu")
            try:
                seg.load()  # builds and caches the int8 graph beside the model
            except ModelError as exc:
                _fail(exc)
            click.echo(f"{name}: CPU graph ready ({getattr(seg, 'running_precision', '?')})")


@models_group.command("install")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def install_command(name: str, file: Path) -> None:
    """Copy a hand-downloaded FILE into the models folder as NAME, if its sha256 is the pinned one."""
    models_dir, _ = _dirs()
    try:
        path = install(name, file, models_dir, progress=sys.stderr.isatty())
    except ModelError as exc:
        _fail(exc)
    click.echo(f"{name}: installed {path}")


@models_group.command("list")
def list_command() -> None:
    """Every known model: name, backend, size, how to get it, license, whether it is present, and what it runs on
    under the configured device (a GPU left unused is a warning; `device = "cuda"` unmet is an error)."""
    from models.placement import classifier_placement, sam_placement, segmenter_placement

    models_dir, _ = _dirs()
    device = _device()
    problems = []
    name_w = max(len(spec.name) for spec in MANIFEST.values())  # the columns fit the longest name and backend
    backend_w = max(len(spec.backend) for spec in MANIFEST.values())
    for spec in MANIFEST.values():
        present = all(spec.path(models_dir, i).is_file() for i in range(len(spec.files)))
        size_mb = sum(f.size for f in spec.files) / 1e6
        how = "fetch" if spec.fetchable else "install by hand"
        if spec.backend in BACKENDS:
            place = segmenter_placement(get_segmenter(spec.name, models_dir, device=device))
        elif spec.backend == "classifier":
            place = classifier_placement(models_dir, device)
        else:
            place = sam_placement(spec.name, models_dir, device)
        problems += [f"{spec.name}: {p}" for p in (place.error, place.warning) if p]
        click.echo(f"{spec.name:<{name_w}} {spec.backend:<{backend_w}} {size_mb:>8.1f} MB  {'present' if present else 'absent ':<7}  "
                   f"{how:<15} runs on {place.runs_on:<21} {spec.license}")
    for problem in dict.fromkeys(problems):
        click.echo(f"warning: {problem}", err=True)


def _device() -> str:
    settings = getattr(click.get_current_context().obj, "settings", None)
    return getattr(getattr(settings, "models", None), "device", "auto")


@models_group.command("verify")
@click.argument("names", nargs=-1)
def verify_command(names: tuple[str, ...]) -> None:
    """Check sha256 of the downloadable models and of any installed by hand (or of NAMES); exit 1 on a failure."""
    models_dir, _ = _dirs()
    unknown = [n for n in names if n not in MANIFEST]
    if unknown:
        raise click.ClickException(f"unknown model(s): {', '.join(unknown)}; known: {', '.join(MANIFEST)}")
    failed = False
    for status in verify(models_dir):
        if names and status.name not in names:
            continue
        if not names and not status.present and not status.fetchable:
            click.echo(f"{status.name}: not installed (optional)")
            continue
        if status.verified:
            click.echo(f"{status.name}: ok {status.path}")
        else:
            failed = True
            click.echo(f"{status.name}: FAILED {status.error}", err=True)
    if failed:
        sys.exit(1)
