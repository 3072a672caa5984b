"""An in-process micro-batcher: concurrent requests that arrive within a few milliseconds share one model run.

Each request thread calls `submit(item)` and blocks for its own result; one runner thread takes the first waiting
item, gathers more until `max_size` items or `max_wait_ms` after the first, and hands them to `run_batch` as one
list. A batch that fails is run again one item at a time, so an error reaches only the request that caused it.
With `max_size` 1 there is no thread at all: `submit` runs the item in the caller's thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """Group concurrent `submit` calls into runs of `run_batch(items) -> results` (same length, same order)."""

    def __init__(self, run_batch: Callable[[list[T]], Sequence[R]], max_size: int = 8, max_wait_ms: float = 5.0,
                 name: str = "batcher") -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must not be negative")
        self.run_batch = run_batch
        self.max_size = int(max_size)
        self.max_wait = max_wait_ms / 1000.0
        self.name = name
        self._queue: queue.SimpleQueue[tuple[T, Future[R]]] = queue.SimpleQueue()
        self._runner: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self.batches = 0  # runs of run_batch with more than one item, for metrics and tests
        self.items = 0

    @property
    def pending(self) -> int:
        """Items waiting for the runner (not yet taken into a batch)."""
        return self._queue.qsize()

    def submit(self, item: T) -> R:
        """Run `item` (in a batch with whatever else arrives meanwhile) and return its result or raise its error."""
        if self.max_size == 1:
            return self._run([item])[0]
        future: Future[R] = Future()
        self._ensure_runner()
        self._queue.put((item, future))
        return future.result()

    def _ensure_runner(self) -> None:
        # started lazily, in the process that serves (never in a parent that forks workers afterwards)
        if self._runner is not None and self._runner.is_alive():
            return
        with self._start_lock:
            if self._runner is None or not self._runner.is_alive():
                self._runner = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._runner.start()

    def _run(self, items: list[T]) -> list[R]:
        results = list(self.run_batch(items))
        if len(results) != len(items):
            raise RuntimeError(f"{self.name}: the model returned {len(results)} results for {len(items)} inputs")
        return results

    def _gather(self) -> list[tuple[T, Future[R]]]:
        batch = [self._queue.get()]
        deadline = time.monotonic() + self.max_wait
        while len(batch) < self.max_size:
            remaining = deadline - time.monotonic()
            try:
                batch.append(self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _loop(self) -> None:
        while True:
            batch = self._gather()
            live = [(item, fut) for item, fut in batch if fut.set_running_or_notify_cancel()]
            if not live:
                continue
            self.items += len(live)
            if len(live) > 1:
                self.batches += 1
            try:
                results = self._run([item for item, _ in live])
            except BaseException as exc:  # noqa: BLE001 - find whose item failed: run each alone
                if len(live) == 1:
                    live[0][1].set_exception(exc)
                    continue
                log.warning("%s: a batch of %d failed (%s); running its items one by one", self.name, len(live), exc)
                for item, fut in live:
                    try:
                        fut.set_result(self._run([item])[0])
                    except BaseException as one_exc:  # noqa: BLE001 - the error belongs to this request
                        fut.set_exception(one_exc)
                continue
            for (_, fut), result in zip(live, results, strict=True):
                fut.set_result(result)
