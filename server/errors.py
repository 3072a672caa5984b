"""One error shape for every failure: {"errors": [{"code", "title", "detail"}]}."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from core.errors import DomainError

log = logging.getLogger(__name__)


class ApiError(DomainError):
    """A server-side domain error (the base of the services' own errors)."""


class BadRequest(ApiError):
    code, title, status = "bad_request", "Bad request", 400


class Unauthorized(ApiError):
    """remove.bg answers a missing or wrong key with 403."""

    code, title, status = "auth_failed", "Missing or invalid API key", 403


class Forbidden(ApiError):
    code, title, status = "forbidden", "Not allowed", 403


class NotFound(ApiError):
    code, title, status = "not_found", "Not found", 404


class Conflict(ApiError):
    code, title, status = "conflict", "Conflict", 409


HTTP_CODES = {
    400: "bad_request",
    401: "auth_failed",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    411: "length_required",
    413: "file_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    422: "invalid_parameters",
    429: "rate_limit_exceeded",
    500: "internal_error",
    503: "service_unavailable",
}


def error_body(code: str, title: str, detail: str) -> dict[str, Any]:
    """The one error body."""
    return {"errors": [{"code": code, "title": title, "detail": detail}]}


def error_response(status: int, code: str, title: str, detail: str,
                   headers: dict[str, str] | None = None) -> Response:
    """A JSON error response in the one shape."""
    resp = jsonify(error_body(code, title, detail))
    resp.status_code = status
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def _validation_detail(data: Any) -> str:
    """Flatten APIFlask/pydantic validation messages into one sentence."""
    parts: list[str] = []

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix and k not in ("json", "query", "form", "files", "headers") else
                     (prefix or ("" if k in ("json", "query", "form", "files", "headers") else str(k))), v)
        elif isinstance(node, list):
            for item in node:
                if isinstance(item, str):
                    parts.append(f"{prefix}: {item}" if prefix else item)
                else:
                    walk(prefix, item)
        elif node is not None:
            parts.append(f"{prefix}: {node}" if prefix else str(node))

    walk("", data)
    return "; ".join(parts) or "The request is not valid."


def init_app(app: Flask) -> None:
    """Register the handlers that turn every failure into the one error shape."""

    @app.errorhandler(Exception)
    def handle_any(exc: Exception) -> Response:
        if isinstance(exc, DomainError):
            if "Retry-After" in exc.headers:  # the error knows how long to wait: the rate limiter must not rewrite it
                g.retry_after = exc.headers["Retry-After"]
            return error_response(int(exc.status), exc.code, exc.title, exc.detail or str(exc), exc.headers)
        if isinstance(exc, HTTPException):
            return _http_exception(exc)
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "Internal error",
                              "Something went wrong on the server; the error was logged.")

    # APIFlask routes HTTPErrors (validation included) through its error processor.
    processor = getattr(app, "error_processor", None)
    if processor is not None:

        @processor
        def handle_apiflask(error: Any) -> tuple[dict[str, Any], int, dict[str, str]]:
            status = int(error.status_code)
            code = HTTP_CODES.get(status, "error")
            title = error.message or "Error"
            detail = error.detail if error.detail else title
            if status in (400, 422) and isinstance(error.detail, dict):
                code, title, status = "invalid_parameters", "Invalid parameters", 400
                detail = _validation_detail(error.detail)
            elif status == 413:
                title, detail = "File too large", "The request body is larger than the server accepts."
            elif status == 405:
                detail = f"{request.method} is not allowed on {request.path}."
            elif status == 404:
                detail = f"No such resource: {request.path}."
            headers = dict(getattr(error, "headers", None) or {})
            return error_body(code, title, str(detail)), status, headers


def _http_exception(exc: HTTPException) -> Response:
    status = exc.code or 500
    headers = {k: v for k, v in exc.get_headers() if k.lower() not in ("content-type", "content-length")}
    detail = exc.description or exc.name
    if status == 413:
        detail = "The request body is larger than the server accepts."
    return error_response(status, HTTP_CODES.get(status, "error"), exc.name, str(detail), headers)
