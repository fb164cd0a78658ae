"""Erasure in the survey-service. It holds no responses yet (they arrive with the survey issue),
so it confirms with empty counts; the erasure receipt then shows every service answered."""

from __future__ import annotations

from retention_shared.events.catalogue import ErasureCompleted
from retention_shared.events.envelope import Envelope
from survey_service.service_layer.uow import SurveyUnitOfWork

SERVICE = "survey-service"


def customer_erased(event: Envelope, uow: SurveyUnitOfWork) -> None:
    uow.publish(
        "erasure_completed",
        shop_id=event.shop_id,
        customer_id=event.customer_id,
        data=ErasureCompleted(erasure_id=event.data["erasure_id"], service=SERVICE, purged={}),
    )
