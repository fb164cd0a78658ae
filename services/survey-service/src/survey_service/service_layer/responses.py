"""Answering: what a link is good for, and recording an answer (once, then editable for a while)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from retention_shared.events.catalogue import SurveyAnswered
from survey_service.adapters.tables import SCORE_COLUMNS
from survey_service.config import SurveySettings
from survey_service.domain.surveys import COMMENT_MAX_CHARS, SCALES, Kind, clean_comment, is_detractor
from survey_service.domain.tokens import InvitationSigner, TokenCheck, TokenState
from survey_service.service_layer.invitations import shop_day
from survey_service.service_layer.surveys import new_ids
from survey_service.service_layer.uow import SurveyUnitOfWork


class LinkState(StrEnum):
    OPEN = "open"  # not answered yet
    EDITABLE = "editable"  # answered, and a new submission still updates the answer
    CLOSED = "closed"  # answered, and the edit window is over
    EXPIRED = "expired"
    INVALID = "invalid"  # forged, tampered with, or no longer known (e.g. erased)


class LinkUnusable(Exception):
    """The link cannot take an answer; `state` says why (expired, closed or invalid)."""

    def __init__(self, state: LinkState) -> None:
        super().__init__(state.value)
        self.state = state


class InvalidAnswer(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Link:
    state: LinkState
    invitation: dict[str, Any] | None = None
    editable_until: datetime | None = None

    @property
    def kind(self) -> Kind:
        assert self.invitation is not None
        return Kind(self.invitation["kind"])


def _link(invitation: dict[str, Any] | None, now: datetime, settings: SurveySettings) -> Link:
    if invitation is None:
        return Link(LinkState.INVALID)
    if invitation["response_id"] is None:
        if now >= invitation["expires_at"]:
            return Link(LinkState.EXPIRED, invitation)
        return Link(LinkState.OPEN, invitation)
    editable_until = invitation["answered_at"] + timedelta(hours=settings.edit_window_hours)
    state = LinkState.EDITABLE if now < editable_until else LinkState.CLOSED
    return Link(state, invitation, editable_until)


def open_link(
    *, uow: SurveyUnitOfWork, signer: InvitationSigner, settings: SurveySettings, token: str
) -> Link:
    """What a link is good for right now (for showing the page)."""
    checked = signer.check(token, uow.clock.now())
    if checked.state is TokenState.INVALID or checked.token_id is None:
        return Link(LinkState.INVALID)
    with uow:
        invitation = uow.surveys.invitations_for_answer([checked.token_id], lock=False, with_texts=True).get(
            checked.token_id
        )
        link = _link(invitation, uow.clock.now(), settings)
    if checked.state is TokenState.EXPIRED and link.state is LinkState.OPEN:
        return Link(LinkState.EXPIRED, link.invitation)
    return link


def validate_answer(kind: Kind, score: object, comment: str | None) -> tuple[int, str | None]:
    scale = SCALES[kind]
    if score not in scale:
        raise InvalidAnswer("score", f"must be a whole number from {scale.low} to {scale.high}")
    assert isinstance(score, int)
    if comment is not None and len(comment) > COMMENT_MAX_CHARS:
        raise InvalidAnswer("comment", f"must be at most {COMMENT_MAX_CHARS:,} characters")
    return score, clean_comment(comment)


@dataclass(frozen=True)
class Answer:
    """One submission of a link: a score, and a comment unless `keep_comment` (then an earlier
    comment stays as it was, e.g. when a score is tapped on the page before the comment is written)."""

    token: str
    score: object
    comment: str | None = None
    keep_comment: bool = False


Outcome = tuple[dict[str, Any], bool] | LinkUnusable | InvalidAnswer


class _Batch:
    """The writes of one transaction's answers, applied to rows read once and written in bulk."""

    def __init__(self, uow: SurveyUnitOfWork, settings: SurveySettings, now: datetime, size: int) -> None:
        self.uow = uow
        self.settings = settings
        self.now = now
        self.new: dict[str, dict[str, Any]] = {}
        self.changed: dict[str, dict[str, Any]] = {}
        self.tallies: dict[tuple[Any, ...], list[int]] = {}
        self._response_ids = iter(new_ids("rsp", size))
        self._today: dict[str | None, date] = {}  # the shop's day of `now`, by time zone

    def _day_now(self, timezone: str | None) -> date:
        day = self._today.get(timezone)
        if day is None:
            day = self._today[timezone] = shop_day(self.now, timezone)
        return day

    def apply(self, answer: Answer, checked: TokenCheck, invitation: dict[str, Any] | None) -> Outcome:
        if checked.state is TokenState.INVALID:
            raise LinkUnusable(LinkState.INVALID)
        link = _link(invitation, self.now, self.settings)
        if link.state is LinkState.OPEN and checked.state is TokenState.EXPIRED:
            raise LinkUnusable(LinkState.EXPIRED)
        if link.state not in (LinkState.OPEN, LinkState.EDITABLE):
            raise LinkUnusable(link.state)
        assert invitation is not None
        kind = Kind(invitation["kind"])
        score, comment = validate_answer(kind, answer.score, answer.comment)
        if answer.keep_comment and invitation["response_id"] is not None:
            comment = invitation["comment"]
        if invitation["response_id"] is None:
            return self._first(invitation, kind, score, comment), True
        return self._again(invitation, score, comment), False

    def _tally(self, invitation: dict[str, Any], day: Any, score: int, by: int) -> None:
        key = (
            invitation["shop_id"],
            invitation["survey_id"],
            day,
            invitation["touchpoint"],
            invitation["segment"] or "",
        )
        self.tallies.setdefault(key, [0] * len(SCORE_COLUMNS))[score] += by

    def _first(
        self, invitation: dict[str, Any], kind: Kind, score: int, comment: str | None
    ) -> dict[str, Any]:
        response = {
            "response_id": next(self._response_ids),
            "invitation_id": invitation["invitation_id"],
            "shop_id": invitation["shop_id"],
            "survey_id": invitation["survey_id"],
            "customer_id": invitation["customer_id"],
            "kind": kind.value,
            "score": score,
            "comment": comment,
            "context_type": invitation["context_type"],
            "context_id": invitation["context_id"],
            "touchpoint": invitation["touchpoint"],
            "segment": invitation["segment"],
            "locale": invitation["locale"],
            "answered_at": self.now,
            "updated_at": self.now,
            "revision": 1,
        }
        self.new[response["response_id"]] = response
        # Later answers to the same link in this batch see this one.
        invitation.update(
            response_id=response["response_id"],
            score=score,
            comment=comment,
            answered_at=self.now,
            revision=1,
        )
        self._tally(invitation, self._day_now(invitation["shop_timezone"]), score, 1)
        _announce(self.uow, invitation, response)
        return _view(response, self.settings)

    def _again(self, invitation: dict[str, Any], score: int, comment: str | None) -> dict[str, Any]:
        changed_score = score != invitation["score"]
        if changed_score:
            # The answer moves from one score to the other within the day it was first given.
            first_day = shop_day(invitation["answered_at"], invitation["shop_timezone"])
            self._tally(invitation, first_day, invitation["score"], -1)
            self._tally(invitation, first_day, score, 1)
        revision = invitation["revision"] + (1 if changed_score else 0)
        values = {"score": score, "comment": comment, "updated_at": self.now, "revision": revision}
        response_id = invitation["response_id"]
        if response_id in self.new:
            self.new[response_id].update(values)
        else:
            self.changed[response_id] = values
        invitation.update(score=score, comment=comment, revision=revision)
        response = {
            "response_id": response_id,
            "survey_id": invitation["survey_id"],
            "kind": invitation["kind"],
            "answered_at": invitation["answered_at"],
            **values,
        }
        if changed_score:
            _announce(self.uow, invitation, response)
        return _view(response, self.settings)

    def write(self) -> None:
        self.uow.surveys.add_responses(list(self.new.values()))
        self.uow.surveys.update_responses(self.changed)
        # Sorted, so that concurrent transactions take the tally rows' locks in one order.
        self.uow.surveys.count_responses(
            sorted((key, change) for key, change in self.tallies.items() if any(change))
        )


