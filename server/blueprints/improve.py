"""remove.bg's Improvement Program: POST /v1.0/improve (also /v1/improve) keeps an image for the admin's review."""

from __future__ import annotations

from apiflask import APIBlueprint
from flask import Flask, g, jsonify
from flask.wrappers import Response

from server.auth import API_KEY_SECURITY, require_key
from server.blueprints import register
from server.blueprints.removebg import _image_bytes, _request_params
from server.config import get_settings
from server.services import improve as service

bp = APIBlueprint("improve", __name__, tag="Improvement Program")


def init_app(app: Flask) -> None:
    """remove.bg's Improvement Program endpoint (rate limited as the rest of the API)."""
    register(app, bp)

IMPROVE_DOC = dict(
    security=API_KEY_SECURITY,
    responses={
        200: {"description": "Image submitted: its id.",
              "content": {"application/json": {"schema": {
                  "type": "object", "required": ["id"],
                  "properties": {"id": {"type": "string", "description": "ID of the submitted image"}}}}}},
        400: "Invalid parameters or image (remove.bg's error codes: file_too_large, invalid_file_type, ...)",
        403: "Missing or invalid API key", 413: "Request too large",
        429: "Rate limit exceeded (also: 100 submissions a day per account)",
    },
)


@bp.post("/v1.0/improve")
@bp.post("/v1/improve")
@bp.doc(**IMPROVE_DOC)
@require_key
def improve() -> tuple[Response, int]:
    """Submit an image to the Improvement Program (remove.bg-compatible).

    For an image this box does not cut out well: it is kept with its options in a review folder on the box,
    which the admin sees in the dashboard and exports for the vendor; nothing is sent anywhere by itself and
    nothing is charged. Multipart, form or JSON: one of `image_file`, `image_file_b64`, `image_url` (URL input
    only for the admin's allow-listed hosts), and optionally `image_filename` and `tag` (images with the same
    tag are grouped). Files up to 12 MB; 100 submissions a day per account (UTC).
    """
    params, files = _request_params()
    data = _image_bytes(params, files, service.MAX_BYTES)  # exactly one source, else remove.bg's error code
    source = next(n for n in ("image_file", "image_file_b64", "image_url")
                  if n in files or params.get(n) not in (None, ""))
    principal = g.principal
    sub = service.submit(get_settings().data_dir, data, user_id=principal.user_id, user_email=principal.email,
                         key_id=principal.key_id or "", source=source, image_filename=params.get("image_filename"),
                         tag=params.get("tag"),
                         image_url=str(params.get("image_url") or "") if source == "image_url" else "")
    return jsonify({"id": sub.id}), 200
