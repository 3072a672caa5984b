"""`forecourt index rebuild`: rebuild recognition indexes from the features kept in the database."""

from __future__ import annotations

import click
from tqdm import tqdm


@click.group("index")
def index_group() -> None:
    """Recognition indexes (FAISS, one per collection, in <data_dir>/indexes)."""


@index_group.command("rebuild")
@click.option("--collection", "collection_id", default=None, help="Only this collection (default: all).")
@click.pass_obj
def rebuild_command(obj, collection_id: str | None) -> None:  # type: ignore[no-untyped-def]
    """Rebuild indexes from the database (flat, or IVF past recognition.ivf_threshold descriptors)."""
    from server import create_app
    from server.services import recognition as svc
    from server.store import get_db

    app = create_app(obj.settings)
    with app.app_context():
        db = get_db()
        settings = app.extensions["forecourt.settings"]
        rows = list(db.query("SELECT c.id, c.name, (SELECT COUNT(*) FROM rec_images i WHERE i.collection_id = c.id)"
                             " AS n FROM rec_collections c ORDER BY c.created_at, c.id"))
        if collection_id is not None:
            rows = [r for r in rows if r["id"] == collection_id]
            if not rows:
                raise click.ClickException(f"no collection {collection_id!r}")
        for row in rows:
            with tqdm(total=row["n"], desc=f"{row['name']} ({row['id']})", unit="img") as bar:
                index = svc.rebuild_index(db, settings, row["id"], progress=bar.update)
            svc.forget_cached_indexes()
            click.echo(f"{row['id']}: {row['n']} images, {index.ntotal} descriptors, {index.kind} index")
