"""Request and response bodies of the survey-service's JSON API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from retention_shared.events.envelope import ID_PATTERN
from survey_service.domain.surveys import COMMENT_MAX_CHARS, QUESTION_MAX_CHARS, Kind

Locale = Literal["ja", "en"]


class SurveyTexts(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(
        min_length=1,
        max_length=QUESTION_MAX_CHARS,
        description="The scored question; `{shop}` is replaced by the shop's name",
    )
    comment_question: str | None = Field(
        None,
        min_length=1,
        max_length=QUESTION_MAX_CHARS,
        description='The free-text question; default "What is the main reason for your score?"',
    )


class SurveyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Kind = Field(description="nps (0-10), csat (1-5) or ces (1-7, 1 = least effort)")
    name: str = Field(min_length=1, max_length=200)
    comment_enabled: bool = Field(True, description="Ask the free-text question after the score")
    texts: dict[Locale, SurveyTexts] = Field(min_length=1, description="Per locale: ja, en or both")


class SurveyUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Kind | None = Field(None, description="May be sent, but must not change")
    name: str | None = Field(None, min_length=1, max_length=200)
    comment_enabled: bool | None = None
    texts: dict[Locale, SurveyTexts] | None = Field(None, min_length=1)
    archived: bool | None = None


class SurveyRead(BaseModel):
    survey_id: str
    kind: Kind
    name: str
    comment_enabled: bool
    texts: dict[str, SurveyTexts]
    default_for: Kind | None = Field(description="Set on the shop's default survey of that kind")
    archived: bool
    created_at: datetime
    updated_at: datetime


class SurveyList(BaseModel):
    surveys: list[SurveyRead]


class InvitationContext(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["order", "ticket", "playbook_run"]
    id: str = Field(pattern=ID_PATTERN)


class InvitationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: str = Field(pattern=ID_PATTERN)
    context: InvitationContext
    locale: str | None = Field(
        None,
        max_length=16,
        description="ja or en; else the customer's language, else the shop's (e.g. ja-JP counts as ja)",
    )


class InvitationRead(BaseModel):
    invitation_id: str
    survey_id: str
    url: str = Field(description="The personal link: {public_base_url}/s/{token}")
    token: str
    expires_at: datetime


class ResponseCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=100, description="The invitation's token")
    score: int = Field(description="nps 0-10, csat 1-5, ces 1-7")
    comment: str | None = Field(
        None, max_length=COMMENT_MAX_CHARS, description="Left out: an earlier comment stays"
    )


class ResponseRead(BaseModel):
    response_id: str
    survey_id: str
    kind: Kind
    score: int
    detractor: bool
    comment: str | None
    answered_at: datetime
    updated_at: datetime
    editable_until: datetime = Field(description="Until then, the same token updates this answer")


class ConfidenceInterval(BaseModel):
    level: float
    low: float
    high: float


class Figures(BaseModel):
    """The figures of one group of answers. Which of the kind-specific ones appear depends on the kind:
    NPS has nps, promoters, passives, detractors (and their %) and the 95% confidence interval; CSAT
    has csat (% of 4-5), satisfied and mean; CES has mean, easy and easy_pct (% of 1-2)."""

    model_config = ConfigDict(extra="allow")

    responses: int
    invitations: int
    response_rate: float | None = Field(description="responses / invitations in the period")
    detractors: int
    nps: float | None = None
    promoters: int | None = None
    passives: int | None = None
    promoters_pct: float | None = None
    detractors_pct: float | None = None
    confidence_interval: ConfidenceInterval | None = None
    csat: float | None = None
    satisfied: int | None = None
    mean: float | None = None
    easy: int | None = None
    easy_pct: float | None = None


class TrendPoint(Figures):
    period_start: date


class SegmentFigures(Figures):
    segment: str | None = Field(description="null: answers from customers with no segment yet")


class TouchpointFigures(Figures):
    touchpoint: Literal["purchase", "ticket", "playbook"]


class Results(BaseModel):
    survey_id: str
    kind: Kind
    from_: date | None = Field(alias="from")
    to: date | None
    segment: str | None
    interval: Literal["day", "week", "month"]
    summary: Figures
    distribution: dict[str, int] = Field(description="Answers per score")
    trend: list[TrendPoint]
    by_segment: list[SegmentFigures]
    by_touchpoint: list[TouchpointFigures]


class CommentContext(BaseModel):
    type: str
    id: str


class CommentRead(BaseModel):
    response_id: str
    customer_id: str
    score: int
    detractor: bool
    comment: str
    touchpoint: str
    segment: str | None
    context: CommentContext
    locale: str
    answered_at: datetime
    updated_at: datetime


class CommentPage(BaseModel):
    comments: list[CommentRead]
    next_cursor: str | None


class ScaleRead(BaseModel):
    low: int
    high: int
    low_label: str
    high_label: str


class AnswerSoFar(BaseModel):
    score: int
    comment: str | None
    answered_at: datetime
    editable_until: datetime


class InvitationForm(BaseModel):
    """What an app needs to show the survey of a link natively."""

    state: Literal["open", "editable", "closed"] = Field(
        description="open: not answered; editable: answered, and a new answer still updates it; closed"
    )
    survey_id: str
    kind: Kind
    locale: Locale
    shop_name: str | None
    question: str
    comment_enabled: bool
    comment_question: str
    comment_max_chars: int
    scale: ScaleRead
    answer: AnswerSoFar | None
    expires_at: datetime
