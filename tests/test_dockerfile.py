"""The Dockerfile (no Docker engine here: parse it and check it against the repo) and the health-check script."""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from server.config import load_settings
from tests.helpers import REPO, free_port, start_live_server, stop_live_server

HEALTHCHECK = REPO / "scripts" / "healthcheck.py"


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    parser = DockerfileParser(path=str(REPO / "Dockerfile"))
    assert parser.structure, "the Dockerfile is empty"
    return parser


def instructions(parser: DockerfileParser, name: str) -> list[str]:
    return [item["value"] for item in parser.structure if item["instruction"] == name]


def ignored(rel: str, patterns: list[str]) -> bool:
    """Whether .dockerignore drops a path (docker matches each pattern against the path and its parents)."""
    parts = rel.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pats = {pat, pat.replace("**/", "")} if pat.startswith("**/") else {pat}
        if any(fnmatch.fnmatchcase(c, p) for c in candidates for p in pats):
            result = not negate
    return result


def test_base_image_is_a_pinned_cuda_runtime(dockerfile: DockerfileParser) -> None:
    froms = instructions(dockerfile, "FROM")
    assert len(froms) == 1
    image = froms[0].split()[0]
    name, _, tag = image.partition(":")
    assert name == "nvidia/cuda"
    assert tag and tag != "latest" and "latest" not in image
    assert re.fullmatch(r"\d+\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", tag), tag


def test_every_copy_source_exists_and_is_in_the_build_context(dockerfile: DockerfileParser) -> None:
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    copies = instructions(dockerfile, "COPY") + instructions(dockerfile, "ADD")
    assert len(copies) >= 5
    sources = []
    for value in copies:
        args = [a for a in value.split() if not a.startswith("--")]
        assert not any(a.startswith("--from") for a in value.split()), "no multi-stage copies expected"
        sources.extend(args[:-1])
    for src in sources:
        assert not re.match(r"https?://", src), f"{src}: no downloads in COPY/ADD"
        path = REPO / src
        assert path.exists(), f"COPY source {src} is not in the repo"
        assert not ignored(src.rstrip("/"), patterns), f"COPY source {src} is excluded by .dockerignore"
    # what the install needs is copied: the package folders, its metadata, and the README setup.cfg reads
    assert {"constraints.txt", "setup.cfg", "pyproject.toml", "README.md", "core", "server", "models", "licensing",
            "scripts/healthcheck.py"} <= set(sources)
    assert not ignored("server/static/vendor/swagger-ui/swagger-ui-bundle.js", patterns)
    assert ignored("tests/test_dockerfile.py", patterns) and ignored(".venv/bin/python", patterns)


def test_python_3_11_installs_with_the_constraints(dockerfile: DockerfileParser) -> None:
    runs = " ".join(instructions(dockerfile, "RUN"))
    assert "python3.11 -m venv" in runs
    pip_installs = re.findall(r"pip install [^&]*", runs)
    package_installs = [p for p in pip_installs if "--upgrade" not in p]
    assert package_installs and all("-c constraints.txt" in p for p in package_installs), package_installs
    assert "torch==2.14.1" in runs and "forecourt models fetch" in runs


def test_runs_as_a_non_root_user_with_data_and_models_on_volumes(dockerfile: DockerfileParser) -> None:
    users = instructions(dockerfile, "USER")
    assert users and users[-1].split(":")[0] not in ("root", "0")
    volumes = " ".join(instructions(dockerfile, "VOLUME"))
    assert '"/data"' in volumes and '"/models"' in volumes
    env = dockerfile.envs
    assert env["FORECOURT_STORAGE__DATA_DIR"] == "/data" and env["FORECOURT_MODELS__DIR"] == "/models"
    # every FORECOURT_ variable the image sets is a real setting with a valid value
    settings = load_settings(environ={k: v for k, v in env.items() if k.startswith("FORECOURT_")})
    assert settings.data_dir == Path("/data") and settings.models_dir == Path("/models")
    assert settings.server.host == "0.0.0.0" and settings.server.port == 8080


def test_serves_on_8080_with_a_healthcheck(dockerfile: DockerfileParser) -> None:
    assert instructions(dockerfile, "EXPOSE") == ["8080"]
    health = instructions(dockerfile, "HEALTHCHECK")
    assert len(health) == 1 and "/app/scripts/healthcheck.py" in health[0]
    assert "--start-period=" in health[0]
    cmd = instructions(dockerfile, "CMD")
    assert len(cmd) == 1
    argv = json.loads(cmd[0])
    assert "forecourt serve --bind 0.0.0.0:8080" in " ".join(argv)
    assert "exec forecourt serve" in argv[-1]  # gunicorn gets the signals, for graceful shutdown


@pytest.mark.slow
def test_healthcheck_script_passes_on_a_ready_server_and_fails_otherwise(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    server = start_live_server(data, workers=1, threads=2, extra_env={"FORECOURT_MODELS__REQUIRE": "false"})
    try:
        port = server.url.rsplit(":", 1)[1]
        ready = subprocess.run([sys.executable, str(HEALTHCHECK)], env={"FORECOURT_SERVER__PORT": port},
                               capture_output=True, text=True, timeout=30)
        assert ready.returncode == 0, ready.stderr
        assert ready.stdout.startswith("ready ") and "/readyz: 200" in ready.stdout
        missing = subprocess.run([sys.executable, str(HEALTHCHECK), server.url + "/no-such-probe"],
                                 capture_output=True, text=True, timeout=30)
        assert missing.returncode == 1 and "404" in missing.stderr
    finally:
        stop_live_server(server)
    dead = subprocess.run([sys.executable, str(HEALTHCHECK), f"http://127.0.0.1:{free_port()}/readyz"],
                          capture_output=True, text=True, timeout=30)
    assert dead.returncode == 1 and dead.stderr.startswith("not ready")


def test_healthcheck_reports_a_503_readyz_as_not_ready(tmp_path: Path) -> None:
    """A 503 from /readyz (here from a tiny stdlib server) is unhealthy, and the reasons are printed."""
    import http.server
    import threading

    class NotReady(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            body = b'{"status":"not_ready","errors":[{"code":"not_ready","title":"Not ready","detail":"models"}]}'
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), NotReady)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_port}/readyz"
        result = subprocess.run([sys.executable, str(HEALTHCHECK)], env={"FORECOURT_HEALTHCHECK_URL": url},
                                capture_output=True, text=True, timeout=30)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert result.returncode == 1
    assert "503" in result.stderr and "models" in result.stderr
