"""What every console page shares: sessions from cookies, CSRF, rendering, and security headers."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import ChainableUndefined, Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from customer_api.entrypoints.console import views
from customer_api.entrypoints.console.gateway import Answer, Gateway
from customer_api.entrypoints.console.i18n import LOCALES, MESSAGES, negotiate, translator
from customer_api.entrypoints.console.sessions import ConsoleSession, SessionStore

PREFIX = "/console"
SESSION_COOKIE = "retention_console"
LOCALE_COOKIE = "retention_console_lang"
# Before sign-in there is no session to hold a CSRF token, so the sign-in form uses a
# double-submit cookie: the form's hidden value must equal this cookie's.
SIGN_IN_CSRF_COOKIE = "retention_console_csrf"
CSRF_FIELD = "csrf_token"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    # API answers vary in shape while the services grow; a missing field renders empty, not a 500.
    undefined=ChainableUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.globals.update(
    fmt=views.format_value,
    fmt_change=views.format_change,
    pct=views.format_percent,
    error_for=views.error_for,
    as_yaml=views.as_yaml,
    items=views.items_of,
    known_kinds=frozenset(MESSAGES),
)


class Interrupt(Exception):  # noqa: N818  (it carries a response, it is not an error)
    """Stops a page and answers with this response instead (a redirect to sign-in, a 404 page …)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class ConsoleRoute(APIRoute):
    """Console routes answer `Interrupt`s with their response and carry the security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                response = await handle(request)
            except Interrupt as interrupt:
                response = interrupt.response
            secure_headers(response)
            return response

        return handler


def secure_headers(response: Response) -> None:
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    response.headers.setdefault("Cache-Control", "no-store")


def is_https(request: Request) -> bool:
    # Behind the gateway TLS ends at the proxy, which says so in X-Forwarded-Proto.
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def locale_of(request: Request) -> str:
    chosen = request.cookies.get(LOCALE_COOKIE)
    if chosen in LOCALES:
        return chosen
    return negotiate(request.headers.get("accept-language"))


def safe_next(target: str | None) -> str:
    """Only paths inside the console are followed after sign-in, so `next` is no open redirect."""
    if target and target.startswith(PREFIX) and not target.startswith("//") and "\\" not in target:
        return target
    return PREFIX + "/"


@dataclass
class Page:
    """One request of a signed-in user: who, for which shop, in which language, and the API client."""

    request: Request
    session: ConsoleSession
    locale: str
    gateway: Gateway
    store: SessionStore

    @property
    def shop_id(self) -> str:
        if self.session.shop_id is None:
            raise Interrupt(RedirectResponse(f"{PREFIX}/shop", status_code=303))
        return self.session.shop_id

    def t(self, key: str, **values: Any) -> str:
        return translator(self.locale)(key, **values)

    async def api(self, method: str, path: str, **kwargs: Any) -> Answer:
        return await self.gateway.call(method, path, shop_id=self.shop_id, **kwargs)

    def require(self, scope: str) -> None:
        if not self.session.allows(scope):
            raise Interrupt(self.render("error.html", status=403, message=self.t("forbidden", scope=scope)))

    def render(self, template: str, *, status: int = 200, **values: Any) -> HTMLResponse:
        return render(
            self.request, template, status=status, session=self.session, locale=self.locale, **values
        )

    def not_found(self) -> Interrupt:
        return Interrupt(self.render("error.html", status=404, message=self.t("not_found")))


def render(
    request: Request,
    template: str,
    *,
    status: int = 200,
    session: ConsoleSession | None = None,
    locale: str | None = None,
    **values: Any,
) -> HTMLResponse:
    locale = locale or locale_of(request)
    context = {
        "t": translator(locale),
        "locale": locale,
        "locales": LOCALES,
        "session": session,
        "csrf_token": session.csrf_token if session else "",
        "path": request.url.path,
        "here": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        "prefix": PREFIX,
        "nav": request.url.path.removeprefix(PREFIX).strip("/").split("/")[0],
        "urlencode": urlencode,
        **values,
    }
    return HTMLResponse(templates.get_template(template).render(context), status_code=status)


async def current_session(request: Request, store: SessionStore) -> ConsoleSession | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    return await run_in_threadpool(store.find, token)


async def form_fields(request: Request) -> dict[str, str]:
    """The posted form as text fields (files are not accepted by the console)."""
    form = await request.form()
    return {name: value for name, value in form.items() if isinstance(value, str)}


def check_csrf(session: ConsoleSession, fields: dict[str, str]) -> bool:
    submitted = fields.get(CSRF_FIELD, "")
    return bool(submitted) and secrets.compare_digest(submitted.encode(), session.csrf_token.encode())


def set_session_cookie(response: Response, request: Request, token: str, max_age_s: int) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age_s,
        path=PREFIX,
        httponly=True,
        samesite="lax",
        secure=is_https(request),
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path=PREFIX, httponly=True, samesite="lax", secure=is_https(request)
    )
