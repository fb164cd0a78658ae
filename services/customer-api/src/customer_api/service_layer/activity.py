"""The customer-api's view of the activity topic: history and loyalty, whoever sent the event.

Events reach the activity topic from this service's REST ingestion and history import (through
its outbox) or straight from a shop's backend producing to Kafka. Consuming the topic, rather
than acting inside the REST request, gives both routes the same effects:

- the purchase/ticket/activity history (`ingested_events`) gains the events it has not stored
  yet, i.e. those produced to Kafka directly; REST-ingested ones are already there;
- loyalty points and tiers move once per event (the consumer's inbox makes redelivery harmless,
  and an order earns once however often it is reported). Imported history earns nothing: a
  programme rewards what customers do once it runs, not purchases from years before.

Keeping loyalty off the request path also keeps the ingestion transaction short: accepting a
batch no longer waits on the members' account locks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from customer_api.adapters import tables
from customer_api.adapters.repository import insert_ignoring_duplicates
from customer_api.service_layer import loyalty, read_model
from customer_api.service_layer.history_import import SOURCE as IMPORT_SOURCE
from customer_api.service_layer.uow import CustomerApiUnitOfWork
from retention_shared.db import json_dumps
from retention_shared.events import topics
from retention_shared.events.catalogue import CATALOGUE
from retention_shared.events.envelope import Envelope

ACTIVITY_TYPES = frozenset(name for name, spec in CATALOGUE.items() if spec.topic == topics.ACTIVITY)


class _ActivityEvent:
    """An envelope seen through the small interface the loyalty service reads."""

    __slots__ = ("_envelope",)

    def __init__(self, envelope: Envelope) -> None:
        self._envelope = envelope

    @property
    def id(self) -> str:
        return self._envelope.id

    @property
    def type(self) -> str:
        return self._envelope.type

    @property
    def customer_id(self) -> str:
        return self._envelope.customer_id or ""

    @property
    def occurred_at(self) -> datetime:
        return self._envelope.time

    @property
    def data(self) -> dict[str, Any]:
        return self._envelope.data


def apply_batch(envelopes: Sequence[Envelope], uow: CustomerApiUnitOfWork) -> None:
    """The consumer's batch handler: activity, and the insight events that come in bulk."""
    apply_activity([envelope for envelope in envelopes if envelope.type in ACTIVITY_TYPES], uow)
    read_model.apply_insights(
        [envelope for envelope in envelopes if envelope.type in read_model.INSIGHT_TYPES], uow
    )


BATCH_TYPES = ACTIVITY_TYPES | read_model.INSIGHT_TYPES


def apply_activity(envelopes: Sequence[Envelope], uow: CustomerApiUnitOfWork) -> None:
    """Record unseen events in the history and apply loyalty, in the consumer's transaction."""
    with_customer = [envelope for envelope in envelopes if envelope.customer_id]
    if not with_customer:
        return
    now = uow.clock.now()
    insert_ignoring_duplicates(
        uow.session,
        tables.ingested_events,
        [
            {
                "shop_id": envelope.shop_id,
                "event_id": envelope.id,
                "type": envelope.type,
                "customer_id": envelope.customer_id,
                "occurred_at": envelope.time,
                "received_at": now,
                "payload": json_dumps(envelope.data),
            }
            for envelope in with_customer
        ],
        tables.ingested_events.c.event_id,
    )
    by_shop: dict[str, list[_ActivityEvent]] = defaultdict(list)
    for envelope in with_customer:
        if envelope.source == IMPORT_SOURCE:
            continue
        by_shop[envelope.shop_id].append(_ActivityEvent(envelope))
    for shop_id, events in by_shop.items():
        loyalty.apply_loyalty_for_events(uow=uow, shop_id=shop_id, events=events)
