"""Helpers the tests share (fixtures are in conftest.py): where things are, accounts with keys, a live gunicorn."""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
# The development photos live beside the repo (../shared/data); FORECOURT_SHARED_DATA points elsewhere.
SHARED_DATA = Path(os.environ.get("FORECOURT_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()
MODELS_DIR = Path(os.environ.get("FORECOURT_TEST_MODELS_DIR", REPO / "var" / "models")).resolve()

# The test being set up or run (conftest's pytest_runtest_setup sets it): require_slow asks it about its marks.
_current: list[pytest.Item] = []


def require_slow(what: str) -> None:
    """`make test-fast` skips slow tests, so a test that uses a real server or the real weights must say so."""
    if _current and _current[0].get_closest_marker("slow") is None:
        pytest.fail(f"{_current[0].nodeid} uses {what}: mark it @pytest.mark.slow", pytrace=False)


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

    def admin_headers(self, key_name: str | None = None) -> dict[str, str]:
        """Make admin@dealer.example with the CLI and return the headers of a new API key of theirs."""
        made = self.cli("users", "create", "admin@dealer.example", "--role", "admin", "--password",
                        "long enough password")
        assert made.returncode == 0, made.stderr
        key = self.cli("keys", "create", "admin@dealer.example", *(["--name", key_name] if key_name else []))
        assert key.returncode == 0, key.stderr
        return {"X-Api-Key": key.stdout.strip()}

    def vehicle_with_profile(self, headers: dict[str, str]) -> dict:
        """A 2012 BMW whose renders use a small profile (300x200 PNG, no shadow)."""
        prof = requests.post(self.url + "/v1/profiles", json={"name": "small", "width": 300, "height": 200,
                                                              "format": "png", "add_shadow": False},
                             headers=headers, timeout=30).json()
        return requests.post(self.url + "/v1/vehicles", json={"vin": "WBA3A5C51CF256651", "profile_id": prof["id"]},
                             headers=headers, timeout=30).json()

    def upload_photos(self, headers: dict[str, str], vehicle_id: int, photos: list[tuple[Path, str]],
                      width: int = 480, timeout: float = 60) -> requests.Response:
        """Upload real photos of a vehicle (scaled to `width`), each with its angle; the upload is accepted (201)."""
        files = [("photo", (path.name, small_jpeg(path, width), "image/jpeg")) for path, _ in photos]
        up = requests.post(f"{self.url}/v1/vehicles/{vehicle_id}/photos", files=files,
                           data={"angle": [angle for _, angle in photos]}, headers=headers, timeout=timeout)
        assert up.status_code == 201, up.text
        return up


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


def start_catalog_server(tmp_path: Path) -> LiveServer:
    """A live server on a fresh data folder for catalog work: one worker with two threads, preview-size renders and
    a queue polled every 0.2 s."""
    data = tmp_path / "data"
    data.mkdir()
    return start_live_server(data, workers=1, threads=2, extra_env={
        "FORECOURT_CATALOG__RENDER_SIZE": "preview", "FORECOURT_QUEUE__POLL_SECONDS": "0.2"})


def stop_live_server(server: LiveServer) -> None:
    import signal

    if server.proc.poll() is None:
        os.killpg(server.proc.pid, signal.SIGTERM)
        try:
            server.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)


def wait_for(what: str, predicate, timeout: float = 300.0, interval: float = 0.05):  # noqa: ANN001, ANN201
    """Poll a condition (state, not time) until it holds and return its value; fail naming it after a generous
    deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(interval)
    pytest.fail(f"timed out waiting for {what}")


def small_jpeg(path: Path, width: int = 480) -> bytes:
    """A real photo scaled to `width` pixels wide, as JPEG (live-server tests send small images)."""
    with Image.open(path) as img:
        img = img.convert("RGB").resize((width, round(width * img.height / img.width)), Image.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def assert_error_shape(resp, status: int | None = None) -> dict:
    """The body is {"errors": [{"code", "title", "detail"}]} with non-empty strings, and JSON."""
    if status is not None:
        assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.is_json, f"{resp.status_code} {resp.content_type}: {resp.get_data(as_text=True)[:200]}"
    body = resp.get_json()
    assert set(body) >= {"errors"}
    assert isinstance(body["errors"], list) and body["errors"]
    for item in body["errors"]:
        assert set(item) == {"code", "title", "detail"}
        assert all(isinstance(item[k], str) and item[k] for k in ("code", "title", "detail"))
        assert re.fullmatch(r"[a-z][a-z0-9_]*", item["code"]), item["code"]
    text = resp.get_data(as_text=True)
    assert "Traceback" not in text and 'File "' not in text
    return body["errors"][0]


def csrf_token(client, path: str = "/login") -> str:
    """The CSRF token from a dashboard page's form."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def sign_in(client, account: Account) -> None:
    resp = client.post("/login", data={"email": account.email, "password": account.password,
                                       "csrf_token": csrf_token(client)})
    assert resp.status_code == 302, resp.get_data(as_text=True)[-1000:]


# The licensing tests' clock: a fixed start and days after it (time-machine travels there).
T0 = datetime(2030, 1, 10, 12, 0, tzinfo=UTC)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def load_script(name: str):  # type: ignore[no-untyped-def]  # noqa: ANN201
    """A module of scripts/ (`name` without .py), loaded from its file, with scripts/ on sys.path so that its own
    imports of its sibling scripts resolve."""
    import importlib.util

    folder = str(REPO / "scripts")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def car_photo(shared_data: Path, car: str, angle: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """A Carvana car photo (RGB, LANCZOS) and its ground-truth mask (grey, 0-255), from carvana/ or
    calibration/carvana/, resized to `side` px wide."""
    for folder in (shared_data / "carvana", shared_data / "calibration" / "carvana"):
        path = folder / "images" / f"{car}_{angle:02d}.jpg"
        if path.exists():
            img = Image.open(path).convert("RGB")
            size = (side, round(side * img.height / img.width))
            mask = Image.open(folder / "masks" / f"{car}_{angle:02d}_mask.gif").convert("L").resize(size)
            return np.asarray(img.resize(size, Image.Resampling.LANCZOS)), np.asarray(mask)
    raise FileNotFoundError(f"{car}_{angle:02d} is not in the shared data")


def paste_car(canvas: np.ndarray, rgb: np.ndarray, mask: np.ndarray, width: int, x: int,
              bottom: int) -> np.ndarray:
    """Paste the masked car of `rgb` (its mask's box, scaled to `width` px, area-averaged, the mask as alpha) into
    the float32 `canvas` in place, its left edge at x and its bottom `bottom` px above the canvas's; the pasted
    car's true mask (alpha >= 0.5)."""
    ys, xs = np.nonzero(mask)
    rgb, mask = rgb[ys.min():ys.max() + 1, xs.min():xs.max() + 1], mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    height = round(rgb.shape[0] * width / rgb.shape[1])
    car = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32)
    alpha = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)[..., None]
    y = canvas.shape[0] - height - bottom
    canvas[y:y + height, x:x + width] = alpha * car + (1 - alpha) * canvas[y:y + height, x:x + width]
    truth = np.zeros(canvas.shape[:2], bool)
    truth[y:y + height, x:x + width] = alpha[..., 0] >= 0.5
    return truth
