"""`forecourt jobs list|retry|run` and `forecourt worker`: look at the job queue, revive dead jobs, run workers."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import click

from server.jobs import store


@click.group("jobs")
def jobs_group() -> None:
    """Background jobs: list them, retry dead ones, run the queue here."""


@jobs_group.command("list")
@click.option("--state", type=click.Choice(store.STATES), default=None, help="Only jobs in this state (dead: the "
              "dead-letter jobs that used up their attempts).")
@click.option("--kind", default=None, help="Only jobs of this kind, e.g. catalog.render.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_obj
def jobs_list(obj: Any, state: str | None, kind: str | None, limit: int, as_json: bool) -> None:
    """List the newest jobs, with counts per state."""
    db = obj.db()
    counts = store.counts(db)
    rows = store.list_jobs(db, state=state, kind=kind, limit=limit)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    click.echo("  ".join(f"{s}: {n}" for s, n in counts.items()))
    for r in rows:
        error = f"  {r['error']}" if r["error"] and r["state"] in ("dead", "queued") else ""
        state = "queued (held: runs by hand)" if r["state"] == "queued" and r["run_after"] >= store.HELD else r["state"]
        click.echo(f"{r['id']}\t{r['kind']}\t{state}\t{r['attempts']}/{r['max_attempts']}\t{r['created_at']}"
                   f"\t{r['args']}{error}")


@jobs_group.command("retry")
@click.argument("job_ids", nargs=-1, type=int)
@click.option("--all-dead", is_flag=True, help="Every dead job.")
@click.pass_obj
def jobs_retry(obj: Any, job_ids: tuple[int, ...], all_dead: bool) -> None:
    """Queue dead jobs again with fresh attempts (by id, or --all-dead)."""
    from server.jobs import queue

    if not job_ids and not all_dead:
        click.echo("error: give job ids or --all-dead", err=True)
        sys.exit(2)
    db = obj.db()
    again = queue.retry_dead(db, obj.settings, None if all_dead else list(job_ids))
    missed = sorted(set(job_ids) - set(again))
    click.echo(f"queued again: {len(again)}" + (f" ({', '.join(map(str, again))})" if again else ""))
    if missed:
        click.echo(f"not dead (left alone): {', '.join(map(str, missed))}", err=True)
        sys.exit(1)


@jobs_group.command("run")
@click.option("--kind", "kinds", multiple=True, help="Only jobs of this kind (repeatable).")
@click.pass_obj
def jobs_run(obj: Any, kinds: tuple[str, ...]) -> None:
    """Run every queued job in this process now, retries without their backoff, then exit."""
    from server import create_app
    from server.jobs import queue

    app = create_app(obj.settings)
    ran = queue.run_pending(app, kinds=kinds or None)
    by_state: dict[str, int] = {}
    for _, state, _ in ran:
        by_state[state] = by_state.get(state, 0) + 1
    click.echo(f"ran {len(ran)} attempt(s): " + (", ".join(f"{s} {n}" for s, n in sorted(by_state.items()))
                                                   or "nothing queued"))


@click.command("worker")
@click.option("--threads", type=click.IntRange(1, 64), default=None,
              help="Jobs in parallel in this process (default: [queue] threads, at least 1).")
@click.pass_obj
def worker_command(obj: Any, threads: int | None) -> None:
    """Run queue jobs in this process until stopped (SIGTERM or Ctrl-C lets the jobs in hand finish). Start as
    many as the box has room for, on as many boxes as share [queue] url and the data folder."""
    from server import create_app
    from server.jobs import queue

    app = create_app(obj.settings)
    count = threads or max(1, obj.settings.queue.threads)
    logging.getLogger("huey").setLevel(max(logging.INFO, logging.getLogger().level))
    consumer, maintenance = queue.start_consumer(app, count, embedded=False)
    click.echo(f"forecourt worker {os.getpid()}: {count} thread(s) on "
               f"{obj.settings.queue.url or obj.settings.data_dir / 'queue.db'}", err=True)
    try:
        consumer.run()  # blocks; huey's own signal handling (TERM: graceful)
    finally:
        maintenance.stop.set()
