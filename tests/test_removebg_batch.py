"""`forecourt removebg IN OUT`: every image processed once, interrupted runs resume, bad files reported."""

from __future__ import annotations

import numpy as np
from PIL import Image

from server.services import removebg as service
from tests.test_removebg_api import FakeSegmenter, photo


class FakeCountingSegmenter(FakeSegmenter):
    """The ellipse fake, counting calls and failing on a chosen image width (to stand in for a crash)."""

    def __init__(self, fail_width: int | None = None) -> None:
        self.calls = 0
        self.fail_width = fail_width

    def mask(self, image, kind: str = "auto"):  # noqa: ANN001
        self.calls += 1
        if np.asarray(image).shape[1] == self.fail_width:
            raise RuntimeError("worker died")
        return super().mask(image, kind)

    def load(self) -> None:
        return None


def test_batch_writes_all_resumes_and_reports_bad_files(cli_runner, tmp_path, monkeypatch) -> None:
    from server.cli import cli

    runner, env = cli_runner
    src = tmp_path / "in"
    (src / "lot2").mkdir(parents=True)
    for i, w in enumerate((300, 320, 340)):
        (src / f"car{i}.jpg").write_bytes(photo(w, 200))
    (src / "lot2" / "car3.png").write_bytes(photo(360, 200, fmt="PNG"))
    (src / "notes.txt").write_text("not an image")
    (src / "broken.jpg").write_bytes(b"\xff\xd8 broken")
    out = tmp_path / "out"

    first = FakeCountingSegmenter(fail_width=340)
    monkeypatch.setattr(service, "_segmenter", lambda: first)
    result = runner.invoke(cli, ["removebg", str(src), str(out), "--size", "preview", "--workers", "2"], env=env)
    assert result.exit_code == 1
    assert "broken.jpg" in result.output and "car2.jpg" in result.output
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["car0.png", "car1.png", "lot2/car3.png"]
    assert not list(out.rglob("*.tmp"))
    img = Image.open(out / "car0.png")
    assert img.mode == "RGBA" and img.size == (300, 200)

    second = FakeCountingSegmenter()
    monkeypatch.setattr(service, "_segmenter", lambda: second)
    result = runner.invoke(cli, ["removebg", str(src), str(out), "--size", "preview"], env=env)
    assert "3 already done" in result.output
    assert second.calls == 1  # only car2 was redone
    assert (out / "car2.png").exists()
    assert result.exit_code == 1  # broken.jpg still fails, and says so


def test_batch_refuses_bad_options_before_any_work(cli_runner, tmp_path, monkeypatch) -> None:
    from server.cli import cli

    runner, env = cli_runner
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(photo())
    fake = FakeCountingSegmenter()
    monkeypatch.setattr(service, "_segmenter", lambda: fake)
    result = runner.invoke(cli, ["removebg", str(tmp_path / "in"), str(tmp_path / "out"), "--scale", "5%"], env=env)
    assert result.exit_code == 2 and "scale" in result.output
    assert fake.calls == 0 and not (tmp_path / "out").exists()


def test_batch_is_metered_like_the_api(cli_runner, tmp_path, monkeypatch) -> None:
    from server import create_app
    from server.cli import cli
    from server.config import load_settings
    from tests.conftest import make_account

    runner, env = cli_runner
    (tmp_path / "in").mkdir()
    for i in range(2):
        (tmp_path / "in" / f"a{i}.jpg").write_bytes(photo())
    app = create_app(load_settings(environ=env))
    admin = make_account(app, "boss@dealer.example", "admin")

    def total() -> float:
        body = app.test_client().get("/v1.0/account", headers=admin.headers).get_json()
        return body["data"]["attributes"]["credits"]["total"]

    before = total()
    monkeypatch.setattr(service, "_segmenter", lambda: FakeCountingSegmenter())
    result = runner.invoke(cli, ["removebg", str(tmp_path / "in"), str(tmp_path / "out"), "--size", "full"], env=env)
    assert result.exit_code == 0, result.output
    assert total() == before - 2
