"""HTTP routes of the survey-service's JSON API."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRoute
from pydantic import TypeAdapter

from retention_shared.problems import Problem, invalid
from retention_shared.tenancy import Principal
from retention_shared.web import Authenticator, require_scope
from survey_service.config import SurveySettings
from survey_service.domain.surveys import COMMENT_MAX_CHARS, SCALES, pick_locale
from survey_service.entrypoints.api.schemas import (
    CommentPage,
    InvitationCreate,
    InvitationForm,
    InvitationRead,
    ResponseCreate,
    ResponseRead,
    Results,
    SurveyCreate,
    SurveyList,
    SurveyRead,
    SurveyUpdate,
)
from survey_service.entrypoints.web.i18n import ANCHORS, SHOP_FALLBACK
from survey_service.service_layer import invitations, responses, results, surveys
from survey_service.service_layer.batching import AnswerBatcher
from survey_service.service_layer.invitations import InvitationRequest, Links
from survey_service.service_layer.responses import Answer, InvalidAnswer, Link, LinkState, LinkUnusable
from survey_service.service_layer.results import CommentFilter, Interval, ResultsQuery
from survey_service.service_layer.uow import SurveyUnitOfWork

SurveyKey = Annotated[
    str,
    Path(
        pattern=r"^[A-Za-z0-9_]{1,64}$",
        description="A survey id, or nps, csat or ces for the shop's default survey of that kind",
    ),
]
SegmentName = Annotated[str | None, Query(max_length=64, description="A segment, e.g. at_risk")]
FirstDay = Annotated[
    date | None, Query(alias="from", description="First day (YYYY-MM-DD, the shop's time zone)")
]
LastDay = Annotated[date | None, Query(alias="to", description="Last day, inclusive")]

_response_read = TypeAdapter(ResponseRead)


@dataclass(frozen=True)
class Wiring:
    uow_factory: Callable[[], SurveyUnitOfWork]
    links: Links
    settings: SurveySettings
    answers: AnswerBatcher
    authenticate: Authenticator


def link_problem(state: LinkState) -> Problem:
    """The same answer for a forged token and for one no longer known, whichever shop it claims."""
    if state is LinkState.EXPIRED:
        return Problem(410, "Gone", "This survey link has expired")
    if state is LinkState.CLOSED:
        return Problem(409, "Conflict", "This survey link was already answered and can no longer change")
    return Problem(404, "Not Found", "No such survey link")


def invitation_form(link: Link) -> dict[str, Any]:
    invitation = link.invitation
    assert invitation is not None
    kind = link.kind
    locale = pick_locale(invitation["texts"], invitation["locale"])
    texts = invitation["texts"][locale]
    shop_name = invitation["shop_name"]
    low_label, high_label = ANCHORS[kind][locale]
    answered = invitation["response_id"] is not None and link.editable_until is not None
    return {
        "state": link.state.value,
        "survey_id": invitation["survey_id"],
        "kind": kind.value,
        "locale": locale,
        "shop_name": shop_name,
        "question": texts["question"].replace("{shop}", shop_name or SHOP_FALLBACK[locale]),
        "comment_enabled": invitation["comment_enabled"],
        "comment_question": texts["comment_question"],
        "comment_max_chars": COMMENT_MAX_CHARS,
        "scale": {
            "low": SCALES[kind].low,
            "high": SCALES[kind].high,
            "low_label": low_label,
            "high_label": high_label,
        },
        "answer": {
            "score": invitation["score"],
            "comment": invitation["comment"],
            "answered_at": invitation["answered_at"],
            "editable_until": link.editable_until,
        }
        if answered
        else None,
        "expires_at": invitation["expires_at"],
    }


def answer_route(record: Callable[[ResponseCreate], Awaitable[Response]]) -> type[APIRoute]:
    """The route class of POST /v1/responses: a body sent as `application/json` that parses and
    validates as a ResponseCreate goes straight to `record`; any other request takes FastAPI's own
    path (which calls the same `record` through the endpoint), so every error reads as before.

    The short path skips what FastAPI does for any route and this one does not need: parsing the
    Content-Type with the email package, solving an empty set of dependencies, and validating and
    serialising the endpoint's return value again. On one API process that was about a third of
    the framework's time per answer."""

    class AnswerRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            standard = super().get_route_handler()

            async def handle(request: Request) -> Response:
                if request.headers.get("content-type") == "application/json":
                    try:
                        # As FastAPI does: the stdlib's json, then the model in Python mode.
                        body = ResponseCreate.model_validate(json.loads(await request.body()))
                    except ValueError:  # bad JSON, bad encoding or a failed validation
                        pass
                    else:
                        return await record(body)
                # The body read above is kept on the request, so FastAPI reads it again for free.
                return await standard(request)

            return handle

    return AnswerRoute


