"""Shared fixtures: an app on a temporary data folder, a client, a CLI runner, an admin with a key, a live server."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers import (
    MODELS_DIR,
    REPO,
    SHARED_DATA,
    Account,
    LiveServer,
    _current,
    make_account,
    require_slow,
    start_live_server,
    stop_live_server,
)

# Trial records outside the data folder must never land in the real home folder during tests.
os.environ.setdefault("FORECOURT_LICENSING__STATE_DIR", tempfile.mkdtemp(prefix="forecourt-test-state-"))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _current[:] = [item]


@pytest.fixture(autouse=True)
def _real_weights_only_in_slow_tests(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading the fetched model files (not a test's own tiny or corrupt ones) fails a test not marked slow."""
    if request.node.get_closest_marker("slow") is not None:
        return
    import models.sam
    from models.segmenters.base import Segmenter

    load_segmenter, load_sam = Segmenter.load, models.sam.load_sam

    def guarded_segmenter(self: Segmenter) -> None:
        if Path(self.models_dir).resolve() == MODELS_DIR:
            require_slow(f"the real {self.name} weights")
        load_segmenter(self)

    def guarded_sam(checkpoint: Path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if MODELS_DIR in Path(checkpoint).resolve().parents:
            require_slow(f"the real {Path(checkpoint).name} weights")
        return load_sam(checkpoint, *args, **kwargs)

    monkeypatch.setattr(Segmenter, "load", guarded_segmenter)
    monkeypatch.setattr(models.sam, "load_sam", guarded_sam)
    # Car collections embed each car with the fetched Lite0 weights (recognition.car_embedding): outside slow tests
    # the weights count as not fetched, so car collections run without the margin unless a test fakes the embedder.
    from models.errors import ModelMissing
    from models.recognition.car_embedding import CarEmbedder

    def no_real_lite0(self: CarEmbedder) -> None:
        raise ModelMissing("the real Lite0 weights load in slow tests only")

    monkeypatch.setattr(CarEmbedder, "load", no_real_lite0)


@pytest.fixture(autouse=True)
def _fake_foreground_classifier(request, monkeypatch) -> None:  # noqa: ANN001
    """type=auto's classifier is a fake that says "other" (tests/fakes_removebg.py) in every test but those marked
    slow, which load the real weights; test_foreground_type.py drives the real one."""
    if request.node.get_closest_marker("slow") is None:
        from server.services import removebg
        from tests.fakes_removebg import FakeClassifier

        monkeypatch.setattr(removebg, "_classifier", lambda settings: FakeClassifier("other"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real car photos beside the repo (never copied into it)."""
    if not (SHARED_DATA / "PAIRS.tsv").exists():
        pytest.fail(f"the shared data folder is missing: {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def settings_dict(data_dir: Path, tmp_path: Path) -> dict:
    """Settings for a test app: temporary data folder, the fetched models, quiet logs."""
    return {
        "storage": {"data_dir": str(data_dir)},
        "models": {"dir": str(MODELS_DIR), "require": False},
        "logging": {"level": "WARNING"},
        "rate_limit": {"default": "1000 per minute"},
        "licensing": {"state_dir": str(tmp_path / "state")},
    }


@pytest.fixture
def app(settings_dict: dict):
    from server import create_app

    application = create_app(settings_dict)
    application.config["TESTING"] = True
    yield application
    from server.jobs.queue import stop_in_server
    from server.store import close_thread_connections

    stop_in_server(application, timeout=30)  # the queue threads a request started end with the test
    close_thread_connections()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def admin(app) -> Account:
    return make_account(app, "admin@dealer.example", "admin")


@pytest.fixture
def member(app) -> Account:
    return make_account(app, "sales@dealer.example", "member")


@pytest.fixture
def cli_runner(data_dir: Path) -> Iterator[tuple[CliRunner, dict[str, str]]]:
    """A click runner with the environment pointing at the temporary data folder."""
    env = {"FORECOURT_STORAGE__DATA_DIR": str(data_dir), "FORECOURT_MODELS__DIR": str(MODELS_DIR),
           "FORECOURT_LOGGING__LEVEL": "WARNING",
           "FORECOURT_LICENSING__STATE_DIR": str(data_dir.parent / "state")}
    yield CliRunner(), env


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    """gunicorn, 2 workers x 4 threads, on a temporary data folder."""
    data = tmp_path / "live-data"
    data.mkdir()
    server = start_live_server(data)
    yield server
    stop_live_server(server)


@pytest.fixture
def artifacts_dir() -> Path:
    d = REPO / "test-artifacts"
    d.mkdir(exist_ok=True)
    return d


__all__ = ["shutil"]


@pytest.fixture
def vendor():
    """A throwaway license vendor (its own Ed25519 key) for licensing tests."""
    from licensing.testing import ThrowawayVendor

    return ThrowawayVendor()


@pytest.fixture
def traveller():
    """The clock frozen at tests.helpers.T0; tests move it with .move_to(day(n))."""
    import time_machine

    from tests.helpers import T0

    with time_machine.travel(T0, tick=False) as t:
        yield t
