"""The OpenAPI spec: 3.1, covers every API route, the docs page works offline, and schemathesis finds no gap."""

from __future__ import annotations

import atexit
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from tests.helpers import MODELS_DIR

# Routes that are not API operations: static files, the docs page itself, and the dashboard's HTML pages.
NOT_IN_SPEC = ("static", "openapi.")
MAX_EXAMPLES = 25
SEED = 20240601


def _spec_path(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def test_spec_is_openapi_3_1_and_lists_every_api_route(app, client) -> None:
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.1")
    assert spec["info"]["title"] == "Forecourt API"
    missing = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith(NOT_IN_SPEC) or rule.endpoint.startswith("dashboard."):
            continue
        path = _spec_path(rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            if method.lower() not in spec["paths"].get(path, {}):
                missing.append(f"{method} {path}")
    assert not missing, f"routes missing from the spec: {missing}"
    assert "/login" not in spec["paths"] and "/docs" not in spec["paths"]
    schemes = spec["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-Api-Key"}
    assert schemes["Bearer"]["scheme"] == "bearer"
    error = spec["components"]["schemas"]["HTTPError"]
    assert error["required"] == ["errors"]
    assert error["properties"]["errors"]["items"]["required"] == ["code", "title", "detail"]


def test_every_documented_error_response_uses_the_one_error_shape(client) -> None:
    spec = client.get("/openapi.json").get_json()
    checked = 0
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if method == "parameters":
                continue
            for status, response in op["responses"].items():
                if int(status) < 400 or (path == "/readyz" and status == "503"):
                    continue
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref.rsplit("/", 1)[-1] in ("HTTPError", "ValidationError", "ErrorBody"), (method, path, status)
                checked += 1
    assert checked > 30


def test_docs_page_loads_only_local_assets(client) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs, html
    assert not [r for r in refs if re.match(r"(https?:)?//", r)], f"remote assets on /docs: {refs}"
    assert "cdn" not in html.lower() and "unpkg" not in html.lower()
    expected = {"/static/vendor/swagger-ui/swagger-ui.css", "/static/vendor/swagger-ui/swagger-ui-bundle.js",
                "/static/vendor/swagger-ui/swagger-ui-standalone-preset.js", "/static/favicon.svg"}
    assert expected <= set(refs)
    sizes = {}
    for ref in refs:
        resp = client.get(ref)
        assert resp.status_code == 200, ref
        sizes[ref] = len(resp.data)
    assert sizes["/static/vendor/swagger-ui/swagger-ui-bundle.js"] > 500_000  # the real bundle, not a stub
    assert b"SwaggerUIBundle" in client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js").data
    assert b"SwaggerUIStandalonePreset" in client.get("/static/vendor/swagger-ui/swagger-ui-standalone-preset.js").data
    assert client.get("/static/favicon.svg").content_type.startswith("image/svg+xml")
    assert 'url: "/openapi.json"' in html


def test_vendored_swagger_ui_keeps_its_license_and_version_note() -> None:
    vendor = Path(__file__).resolve().parents[1] / "server" / "static" / "vendor" / "swagger-ui"
    assert "Apache License" in (vendor / "LICENSE").read_text()
    assert re.search(r"swagger-ui-dist\W+\*\*\d+\.\d+\.\d+\*\*", (vendor / "README.md").read_text())


# --- schemathesis ---------------------------------------------------------------------------------------------------


def assert_error_shape_check(ctx, response, case) -> None:  # type: ignore[no-untyped-def]
    """Every 4xx/5xx answer is {"errors": [{"code", "title", "detail"}]} (readyz's 503 adds its checks)."""
    if response.status_code < 400:
        return None
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"], body
    for item in body["errors"]:
        assert set(item) == {"code", "title", "detail"}, item
        assert all(isinstance(item[k], str) and item[k] for k in item), item
    assert "Traceback" not in response.text
    return None


def _make_fuzz_app():  # type: ignore[no-untyped-def]
    """The app schemathesis drives in-process, on its own data folder (removed when the run ends)."""
    from server import create_app

    root = Path(tempfile.mkdtemp(prefix="forecourt-fuzz-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    application = create_app({
        "storage": {"data_dir": str(root / "data")}, "models": {"dir": str(MODELS_DIR), "require": False},
        "logging": {"level": "ERROR"}, "rate_limit": {"enabled": False},
        "licensing": {"state_dir": str(root / "state")},
    })
    application.config["TESTING"] = True
    return application


FUZZ_APP = _make_fuzz_app()


class AdminKey:
    """An admin's key that the fuzzer cannot lose for good: remade when a fuzzed call deletes or demotes it."""

    def __init__(self, app) -> None:  # type: ignore[no-untyped-def]
        self.app = app
        self.key = ""
        self.made = 0

    def headers(self) -> dict[str, str]:
        from server.services import accounts
        from server.store import get_db

        with self.app.app_context():
            principal = accounts.principal_for_key(get_db(), self.key) if self.key else None
            if principal is None or not principal.is_admin:
                self.made += 1
                user = accounts.create_user(get_db(), f"fuzz-admin-{self.made}@dealer.example",
                                            "fuzz admin password", "admin")
                self.key, _ = accounts.create_key(get_db(), user["id"], "fuzz")
        return {"X-Api-Key": self.key}


@pytest.fixture(scope="module")
def admin_key() -> Iterator[AdminKey]:
    yield AdminKey(FUZZ_APP)
    from server.store import close_thread_connections

    close_thread_connections()


schema = schemathesis.openapi.from_wsgi("/openapi.json", FUZZ_APP, config=SchemathesisConfig.from_dict({
    "seed": SEED,
    "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "with-security-parameters": False,
                   "database": "none"},
    "phases": {"stateful": {"enabled": False}},
    # Business rules beyond the schema (password strength set in config, e-mail syntax, license text) answer 400
    # with their own code, as the accounts tests pin; every other check stays on.
    "checks": {"positive_data_acceptance": {"enabled": False}},
}))


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_spec(case, admin_key) -> None:
    """No 5xx, every status documented, every body matching its schema, every error in the one shape."""
    case.call_and_validate(headers=admin_key.headers(), additional_checks=[assert_error_shape_check])


@pytest.mark.browser
@pytest.mark.slow
def test_docs_page_renders_in_a_browser_without_the_internet(tmp_path: Path) -> None:
    """Headless Chromium opens /docs on a live server, every request stays local, and the operations show."""
    import shutil as _shutil

    from playwright.sync_api import sync_playwright

    from tests.helpers import start_live_server, stop_live_server

    chromium = _shutil.which("chromium")
    assert chromium, "Chromium is missing: run `make browser` (scripts/install_chromium.sh)"
    data = tmp_path / "data"
    data.mkdir()
    server = start_live_server(data, workers=1, threads=2)
    remote: list[str] = []
    failed: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page()

            def only_local(route) -> None:  # type: ignore[no-untyped-def]
                if route.request.url.startswith(server.url):
                    route.continue_()
                else:
                    remote.append(route.request.url)
                    route.abort()

            page.route("**/*", only_local)
            page.on("requestfailed", lambda req: failed.append(req.url))
            page.goto(server.url + "/docs")
            # wait until Swagger UI shows the operations looked for below, not merely its first one
            page.wait_for_function("() => { const p = [...document.querySelectorAll('.opblock-summary-path')]"
                                   ".map(e => e.innerText.trim()); return p.includes('/v1/me') && p.includes('/livez'); }",
                                   timeout=120_000)
            paths = page.locator(".opblock-summary-path").all_inner_texts()
            title = page.locator(".info .title").first.inner_text()
            browser.close()
    finally:
        stop_live_server(server)
    assert not remote, f"/docs asked the internet for {remote}"
    assert not failed, failed
    assert "Forecourt API" in title
    assert "/v1/me" in [p.strip() for p in paths] and "/livez" in [p.strip() for p in paths]
