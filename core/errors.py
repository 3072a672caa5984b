"""The base of every domain error: a remove.bg-style code, a title, an HTTP status and a detail for people."""

from __future__ import annotations


class DomainError(Exception):
    """An error the API reports as {"errors": [{code, title, detail}]} with `status`; subclasses set the defaults."""

    code = "error"
    title = "Error"
    status = 400

    def __init__(self, detail: str = "", *, code: str | None = None, title: str | None = None,
                 status: int | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        if code:
            self.code = code
        if title:
            self.title = title
        if status:
            self.status = status
        self.headers = headers or {}


class InvalidBase64(DomainError):
    code, title, status = "invalid_base64", "Invalid base64", 400


class InvalidCursor(DomainError):
    code, title, status = "invalid_cursor", "Invalid cursor", 400
