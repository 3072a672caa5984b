"""image_url / bg_image_url: off by default, allow-listed hosts only, private addresses refused, the connection
pinned to the checked address, no redirects, size and time capped. A local HTTP server stands in for a public
image host (its address is treated as public only where a test says so)."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from server.services import fetch_url, segmentation
from tests.fakes_removebg import FakeSegmenter, photo
from tests.helpers import assert_error_shape

CAR = photo(400, 300)
GREEN = io.BytesIO()
Image.new("RGB", (50, 50), (0, 200, 0)).save(GREEN, "PNG")


class Handler(BaseHTTPRequestHandler):
    hosts: list[str] = []

    def log_message(self, *args) -> None:  # noqa: ANN002
        pass

    def do_GET(self) -> None:  # noqa: N802
        Handler.hosts.append(self.headers.get("Host", ""))
        if self.path == "/car.jpg":
            self._send(CAR, "image/jpeg")
        elif self.path == "/green.png":
            self._send(GREEN.getvalue(), "image/png")
        elif self.path == "/big.jpg":
            self._send(b"\xff" * 3_000_000, "image/jpeg")
        elif self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
        elif self.path == "/slow.jpg":
            self.send_response(200)
            self.end_headers()
            for _ in range(30):
                self.wfile.write(b"\xff")
                self.wfile.flush()
                time.sleep(0.2)
        else:
            self.send_error(404)

    def _send(self, body: bytes, media: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def image_host() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture
def public_dns(monkeypatch) -> list[str]:
    """images.example and cdn.images.example resolve to the local server, which counts as public here; every
    lookup is recorded."""
    lookups: list[str] = []
    real = socket.getaddrinfo

    def fake_getaddrinfo(host, port, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if str(host).endswith("images.example"):
            lookups.append(host)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    monkeypatch.setattr(fetch_url, "_is_private", lambda address: address != "127.0.0.1")
    return lookups


@pytest.fixture
def allow(app):
    settings = app.extensions["forecourt.settings"].removebg
    settings.url_allow_hosts = ["images.example", "*.images.example"]
    settings.url_timeout_seconds = 2
    return settings


@pytest.fixture
def fake_segmenter(monkeypatch) -> FakeSegmenter:
    fake = FakeSegmenter()
    monkeypatch.setattr(segmentation, "segmenter", lambda settings: fake)
    return fake


def call(client, admin, **body):  # noqa: ANN003, ANN201
    return client.post("/v1.0/removebg", json=body, headers=admin.headers)


def test_allowed_host_is_fetched_from_the_checked_address_once(client, admin, allow, public_dns, image_host,
                                                               fake_segmenter) -> None:
    Handler.hosts.clear()
    resp = call(client, admin, image_url=f"http://images.example:{image_host}/car.jpg",
                bg_image_url=f"http://cdn.images.example:{image_host}/green.png", format="png")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.headers["X-Width"] == "400"
    assert Image.open(io.BytesIO(resp.data)).convert("RGB").getpixel((2, 2)) == (0, 200, 0)
    assert sorted(Handler.hosts) == sorted([f"images.example:{image_host}", f"cdn.images.example:{image_host}"])
    assert sorted(public_dns) == ["cdn.images.example", "images.example"]  # one lookup each: no rebinding window


@pytest.mark.parametrize(("path", "code", "fragment"), [
    ("/moved", "failed_to_download", "redirects are not followed"),
    ("/missing.jpg", "failed_to_download", "HTTP 404"),
    ("/slow.jpg", "failed_to_download", "longer than 2 s"),
    ("/big.jpg", "file_too_large", "too large"),
])
def test_download_failures_are_400s_and_free(client, admin, app, allow, public_dns, image_host, fake_segmenter,
                                             path, code, fragment) -> None:
    app.extensions["forecourt.settings"].removebg.max_file_mb = 2
    resp = call(client, admin, image_url=f"http://images.example:{image_host}{path}")
    err = assert_error_shape(resp, 400)
    assert err["code"] == code and fragment in err["detail"]
    assert fake_segmenter.calls == 0


def test_off_by_default_and_never_private(client, admin, app, fake_segmenter, monkeypatch) -> None:
    err = assert_error_shape(call(client, admin, image_url="https://images.example/car.jpg"), 400)
    assert err["code"] == "image_url_disabled"
    app.extensions["forecourt.settings"].removebg.url_allow_hosts = ["images.example"]
    for address in ("127.0.0.1", "10.1.2.3", "169.254.169.254", "::1", "::ffff:192.168.1.5", "100.64.0.1"):
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        monkeypatch.setattr(socket, "getaddrinfo", lambda *a, _addr=address, _f=family, **kw: [
            (_f, socket.SOCK_STREAM, 6, "", (_addr, 443))])
        err = assert_error_shape(call(client, admin, image_url="https://images.example/car.jpg"), 400)
        assert err["code"] == "invalid_image_url" and "private" in err["detail"], address
    for url in ("ftp://images.example/car.jpg", "file:///etc/passwd", "https://other.example/car.jpg"):
        assert assert_error_shape(call(client, admin, image_url=url), 400)["code"] == "invalid_image_url"
    assert fake_segmenter.calls == 0


def test_allow_list_matching() -> None:
    allow = ["photos.dealer.example", "*.cdn.example"]
    assert fetch_url.host_allowed("photos.dealer.example", allow)
    assert fetch_url.host_allowed("PHOTOS.dealer.example.", allow)
    assert fetch_url.host_allowed("a.b.cdn.example", allow) and fetch_url.host_allowed("cdn.example", allow)
    assert not fetch_url.host_allowed("evilcdn.example", allow)
    assert not fetch_url.host_allowed("photos.dealer.example.evil.example", allow)
    assert not fetch_url.host_allowed("photos.dealer.example", [])


def test_improve_takes_an_allow_listed_image_url_as_removebg_does(client, admin, allow, public_dns, image_host,
                                                                  data_dir) -> None:
    from server.services import improve

    resp = client.post("/v1.0/improve", json={"image_url": f"http://images.example:{image_host}/car.jpg",
                                              "tag": "url"}, headers=admin.headers)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    [sub] = improve.list_submissions(data_dir)
    assert (sub.id, sub.source, sub.image_url) == (resp.get_json()["id"], "image_url",
                                                   f"http://images.example:{image_host}/car.jpg")
    assert (data_dir / "improve" / sub.day / sub.id / "image.jpg").read_bytes() == CAR
    other = client.post("/v1.0/improve", json={"image_url": "http://elsewhere.example/car.jpg"}, headers=admin.headers)
    assert assert_error_shape(other, 400)["code"] == "invalid_image_url"  # not on the allow-list
    assert len(improve.list_submissions(data_dir)) == 1
