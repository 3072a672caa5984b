"""Shared fixtures: an app on a temporary data folder, a client, a CLI runner, an admin with a key, a live server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
# The development photos live beside the repo (../shared/data); FORECOURT_SHARED_DATA points elsewhere.
SHARED_DATA = Path(os.environ.get("FORECOURT_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()
MODELS_DIR = Path(os.environ.get("FORECOURT_TEST_MODELS_DIR", REPO / "var" / "models")).resolve()
# Trial records outside the data folder must never land in the real home folder during tests.
os.environ.setdefault("FORECOURT_LICENSING__STATE_DIR", tempfile.mkdtemp(prefix="forecourt-test-state-"))


# The test being set up or run: start_live_server asks it whether it is marked slow.
_current: list[pytest.Item] = []


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _current[:] = [item]


def require_slow(what: str) -> None:
    """`make test-fast` skips slow tests, so a test that uses a real server or the real weights must say so."""
    if _current and _current[0].get_closest_marker("slow") is None:
        pytest.fail(f"{_current[0].nodeid} uses {what}: mark it @pytest.mark.slow", pytrace=False)


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
    from server.store import close_thread_connections

    close_thread_connections()


@pytest.fixture
def client(app):
    return app.test_client()


@dataclass
class Account:
    """A user with an API key."""

    user_id: int
    email: str
    password: str
    key: str
    key_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Api-Key": self.key}


def make_account(app, email: str, role: str) -> Account:
    from server.services import accounts
    from server.store import get_db

    password = "correct horse battery"
    with app.app_context():
        user = accounts.create_user(get_db(), email, password, role)
        key, row = accounts.create_key(get_db(), user["id"], f"{role} key")
    return Account(user["id"], email, password, key, row["id"])


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    """A real gunicorn process on a free port."""

    url: str
    data_dir: Path
    env: dict[str, str]
    proc: subprocess.Popen
    log_path: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        """Run the forecourt CLI against this server's data folder."""
        return subprocess.run([sys.executable, "-m", "server.cli", *args], env=self.env, cwd=REPO,
                              capture_output=True, text=True, timeout=120)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_live_server(data_dir: Path, *, workers: int = 2, threads: int = 4,
                      extra_env: dict[str, str] | None = None, timeout: float = 90) -> LiveServer:
    """Start gunicorn with Forecourt's config and wait for /livez (only in a test marked slow)."""
    require_slow("a real gunicorn")
    port = free_port()
    env = dict(os.environ)
    env.update({
        "FORECOURT_STORAGE__DATA_DIR": str(data_dir), "FORECOURT_SERVER__PORT": str(port),
        "FORECOURT_SERVER__HOST": "127.0.0.1", "FORECOURT_SERVER__WORKERS": str(workers),
        "FORECOURT_SERVER__THREADS": str(threads), "FORECOURT_MODELS__DIR": str(MODELS_DIR),
        "FORECOURT_SERVER__WORKER_MEMORY_MB": "0",  # the workers asked for, on a shared box (tests send small images)
        "FORECOURT_LOGGING__LEVEL": "INFO", "PYTHONUNBUFFERED": "1",
        "FORECOURT_LICENSING__STATE_DIR": str(data_dir.parent / f"{data_dir.name}-state"),
    })
    env.update(extra_env or {})
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    subprocess.run([sys.executable, "-m", "server.cli", "init"], env=env, cwd=REPO, check=True,
                   capture_output=True, text=True, timeout=120)
    log_path = data_dir.parent / f"gunicorn-{port}.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "server.cli", "serve"], env=env, cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {log_path.read_text()[-3000:]}")
        try:
            if requests.get(url + "/livez", timeout=2).status_code == 200:
                return LiveServer(url, data_dir, env, proc, log_path)
        except requests.RequestException:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"gunicorn did not answer in {timeout}s: {log_path.read_text()[-3000:]}")


def stop_live_server(server: LiveServer) -> None:
    import signal

    if server.proc.poll() is None:
        os.killpg(server.proc.pid, signal.SIGTERM)
        try:
            server.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)


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