def submit_answers(
    *,
    uow: SurveyUnitOfWork,
    signer: InvitationSigner,
    settings: SurveySettings,
    answers: Sequence[Answer],
) -> list[Outcome]:
    """Record answers to links in one transaction; one outcome per answer, in order.

    The first submission of a link creates its response and emits `survey_answered`. Another within
    the edit window (24 h by default) updates the same response, emitting `survey_answered` again
    only when the score changed; after the window the link is closed. An outcome is (response,
    created), or the LinkUnusable / InvalidAnswer error for that answer alone."""
    now = uow.clock.now()
    checks = [signer.check(answer.token, now) for answer in answers]
    token_ids = sorted({c.token_id for c in checks if c.state is not TokenState.INVALID and c.token_id})
    outcomes: list[Outcome] = []
    with uow:
        found = uow.surveys.invitations_for_answer(token_ids, lock=True) if token_ids else {}
        batch = _Batch(uow, settings, now, len(answers))
        for answer, checked in zip(answers, checks, strict=True):
            try:
                outcomes.append(batch.apply(answer, checked, found.get(checked.token_id or "")))
            except (LinkUnusable, InvalidAnswer) as exc:
                outcomes.append(exc)
        batch.write()
        uow.commit()
    return outcomes


def submit_answer(
    *,
    uow: SurveyUnitOfWork,
    signer: InvitationSigner,
    settings: SurveySettings,
    token: str,
    score: object,
    comment: str | None,
    keep_comment: bool = False,
) -> tuple[dict[str, Any], bool]:
    """Record one answer in its own transaction (see submit_answers); raises what makes it unusable."""
    [outcome] = submit_answers(
        uow=uow, signer=signer, settings=settings, answers=[Answer(token, score, comment, keep_comment)]
    )
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def _announce(uow: SurveyUnitOfWork, invitation: dict[str, Any], response: dict[str, Any]) -> None:
    kind = Kind(invitation["kind"])
    uow.publish(
        "survey_answered",
        shop_id=invitation["shop_id"],
        customer_id=invitation["customer_id"],
        event_id=f"survey_answered:{response['response_id']}:{response['revision']}",
        data=SurveyAnswered(
            survey_id=invitation["survey_id"],
            response_id=response["response_id"],
            kind=kind.value,
            score=response["score"],
            detractor=is_detractor(kind, response["score"]),
            touchpoint=invitation["touchpoint"],
            context={"type": invitation["context_type"], "id": invitation["context_id"]},
        ),
    )


def _view(response: dict[str, Any], settings: SurveySettings) -> dict[str, Any]:
    return {
        "response_id": response["response_id"],
        "survey_id": response["survey_id"],
        "kind": response["kind"],
        "score": response["score"],
        "detractor": is_detractor(Kind(response["kind"]), response["score"]),
        "comment": response["comment"],
        "answered_at": response["answered_at"],
        "updated_at": response["updated_at"],
        "editable_until": response["answered_at"] + timedelta(hours=settings.edit_window_hours),
    }
