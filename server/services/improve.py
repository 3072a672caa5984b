"""remove.bg's Improvement Program on a box: a submitted image and its options are kept in a review folder
(`<data>/improve/<UTC day>/<id>/`) that the admin sees in the dashboard and exports as a zip for the vendor.

remove.bg's limits hold: files up to 12 MB, 100 submissions a day per account (UTC days; the 101st is a 429).
Nothing leaves the box by itself and nothing is charged.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import re
import shutil
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from models import imaging
from server.errors import ApiError

MAX_BYTES = 12 * 1024 * 1024  # remove.bg: "File size: up to 12MB"
DAILY_LIMIT = 100  # remove.bg: "up to 100 files per day"
MAX_TEXT = 255
EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "HEIF": "heic", "HEIC": "heic",
              "TIFF": "tif", "BMP": "bmp"}
ID_RE = re.compile(r"^[0-9a-f]{32}$")
DAY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
META = "submission.json"
THUMB = "thumb.jpg"  # a small JPEG for the dashboard (HEIC and TIFF do not show in a browser)
THUMB_SIDE = 320


class DailyLimitReached(ApiError):
    code, title, status = "rate_limit_exceeded", "Rate limit exceeded", 429


@dataclass(frozen=True)
class Submission:
    """One image sent to the Improvement Program, as the admin sees it."""

    id: str
    submitted_at: str
    tag: str
    image_filename: str
    source: str  # image_file, image_file_b64 or image_url
    image_url: str
    file: str  # the image's name in its folder
    bytes: int
    format: str
    width: int
    height: int
    user_id: int
    user_email: str
    key_id: str

    @property
    def day(self) -> str:
        return self.submitted_at[:10]


def root(data_dir: Path) -> Path:
    """The review folder."""
    return Path(data_dir) / "improve"


def _text(value: object, name: str) -> str:
    text = "" if value is None else str(value).strip()
    if len(text) > MAX_TEXT or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ApiError(f"{name} must be at most {MAX_TEXT} printable characters.", code="invalid_parameters",
                       title="Invalid parameters")
    return text


def _until_midnight(now: datetime) -> int:
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((tomorrow - now).total_seconds()))


def submit(data_dir: Path, data: bytes, *, user_id: int, user_email: str, key_id: str, source: str,
           image_filename: object = None, tag: object = None, image_url: str = "",
           now: datetime | None = None) -> Submission:
    """Check the image (a readable image up to 12 MB) and the account's daily limit, then keep it for review."""
    now = now or datetime.now(UTC)
    filename, tag_text = _text(image_filename, "image_filename"), _text(tag, "tag")
    image = imaging.decode(data, max_bytes=MAX_BYTES)  # remove.bg's codes: file_too_large, invalid_file_type, ...
    fmt = _format(data)
    base = root(data_dir)
    base.mkdir(parents=True, exist_ok=True)
    day = now.strftime("%Y-%m-%d")
    with open(base / ".lock", "w") as lock:  # count and write as one step across workers
        fcntl.flock(lock, fcntl.LOCK_EX)
        today = sum(1 for s in _read_day(base / day) if s.user_id == user_id)
        if today >= DAILY_LIMIT:
            raise DailyLimitReached(
                f"This account has sent {today} images to the Improvement Program today (UTC); the limit is "
                f"{DAILY_LIMIT} a day.", headers={"Retry-After": str(_until_midnight(now))})
        sub = Submission(id=uuid.uuid4().hex, submitted_at=now.strftime("%Y-%m-%dT%H:%M:%SZ"), tag=tag_text,
                         image_filename=filename, source=source, image_url=image_url,
                         file=f"image.{EXTENSIONS.get(fmt, 'bin')}", bytes=len(data), format=fmt,
                         width=image.width, height=image.height, user_id=user_id, user_email=user_email,
                         key_id=key_id)
        staging = base / f".{sub.id}.part"
        staging.mkdir()
        try:
            (staging / sub.file).write_bytes(data)
            preview = image.convert("RGB")
            preview.thumbnail((THUMB_SIDE, THUMB_SIDE))
            preview.save(staging / THUMB, "JPEG", quality=85)
            (staging / META).write_text(json.dumps(asdict(sub), indent=1))
            (base / day).mkdir(exist_ok=True)
            os.replace(staging, base / day / sub.id)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return sub


def _format(data: bytes) -> str:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return (img.format or "").upper()


def _read_day(folder: Path) -> Iterator[Submission]:
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if ID_RE.match(entry.name):
            try:
                yield Submission(**json.loads((entry / META).read_text()))
            except (OSError, ValueError, TypeError):
                continue  # a folder being removed, or not ours


def list_submissions(data_dir: Path, tag: str | None = None) -> list[Submission]:
    """Every submission kept, newest first (only those with `tag`, if given)."""
    base = root(data_dir)
    days = sorted((d for d in base.iterdir() if d.is_dir() and DAY_RE.match(d.name)), reverse=True) \
        if base.is_dir() else []
    subs = [s for day in days for s in _read_day(day) if tag is None or s.tag == tag]
    return sorted(subs, key=lambda s: (s.submitted_at, s.id), reverse=True)


def find(data_dir: Path, submission_id: str) -> tuple[Submission, Path] | None:
    """A submission and its folder, or None."""
    if not ID_RE.match(submission_id):
        return None
    for sub in list_submissions(data_dir):
        if sub.id == submission_id:
            return sub, root(data_dir) / sub.day / sub.id
    return None


def export_zip(data_dir: Path, out: BinaryIO, tag: str | None = None) -> int:
    """Write the submissions (or those with `tag`) as a zip for the vendor: `<day>/<id>/image.*` and
    `submission.json` for each, plus `submissions.json` listing them all. Returns how many."""
    subs = list_submissions(data_dir, tag)
    base = root(data_dir)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for sub in subs:
            folder = base / sub.day / sub.id
            archive.write(folder / sub.file, f"{sub.day}/{sub.id}/{sub.file}")
            archive.write(folder / META, f"{sub.day}/{sub.id}/{META}")
        archive.writestr("submissions.json", json.dumps([asdict(s) for s in subs], indent=1))
    return len(subs)
