#!/usr/bin/env python3
"""Metering overhead per request: the same admin probe request metered (reserve + commit + ledger) and unmetered.

    .venv/bin/python scripts/bench_metering.py [--requests 500]

Runs the app in-process (Flask test client) on a temporary data folder with a throwaway vendor license, so it
measures the server's own cost, not the network. Prints one line per figure (medians) and the ratio.
"""

from __future__ import annotations

import statistics
import tempfile
import time

import click


@click.command()
@click.option("--requests", "n", default=500, show_default=True, help="Requests per variant.")
def main(n: int) -> None:
    """Print the median time per request, metered and unmetered, and the difference."""
    from licensing.plans import Plan
    from licensing.testing import ThrowawayVendor
    from server import create_app
    from server.services import accounts
    from server.store import get_db

    vendor = ThrowawayVendor()
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app({
            "storage": {"data_dir": f"{tmp}/data"}, "logging": {"level": "ERROR"},
            "rate_limit": {"enabled": False}, "models": {"require": False},
            "licensing": {"state_dir": f"{tmp}/state", "public_keys": [vendor.public_key]},
        })
        client = app.test_client()
        with app.app_context():
            user = accounts.create_user(get_db(), "bench@example.com", "correct horse battery", "admin")
            key, _ = accounts.create_key(get_db(), user["id"], "bench")
        headers = {"X-Api-Key": key}
        fp = client.get("/v1/licensing/status", headers=headers).json["fingerprint"]
        lic = vendor.license(fp, Plan(name="bench", credits=10 * n + 100))
        assert client.post("/v1/licensing/license", json={"license": lic}, headers=headers).status_code == 200

        def timed(metered: bool) -> list[float]:
            out = []
            for _ in range(n):
                t = time.perf_counter()
                r = client.post("/v1/metering/probe", json={"metered": metered}, headers=headers)
                out.append(time.perf_counter() - t)
                assert r.status_code == 200, r.json
            return out

        timed(True)[:0]  # warm up both paths
        timed(False)[:0]
        metered, unmetered = [], []
        for _ in range(2):  # interleave to share any drift
            metered += timed(True)
            unmetered += timed(False)
        m, u = statistics.median(metered), statistics.median(unmetered)
        print(f"requests per variant:     {len(metered)}")
        print(f"unmetered request median: {u * 1000:.3f} ms")
        print(f"metered request median:   {m * 1000:.3f} ms")
        print(f"metering overhead median: {(m - u) * 1000:.3f} ms per request ({m / u:.2f}x the unmetered request)")


if __name__ == "__main__":
    main()