def build_router(wiring: Wiring) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["surveys"])
    can_read = require_scope(wiring.authenticate, "customers:read")
    can_write = require_scope(wiring.authenticate, "customers:write")
    uow = wiring.uow_factory

    # First, so that the busiest route is matched without trying the others.
    async def record_answer(body: ResponseCreate) -> Response:
        try:
            answer, created = await wiring.answers.submit_async(
                Answer(body.token, body.score, body.comment, keep_comment=body.comment is None)
            )
        except LinkUnusable as exc:
            raise link_problem(exc.state) from exc
        except InvalidAnswer as exc:
            raise invalid(f"body.{exc.field}", exc.message) from exc
        # What FastAPI would make of the dict with response_model=ResponseRead, byte for byte.
        return Response(
            _response_read.dump_json(_response_read.validate_python(answer)),
            status_code=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
            media_type="application/json",
        )

    async def post_response(body: ResponseCreate) -> Response:
        """Answer a survey from an app. The token is the credential: no API key is needed. A second
        submission within 24 hours of the first updates the same answer; later ones are refused."""
        return await record_answer(body)

    router.add_api_route(
        "/responses",
        post_response,
        methods=["POST"],
        status_code=status.HTTP_201_CREATED,
        response_model=ResponseRead,
        tags=["responses"],
        responses={
            200: {"description": "A later submission within the edit window updated the answer"},
            404: {"description": "Unknown, forged or tampered token"},
            409: {"description": "Answered, and the edit window (24 h) is over"},
            410: {"description": "The link expired"},
        },
        route_class_override=answer_route(record_answer),
    )

    @router.post("/surveys", status_code=status.HTTP_201_CREATED, response_model=SurveyRead)
    def create_survey(body: SurveyCreate, principal: Principal = Depends(can_write)) -> dict[str, Any]:
        """Create a survey: NPS (0-10), CSAT (1-5) or CES (1-7), in Japanese, English or both."""
        return surveys.create_survey(uow=uow(), shop_id=principal.shop_id, document=body.model_dump())

    @router.get("/surveys", response_model=SurveyList)
    def list_surveys(
        include_archived: bool = False, principal: Principal = Depends(can_read)
    ) -> dict[str, Any]:
        """The shop's surveys, oldest first; the default NPS, CSAT and CES surveys are always there."""
        found = surveys.list_surveys(uow=uow(), shop_id=principal.shop_id, include_archived=include_archived)
        return {"surveys": found}

    @router.get("/surveys/{survey_id}", response_model=SurveyRead)
    def get_survey(survey_id: SurveyKey, principal: Principal = Depends(can_read)) -> dict[str, Any]:
        """One survey, by id or by kind (the shop's default of that kind)."""
        return surveys.get_survey(uow=uow(), shop_id=principal.shop_id, survey_id=survey_id)

    @router.patch("/surveys/{survey_id}", response_model=SurveyRead)
    def update_survey(
        survey_id: SurveyKey, body: SurveyUpdate, principal: Principal = Depends(can_write)
    ) -> dict[str, Any]:
        """Change the name, the texts or the free-text question; `archived` archives or restores."""
        return surveys.update_survey(
            uow=uow(),
            shop_id=principal.shop_id,
            survey_id=survey_id,
            changes=body.model_dump(exclude_unset=True),
        )

    @router.delete("/surveys/{survey_id}", status_code=status.HTTP_204_NO_CONTENT)
    def archive_survey(survey_id: SurveyKey, principal: Principal = Depends(can_write)) -> Response:
        """Archive a survey: it takes no new invitations, and its answers and results stay."""
        surveys.archive_survey(uow=uow(), shop_id=principal.shop_id, survey_id=survey_id)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @router.post(
        "/surveys/{survey_id}/invitations",
        status_code=status.HTTP_201_CREATED,
        response_model=InvitationRead,
        responses={
            200: {"description": "A repeat of an earlier request with this Idempotency-Key: its invitation"},
            409: {
                "description": "Survey fatigue (type ending /survey-fatigue): the customer was invited "
                "within the last N days (30 by default), or the survey is archived"
            },
        },
    )
    def invite(
        survey_id: SurveyKey,
        body: InvitationCreate,
        response: Response,
        idempotency_key: Annotated[
            str | None,
            Header(alias="Idempotency-Key", min_length=1, max_length=128, description="Repeat-safe key"),
        ] = None,
        principal: Principal = Depends(can_write),
    ) -> dict[str, Any]:
        """Invite a customer to a survey: a personal, signed link that expires (30 days by default)."""
        invitation, created = invitations.create_invitation(
            uow=uow(),
            links=wiring.links,
            settings=wiring.settings,
            shop_id=principal.shop_id,
            survey_id_or_kind=survey_id,
            request=InvitationRequest(
                customer_id=body.customer_id,
                context_type=body.context.type,
                context_id=body.context.id,
                locale=body.locale,
                idempotency_key=idempotency_key,
            ),
        )
        if not created:
            response.status_code = status.HTTP_200_OK
            response.headers["Idempotent-Replayed"] = "true"
        return invitation

    @router.get("/surveys/{survey_id}/results", response_model=Results)
    def get_results(
        survey_id: SurveyKey,
        first_day: FirstDay = None,
        last_day: LastDay = None,
        segment: SegmentName = None,
        interval: Interval = Interval.WEEK,
        principal: Principal = Depends(can_read),
    ) -> dict[str, Any]:
        """The survey's figures over the days, with a trend per interval and breakdowns by segment and
        touchpoint. Erased customers' answers still count (only counts are kept of them)."""
        query = ResultsQuery(first_day=first_day, last_day=last_day, segment=segment, interval=interval)
        return results.survey_results(uow=uow(), shop_id=principal.shop_id, survey_id=survey_id, query=query)

    def comment_filter(
        score: Annotated[int | None, Query(ge=0, le=10, description="Only this score")] = None,
        min_score: Annotated[int | None, Query(ge=0, le=10)] = None,
        max_score: Annotated[int | None, Query(ge=0, le=10)] = None,
        first_day: FirstDay = None,
        last_day: LastDay = None,
        segment: SegmentName = None,
        touchpoint: Annotated[str | None, Query(pattern="^(purchase|ticket|playbook)$")] = None,
    ) -> CommentFilter:
        if score is not None and (min_score is not None or max_score is not None):
            raise invalid("query.score", "give either score, or min_score and max_score")
        if first_day and last_day and first_day > last_day:
            raise invalid("query.from", "must not be after `to`")
        return CommentFilter(
            min_score=score if score is not None else min_score,
            max_score=score if score is not None else max_score,
            first_day=first_day,
            last_day=last_day,
            segment=segment,
            touchpoint=touchpoint,
        )

    @router.get("/surveys/{survey_id}/comments", response_model=CommentPage)
    def get_comments(
        survey_id: SurveyKey,
        where: CommentFilter = Depends(comment_filter),
        cursor: Annotated[str | None, Query(max_length=200)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        principal: Principal = Depends(can_read),
    ) -> dict[str, Any]:
        """The answers that have a comment, newest first, filtered by score, day, segment or touchpoint."""
        return results.list_comments(
            uow=uow(), shop_id=principal.shop_id, survey_id=survey_id, where=where, cursor=cursor, limit=limit
        )

    @router.get(
        "/surveys/{survey_id}/responses.csv",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/csv": {}}, "description": "UTF-8 CSV with a header row"}},
    )
    def export_responses(
        survey_id: SurveyKey,
        where: CommentFilter = Depends(comment_filter),
        principal: Principal = Depends(can_read),
    ) -> StreamingResponse:
        """Every response (with or without a comment), oldest first, as CSV, with the same filters."""
        key, chunks = results.export_csv(
            uow=uow(), shop_id=principal.shop_id, survey_id=survey_id, where=where
        )
        return StreamingResponse(
            chunks,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{key}-responses.csv"'},
        )

    @router.get(
        "/invitations/{token}",
        response_model=InvitationForm,
        tags=["responses"],
        responses={
            404: {"description": "Unknown, forged or tampered token"},
            410: {"description": "Expired"},
        },
    )
    def get_invitation_form(
        token: Annotated[str, Path(max_length=100, description="The invitation's token")],
    ) -> dict[str, Any]:
        """The survey behind a link, in the customer's language, and the answer so far: for apps
        that show the survey themselves and answer with POST /v1/responses. The token is the
        credential: no API key is needed."""
        link = responses.open_link(
            uow=uow(), signer=wiring.links.signer, settings=wiring.settings, token=token
        )
        if link.state in (LinkState.INVALID, LinkState.EXPIRED) or link.invitation is None:
            raise link_problem(link.state)
        return invitation_form(link)

    return router
