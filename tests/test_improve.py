"""POST /v1.0/improve: remove.bg's Improvement Program, kept on the box in a review folder that the admin sees in
the dashboard and exports (zip download, `forecourt improve export`) for the vendor."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import re
import zipfile
from pathlib import Path

import pytest
import time_machine
from PIL import Image

from server.cli import cli
from server.services import improve
from tests.fakes_removebg import photo
from tests.helpers import assert_error_shape, make_account, sign_in

ID_RE = re.compile(r"^[0-9a-f]{32}$")


def submit(client, headers, data: dict, **kw):  # noqa: ANN003
    return client.post("/v1.0/improve", data=data, headers=headers, content_type="multipart/form-data", **kw)


def credits(client, headers) -> float:
    return client.get("/v1.0/account", headers=headers).get_json()["data"]["attributes"]["credits"]["total"]


def test_a_submission_is_kept_with_its_options_and_answered_with_an_id(client, member, data_dir: Path) -> None:
    before = credits(client, member.headers)
    original = photo(640, 480)
    resp = submit(client, member.headers, {"image_file": (io.BytesIO(original), "hard.jpg"), "tag": "batch_1_2026",
                                            "image_filename": "wheel-arch.jpg"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    sub_id = resp.get_json()["id"]
    assert ID_RE.match(sub_id) and set(resp.get_json()) == {"id"}
    [folder] = list((data_dir / "improve").glob(f"*/{sub_id}"))
    assert (folder / "image.jpg").read_bytes() == original  # the bytes as sent, not a re-encoding
    meta = json.loads((folder / "submission.json").read_text())
    assert meta["tag"] == "batch_1_2026" and meta["image_filename"] == "wheel-arch.jpg"
    assert (meta["width"], meta["height"], meta["format"], meta["source"]) == (640, 480, "JPEG", "image_file")
    assert meta["user_email"] == member.email and meta["key_id"] == member.key_id
    assert folder.parent.name == meta["submitted_at"][:10]
    assert Image.open(folder / "thumb.jpg").size == (320, 240)
    assert credits(client, member.headers) == before  # nothing is charged


def test_json_base64_and_v1_alias(client, member) -> None:
    b64 = client.post("/v1/improve", json={"image_file_b64": base64.b64encode(photo(fmt="PNG")).decode()},
                      headers=member.headers)
    assert b64.status_code == 200 and ID_RE.match(b64.get_json()["id"])
    form = client.post("/v1.0/improve", data={"image_file_b64": base64.b64encode(photo()).decode(), "tag": "t"},
                       headers=member.headers)
    assert form.status_code == 200
    assert [s.source for s in improve.list_submissions(client.application.extensions["forecourt.settings"].data_dir)] \
        == ["image_file_b64", "image_file_b64"]


@pytest.mark.parametrize(("data", "code"), [
    ({}, "missing_source"),
    ({"image_file": (io.BytesIO(b"%PDF-1.4 nope"), "a.pdf")}, "invalid_file_type"),
    ({"image_file": (io.BytesIO(b"\xff\xd8\xff" + bytes(500)), "a.jpg")}, "failed_to_read_image"),
    ({"image_file": (io.BytesIO(photo() + bytes(12 * 1024 * 1024)), "big.jpg")}, "file_too_large"),
    ({"image_file_b64": base64.b64encode(photo()).decode(), "image_url": "http://example.invalid/a.jpg"},
     "multiple_sources"),
    ({"image_file": (io.BytesIO(photo()), "a.jpg"), "tag": "x" * 300}, "invalid_parameters"),
    ({"image_file": (io.BytesIO(photo()), "a.jpg"), "image_filename": "a\nb.jpg"}, "invalid_parameters"),
])
def test_refusals_use_remove_bg_codes_and_keep_nothing(client, member, data_dir: Path, data, code) -> None:
    resp = submit(client, member.headers, data)
    assert assert_error_shape(resp, 400)["code"] == code
    assert not list((data_dir / "improve").glob("*/*")) if (data_dir / "improve").exists() else True


def test_twelve_megabytes_pass(client, member) -> None:
    resp = submit(client, member.headers, {"image_file": (io.BytesIO(photo() + bytes(12 * 1024 * 1024 - 20_000)),
                                                           "padded.jpg")})
    assert resp.status_code == 200, resp.get_data(as_text=True)


def test_a_missing_or_wrong_key_is_403_in_the_error_shape(client, data_dir: Path) -> None:
    none = submit(client, {}, {"image_file": (io.BytesIO(photo()), "a.jpg")})
    assert assert_error_shape(none, 403)["code"] == "auth_failed"
    wrong = submit(client, {"X-Api-Key": "fc_nope"}, {"image_file": (io.BytesIO(photo()), "a.jpg")})
    assert assert_error_shape(wrong, 403)["code"] == "auth_failed"
    assert not (data_dir / "improve").exists() or not list((data_dir / "improve").glob("*/*"))


def test_a_hundred_a_day_per_account(app, client, member) -> None:
    other = make_account(app, "other@dealer.example", "member")
    small = photo(32, 24)
    start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(hour=22, minute=0, second=0, microsecond=0)
    with time_machine.travel(start, tick=False) as clock:
        for _ in range(improve.DAILY_LIMIT):
            assert submit(client, member.headers, {"image_file": (io.BytesIO(small), "a.jpg")}).status_code == 200
        over = submit(client, member.headers, {"image_file": (io.BytesIO(small), "a.jpg")})
        assert assert_error_shape(over, 429)["code"] == "rate_limit_exceeded"
        assert int(over.headers["Retry-After"]) == 2 * 3600  # until midnight UTC
        assert submit(client, other.headers, {"image_file": (io.BytesIO(small), "a.jpg")}).status_code == 200
        clock.shift(dt.timedelta(hours=2, seconds=1))  # the next UTC day
        assert submit(client, member.headers, {"image_file": (io.BytesIO(small), "a.jpg")}).status_code == 200


def test_the_admin_sees_them_in_the_dashboard_and_downloads_a_zip(app, client, admin, member) -> None:
    ids = [submit(client, member.headers, {"image_file": (io.BytesIO(photo(fmt=fmt)), f"a.{fmt.lower()}"),
                                           "tag": tag}).get_json()["id"]
           for fmt, tag in (("JPEG", "wheels"), ("PNG", "glass"), ("WEBP", "wheels"))]
    sign_in(client, admin)
    page = client.get("/improve")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert all(f'data-id="{i}"' in html for i in ids) and 'id="sub-count">3<' in html
    thumb = client.get(f"/improve/{ids[1]}/thumb.jpg")
    assert thumb.status_code == 200 and Image.open(io.BytesIO(thumb.data)).format == "JPEG"
    assert client.get("/improve/" + "0" * 32 + "/thumb.jpg").status_code == 404
    wheels = client.get("/improve?tag=wheels").get_data(as_text=True)
    assert f'data-id="{ids[0]}"' in wheels and f'data-id="{ids[1]}"' not in wheels
    export = client.get("/improve/export.zip")
    assert export.status_code == 200 and export.mimetype == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(export.data))
    listed = json.loads(archive.read("submissions.json"))
    assert sorted(s["id"] for s in listed) == sorted(ids)
    images = [n for n in archive.namelist() if "/image." in n]
    assert sorted(n.rsplit(".", 1)[1] for n in images) == ["jpg", "png", "webp"]
    only = zipfile.ZipFile(io.BytesIO(client.get("/improve/export.zip?tag=glass").data))
    assert [s["id"] for s in json.loads(only.read("submissions.json"))] == [ids[1]]


def test_a_member_cannot_open_the_review_page(client, member) -> None:
    sign_in(client, member)
    assert client.get("/improve").status_code == 403
    assert client.get("/improve/export.zip").status_code == 403


def test_cli_lists_and_exports(cli_runner, app, member, tmp_path: Path) -> None:
    client = app.test_client()
    sub_id = submit(client, member.headers, {"image_file": (io.BytesIO(photo()), "a.jpg"), "tag": "t1"}
                    ).get_json()["id"]
    runner, env = cli_runner
    listed = runner.invoke(cli, ["improve", "list"], env=env, catch_exceptions=False)
    assert listed.exit_code == 0 and sub_id in listed.output and "1 submission" in listed.output
    out = tmp_path / "vendor.zip"
    exported = runner.invoke(cli, ["improve", "export", str(out), "--tag", "t1"], env=env, catch_exceptions=False)
    assert exported.exit_code == 0 and "1 submission written" in exported.output
    assert any(n.endswith(f"{sub_id}/image.jpg") for n in zipfile.ZipFile(out).namelist())


def test_the_openapi_spec_describes_improve(client) -> None:
    spec = client.get("/openapi.json").get_json()
    op = spec["paths"]["/v1.0/improve"]["post"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["id"]["type"] == "string"
    assert "Improvement Program" in op["tags"] and "429" in op["responses"]
