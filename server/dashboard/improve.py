"""Dashboard: the Improvement page (images sent to POST /v1.0/improve, kept for review) and its zip export."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

from flask import Response, abort, render_template, request, send_file

from server.config import get_settings
from server.dashboard import bp
from server.dashboard.common import admin_required
from server.dashboard.system import human_bytes
from server.services import improve

PAGE = 100


@bp.get("/improve")
@admin_required
def improve_page() -> Any:
    """What API users sent to the Improvement Program: newest first, by tag, with the export for the vendor."""
    tag = request.args.get("tag") or None
    subs = improve.list_submissions(get_settings().data_dir, tag)
    tags = sorted({s.tag for s in improve.list_submissions(get_settings().data_dir) if s.tag})
    return render_template("improve.html", subs=subs[:PAGE], total=len(subs), tag=tag, tags=tags,
                           size=human_bytes(sum(s.bytes for s in subs)), page=PAGE, limit=improve.DAILY_LIMIT,
                           max_mb=improve.MAX_BYTES // (1024 * 1024), human_bytes=human_bytes)


@bp.get("/improve/<submission_id>/thumb.jpg")
@admin_required
def improve_thumb(submission_id: str) -> Any:
    found = improve.find(get_settings().data_dir, submission_id)
    if found is None:
        abort(404)
    return send_file(found[1] / improve.THUMB, mimetype="image/jpeg", max_age=3600)


@bp.get("/improve/export.zip")
@admin_required
def improve_export() -> Response:
    """Every kept submission (or one tag's) as a zip: images, their options, and submissions.json."""
    tag = request.args.get("tag") or None
    buf = io.BytesIO()
    improve.export_zip(get_settings().data_dir, buf, tag)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    name = f"forecourt-improve-{stamp}{'-' + tag if tag and tag.isalnum() else ''}.zip"
    buf.seek(0)
    return send_file(buf, mimetype="application/zip", as_attachment=True, download_name=name)
