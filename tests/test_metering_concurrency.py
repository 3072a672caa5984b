"""Metering under real gunicorn: 2 workers x 8 threads, 400 chargeable requests against an allowance of 300, one
worker killed with kill -9 midway. Exactly the successful requests are charged, never more than the allowance,
the dead worker's reservations are refunded by the server itself, and the ledger verifies."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from licensing import ledger
from licensing.plans import Plan
from licensing.testing import ThrowawayVendor
from tests.helpers import start_live_server, stop_live_server

pytestmark = pytest.mark.slow
ALLOWANCE, TOTAL, HOLDERS = 300, 400, 16


def _workers(master_pid: int) -> list[int]:
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    return [int(c) for c in children]


def _pending_by_pid(db_path: Path) -> Counter:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10) as conn:
        rows = conn.execute("SELECT owner FROM lic_reservations WHERE status = 'pending'").fetchall()
    return Counter(int(owner.rsplit(":", 2)[1]) for (owner,) in rows)


def test_400_requests_300_allowance_one_worker_killed(tmp_path):
    vendor = ThrowawayVendor()
    data = tmp_path / "data"
    data.mkdir()
    server = start_live_server(data, workers=2, threads=8, extra_env={
        "FORECOURT_LICENSING__STATE_DIR": str(tmp_path / "state"),
        "FORECOURT_LICENSING__PUBLIC_KEYS": json.dumps([vendor.public_key]),
        "FORECOURT_RATE_LIMIT__ENABLED": "false",
        "FORECOURT_LOGGING__LEVEL": "WARNING",
    })
    try:
        fp = server.cli("license", "fingerprint").stdout.split("fingerprint: ")[1].split()[0]
        lic = tmp_path / "lic.txt"
        lic.write_text(vendor.license(fp, Plan(name="metered", credits=ALLOWANCE), license_id="lic_conc"))
        out = server.cli("license", "install", str(lic))
        assert out.returncode == 0, out.stderr
        key = server.cli("keys", "create", "admin@localhost.localdomain", "--name", "conc").stdout.strip()
        assert key.startswith("fc_")

        results: dict[str, int | str] = {}
        local = __import__("threading").local()

        def call(hold_ms: int) -> None:
            rid = uuid.uuid4().hex
            session = getattr(local, "s", None) or requests.Session()
            local.s = session
            try:
                r = session.post(server.url + "/v1/metering/probe", json={"metric": "credits", "hold_ms": hold_ms},
                                 headers={"X-Api-Key": key, "X-Request-Id": rid}, timeout=60)
                results[rid] = r.status_code
                if r.status_code == 402:
                    assert r.json()["errors"][0]["code"] == "insufficient_credits"
            except requests.ConnectionError:
                results[rid] = "dropped"
                local.s = None

        workers = _workers(server.proc.pid)
        assert len(workers) == 2
        lock = data / "licensing" / "scheduler.lock"
        for _ in range(100):  # licensing's jobs run in exactly one worker, the holder of the lock
            if lock.exists() and lock.read_text().strip():
                break
            time.sleep(0.1)
        assert int(lock.read_text()) in workers

        pool = ThreadPoolExecutor(16)
        list(pool.map(call, [20] * 150))  # phase 1

        holders = ThreadPoolExecutor(HOLDERS)  # phase 2: fill the workers with held charges, kill one
        held = [holders.submit(call, 4000) for _ in range(HOLDERS)]
        deadline, last, stable_since = time.monotonic() + 20, -1, time.monotonic()
        while time.monotonic() < deadline:
            pending = _pending_by_pid(data / "forecourt.db")
            n = sum(pending.values())
            if n != last:
                last, stable_since = n, time.monotonic()
            elif n >= 8 and time.monotonic() - stable_since > 0.5:
                break
            time.sleep(0.05)
        victim, held_by_victim = pending.most_common(1)[0]
        assert victim in _workers(server.proc.pid)
        os.kill(victim, signal.SIGKILL)
        for f in held:
            f.result()
        time.sleep(6)  # gunicorn respawns the worker; the next reservations reap the dead one's

        list(pool.map(call, [20] * (TOTAL - 150 - HOLDERS)))  # phase 3
        pool.shutdown()
        holders.shutdown()

        counts = Counter(results.values())
        assert sum(counts.values()) == TOTAL
        assert set(counts) <= {200, 402, "dropped"}, counts
        assert counts["dropped"] >= held_by_victim >= 1

        db = sqlite3.connect(f"file:{data / 'forecourt.db'}?mode=ro", uri=True)
        charged = {r: a for r, a in db.execute(
            "SELECT request_id, sum(amount) FROM lic_ledger WHERE kind = 'charge' GROUP BY request_id")}
        ok_ids = {rid for rid, status in results.items() if status == 200}
        assert set(charged) == ok_ids  # exactly the successful requests were charged ...
        assert all(a == 1 for a in charged.values())  # ... once each
        assert sum(charged.values()) == counts[200] == ALLOWANCE  # never more than the allowance, none lost
        status = dict(db.execute("SELECT status, count(*) FROM lic_reservations GROUP BY status").fetchall())
        assert status.get("pending", 0) == 0
        assert status.get("expired", 0) == held_by_victim  # the killed worker's charges were refunded
        assert status["committed"] == ALLOWANCE
        import sqlite_utils

        from licensing.seal import Seal

        verification = ledger.verify(sqlite_utils.Database(db), Seal(tmp_path / "state", data / "licensing"))
        assert verification.ok, verification.problem
        api = requests.get(server.url + "/v1/licensing/ledger", headers={"X-Api-Key": key}, timeout=10).json()
        assert api["ok"] is True
        account = requests.get(server.url + "/v1.0/account", headers={"X-Api-Key": key}, timeout=10).json()
        assert account["data"]["attributes"]["credits"]["total"] == 0
        print(f"\nconcurrency: {dict(counts)}; charged {sum(charged.values()):g} of {ALLOWANCE}; killed worker "
              f"{victim} held {held_by_victim}, refunded {status.get('expired', 0)}; ledger "
              f"{verification.entries} entries verified")
        assert "Traceback" not in server.log()
    finally:
        stop_live_server(server)
