"""Text forms shared by the APIs: base64 uploads and opaque pagination cursors."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from core.errors import InvalidBase64, InvalidCursor


def decode_b64(text: str, what: str) -> bytes:
    """Base64 text to bytes: a data: URL prefix, whitespace, the URL-safe alphabet and missing padding are fine."""
    text = re.sub(r"\s+", "", text)
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidBase64(f"{what} is not valid base64.") from exc


def encode_cursor(after: int | str) -> str:
    """An opaque token for the page after the row whose sort key is `after`."""
    return base64.urlsafe_b64encode(json.dumps({"after": after}).encode()).decode().rstrip("=")


def decode_cursor(token: str, kind: type[int] | type[str]) -> Any:
    """The sort key a cursor points after (an int in SQLite's range, or a str); anything else is InvalidCursor."""
    try:
        after = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))["after"]
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        after = None
    if type(after) is not kind or (isinstance(after, int) and not 0 <= after < 2**63):
        raise InvalidCursor("The cursor is not valid; use the one a previous page returned.")
    return after


def printable_id(text: object, max_length: int = 255) -> bool:
    """Whether a client-given id is 1 to max_length printable characters with no space at either end: no NUL,
    newline, tab or other control character, no invisible format character (bidi overrides, zero-width)."""
    return (isinstance(text, str) and 0 < len(text) <= max_length and text.isprintable()
            and text == text.strip())
