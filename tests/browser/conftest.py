"""Browser fixtures: one real gunicorn for the module (trusting a throwaway vendor key), Debian's Chromium driven by
Playwright, signed-in pages, and screenshots under test-artifacts/screenshots/."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import MODELS_DIR, REPO, LiveServer, start_live_server, stop_live_server

CHROMIUM = os.environ.get("FORECOURT_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
PASSWORD = "correct horse battery"
WIDE, NARROW = (1280, 800), (390, 844)
STATE_TIMEOUT_MS = 60_000  # a page, an element, a status line
MODEL_TIMEOUT_MS = 240_000  # a form whose answer runs the real model (Try it, a scan, photo uploads)

try:
    from playwright.sync_api import expect

    expect.set_options(timeout=STATE_TIMEOUT_MS)  # expect() retries until its state holds, up to this
except ImportError:  # the browser tests skip, saying how to get Playwright
    pass


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without Debian's Chromium (or Playwright) the browser tests skip, saying how to get it; nothing else does."""
    missing = None
    if not Path(CHROMIUM).exists():
        missing = f"{CHROMIUM} is missing: run `bash scripts/install_chromium.sh` (make browser)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "playwright is not installed: pip install -e . -c constraints.txt"
    if missing:
        here = Path(__file__).parent
        for item in items:
            if here in Path(str(item.fspath)).parents:
                item.add_marker(pytest.mark.skip(reason=missing))


@dataclass
class Dashboard:
    """The server under test, its vendor (signs license files) and its two users."""

    server: LiveServer
    vendor: object
    admin_email: str = "admin@dealer.example"
    member_email: str = "sales@dealer.example"
    password: str = PASSWORD
    admin_key: str = ""  # for the API calls that stock collections and the catalog

    @property
    def url(self) -> str:
        return self.server.url


def create_schema(data: Path, env: dict[str, str]) -> None:
    """Apply every blueprint's migrations once, in a throwaway process, before gunicorn starts: two workers
    migrating a brand-new database at the same moment can fail to boot with "database is locked"."""
    full = {**os.environ, **env, "FORECOURT_STORAGE__DATA_DIR": str(data), "FORECOURT_MODELS__DIR": str(MODELS_DIR),
            "FORECOURT_LICENSING__STATE_DIR": str(data.parent / f"{data.name}-state"),
            "FORECOURT_LOGGING__LEVEL": "WARNING"}
    code = "import os; from server import create_app; create_app(); os._exit(0)"
    subprocess.run([sys.executable, "-c", code], env=full, cwd=REPO, check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """gunicorn (2 workers x 4 threads) on a fresh data folder, with an admin and a member."""
    from licensing.testing import ThrowawayVendor

    vendor = ThrowawayVendor()
    env = {"FORECOURT_LICENSING__PUBLIC_KEYS": json.dumps([vendor.public_key])}
    data = tmp_path_factory.mktemp("dash") / "data"
    data.mkdir()
    create_schema(data, env)
    server = start_live_server(data, extra_env=env)
    dash = Dashboard(server, vendor)
    try:
        from server.services import accounts
        from server.store import open_db

        db = open_db(data / "forecourt.db")
        for email, role in ((dash.admin_email, "admin"), (dash.member_email, "member")):
            user = accounts.create_user(db, email, PASSWORD, role)
            if role == "admin":
                dash.admin_key = accounts.create_key(db, user["id"], "Test stock")[0]
        db.close()
        yield dash
    finally:
        stop_live_server(server)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Debian Chromium (Playwright never downloads a browser here)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def new_page(browser, dash: Dashboard, *, viewport: tuple[int, int] = WIDE,  # type: ignore[no-untyped-def]
             storage_state: dict | None = None):
    """A fresh browser context (own cookies, or a saved session's) and page; JavaScript errors are collected."""
    context = browser.new_context(base_url=dash.url, viewport={"width": viewport[0], "height": viewport[1]},
                                  accept_downloads=True, storage_state=storage_state)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=dash.url)
    page = context.new_page()
    # Generous deadlines: every wait is on the page's state and ends as soon as it holds, so a long deadline costs
    # nothing on an idle box and keeps a loaded one (other jobs, the real model on 2 cores) from failing by luck.
    page.set_default_timeout(STATE_TIMEOUT_MS)
    page.set_default_navigation_timeout(MODEL_TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors  # type: ignore[attr-defined]
    return page


def sign_in(page, email: str, password: str = PASSWORD) -> None:  # type: ignore[no-untyped-def]
    """Sign in through the form, as a person would."""
    page.goto("/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/$"))


@pytest.fixture(scope="module")
def sessions(browser, dashboard: Dashboard) -> dict[str, dict]:
    """Sign in once per role through the form; later pages start from the saved cookies."""
    out = {}
    for role, email in (("admin", dashboard.admin_email), ("member", dashboard.member_email)):
        page = new_page(browser, dashboard)
        sign_in(page, email)
        out[role] = page.context.storage_state()
        page.context.close()
    return out


def _signed_in_page(browser, dashboard: Dashboard, state: dict) -> Iterator[object]:  # type: ignore[no-untyped-def]
    page = new_page(browser, dashboard, storage_state=state)
    page.goto("/")
    yield page
    assert page.js_errors == [], page.js_errors  # type: ignore[attr-defined]
    page.context.close()


@pytest.fixture
def admin_page(browser, dashboard: Dashboard, sessions: dict[str, dict]) -> Iterator[object]:
    yield from _signed_in_page(browser, dashboard, sessions["admin"])


@pytest.fixture
def member_page(browser, dashboard: Dashboard, sessions: dict[str, dict]) -> Iterator[object]:
    yield from _signed_in_page(browser, dashboard, sessions["member"])


@pytest.fixture(scope="session")
def screenshots_dir() -> Path:
    d = REPO / "test-artifacts" / "screenshots"
    d.mkdir(parents=True, exist_ok=True)
    return d
