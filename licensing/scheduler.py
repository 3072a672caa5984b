"""Run licensing's jobs on exactly one process per box: whoever holds an exclusive file lock runs apscheduler."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

from apscheduler.schedulers.background import BackgroundScheduler

log = logging.getLogger("forecourt.licensing.scheduler")


class BoxScheduler:
    """Try for the lock now and then; the holder starts a BackgroundScheduler with the given jobs."""

    def __init__(self, lock_path: Path, add_jobs: Callable[[BackgroundScheduler], None],
                 retry_s: float = 30.0) -> None:
        self.lock_path = lock_path
        self.add_jobs = add_jobs
        self.retry_s = retry_s
        self.scheduler: BackgroundScheduler | None = None
        self._lock_file: IO[str] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def is_leader(self) -> bool:
        """Whether this process runs the jobs."""
        return self.scheduler is not None

    def try_lead(self) -> bool:
        """Take the lock if it is free and start the jobs; True when this process leads."""
        if self.scheduler is not None:
            return True
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.lock_path, "a+")  # noqa: SIM115 - held open for the life of the process
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            return False
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._lock_file = f
        scheduler = BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1})
        self.add_jobs(scheduler)
        scheduler.start()
        self.scheduler = scheduler
        log.info("licensing jobs run in process %s", os.getpid())
        return True

    def start(self) -> None:
        """Try now, then keep trying in the background (a leader that dies frees the lock)."""
        if self.try_lead():
            return
        self._thread = threading.Thread(target=self._wait_for_lock, name="licensing-scheduler", daemon=True)
        self._thread.start()

    def _wait_for_lock(self) -> None:
        while not self._stop.wait(self.retry_s):
            if self.try_lead():
                return

    def shutdown(self) -> None:
        """Stop the jobs and free the lock."""
        self._stop.set()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
