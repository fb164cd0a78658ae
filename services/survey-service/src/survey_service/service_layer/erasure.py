"""Erasure: forget a customer's answers, comments and links when the customer asks to be forgotten."""

from __future__ import annotations

from retention_shared.events.catalogue import ErasureCompleted
from retention_shared.events.envelope import Envelope
from survey_service.service_layer.uow import SurveyUnitOfWork

SERVICE = "survey-service"


def customer_erased(event: Envelope, uow: SurveyUnitOfWork) -> None:
    """Delete the customer's responses (with their comments), invitation links and customer record.

    The results keep counting those answers: they are read from tallies that hold counts per day,
    touchpoint, segment and score, and no customer. The receipt reports what was removed, as counts."""
    assert event.customer_id is not None
    purged = uow.surveys.erase_customer(event.shop_id, event.customer_id)
    uow.publish(
        "erasure_completed",
        shop_id=event.shop_id,
        customer_id=event.customer_id,
        data=ErasureCompleted(erasure_id=event.data["erasure_id"], service=SERVICE, purged=purged),
    )
