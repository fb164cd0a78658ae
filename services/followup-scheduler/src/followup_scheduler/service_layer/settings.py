"""A shop's contact hygiene settings, with the defaults when it has saved none."""

from __future__ import annotations

from followup_scheduler.domain.hygiene import FollowupSettings
from followup_scheduler.service_layer.uow import SchedulerUnitOfWork


def load_settings(uow: SchedulerUnitOfWork, shop_id: str) -> FollowupSettings:
    document = uow.repo.settings_document(shop_id)
    return FollowupSettings.model_validate(document) if document else FollowupSettings()
