"""Requests that bring several images: bound their decoded pixels before any is decoded."""

from __future__ import annotations

from collections.abc import Iterable

from models import imaging
from server.errors import ApiError


class TooManyPixels(ApiError):
    """The images of one request would decode to more pixels than [server] max_request_megapixels allows."""

    code, title, status = "request_too_large", "Request too large", 413


def check_request_pixels(images: Iterable[bytes], limit_megapixels: float) -> int:
    """The pixels all the images will decode to (from their headers; nothing is decoded); TooManyPixels past the
    limit. A file whose header does not read counts 0 here: decoding it then reports why."""
    datas = list(images)
    total = sum(imaging.header_pixels(data) for data in datas)
    if total > limit_megapixels * 1_000_000:
        raise TooManyPixels(
            f"The {len(datas)} images of this request would decode to {total / 1e6:,.0f} megapixels together; one "
            f"request may bring at most {limit_megapixels:,g} (server.max_request_megapixels). Send them in "
            f"several requests.")
    return total
