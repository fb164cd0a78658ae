from __future__ import annotations

from typing import Any

import pytest

from customer_api.domain.contact import check_timezone, normalise_email, normalise_phone
from customer_api.service_layer.ingestion import validate_event


class TestEmailNormalisation:
    def test_the_domain_is_lower_cased_and_the_local_part_kept(self) -> None:
        assert normalise_email("Hana.Sato@Example.COM") == "Hana.Sato@example.com"

    @pytest.mark.parametrize(
        "value", ["hana", "hana@", "@example.com", "hana@@example.com", "hana @example.com"]
    )
    def test_malformed_addresses_are_rejected(self, value: str) -> None:
        with pytest.raises(ValueError):
            normalise_email(value)


class TestPhoneNormalisation:
    def test_an_e164_japanese_mobile_is_accepted(self) -> None:
        assert normalise_phone("+819012345678") == "+819012345678"

    def test_e164_with_separators_is_normalised(self) -> None:
        assert normalise_phone("+81 90-1234-5678") == "+819012345678"

    def test_a_national_number_is_rejected_rather_than_guessed(self) -> None:
        with pytest.raises(ValueError, match="E.164"):
            normalise_phone("09012345678")

    @pytest.mark.parametrize("value", ["+81", "+8190", "+abc", "+999123456789"])
    def test_impossible_numbers_are_rejected(self, value: str) -> None:
        with pytest.raises(ValueError):
            normalise_phone(value)


class TestTimezone:
    @pytest.mark.parametrize("value", ["Asia/Tokyo", "America/New_York", "UTC"])
    def test_iana_names_are_accepted(self, value: str) -> None:
        assert check_timezone(value) == value

    @pytest.mark.parametrize("value", ["Mars/Olympus_Mons", "JST+9", "", "../../etc/passwd"])
    def test_anything_else_is_rejected(self, value: str) -> None:
        with pytest.raises(ValueError, match="IANA timezone"):
            check_timezone(value)


def purchase(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": "evt-1",
        "type": "purchase_made",
        "customer_id": "c1",
        "occurred_at": "2026-01-05T09:00:00+09:00",
        "data": {"order_id": "o-1", "amount": 4200, "currency": "JPY"},
    }
    event.update(overrides)
    return event


class TestValidateEvent:
    def test_a_valid_purchase_is_accepted_with_its_data_normalised(self) -> None:
        event, error = validate_event(purchase())

        assert error is None
        assert event is not None
        assert event.data["amount"] == "4200"
        assert event.data["items"] == []
        assert event.occurred_at.utcoffset() is not None

    def test_an_unknown_type_is_rejected_naming_type(self) -> None:
        event, error = validate_event(purchase(type="purchase_teleported"))

        assert event is None
        assert error is not None
        assert error.startswith("type: ")
        assert "purchase_teleported" in error

    def test_an_internal_event_type_cannot_be_ingested(self) -> None:
        event, error = validate_event(purchase(type="segment_changed"))

        assert event is None
        assert error is not None and error.startswith("type: ")

    def test_a_negative_amount_is_rejected_naming_data_amount(self) -> None:
        event, error = validate_event(purchase(data={"order_id": "o-1", "amount": -1, "currency": "JPY"}))

        assert event is None
        assert error is not None and error.startswith("data.amount: ")

    def test_a_naive_timestamp_is_rejected_naming_occurred_at(self) -> None:
        event, error = validate_event(purchase(occurred_at="2026-01-05T09:00:00"))

        assert event is None
        assert error is not None and error.startswith("occurred_at: ")

    def test_an_id_over_128_characters_is_rejected(self) -> None:
        assert validate_event(purchase(id="e" * 128))[1] is None

        event, error = validate_event(purchase(id="e" * 129))

        assert event is None
        assert error is not None and error.startswith("id: ")

    def test_unknown_top_level_fields_are_rejected(self) -> None:
        event, error = validate_event(purchase(source="shopify"))

        assert event is None
        assert error is not None and error.startswith("source: ")

    def test_every_failing_field_is_named(self) -> None:
        event, error = validate_event(purchase(customer_id="", occurred_at="yesterday"))

        assert event is None
        assert error is not None
        assert "customer_id: " in error and "occurred_at: " in error

    @pytest.mark.parametrize("raw", [[], "purchase", None, 42])
    def test_a_non_object_is_rejected(self, raw: Any) -> None:
        assert validate_event(raw) == (None, "event must be a JSON object")
