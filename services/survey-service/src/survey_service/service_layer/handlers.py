"""Event handlers: default surveys for new shops, and what the service needs to know of customers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from retention_shared.events.envelope import Envelope
from retention_shared.tenancy import TenancyTables, tenancy_handlers
from survey_service.domain.surveys import normalise_locale
from survey_service.service_layer.surveys import ensure_default_surveys
from survey_service.service_layer.uow import SurveyUnitOfWork

Handler = Callable[[Envelope, Any], None]


def tenancy_with_default_surveys(tables: TenancyTables) -> dict[str, Handler]:
    """The shared shop/key replica handlers, plus default NPS, CSAT and CES surveys for a new shop."""
    handlers = tenancy_handlers(tables)
    replicate_shop = handlers["shop_registered"]

    def shop_registered(event: Envelope, uow: SurveyUnitOfWork) -> None:
        replicate_shop(event, uow)
        ensure_default_surveys(uow, event.shop_id)

    return {**handlers, "shop_registered": shop_registered}


def customer_upserted(event: Envelope, uow: SurveyUnitOfWork) -> None:
    """Remember the customer's language, so invitations ask in it. Nothing else is kept."""
    locale = normalise_locale(event.data.get("locale"))
    if event.customer_id is not None and locale is not None:
        uow.surveys.remember_customer(event.shop_id, event.customer_id, locale=locale)


def segment_changed(event: Envelope, uow: SurveyUnitOfWork) -> None:
    """Remember the customer's segment: invitations and their answers are reported under it."""
    if event.customer_id is not None:
        uow.surveys.remember_customer(event.shop_id, event.customer_id, segment=event.data["to"])
