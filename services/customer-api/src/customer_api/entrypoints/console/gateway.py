"""The console's only way to data: the services' public HTTP APIs, called for one shop.

The console authenticates as the platform operator and names the shop in `X-Retention-Shop`, so
every answer is confined to the signed-in user's shop exactly as a shop key would be. In the
embedded all-in-one process the calls go to the same app in-process; in distributed mode they go
to the gateway (`RETENTION_GATEWAY_URL`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.types import ASGIApp

from retention_shared.web import OPERATOR_SHOP_HEADER

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Answer:
    """An upstream answer. `ok` means 2xx; otherwise `problem` holds the problem+json (if any)."""

    status: int
    data: Any = None
    problem: dict[str, Any] = field(default_factory=dict)
    unavailable: bool = False

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300 and not self.unavailable

    @property
    def not_found(self) -> bool:
        """The record is not there (or is another shop's); a missing route is `unavailable` instead."""
        return self.status == 404 and not self.unavailable

    @property
    def field_errors(self) -> dict[str, str]:
        """Field → message, from a 422 problem, keyed by the last part of the dotted path."""
        errors: dict[str, str] = {}
        for error in self.problem.get("errors") or []:
            path = str(error.get("field", ""))
            errors[path.removeprefix("body.") or "body"] = str(error.get("message", ""))
        return errors

    @property
    def detail(self) -> str:
        return str(self.problem.get("detail") or self.problem.get("title") or f"HTTP {self.status}")


class Gateway:
    """Calls the platform's APIs for one shop with the operator token."""

    def __init__(self, *, app: ASGIApp | None, base_url: str | None, operator_token: str) -> None:
        if base_url:
            self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=TIMEOUT_S)
        else:
            if app is None:
                raise ValueError("an in-process gateway needs the app")
            self._client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://console.internal", timeout=TIMEOUT_S
            )
        self._token = operator_token

    async def aclose(self) -> None:
        await self._client.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        shop_id: str,
        params: dict[str, Any] | None = None,
        json: Any = None,
        content: str | None = None,
        content_type: str | None = None,
    ) -> Answer:
        """One API call; a transport failure or a missing route is an `unavailable` answer, not an error."""
        headers = {"Authorization": f"Bearer {self._token}", OPERATOR_SHOP_HEADER: shop_id}
        if content_type:
            headers["Content-Type"] = content_type
        clean_params = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        try:
            response = await self._client.request(
                method, path, params=clean_params, json=json, content=content, headers=headers
            )
        except httpx.HTTPError as exc:
            log.warning("console: %s %s failed: %s", method, path, exc)
            return Answer(status=503, unavailable=True, problem={"detail": str(exc)[:200]})
        return _answer(response)

    async def download(self, path: str, *, shop_id: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self._token}", OPERATOR_SHOP_HEADER: shop_id}
        return await self._client.get(path, headers=headers)


def _answer(response: httpx.Response) -> Answer:
    body: Any = None
    if response.content:
        try:
            body = response.json()
        except ValueError:
            body = response.text
    if response.is_success:
        return Answer(status=response.status_code, data=body)
    problem = body if isinstance(body, dict) else {"detail": str(body)[:200] if body else None}
    # A 404 or 405 for the route itself (rather than for a record) means the API is not deployed
    # here yet; a 5xx means it is failing. Both show as "not available" instead of breaking a page.
    route_missing = response.status_code in (404, 405) and problem.get("detail") in (None, "Not Found")
    unavailable = route_missing or response.status_code >= 500
    return Answer(status=response.status_code, problem=problem, unavailable=unavailable)
