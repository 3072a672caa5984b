"""Fetching image_url / bg_image_url safely: allow-listed hosts only, private addresses refused, the connection
pinned to the address that was checked (no DNS rebinding), no redirects, size and total time capped."""

from __future__ import annotations

import ipaddress
import socket
import time
from urllib.parse import urlsplit

import urllib3

from server.errors import ApiError


class UrlRefused(ApiError):
    code, title, status = "invalid_image_url", "Image URL not allowed", 400


class DownloadFailed(ApiError):
    code, title, status = "failed_to_download", "Could not download the image", 400


def _is_private(address: str) -> bool:
    """Loopback, private, link-local, reserved, multicast and the like: anything not globally routable."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def host_allowed(host: str, allow_hosts: list[str]) -> bool:
    """Exact host names; an entry `*.example.com` (or `.example.com`) also allows every subdomain."""
    host = host.lower().rstrip(".")
    for entry in (h.strip().lower().rstrip(".") for h in allow_hosts):
        if entry.startswith(("*.", ".")):
            suffix = entry.lstrip("*")
            if host.endswith(suffix) or host == suffix[1:]:
                return True
        elif host == entry:
            return True
    return False


def check_url(url: str, allow_hosts: list[str]) -> tuple[str, int, str]:
    """Refuse URLs when URL input is off, not http(s), not allow-listed, or resolving to a private address;
    return (host, port, the checked address to connect to)."""
    parts = urlsplit(str(url).strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UrlRefused("The image URL must be an http or https URL.")
    if not allow_hosts:
        raise UrlRefused("Fetching images by URL is turned off on this server; upload the file instead.",
                         code="image_url_disabled", title="Image URLs are off")
    host = parts.hostname.lower()
    if not host_allowed(host, allow_hosts):
        raise UrlRefused(f"The host {host} is not on this server's allow-list.")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UrlRefused("The image URL has an invalid port.") from exc
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise DownloadFailed(f"The host {host} could not be resolved.") from exc
    addresses = [str(info[4][0]) for info in infos]
    if not addresses or any(_is_private(a) for a in addresses):
        raise UrlRefused(f"{host} resolves to a private or local address; only public hosts can be fetched.")
    return host, port, addresses[0]


def fetch(url: str, allow_hosts: list[str], max_bytes: int, timeout: float) -> bytes:
    """Download a checked URL from the address that was checked (no redirects), at most max_bytes, within
    timeout seconds in all."""
    host, port, address = check_url(url, allow_hosts)
    parts = urlsplit(str(url).strip())
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    deadline = time.monotonic() + timeout
    limits = urllib3.Timeout(connect=min(timeout, 10.0), read=timeout)
    if parts.scheme == "https":
        pool: urllib3.HTTPConnectionPool = urllib3.HTTPSConnectionPool(
            address, port, timeout=limits, retries=False, server_hostname=host, assert_hostname=host,
            cert_reqs="CERT_REQUIRED")
    else:
        pool = urllib3.HTTPConnectionPool(address, port, timeout=limits, retries=False)
    host_header = host if parts.port is None else f"{host}:{port}"
    try:
        resp = pool.urlopen("GET", path, headers={"Host": host_header, "User-Agent": "Forecourt",
                                                  "Accept": "image/*"},
                            redirect=False, preload_content=False)
        try:
            if resp.status != 200:
                raise DownloadFailed(f"The image URL answered HTTP {resp.status}"
                                     f"{' (redirects are not followed)' if 300 <= resp.status < 400 else ''}.")
            declared = resp.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise DownloadFailed("The image at the URL is too large.", code="file_too_large",
                                     title="File too large")
            data = bytearray()
            for chunk in resp.stream(65536):
                data.extend(chunk)
                if len(data) > max_bytes:
                    raise DownloadFailed("The image at the URL is too large.", code="file_too_large",
                                         title="File too large")
                if time.monotonic() > deadline:
                    raise DownloadFailed(f"Downloading the image took longer than {timeout:g} s.")
            return bytes(data)
        finally:
            resp.release_conn()
    except urllib3.exceptions.HTTPError as exc:
        raise DownloadFailed(f"The image could not be downloaded ({type(exc).__name__}).") from exc
    finally:
        pool.close()
