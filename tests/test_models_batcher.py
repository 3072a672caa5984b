"""The micro-batcher: results go back to the request that sent them, in order; a failing item fails alone; a batch
runs when it is full or when its wait is over. The model is a fake that sleeps and records what it was given."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from models.batcher import MicroBatcher
from tests import helpers

DEADLINE = 30.0


def wait_for(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    """Poll a condition (state, not time) with a generous deadline."""
    helpers.wait_for(what, condition, DEADLINE, interval=0.005)


class FakeSleepingModel:
    """A fake model: sleeps `seconds` a batch, answers item * 10, fails on items in `bad`, records every batch; a
    batch can be held at the door with `gate`."""

    def __init__(self, seconds: float = 0.01, bad: tuple[int, ...] = ()) -> None:
        self.seconds = seconds
        self.bad = set(bad)
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, items: list[int]) -> list[int]:
        with self._lock:
            self.batches.append(list(items))
        self.entered.set()
        self.gate.wait(DEADLINE)
        time.sleep(self.seconds)
        if self.bad & set(items):
            raise ValueError(f"bad input {sorted(self.bad & set(items))}")
        return [i * 10 for i in items]


def test_each_request_gets_its_own_result_from_shared_batches() -> None:
    model = FakeSleepingModel(seconds=0.02)
    batcher = MicroBatcher(model, max_size=4, max_wait_ms=20)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(batcher.submit, range(40)))
    assert results == [i * 10 for i in range(40)]
    assert sorted(i for batch in model.batches for i in batch) == list(range(40))  # each item ran exactly once
    assert max(len(b) for b in model.batches) <= 4
    assert any(len(b) > 1 for b in model.batches), "16 concurrent requests never shared a batch"


def submit_in_order(model: FakeSleepingModel, batcher: MicroBatcher, count: int, call) -> None:  # noqa: ANN001
    """Run call(0) .. call(count - 1), each in its own thread: item 0's batch is held inside the model while the
    others queue one after the other (so arrival order is known), then all run and finish."""
    model.gate.clear()
    first = threading.Thread(target=call, args=(0,))
    first.start()
    wait_for(model.entered.is_set, "the first batch to reach the model")
    threads = []
    for i in range(1, count):
        t = threading.Thread(target=call, args=(i,))
        t.start()
        threads.append(t)
        wait_for(lambda i=i: batcher.pending == i, f"item {i} to be queued")
    model.gate.set()
    for t in [first, *threads]:
        t.join(DEADLINE)


def test_batches_keep_arrival_order_and_the_size_bound() -> None:
    model = FakeSleepingModel(seconds=0.0)
    batcher = MicroBatcher(model, max_size=3, max_wait_ms=0)
    results: dict[int, int] = {}
    submit_in_order(model, batcher, 8, lambda i: results.__setitem__(i, batcher.submit(i)))
    assert results == {i: i * 10 for i in range(8)}
    assert model.batches == [[0], [1, 2, 3], [4, 5, 6], [7]]


def test_an_error_goes_only_to_the_request_that_caused_it() -> None:
    model = FakeSleepingModel(seconds=0.0, bad=(2,))
    batcher = MicroBatcher(model, max_size=4, max_wait_ms=0)
    outcomes: dict[int, object] = {}

    def call(i: int) -> None:
        try:
            outcomes[i] = batcher.submit(i)
        except ValueError as exc:
            outcomes[i] = exc

    submit_in_order(model, batcher, 5, call)
    assert [1, 2, 3, 4] in model.batches  # the bad item did share a batch with good ones
    assert isinstance(outcomes[2], ValueError) and "bad input [2]" in str(outcomes[2])
    assert {i: outcomes[i] for i in (0, 1, 3, 4)} == {0: 0, 1: 10, 3: 30, 4: 40}
    assert batcher.submit(5) == 50  # the batcher keeps working after a failure


def test_a_full_batch_runs_without_waiting_out_max_wait() -> None:
    model = FakeSleepingModel(seconds=0.01)
    batcher = MicroBatcher(model, max_size=4, max_wait_ms=600_000)  # ten minutes: only a full batch can run
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(batcher.submit, i) for i in range(4)]
        wait_for(lambda: all(f.done() for f in futures), "a full batch to run")
    assert sorted(f.result() for f in futures) == [0, 10, 20, 30]
    assert len(model.batches) == 1 and sorted(model.batches[0]) == [0, 1, 2, 3]  # one run, all four


def test_a_lone_request_waits_max_wait_for_company_and_no_longer() -> None:
    model = FakeSleepingModel(seconds=0.0)
    batcher = MicroBatcher(model, max_size=8, max_wait_ms=200)
    start = time.monotonic()
    assert batcher.submit(7) == 70
    elapsed = time.monotonic() - start
    assert elapsed >= 0.2  # it waited for others to join
    assert elapsed < 0.2 + 5.0  # and then ran alone rather than waiting for a full batch
    assert model.batches == [[7]]


def test_size_one_runs_in_the_callers_thread() -> None:
    seen: list[str] = []

    def model(items: list[int]) -> list[int]:
        seen.append(threading.current_thread().name)
        return [i + 1 for i in items]

    batcher = MicroBatcher(model, max_size=1)
    assert batcher.submit(1) == 2
    assert seen == [threading.current_thread().name]
    assert batcher._runner is None


def test_a_model_that_returns_the_wrong_count_fails_every_caller_clearly() -> None:
    batcher = MicroBatcher(lambda items: [], max_size=2, max_wait_ms=0)
    with pytest.raises(RuntimeError, match="returned 0 results for 1 inputs"):
        batcher.submit(1)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        MicroBatcher(lambda items: items, max_size=0)
    with pytest.raises(ValueError):
        MicroBatcher(lambda items: items, max_wait_ms=-1)
