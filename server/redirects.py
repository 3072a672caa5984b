"""Redirects to an address a visitor gave (`?next=`): only paths on this site, judged after normalisation."""

from __future__ import annotations

import unicodedata
from urllib.parse import unquote, urlsplit

from server.errors import BadRequest

# How many layers of percent-encoding are peeled before a value counts as hostile anyway.
MAX_DECODES = 4


class BadRedirect(BadRequest):
    code, title = "invalid_redirect", "Invalid return address"


def _has_control(value: str) -> bool:
    """Control, format or line/paragraph-separator characters: no honest link has one, and CR/LF split headers."""
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in value)


def _is_local_path(value: str) -> bool:
    """'/keys?x=1' yes; '//host', '/\\host', 'https://host', 'javascript:' no."""
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return False
    parts = urlsplit(value)
    return not parts.scheme and not parts.netloc


def local_path(target: str | None) -> str | None:
    """`target` when it is a same-origin relative path, else None (so the caller uses its default).

    Every percent-decoded form of the value must pass too, so an encoded `//`, backslash or scheme is refused.
    Control characters (CR/LF, tab, NUL...) in any form raise BadRedirect: the link was tampered with.
    """
    if not target:
        return None
    layer = target
    for _ in range(MAX_DECODES + 1):
        if _has_control(layer):
            raise BadRedirect("The return address in this link is not valid (it holds control characters). "
                              "Open the page from the menu instead.")
        if not _is_local_path(layer):
            return None
        decoded = unquote(layer)
        if decoded == layer:
            return target
        layer = decoded
    return None  # still encoded after MAX_DECODES layers: nobody writes links like that
