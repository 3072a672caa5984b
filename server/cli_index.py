"""`forecourt index rebuild`: rebuild recognition indexes from the features kept in the database."""

from __future__ import annotations

from pathlib import Path

import click
from tqdm import tqdm


@click.group("index")
def index_group() -> None:
    """Recognition indexes (FAISS, one per collection, in <data_dir>/indexes)."""


@index_group.command("rebuild")
@click.option("--collection", "collection_id", default=None, help="Only this collection (default: all).")
@click.option("--pending", is_flag=True, help="Only the rebuilds that uploads queued (an index outgrown), each "
              "swapped in without stopping uploads; for recognition.background_rebuild = false.")
@click.pass_obj
def rebuild_command(obj, collection_id: str | None, pending: bool) -> None:  # type: ignore[no-untyped-def]
    """Rebuild indexes from the database (flat, or IVF past recognition.ivf_threshold descriptors)."""
    from server import create_app
    from server.services.recognition_index import forget_cached_indexes, rebuild_index
    from server.services.recognition_rebuild import clear_queued_rebuild, run_pending_rebuilds
    from server.store import get_db

    app = create_app(obj.settings)
    with app.app_context():
        db = get_db()
        settings = app.extensions["forecourt.settings"]
        if pending:
            results = run_pending_rebuilds(collection_id)
            for r in results:
                detail = f", {r['descriptors']} descriptors, {r['kind']} index" if r["status"] == "done" else ""
                click.echo(f"{r['collection_id']}: {r['status']}{detail}")
            if not results:
                click.echo("no rebuild is queued")
            return
        rows = list(db.query("SELECT c.id, c.name, (SELECT COUNT(*) FROM rec_images i WHERE i.collection_id = c.id)"
                             " AS n FROM rec_collections c ORDER BY c.created_at, c.id"))
        if collection_id is not None:
            rows = [r for r in rows if r["id"] == collection_id]
            if not rows:
                raise click.ClickException(f"no collection {collection_id!r}")
        for row in rows:
            with tqdm(total=row["n"], desc=f"{row['name']} ({row['id']})", unit="img") as bar:
                index = rebuild_index(db, settings, row["id"], progress=bar.update)
            clear_queued_rebuild(db, row["id"])
            forget_cached_indexes()
            click.echo(f"{row['id']}: {row['n']} images, {index.ntotal} descriptors, {index.kind} index")


@index_group.command("install-embedding")
@click.argument("arch")
@click.argument("weights", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", default=None, help="Folder name under <models_dir>/recognition (default: ARCH).")
@click.option("--input-size", default=224, show_default=True, help="Square input side in pixels.")
@click.pass_obj
def install_embedding_command(obj, arch: str, weights: Path, name: str | None, input_size: int) -> None:  # type: ignore[no-untyped-def]
    """Install a torchvision backbone (ARCH, e.g. resnet50) from a WEIGHTS file downloaded by hand as the
    global-embedding model: writes its TorchScript trunk and a sha256 manifest, then prints the setting to use."""
    from models.recognition.embedding import MANIFEST, export_torchvision

    folder = obj.settings.models_dir / "recognition" / (name or arch)
    try:
        export_torchvision(arch, weights, folder, input_size=input_size)
    except (AttributeError, RuntimeError, ValueError) as exc:
        raise click.ClickException(f"{arch}: {exc}") from exc
    click.echo(f"installed {folder} ({MANIFEST} lists its sha256)")
    click.echo(f'set [recognition] embedding = "{folder.name}", then run `forecourt index rebuild`; images stored '
               "before keep the vote shortlist until they are uploaded again")
