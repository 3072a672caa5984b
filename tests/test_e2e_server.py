"""End to end: real gunicorn (2 workers x 4 threads), a user and key made with the CLI, 200 concurrent calls."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import LiveServer, start_live_server, stop_live_server

pytestmark = pytest.mark.slow

PAIRS = 50  # create-then-revoke pairs (100 writes)
READS = 100  # GET /v1/me and GET /v1/keys
THREADS = 32


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    """gunicorn 2x4 on a temporary data folder, with a 1 MB body limit to test 413 cheaply."""
    data = tmp_path_factory.mktemp("e2e") / "data"
    data.mkdir()
    live = start_live_server(data, workers=2, threads=4, extra_env={"FORECOURT_SERVER__MAX_REQUEST_MB": "1"})
    yield live
    stop_live_server(live)


@pytest.fixture(scope="module")
def cli_key(server: LiveServer) -> str:
    """A member and their key, made with the CLI in a separate process while the server runs."""
    made = server.cli("users", "create", "sales@dealer.example", "--password", "long enough password")
    assert made.returncode == 0, made.stderr
    key = server.cli("keys", "create", "sales@dealer.example", "--name", "e2e")
    assert key.returncode == 0, key.stderr
    secret = key.stdout.strip()
    assert secret.startswith("fc_")
    return secret


def request_counts(url: str) -> Counter:
    """forecourt_http_requests_total from /metrics, merged over workers, as {(route, method, status): n}."""
    text = requests.get(url + "/metrics", timeout=10).text
    counts: Counter = Counter()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "forecourt_http_requests_total":
                counts[(s.labels["route"], s.labels["method"], s.labels["status"])] += s.value
    return counts


def test_cli_key_works_and_request_ids_are_echoed_and_logged(server: LiveServer, cli_key: str) -> None:
    me = requests.get(server.url + "/v1/me", headers={"X-Api-Key": cli_key, "X-Request-Id": "e2e-req-0001"},
                      timeout=10)
    assert me.status_code == 200
    assert me.json()["user"]["email"] == "sales@dealer.example"
    assert me.headers["X-Request-Id"] == "e2e-req-0001"
    bearer = requests.get(server.url + "/v1/me", headers={"Authorization": f"Bearer {cli_key}"}, timeout=10)
    assert bearer.status_code == 200
    generated = bearer.headers["X-Request-Id"]
    assert len(generated) == 32
    wrong = requests.get(server.url + "/v1/me", headers={"X-Api-Key": "fc_not_a_key"}, timeout=10)
    assert wrong.status_code == 403 and wrong.json()["errors"][0]["code"] == "auth_failed"

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and generated not in server.log():
        time.sleep(0.1)
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    access = {entry.get("request_id"): entry for entry in lines if entry.get("logger") == "forecourt.access"}
    assert access["e2e-req-0001"]["path"] == "/v1/me" and access["e2e-req-0001"]["status"] == 200
    assert access["e2e-req-0001"]["key_id"] == me.json()["key_id"]
    assert access[generated]["status"] == 200
    assert all(entry.get("request_id") for entry in access.values())


def test_200_concurrent_requests_no_5xx_no_lock_and_metrics_add_up(server: LiveServer, cli_key: str) -> None:
    headers = {"X-Api-Key": cli_key}
    statuses: Counter = Counter()
    bodies_with_lock: list[str] = []
    session_per_thread = {}

    def session() -> requests.Session:
        import threading

        ident = threading.get_ident()
        if ident not in session_per_thread:
            session_per_thread[ident] = requests.Session()
        return session_per_thread[ident]

    def record(kind: str, resp: requests.Response) -> requests.Response:
        statuses[(kind, resp.status_code)] += 1
        if "database is locked" in resp.text:
            bodies_with_lock.append(resp.text)
        return resp

    def create_then_revoke(i: int) -> None:
        made = record("create", session().post(server.url + "/v1/keys", json={"name": f"burst {i}"},
                                               headers=headers, timeout=60))
        if made.status_code == 201:
            record("revoke", session().delete(f"{server.url}/v1/keys/{made.json()['id']}", headers=headers,
                                              timeout=60))

    def read(i: int) -> None:
        path = "/v1/me" if i % 2 else "/v1/keys"
        auth = headers if i % 3 else {"Authorization": f"Bearer {cli_key}"}
        record("read", session().get(server.url + path, headers=auth, timeout=60))

    before = request_counts(server.url)
    started = time.perf_counter()
    jobs = [(create_then_revoke, i) for i in range(PAIRS)] + [(read, i) for i in range(READS)]
    jobs.sort(key=lambda job: (job[1] * 7919) % 151)  # interleave writes and reads
    with ThreadPoolExecutor(THREADS) as pool:
        for future in [pool.submit(fn, i) for fn, i in jobs]:
            future.result()
    elapsed = time.perf_counter() - started
    after = request_counts(server.url)

    sent = sum(statuses.values())
    delta = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    log = server.log()
    metric_files = sorted(p.name for p in (server.data_dir / "prometheus").glob("counter_*.db"))
    print(f"\ne2e: {sent} requests from {THREADS} threads in {elapsed:.2f}s ({sent / elapsed:.0f}/s); "
          f"statuses {dict(sorted(statuses.items()))}; 'database is locked' in bodies: {len(bodies_with_lock)}, "
          f"in log: {log.count('database is locked')}; /metrics delta {delta}; "
          f"worker metric files {metric_files}")

    assert sent == 2 * PAIRS + READS == 200
    assert statuses == Counter({("create", 201): PAIRS, ("revoke", 200): PAIRS, ("read", 200): READS})
    assert not bodies_with_lock
    assert "database is locked" not in log
    assert "Traceback" not in log
    assert delta == {("/v1/keys", "POST", "201"): PAIRS, ("/v1/keys/<key_id>", "DELETE", "200"): PAIRS,
                     ("/v1/me", "GET", "200"): READS // 2, ("/v1/keys", "GET", "200"): READS // 2}
    assert sum(delta.values()) == sent
    assert len(metric_files) >= 2, "both workers should have served and counted requests"

    keys = requests.get(server.url + "/v1/keys", headers=headers, timeout=10).json()["keys"]
    burst = [k for k in keys if k["name"].startswith("burst ")]
    assert len(burst) == PAIRS and all(k["revoked_at"] for k in burst)


def test_body_over_the_limit_is_413_in_the_error_shape(server: LiveServer, cli_key: str) -> None:
    big = b'{"name": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    resp = requests.post(server.url + "/v1/keys", data=big, timeout=60,
                         headers={"X-Api-Key": cli_key, "Content-Type": "application/json"})
    assert resp.status_code == 413
    assert resp.json() == {"errors": [{"code": "file_too_large", "title": "File too large",
                                       "detail": "The request body is larger than the server accepts."}]}
    assert resp.headers["X-Request-Id"]


def test_server_log_has_no_lock_errors_or_tracebacks(server: LiveServer) -> None:
    log = server.log()
    assert "database is locked" not in log and "Traceback" not in log
    json_lines = [line for line in log.splitlines() if line.startswith("{")]
    assert json_lines and all("request_id" in json.loads(line) for line in json_lines
                              if json.loads(line).get("logger") == "forecourt.access")
    assert Path(server.log_path).exists()
