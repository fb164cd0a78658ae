from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from customer_api.domain.money import amount_problem, check_currency
from customer_api.service_layer.ingestion import validate_event


def purchase(**data: Any) -> dict[str, Any]:
    return {
        "id": "e1",
        "type": "purchase_made",
        "customer_id": "c1",
        "occurred_at": "2026-11-23T10:00:00+09:00",
        "data": {"order_id": "o1", "amount": "1200", "currency": "JPY", **data},
    }


class TestCurrencyPrecision:
    @pytest.mark.parametrize(
        ("amount", "currency", "ok"),
        [
            ("1200", "JPY", True),
            ("1200.00", "JPY", True),  # trailing zeros carry no precision
            ("1200.5", "JPY", False),
            ("12.50", "USD", True),
            ("12.505", "USD", False),
            ("1.234", "KWD", True),
            ("1.2345", "KWD", False),
        ],
    )
    def test_amounts_fit_the_currency_minor_unit(self, amount: str, currency: str, ok: bool) -> None:
        assert (amount_problem(Decimal(amount), currency) is None) is ok

    def test_only_iso_4217_codes_are_currencies(self) -> None:
        assert check_currency("EUR") == "EUR"
        with pytest.raises(ValueError, match="ISO 4217"):
            check_currency("ZZZ")


class TestIngestedMoney:
    def test_a_fractional_yen_amount_is_rejected_naming_the_field(self) -> None:
        event, error = validate_event(purchase(amount="1200.5"))
        assert event is None and error is not None and error.startswith("data.amount: JPY")

    def test_an_item_price_is_checked_too(self) -> None:
        items = [{"sku": "A", "quantity": 1, "unit_price": "10.999"}]
        event, error = validate_event(purchase(currency="USD", amount="10.99", items=items))
        assert error is not None and error.startswith("data.items.0.unit_price: USD")

    def test_an_unknown_currency_is_rejected(self) -> None:
        event, error = validate_event(purchase(currency="ZZZ"))
        assert error is not None and error.startswith("data.currency:")

    def test_a_valid_purchase_passes(self) -> None:
        event, error = validate_event(purchase())
        assert error is None and event is not None


def test_a_shop_with_an_unknown_currency_is_422(api: Any) -> None:
    response = api.client.post(
        "/v1/shops",
        json={"name": "X", "currency": "ZZZ"},
        headers={"Authorization": f"Bearer {api.admin_token}"},
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.currency"
