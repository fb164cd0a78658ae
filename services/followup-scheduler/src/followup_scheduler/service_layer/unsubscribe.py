"""A customer's one-click unsubscribe: the opt-out is recorded here and published for the others."""

from __future__ import annotations

from followup_scheduler.adapters.unsubscribe import Unsubscription
from followup_scheduler.service_layer.uow import SchedulerUnitOfWork
from retention_shared.events.catalogue import ConsentChanged

CONSENT_CHANNELS = ("email", "sms", "line", "phone")


def opt_out(uow: SchedulerUnitOfWork, request: Unsubscription) -> bool:
    """Withdraw the channel's consent; False when the customer is unknown (e.g. erased)."""
    contact = uow.repo.contact(request.shop_id, request.customer_id)
    if contact is None or request.channel not in CONSENT_CHANNELS:
        return False
    consents = {**(contact.get("consents") or {}), request.channel: False}
    uow.repo.update_contact(request.shop_id, request.customer_id, uow.clock.now(), consents=consents)
    if (contact.get("consents") or {}).get(request.channel) is not False:
        uow.publish(
            "consent_changed",
            shop_id=request.shop_id,
            customer_id=request.customer_id,
            data=ConsentChanged(
                channel=request.channel,
                granted=False,
                legal_basis="consent",
                source="unsubscribe_link",
            ),
        )
    return True
