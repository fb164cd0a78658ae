"""Errors as RFC 9457 problem details (application/problem+json)."""

from __future__ import annotations

from typing import Any


class Problem(Exception):
    """An error a client can act on. Raise it anywhere below a route; it becomes problem+json."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        type_: str = "about:blank",
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors
        self.headers = headers
        self.type = type_

    def body(self, instance: str | None = None) -> dict[str, Any]:
        document: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status}
        if self.detail:
            document["detail"] = self.detail
        if instance:
            document["instance"] = instance
        if self.errors:
            document["errors"] = self.errors
        return document


def not_found(what: str) -> Problem:
    # The same answer whether the thing does not exist or belongs to another shop.
    return Problem(404, "Not Found", f"{what} not found")


def field_error(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}


def invalid(field: str, message: str) -> Problem:
    return Problem(422, "Unprocessable Content", message, errors=[field_error(field, message)])
