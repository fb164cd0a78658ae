"""The one-click unsubscribe link of every email (`/u/{token}`, no API key: the token is signed)."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import HTMLResponse

from followup_scheduler.adapters.unsubscribe import UnsubscribeLinks
from followup_scheduler.service_layer.unsubscribe import opt_out
from followup_scheduler.service_layer.uow import SchedulerUnitOfWork
from retention_shared.problems import Problem

Token = Annotated[str, Path(pattern=r"^[A-Za-z0-9_\-]{8,600}\.[A-Za-z0-9_\-]{8,64}$")]


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>'
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>",
        status_code=status,
    )


def build_unsubscribe_router(
    *, uow_factory: Callable[[], SchedulerUnitOfWork], links: UnsubscribeLinks
) -> APIRouter:
    router = APIRouter(prefix="/u", tags=["unsubscribe"])

    @router.get("/{token}", response_class=HTMLResponse)
    def confirm(token: Token) -> HTMLResponse:
        """A confirmation page. A GET never unsubscribes: mail scanners follow links."""
        if links.read(token) is None:
            raise Problem(404, "Not Found", "unknown or damaged unsubscribe link")
        return _page(
            "Unsubscribe / 配信停止",
            f'<form method="post" action="/u/{html.escape(token)}">'
            '<button type="submit">Unsubscribe / 配信を停止する</button></form>',
        )

    @router.post("/{token}", response_class=HTMLResponse)
    def unsubscribe(token: Token) -> HTMLResponse:
        """RFC 8058 one-click unsubscribe (and the confirmation form): records the opt-out."""
        request = links.read(token)
        if request is None:
            raise Problem(404, "Not Found", "unknown or damaged unsubscribe link")
        with uow_factory() as uow:
            opt_out(uow, request)
            uow.commit()
        # The same answer whether or not the customer is still known: the link reveals nothing.
        return _page("Unsubscribed / 配信を停止しました", f"<p>{html.escape(request.channel)}</p>")

    return router
