"""`forecourt removebg IN OUT`: every image processed once, interrupted runs resume, bad files reported."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from PIL import Image

from server.services import segmentation
from tests.fakes_removebg import FakeCrashingSegmenter, FakeSegmenter, photo


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

    first = FakeCrashingSegmenter(fail_width=340)
    monkeypatch.setattr(segmentation, "segmenter", lambda settings: first)
    result = runner.invoke(cli, ["removebg", str(src), str(out), "--size", "preview", "--workers", "2"], env=env)
    assert result.exit_code == 1
    assert "broken.jpg" in result.output and "car2.jpg" in result.output
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["car0.png", "car1.png", "lot2/car3.png"]
    assert not list(out.rglob("*.tmp"))
    img = Image.open(out / "car0.png")
    assert img.mode == "RGBA" and img.size == (300, 200)

    second = FakeSegmenter()
    monkeypatch.setattr(segmentation, "segmenter", lambda settings: second)
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
    fake = FakeSegmenter()
    monkeypatch.setattr(segmentation, "segmenter", lambda settings: fake)
    result = runner.invoke(cli, ["removebg", str(tmp_path / "in"), str(tmp_path / "out"), "--scale", "5%"], env=env)
    assert result.exit_code == 2 and "scale" in result.output
    assert fake.calls == 0 and not (tmp_path / "out").exists()


def test_batch_is_metered_like_the_api(cli_runner, tmp_path, monkeypatch) -> None:
    from server import create_app
    from server.cli import cli
    from server.config import load_settings
    from tests.helpers import make_account

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
    monkeypatch.setattr(segmentation, "segmenter", lambda settings: FakeSegmenter())
    result = runner.invoke(cli, ["removebg", str(tmp_path / "in"), str(tmp_path / "out"), "--size", "full"], env=env)
    assert result.exit_code == 0, result.output
    assert total() == before - 2


def test_batch_with_format_auto_resumes_on_either_extension_and_clears_stale_temp_files(cli_runner, tmp_path,
                                                                                         monkeypatch) -> None:
    from server.cli import cli

    runner, env = cli_runner
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(3):
        (src / f"car{i}.jpg").write_bytes(photo(300 + 20 * i, 200))
    out.mkdir()
    (out / "car0.jpg").write_bytes(b"finished before the interruption")
    (out / ".car1.jpg.1234abcd.fc-tmp").write_bytes(b"half written")
    bg = tmp_path / "lot.png"
    Image.new("RGB", (64, 64), (0, 0, 200)).save(bg)
    fake = FakeSegmenter()
    monkeypatch.setattr(segmentation, "segmenter", lambda settings: fake)
    result = runner.invoke(cli, ["removebg", str(src), str(out), "--format", "auto", "--bg-image", str(bg),
                                 "--size", "preview", "--type", "auto"], env=env)
    assert result.exit_code == 0, result.output
    assert "2 to do, 1 already done" in result.output and fake.calls == 2
    assert sorted(p.name for p in out.iterdir()) == ["car0.jpg", "car1.jpg", "car2.jpg"]  # opaque result: JPG
    assert (out / "car0.jpg").read_bytes() == b"finished before the interruption"
    assert Image.open(out / "car1.jpg").convert("RGB").getpixel((2, 2))[2] > 180  # the lot behind the car

    both = runner.invoke(cli, ["removebg", str(src), str(out), "--bg-image", str(bg), "--bg-color", "red"], env=env)
    assert both.exit_code == 2 and "not both" in both.output


def test_batch_images_are_jobs_on_the_queue_retried_then_dead_and_a_rerun_redoes_only_those(
        cli_runner, tmp_path, monkeypatch) -> None:
    from server.cli import cli

    runner, env = cli_runner
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i, w in enumerate((300, 320, 340)):
        (src / f"car{i}.jpg").write_bytes(photo(w, 200))
    (src / "broken.jpg").write_bytes(b"\xff\xd8 broken")
    crashing = FakeCrashingSegmenter(fail_width=340)
    monkeypatch.setattr(segmentation, "segmenter", lambda settings: crashing)
    first = runner.invoke(cli, ["removebg", str(src), str(out), "--size", "preview", "--workers", "2"], env=env)
    assert first.exit_code == 1

    def jobs() -> dict[str, tuple[str, int, str]]:
        with sqlite3.connect(tmp_path / "data" / "forecourt.db") as db:
            rows = db.execute("SELECT args, state, attempts, error, id FROM jobs WHERE kind = 'removebg.file' "
                              "ORDER BY id").fetchall()
        return {f"{Path(json.loads(a)['src']).name}#{i}": (s, n, e or "") for a, s, n, e, i in rows}

    after_first = jobs()
    assert sorted((k.split("#")[0], s, n) for k, (s, n, _) in after_first.items()) == [
        ("broken.jpg", "dead", 1),  # an unreadable file fails the same way every time: no retry
        ("car0.jpg", "done", 1), ("car1.jpg", "done", 1),
        ("car2.jpg", "dead", 2)]  # a crash is tried again once, then the job is dead
    assert crashing.calls == 2 + 2  # car0, car1 once; car2 twice
    listed = runner.invoke(cli, ["jobs", "list", "--state", "dead", "--kind", "removebg.file"], env=env)
    assert listed.exit_code == 0 and listed.output.count("removebg.file\tdead") == 2

    fixed = FakeSegmenter()
    monkeypatch.setattr(segmentation, "segmenter", lambda settings: fixed)
    second = runner.invoke(cli, ["removebg", str(src), str(out), "--size", "preview"], env=env)
    assert "2 to do, 2 already done" in second.output and fixed.calls == 1  # only car2 is redone
    new = {k: v for k, v in jobs().items() if k not in after_first}
    assert sorted((k.split("#")[0], s) for k, (s, _, _) in new.items()) == [("broken.jpg", "dead"),
                                                                             ("car2.jpg", "done")]
