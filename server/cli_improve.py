"""`forecourt improve list` and `forecourt improve export FILE.zip`: the Improvement Program's review folder."""

from __future__ import annotations

from pathlib import Path

import click

from server.services import improve


@click.group("improve")
def improve_group() -> None:
    """Images sent to POST /v1.0/improve, kept on this box for review: list, export for the vendor."""


@improve_group.command("list")
@click.option("--tag", default=None, help="Only this tag.")
@click.pass_obj
def list_command(obj: object, tag: str | None) -> None:
    """One line a submission, newest first: sent, id, tag, file name, size, account."""
    subs = improve.list_submissions(obj.settings.data_dir, tag)  # type: ignore[attr-defined]
    for s in subs:
        click.echo(f"{s.submitted_at}  {s.id}  tag={s.tag or '-'}  {s.image_filename or '-'}  "
                   f"{s.width}x{s.height} {s.format} {s.bytes} bytes  {s.user_email}")
    click.echo(f"{len(subs)} submission{'' if len(subs) == 1 else 's'}")


@improve_group.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--tag", default=None, help="Only this tag.")
@click.pass_obj
def export_command(obj: object, file: Path, tag: str | None) -> None:
    """Write the submissions (images, their options, submissions.json) to FILE as a zip for the vendor."""
    tmp = file.with_name(f".{file.name}.part")
    with open(tmp, "wb") as out:
        count = improve.export_zip(obj.settings.data_dir, out, tag)  # type: ignore[attr-defined]
    tmp.replace(file)
    click.echo(f"{count} submission{'' if count == 1 else 's'} written to {file}")
