"""Every dashboard page and the API docs in headless Chromium under the strict Content-Security-Policy: nothing is
blocked (no inline script or style left), and the parts that had inline styles still lay out."""

from __future__ import annotations

import re

import pytest
import requests

from tests.browser.conftest import Dashboard, new_page

# gunicorn and the real model start inside the first test that needs them: a longer deadline than the default.
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(900)]

WATCH_JS = """window.__csp = []; document.addEventListener('securitypolicyviolation',
  e => window.__csp.push(e.violatedDirective + ' ' + (e.blockedURI || 'inline') + ' ' + e.sourceFile + ':' + e.lineNumber));"""


@pytest.fixture(scope="module")
def tryit_url(browser, dashboard: Dashboard, sessions: dict, shared_data) -> str:  # type: ignore[no-untyped-def]
    """A Try it result page (real model), made through the form; its address."""
    page = new_page(browser, dashboard, storage_state=sessions["admin"])
    page.goto("/try")
    page.set_input_files("#photo", str(shared_data / "carvana/images/0ce66b539f52_01.jpg"))
    page.get_by_role("button", name="Remove background").click(no_wait_after=True)
    page.wait_for_url(re.compile(r"/try/[A-Za-z0-9_-]{20,}$"), timeout=300_000)  # the model on a busy box
    url = page.url
    page.context.close()
    return url


def watched(browser, dashboard: Dashboard, storage_state=None):  # type: ignore[no-untyped-def]
    page = new_page(browser, dashboard, storage_state=storage_state)
    page.context.add_init_script(WATCH_JS)
    console: list[str] = []
    page.on("console", lambda msg: console.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.csp_console = console  # type: ignore[attr-defined]
    return page


def violations(page) -> list[str]:  # type: ignore[no-untyped-def]
    return page.evaluate("window.__csp") + page.csp_console  # type: ignore[attr-defined]


def test_every_page_runs_under_the_policy(browser, dashboard: Dashboard, sessions: dict, tryit_url: str) -> None:
    h = {"X-Api-Key": dashboard.admin_key}
    coll = requests.post(dashboard.url + "/v1/collections", json={"name": "CSP lot"}, headers=h, timeout=30).json()
    vid = requests.post(dashboard.url + "/v1/vehicles", json={"vin": "5YJ3E1EA2KF317000"}, headers=h,
                        timeout=30).json()["id"]
    pages = ["/", "/keys", "/usage", "/license", "/system", "/users", "/account", "/collections",
             f"/collections/{coll['id']}", "/vehicles", f"/vehicles/{vid}", "/try", tryit_url, "/docs"]
    page = watched(browser, dashboard, sessions["admin"])
    for path in pages:
        resp = page.goto(path)
        assert resp is not None and resp.status == 200, path
        assert "default-src 'self'" in resp.headers["content-security-policy"], path
        page.wait_for_load_state("load")
        if path == "/docs":
            page.locator(".opblock").first.wait_for()  # Swagger UI rendered the operations
        if path == "/usage":
            page.locator("canvas").first.wait_for()  # Chart.js drew
        assert violations(page) == [], (path, violations(page))
        assert page.js_errors == [], (path, page.js_errors)  # type: ignore[attr-defined]
    page.context.close()
    signed_out = watched(browser, dashboard)
    for path in ("/login", "/forgot"):
        signed_out.goto(path)
        assert violations(signed_out) == [], (path, violations(signed_out))
    signed_out.context.close()


def test_what_had_inline_styles_still_lays_out(browser, dashboard: Dashboard, sessions: dict,
                                               tryit_url: str) -> None:
    page = watched(browser, dashboard, sessions["admin"])
    page.goto(tryit_url)
    box = page.locator("#compare").bounding_box()
    img = page.locator("#result-image")
    w, h = float(img.get_attribute("width")), float(img.get_attribute("height"))
    assert box and box["height"] == pytest.approx(box["width"] * h / w, abs=3)  # sized by the image's own ratio
    assert page.locator("#before-layer").evaluate("el => getComputedStyle(el).clipPath") == "inset(0px 50% 0px 0px)"
    divider = page.locator("#divider").bounding_box()
    assert divider and abs(divider["x"] + 1 - (box["x"] + box["width"] / 2)) < 3
    if page.locator("#refine-canvas").count():
        assert page.locator("#refine-canvas").bounding_box()["height"] > 50
    page.goto("/")
    for bar in page.locator(".bar[aria-valuenow]").all():
        used, granted = float(bar.get_attribute("aria-valuenow")), float(bar.get_attribute("aria-valuemax"))
        rect = bar.locator(".fill rect").bounding_box()
        outer = bar.bounding_box()
        assert rect and outer and rect["width"] == pytest.approx(outer["width"] * min(used / granted, 1), abs=2)
    assert violations(page) == []
    assert re.search(r"\d", page.locator(".bar-figures").first.inner_text())
    page.context.close()
