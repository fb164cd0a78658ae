"""Surveys: create, read, change and archive a shop's surveys, and its default NPS, CSAT and CES ones."""

from __future__ import annotations

import secrets
from typing import Any

from retention_shared.problems import Problem, field_error, not_found
from survey_service.domain.surveys import DEFAULT_TEXTS, Kind, default_survey
from survey_service.service_layer.uow import SurveyUnitOfWork

KIND_ALIASES = {kind.value for kind in Kind}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def new_ids(prefix: str, count: int) -> list[str]:
    """`count` ids like new_id's, from one draw of randomness (each draw is a system call)."""
    digits = secrets.token_hex(8 * count)
    return [f"{prefix}_{digits[start : start + 16]}" for start in range(0, 16 * count, 16)]


def ensure_default_surveys(uow: SurveyUnitOfWork, shop_id: str) -> None:
    """Give the shop its default survey of each kind it lacks (inside the caller's transaction)."""
    missing = [kind for kind in Kind if kind.value not in uow.surveys.default_kinds(shop_id)]
    now = uow.clock.now()
    for kind in missing:
        uow.surveys.add_survey(
            {
                **default_survey(kind),
                "survey_id": new_id("srv"),
                "shop_id": shop_id,
                "default_kind": kind.value,
                "created_at": now,
                "updated_at": now,
            },
            if_default_missing=True,
        )


def resolve_survey(uow: SurveyUnitOfWork, shop_id: str, survey_id_or_kind: str) -> dict[str, Any]:
    """A survey by id, or the shop's default of a kind (`nps`, `csat`, `ces`), created if need be."""
    if survey_id_or_kind in KIND_ALIASES:
        survey = uow.surveys.default_survey(shop_id, survey_id_or_kind)
        if survey is None:
            ensure_default_surveys(uow, shop_id)
            survey = uow.surveys.default_survey(shop_id, survey_id_or_kind)
        assert survey is not None
        return survey
    survey = uow.surveys.survey(shop_id, survey_id_or_kind)
    if survey is None:
        raise not_found("survey")
    return survey


def complete_texts(kind: Kind, texts: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Texts with the standard free-text question filled in where a locale leaves it out."""
    return {
        locale: {
            "question": text["question"],
            "comment_question": text.get("comment_question")
            or DEFAULT_TEXTS[kind][locale]["comment_question"],
        }
        for locale, text in texts.items()
    }


def survey_view(survey: dict[str, Any]) -> dict[str, Any]:
    return {
        "survey_id": survey["survey_id"],
        "kind": survey["kind"],
        "name": survey["name"],
        "comment_enabled": survey["comment_enabled"],
        "texts": survey["texts"],
        "default_for": survey["default_kind"],
        "archived": survey["archived_at"] is not None,
        "created_at": survey["created_at"],
        "updated_at": survey["updated_at"],
    }


def create_survey(*, uow: SurveyUnitOfWork, shop_id: str, document: dict[str, Any]) -> dict[str, Any]:
    with uow:
        now = uow.clock.now()
        values = {
            "survey_id": new_id("srv"),
            "shop_id": shop_id,
            "kind": document["kind"],
            "name": document["name"],
            "comment_enabled": document["comment_enabled"],
            "texts": complete_texts(Kind(document["kind"]), document["texts"]),
            "default_kind": None,
            "archived_at": None,
            "created_at": now,
            "updated_at": now,
        }
        uow.surveys.add_survey(values)
        uow.commit()
    return survey_view(values)


def list_surveys(*, uow: SurveyUnitOfWork, shop_id: str, include_archived: bool) -> list[dict[str, Any]]:
    with uow:
        # Shops registered before surveys existed get their defaults the first time they look.
        if len(uow.surveys.default_kinds(shop_id)) < len(Kind):
            ensure_default_surveys(uow, shop_id)
            uow.commit()
        return [survey_view(s) for s in uow.surveys.list_surveys(shop_id, include_archived=include_archived)]


def get_survey(*, uow: SurveyUnitOfWork, shop_id: str, survey_id: str) -> dict[str, Any]:
    with uow:
        survey = resolve_survey(uow, shop_id, survey_id)
        uow.commit()
        return survey_view(survey)


def update_survey(
    *, uow: SurveyUnitOfWork, shop_id: str, survey_id: str, changes: dict[str, Any]
) -> dict[str, Any]:
    """Change a survey's name, texts or free-text question. Its kind never changes: the answers it
    already has are on its scale."""
    with uow:
        survey = resolve_survey(uow, shop_id, survey_id)
        if "kind" in changes and changes["kind"] != survey["kind"]:
            raise Problem(
                422,
                "Unprocessable Content",
                "A survey's kind cannot change; create a new survey instead",
                errors=[field_error("body.kind", f"is {survey['kind']} and cannot change")],
            )
        values = {k: v for k, v in changes.items() if k in ("name", "comment_enabled")}
        if "texts" in changes:
            values["texts"] = complete_texts(Kind(survey["kind"]), changes["texts"])
        if "archived" in changes:
            if changes["archived"] and survey["default_kind"]:
                raise _default_cannot_be_archived()
            values["archived_at"] = uow.clock.now() if changes["archived"] else None
        values["updated_at"] = uow.clock.now()
        uow.surveys.update_survey(shop_id, survey["survey_id"], values)
        uow.commit()
        return survey_view({**survey, **values})


def archive_survey(*, uow: SurveyUnitOfWork, shop_id: str, survey_id: str) -> None:
    """Archive: no new invitations; its answers and results stay."""
    with uow:
        survey = resolve_survey(uow, shop_id, survey_id)
        if survey["default_kind"]:
            raise _default_cannot_be_archived()
        now = uow.clock.now()
        if survey["archived_at"] is None:
            uow.surveys.update_survey(shop_id, survey["survey_id"], {"archived_at": now, "updated_at": now})
        uow.commit()


def _default_cannot_be_archived() -> Problem:
    return Problem(
        409,
        "Conflict",
        "This is the shop's default survey of its kind, which invitations by kind use; edit it instead",
    )
