from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from retention_shared.events import CATALOGUE, EnvelopeError, decode_envelope, partition_key
from retention_shared.events.envelope import build_envelope


def purchase(**overrides: object) -> dict[str, object]:
    document: dict[str, object] = {
        "id": "evt-1",
        "type": "purchase_made",
        "source": "backend",
        "time": "2026-11-23T10:00:00+09:00",
        "shop_id": "shop_1",
        "customer_id": "c-1",
        "data": {"order_id": "o-1", "amount": "1200", "currency": "JPY", "items": []},
    }
    document.update(overrides)
    return document


class TestDecodingEnvelopes:
    def test_a_valid_envelope_round_trips(self) -> None:
        envelope = decode_envelope(json.dumps(purchase()).encode())
        assert envelope.type == "purchase_made"
        assert envelope.time == datetime(2026, 11, 23, 1, 0, tzinfo=UTC)
        assert decode_envelope(envelope.to_json_bytes()) == envelope

    def test_records_are_keyed_by_shop_and_customer(self) -> None:
        assert decode_envelope(json.dumps(purchase()).encode()).key == "shop_1:c-1"
        assert partition_key("shop_1", None) == "shop_1:"

    @pytest.mark.parametrize(
        ("raw", "message"),
        [
            (b"{not json", "not JSON"),
            (b"[1, 2]", "JSON object"),
            (json.dumps(purchase(type="nonsense")).encode(), "unknown event type"),
            (json.dumps(purchase(time="2026-11-23T10:00:00")).encode(), "time"),
            (
                json.dumps(purchase(data={"order_id": "o", "amount": "-5", "currency": "JPY"})).encode(),
                "data.amount",
            ),
            (json.dumps(purchase(id="x" * 129)).encode(), "id"),
        ],
    )
    def test_invalid_records_name_what_is_wrong(self, raw: bytes, message: str) -> None:
        with pytest.raises(EnvelopeError, match=message):
            decode_envelope(raw)


class TestCatalogue:
    def test_every_type_the_foundation_names_is_catalogued(self) -> None:
        required = {
            "purchase_made",
            "refund_issued",
            "login_recorded",
            "login_dropped",
            "ticket_opened",
            "ticket_resolved",
            "customer_upserted",
            "consent_changed",
            "customer_erased",
            "segment_changed",
            "churn_risk_changed",
            "followup_scheduled",
            "followup_sent",
            "followup_failed",
            "survey_answered",
        }
        assert required <= set(CATALOGUE)

    def test_topics_are_named_by_domain_and_version(self) -> None:
        for spec in CATALOGUE.values():
            assert spec.topic.name.startswith("retention.") and spec.topic.name.endswith(".v1")

    def test_aliased_fields_are_written_with_their_wire_names(self) -> None:
        envelope = build_envelope(
            type="segment_changed",
            source="t",
            shop_id="s",
            customer_id="c",
            data={"from": "new", "to": "loyal"},
            time=datetime.now(UTC),
        )
        decoded = decode_envelope(envelope.to_json_bytes())
        assert decoded.data == {"from": "new", "to": "loyal"}
