"""Background work on one task queue: the job ledger (store), the huey queue and its consumers (queue), the
`forecourt jobs` and `forecourt worker` commands (cli)."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Start this worker's queue threads on its first request (so after gunicorn forks), when
    [queue] workers_in_server is on; the job ledger's schema is applied by server.prepare_data_dir."""
    from server.jobs import queue

    settings = app.extensions["forecourt.settings"]
    if settings.queue.workers_in_server and settings.queue.threads:

        @app.before_request
        def _start_queue_threads() -> None:
            queue.start_in_server(app)
