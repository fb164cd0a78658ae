"""The response page at /s/{token}: server-rendered HTML that works without JavaScript.

Tapping a score submits it at once (each score is a submit button); the page then shows the
free-text question with the score still changeable, and a thank-you page follows. Forged, expired
and already-answered links get friendly pages of their own. The token is the only credential.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from survey_service.config import SurveySettings
from survey_service.domain.surveys import COMMENT_MAX_CHARS, SCALES, Kind, pick_locale
from survey_service.domain.tokens import InvitationSigner
from survey_service.entrypoints.web.i18n import ANCHORS, SHOP_FALLBACK, words
from survey_service.service_layer import responses
from survey_service.service_layer.batching import AnswerBatcher
from survey_service.service_layer.responses import Answer, InvalidAnswer, Link, LinkState, LinkUnusable
from survey_service.service_layer.uow import SurveyUnitOfWork

MAX_FORM_BYTES = 64 * 1024  # a 2,000-character comment in Japanese is ~18 KB percent-encoded

_templates = Environment(
    loader=PackageLoader("survey_service", "entrypoints/web/templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _security_headers(nonce: str) -> dict[str, str]:
    return {
        # No script at all, styles only with this response's nonce, forms only back to us, and no
        # framing by any site (clickjacking a one-tap form would be easy otherwise).
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'nonce-{nonce}'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        ),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        # The token is in the URL: never send it on to another site, never keep it in a cache.
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def _render(template: str, status_code: int, locale: str, **context: Any) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    html = _templates.get_template(template).render(locale=locale, w=words(locale), nonce=nonce, **context)
    return HTMLResponse(html, status_code=status_code, headers=_security_headers(nonce))


def _message(state: LinkState, link: Link | None, accept_language: str | None) -> HTMLResponse:
    invitation = link.invitation if link else None
    # An invalid link tells nothing about any shop: no name, the language the browser asks for.
    if invitation is not None and state is not LinkState.INVALID:
        locale, shop_name = invitation["locale"], invitation["shop_name"]
    else:
        locale, shop_name = _browser_locale(accept_language), None
    key, status_code = {
        LinkState.EXPIRED: ("expired", 410),
        LinkState.CLOSED: ("used", 409),
        LinkState.INVALID: ("invalid", 404),
    }[state]
    w = words(locale)
    return _render(
        "message.html",
        status_code,
        locale,
        shop_name=shop_name,
        heading=w[f"{key}_title"],
        body=w[f"{key}_body"],
    )


def _browser_locale(accept_language: str | None) -> str:
    for part in (accept_language or "").split(","):
        language = part.split(";")[0].strip().lower()[:2]
        if language in ("ja", "en"):
            return language
    return "ja"


def _local_time(moment: datetime, timezone: str | None, locale: str) -> str:
    try:
        zone = ZoneInfo(timezone) if timezone else None
    except (KeyError, ValueError):
        zone = None
    local = moment.astimezone(zone) if zone else moment
    suffix = "" if zone else " UTC"
    if locale == "ja":
        return local.strftime("%Y年%-m月%-d日 %H:%M") + suffix
    return local.strftime("%-d %B %Y, %H:%M") + suffix


def build_pages(
    *,
    uow_factory: Callable[[], SurveyUnitOfWork],
    signer: InvitationSigner,
    settings: SurveySettings,
    answers: AnswerBatcher,
) -> APIRouter:
    router = APIRouter(tags=["response page"], include_in_schema=False)

    def open_link(token: str) -> Link:
        return responses.open_link(uow=uow_factory(), signer=signer, settings=settings, token=token)

    def question_page(
        token: str,
        link: Link,
        *,
        step: str,
        score: int | None = None,
        comment: str | None = None,
        errors: list[str] | None = None,
    ) -> HTMLResponse:
        invitation = link.invitation
        assert invitation is not None
        kind = Kind(invitation["kind"])
        # The survey may have been edited since the invitation: fall back to a language it still has.
        locale = pick_locale(invitation["texts"], invitation["locale"])
        texts = invitation["texts"][locale]
        shop_name = invitation["shop_name"]
        low_anchor, high_anchor = ANCHORS[kind][locale]
        return _render(
            "question.html",
            422 if errors else 200,
            locale,
            shop_name=shop_name,
            action=f"/s/{token}",
            step=step,
            question=texts["question"].replace("{shop}", shop_name or SHOP_FALLBACK[locale]),
            comment_question=texts["comment_question"],
            comment_enabled=invitation["comment_enabled"],
            comment_max=COMMENT_MAX_CHARS,
            points=SCALES[kind].points,
            low_anchor=low_anchor,
            high_anchor=high_anchor,
            score=score if score is not None else invitation["score"],
            comment=comment if comment is not None else invitation["comment"],
            errors=errors or [],
        )

    @router.get("/s/{token}", response_class=HTMLResponse)
    async def show(token: str, request: Request) -> Response:
        link = await run_in_threadpool(open_link, token)
        if link.state is LinkState.OPEN:
            return question_page(token, link, step="score")
        if link.state is LinkState.EDITABLE:
            return question_page(token, link, step="comment")
        return _message(link.state, link, request.headers.get("accept-language"))

    @router.post("/s/{token}", response_class=HTMLResponse)
    async def answer(token: str, request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            locale = _browser_locale(request.headers.get("accept-language"))
            w = words(locale)
            return _render("message.html", 413, locale, shop_name=None, heading=w["too_large_title"], body="")
        form = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
        step = (form.get("step") or ["score"])[0]
        raw_score = (form.get("score") or [""])[0]
        score: object = int(raw_score) if raw_score.strip().lstrip("-").isdigit() else None
        comment = (form.get("comment") or [""])[0] if step == "comment" else None

        answer = Answer(token, score, comment, keep_comment=step != "comment")
        try:
            await answers.submit_async(answer)
        except LinkUnusable as exc:
            link = await run_in_threadpool(open_link, token)
            return _message(exc.state, link, request.headers.get("accept-language"))
        except InvalidAnswer as exc:
            link = await run_in_threadpool(open_link, token)
            if link.invitation is None:
                return _message(LinkState.INVALID, None, request.headers.get("accept-language"))
            w = words(link.invitation["locale"])
            scale = SCALES[link.kind]
            message = (
                w["error_score"].format(low=scale.low, high=scale.high)
                if exc.field == "score"
                else w["error_comment"].format(max=COMMENT_MAX_CHARS)
            )
            first_step = step != "comment" and link.state is LinkState.OPEN
            return question_page(
                token,
                link,
                step="score" if first_step else "comment",
                score=score if isinstance(score, int) else None,
                comment=comment,
                errors=[message],
            )
        link = await run_in_threadpool(open_link, token)
        assert link.invitation is not None
        if step != "comment" and link.invitation["comment_enabled"]:
            return RedirectResponse(f"/s/{token}", status_code=303, headers={"Cache-Control": "no-store"})
        return RedirectResponse(f"/s/{token}/thanks", status_code=303, headers={"Cache-Control": "no-store"})

    @router.get("/s/{token}/thanks", response_class=HTMLResponse)
    async def thanks(token: str, request: Request) -> Response:
        link = await run_in_threadpool(open_link, token)
        if link.state is LinkState.OPEN:
            return RedirectResponse(f"/s/{token}", status_code=303)
        if link.state not in (LinkState.EDITABLE, LinkState.CLOSED):
            return _message(link.state, link, request.headers.get("accept-language"))
        invitation = link.invitation
        assert invitation is not None
        locale = invitation["locale"]
        editable = link.state is LinkState.EDITABLE and link.editable_until is not None
        return _render(
            "thanks.html",
            200,
            locale,
            shop_name=invitation["shop_name"],
            score=invitation["score"],
            comment=invitation["comment"],
            editable_until=_local_time(link.editable_until, invitation["shop_timezone"], locale)
            if editable and link.editable_until
            else None,
            edit_url=f"/s/{token}",
        )

    return router
