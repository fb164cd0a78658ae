"""What a message template sees, for real sends and for save-time checks with sample data."""

from __future__ import annotations

from typing import Any

from followup_scheduler.service_layer.uow import SchedulerUnitOfWork

# Sample trigger data per event type: templates are rendered with it when a playbook is saved.
SAMPLE_EVENTS: dict[str, dict[str, Any]] = {
    "purchase_made": {
        "order_id": "ORD-1001",
        "amount": "4800",
        "currency": "JPY",
        "items": [
            {"sku": "TEA-01", "name": "Sencha", "category": "tea", "quantity": 2, "unit_price": "2400"}
        ],
    },
    "refund_issued": {"order_id": "ORD-1001", "amount": "4800", "currency": "JPY", "reason": "damaged"},
    "login_dropped": {
        "recent_rate_per_week": 0.5,
        "baseline_rate_per_week": 4.0,
        "recent_days": 14,
        "baseline_days": 56,
    },
    "ticket_opened": {
        "ticket_id": "T-42",
        "priority": "normal",
        "subject": "Late delivery",
        "category": "shipping",
    },
    "ticket_resolved": {"ticket_id": "T-42", "first_response_at": "2026-01-05T10:00:00+00:00"},
    "segment_changed": {"from": "loyal", "to": "dormant", "rfm": {"r": 1, "f": 4, "m": 4}},
    "churn_risk_changed": {"from": "low", "to": "high", "probability_alive": 0.2},
    "tier_changed": {"from": "silver", "to": "gold"},
    "survey_answered": {
        "survey_id": "srv_1",
        "response_id": "rsp_1",
        "kind": "nps",
        "score": 3,
        "detractor": True,
        "touchpoint": "post_purchase",
        "context": {},
    },
    "customer_birthday": {"year": 2026, "occasion": "cust-1:2026", "birthday": "1990-01-05"},
}

SAMPLE_CUSTOMER = {
    "id": "cust-1",
    "name": "Hana",
    "email": "hana@example.com",
    "phone": "+819012345678",
    "locale": "ja",
    "timezone": "Asia/Tokyo",
    "segment": "loyal",
    "tier": "gold",
    "churn_band": "low",
    "points": 1200,
    "attributes": {},
}


def sample_contexts(event_type: str, action: str) -> list[dict[str, Any]]:
    """A rich and a sparse context: templates must render both (optional parts may be absent)."""
    event = SAMPLE_EVENTS.get(event_type, {})
    shop = {"name": "Kissa Tea", "locale": "ja", "timezone": "Asia/Tokyo"}
    survey = (
        {"url": "https://surveys.example/s/abc", "expires_at": "2026-01-12T00:00:00Z"}
        if action == "survey_invitation"
        else None
    )
    rich = {
        "customer": SAMPLE_CUSTOMER,
        "shop": shop,
        "order": event,
        "event": event,
        "last_order": {
            "order_id": "ORD-0999",
            "amount": "3600",
            "currency": "JPY",
            "occurred_at": "2025-12-01",
        },
        "recommendation": {
            "sku": "CUP-02",
            "name": "Tea cup",
            "category": "tableware",
            "bought_together": 12,
        },
        "survey": survey,
        "unsubscribe_url": "https://retention.example/u/token",
    }
    sparse = {
        **rich,
        "customer": {**SAMPLE_CUSTOMER, "name": None, "tier": None, "segment": None, "points": None},
        "last_order": None,
        "recommendation": None,
    }
    return [rich, sparse]


def message_context(
    uow: SchedulerUnitOfWork,
    *,
    step: dict[str, Any],
    contact: dict[str, Any],
    shop: dict[str, Any],
    run: dict[str, Any],
    survey: dict[str, Any] | None,
    unsubscribe_url: str | None,
    used: frozenset[str] | None = None,
) -> dict[str, Any]:
    """The personalised context of one step: name, last order, points, tier, a recommendation.

    `used` names the variables the template uses; the parts that cost queries are built only then."""
    shop_id, customer_id = step["shop_id"], step["customer_id"]
    event = (run.get("context") or {}).get("event", {})
    attributes = contact.get("attributes") or {}
    recommendation = None
    if used is None or "recommendation" in used:
        order_skus = [
            str(item["sku"])
            for item in event.get("items") or []
            if isinstance(item, dict) and item.get("sku")
        ]
        skus = order_skus or uow.repo.customer_skus(shop_id, customer_id)
        recommendation = uow.repo.recommendation(shop_id, customer_id, skus)
    last = uow.repo.last_purchase(shop_id, customer_id) if used is None or "last_order" in used else None
    customer = {
        **{k: v for k, v in contact.items() if k not in ("consents", "updated_at", "shop_id")},
        "id": customer_id,
        "points": attributes.get("points"),
    }
    return {
        "customer": customer,
        "shop": shop,
        "order": event,
        "event": event,
        "last_order": (
            {**last, "occurred_at": last["occurred_at"].date().isoformat()} if last is not None else None
        ),
        "recommendation": recommendation,
        "survey": survey,
        "unsubscribe_url": unsubscribe_url,
    }
