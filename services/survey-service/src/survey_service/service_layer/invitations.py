"""Invitations: a personal, signed, expiring link to one survey for one customer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.exc import IntegrityError

from retention_shared.problems import Problem, field_error
from survey_service.adapters.tables import invitation_tallies
from survey_service.config import SurveySettings
from survey_service.domain.surveys import normalise_locale, pick_locale, touchpoint_for
from survey_service.domain.tokens import InvitationSigner
from survey_service.service_layer.surveys import new_id, resolve_survey
from survey_service.service_layer.uow import SurveyUnitOfWork

FATIGUE_PROBLEM = "https://retention.dev/problems/survey-fatigue"


@dataclass(frozen=True)
class InvitationRequest:
    customer_id: str
    context_type: str
    context_id: str
    locale: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Links:
    """How invitation links are made: the signer and the public address of the response page."""

    signer: InvitationSigner
    public_base_url: str

    def url(self, token: str) -> str:
        return f"{self.public_base_url.rstrip('/')}/s/{token}"


def shop_day(moment: datetime, timezone: str | None) -> Any:
    """The calendar day of `moment` where the shop is (UTC for an unknown or bad zone)."""
    try:
        zone = ZoneInfo(timezone) if timezone else None
    except (KeyError, ValueError):
        zone = None
    return moment.astimezone(zone).date() if zone else moment.date()


def create_invitation(
    *,
    uow: SurveyUnitOfWork,
    links: Links,
    settings: SurveySettings,
    shop_id: str,
    survey_id_or_kind: str,
    request: InvitationRequest,
) -> tuple[dict[str, Any], bool]:
    """Invite a customer; returns (invitation, created). The same idempotency key answers the first
    invitation again. A customer invited to any survey within the fatigue window gets a 409."""
    with uow:
        if request.idempotency_key:
            earlier = uow.surveys.invitation_by_key(shop_id, request.idempotency_key)
            if earlier is not None:
                return _replay(earlier, request, links), False
        survey = resolve_survey(uow, shop_id, survey_id_or_kind)
        if survey["archived_at"] is not None:
            raise Problem(409, "Conflict", "This survey is archived and takes no new invitations")
        now = uow.clock.now()
        cutoff = now - timedelta(days=settings.fatigue_days)
        if not uow.surveys.claim_invitation_slot(shop_id, request.customer_id, now, cutoff):
            # A concurrent request with the same key may have taken the slot: answer its invitation.
            if request.idempotency_key:
                earlier = uow.surveys.invitation_by_key(shop_id, request.idempotency_key)
                if earlier is not None:
                    return _replay(earlier, request, links), False
            raise Problem(
                409,
                "Conflict",
                f"The customer was invited to a survey within the last {settings.fatigue_days} days",
                type_=FATIGUE_PROBLEM,
            )
        customer = uow.surveys.customer(shop_id, request.customer_id) or {}
        shop = uow.surveys.shop(shop_id) or {}
        locale = pick_locale(
            survey["texts"],
            normalise_locale(request.locale),
            normalise_locale(customer.get("locale")),
            normalise_locale(shop.get("locale")),
        )
        touchpoint = touchpoint_for(request.context_type)
        invitation = {
            "invitation_id": new_id("inv"),
            "token_id": links.signer.new_token_id(),
            "shop_id": shop_id,
            "survey_id": survey["survey_id"],
            "customer_id": request.customer_id,
            "kind": survey["kind"],
            "context_type": request.context_type,
            "context_id": request.context_id,
            "touchpoint": touchpoint,
            "segment": customer.get("segment"),
            "locale": locale,
            "idempotency_key": request.idempotency_key,
            "created_at": now,
            "expires_at": now + timedelta(days=settings.invitation_ttl_days),
        }
        try:
            uow.surveys.add_invitation(invitation)
        except IntegrityError as exc:
            # Only the idempotency key can collide: another customer's invitation took it meanwhile.
            raise _key_reused() from exc
        uow.surveys.count(
            invitation_tallies,
            shop_id,
            shop_day(now, shop.get("timezone")),
            {
                "survey_id": survey["survey_id"],
                "touchpoint": touchpoint,
                "segment": customer.get("segment") or "",
            },
            "invitations",
            1,
        )
        uow.commit()
        return _view(invitation, links), True


def _key_reused() -> Problem:
    return Problem(
        409,
        "Conflict",
        "This Idempotency-Key was used for another invitation",
        errors=[field_error("header.Idempotency-Key", "already used for another customer or context")],
    )


def _replay(earlier: dict[str, Any], request: InvitationRequest, links: Links) -> dict[str, Any]:
    same = (earlier["customer_id"], earlier["context_type"], earlier["context_id"]) == (
        request.customer_id,
        request.context_type,
        request.context_id,
    )
    if not same:
        raise _key_reused()
    return _view(earlier, links)


def _view(invitation: dict[str, Any], links: Links) -> dict[str, Any]:
    token = links.signer.sign(invitation["token_id"], invitation["expires_at"])
    return {
        "invitation_id": invitation["invitation_id"],
        "survey_id": invitation["survey_id"],
        "url": links.url(token),
        "token": token,
        "expires_at": invitation["expires_at"],
    }
