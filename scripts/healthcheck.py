#!/usr/bin/env python3
"""Docker HEALTHCHECK: exit 0 when Forecourt's /readyz answers 200, else 1 (stdlib only, no app imports)."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def readyz_url(argv: list[str], environ: dict[str, str]) -> str:
    """The URL to probe: the first argument, else FORECOURT_HEALTHCHECK_URL, else 127.0.0.1 on the server port."""
    if len(argv) > 1:
        return argv[1]
    if environ.get("FORECOURT_HEALTHCHECK_URL"):
        return environ["FORECOURT_HEALTHCHECK_URL"]
    port = environ.get("FORECOURT_SERVER__PORT", "8080")
    return f"http://127.0.0.1:{port}/readyz"


def check(url: str, timeout: float = 5.0) -> tuple[bool, str]:
    """(ready, one line saying why)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - a local URL we were given
            return resp.status == 200, f"{url}: {resp.status}"
    except urllib.error.HTTPError as exc:
        body = exc.read(2000).decode("utf-8", "replace")
        return False, f"{url}: {exc.code} {body}"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"{url}: {getattr(exc, 'reason', exc)}"


def main() -> int:
    """Probe once and report."""
    ready, why = check(readyz_url(sys.argv, dict(os.environ)))
    print(("ready " if ready else "not ready ") + why, file=sys.stdout if ready else sys.stderr)
    return 0 if ready else 1


if __name__ == "__main__":
    sys.exit(main())
