"""Bounded JSON: refuse nesting deeper than MAX_DEPTH before any parser recurses into it.

Python's json module recurses once per level, so a body of 1,000 `[` raised RecursionError (a 500). Every JSON
request body is checked in a before_request hook (server/__init__.py); JSON inside form fields goes through `loads`.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

MAX_DEPTH = 64
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_STEP = np.zeros(256, dtype=np.int8)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1


def depth(data: bytes | str) -> int:
    """The deepest nesting of arrays and objects in a JSON text (brackets inside strings do not count)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if b"[" not in raw and b"{" not in raw:
        return 0
    arr = np.frombuffer(_STRING.sub(b'""', raw), dtype=np.uint8)
    return int(np.cumsum(_STEP[arr], dtype=np.int32).max(initial=0))


def too_deep(data: bytes | str) -> str | None:
    """Why the text is refused (nested past MAX_DEPTH), or None when it may be parsed."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:  # the common case (e.g. base64 images): no scan needed
        return None
    found = depth(raw)
    return f"The JSON is nested {found} levels deep; at most {MAX_DEPTH} are accepted." if found > MAX_DEPTH else None


def loads(text: str | bytes) -> Any:
    """json.loads for client text: nesting past MAX_DEPTH raises json.JSONDecodeError (a ValueError), never
    RecursionError."""
    why = too_deep(text)
    if why:
        doc = text if isinstance(text, str) else text.decode("utf-8", "replace")
        raise json.JSONDecodeError(why, doc[:100], 0)
    return json.loads(text)
