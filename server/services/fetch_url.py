"""Fetching image_url / bg_image_url safely: allow-listed hosts only, private addresses refused, size and time capped."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlparse

import requests

from server.errors import ApiError


class UrlRefused(ApiError):
    code, title, status = "invalid_image_url", "Image URL not allowed", 400


def _is_private(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return not ip.is_global or ip.is_multicast


def check_url(url: str, allow_hosts: list[str]) -> str:
    """Refuse URLs when URL input is off, not http(s), not allow-listed, or resolving to a private address."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UrlRefused("image_url must be an http or https URL.")
    if not allow_hosts:
        raise UrlRefused("Fetching images by URL is turned off on this server; upload the file instead.",
                         code="image_url_disabled", title="Image URLs are off")
    host = parsed.hostname.lower()
    if host not in {h.lower() for h in allow_hosts}:
        raise UrlRefused(f"The host {host} is not on this server's allow-list.")
    try:
        infos = socket.getaddrinfo(host, parsed.port or (443 if parsed.scheme == "https" else 80))
    except socket.gaierror as exc:
        raise UrlRefused(f"The host {host} could not be resolved.", code="failed_to_download",
                         title="Could not download the image") from exc
    for info in infos:
        address = str(info[4][0])
        if _is_private(address):
            raise UrlRefused(f"{host} resolves to a private address.")
    return url


def fetch(url: str, allow_hosts: list[str], max_bytes: int, timeout: int) -> bytes:
    """Download a checked URL (no redirects), at most max_bytes."""
    check_url(url, allow_hosts)
    try:
        with requests.get(url, stream=True, timeout=timeout, allow_redirects=False) as resp:
            if resp.status_code != 200:
                raise UrlRefused(f"The image URL answered HTTP {resp.status_code}.", code="failed_to_download",
                                 title="Could not download the image")
            data = bytearray()
            for chunk in resp.iter_content(65536):
                data.extend(chunk)
                if len(data) > max_bytes:
                    raise UrlRefused("The image at the URL is too large.", code="file_too_large",
                                     title="File too large")
            return bytes(data)
    except requests.RequestException as exc:
        raise UrlRefused(f"The image could not be downloaded ({type(exc).__name__}).", code="failed_to_download",
                         title="Could not download the image") from exc
