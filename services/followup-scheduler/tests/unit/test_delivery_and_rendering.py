from __future__ import annotations

from typing import Any

import pytest
from jinja2.exceptions import SecurityError, UndefinedError

from followup_scheduler.adapters.rendering import Renderer, TemplateNotFound
from followup_scheduler.domain.delivery import Route, choose_route

CONTACT = {
    "email": "hana@example.com",
    "phone": "+819012345678",
    "line_user_id": "U123",
}


class TestChooseRoute:
    def test_the_first_channel_with_consent_and_an_address_is_used(self) -> None:
        contact = {**CONTACT, "consents": {"email": True, "line": True}}

        assert choose_route(["email", "line"], contact) == (Route("email", "hana@example.com"), None)

    def test_an_address_without_consent_is_not_used(self) -> None:
        contact = {**CONTACT, "consents": {}}

        assert choose_route(["email"], contact) == (None, "email: no consent")

    def test_a_refused_consent_is_not_used(self) -> None:
        contact = {**CONTACT, "consents": {"email": False}}

        assert choose_route(["email"], contact) == (None, "email: no consent")

    def test_falls_back_to_the_next_channel(self) -> None:
        contact = {**CONTACT, "consents": {"email": False, "line": True, "sms": True}}

        assert choose_route(["email", "line", "sms"], contact) == (Route("line", "U123"), None)

    def test_falls_back_past_a_channel_without_an_address(self) -> None:
        contact = {**CONTACT, "line_user_id": None, "consents": {"line": True, "sms": True}}

        assert choose_route(["line", "sms"], contact) == (Route("sms", "+819012345678"), None)

    def test_every_reason_is_listed_when_no_channel_can_be_used(self) -> None:
        contact = {**CONTACT, "line_user_id": None, "consents": {"email": False, "line": True}}

        route, reason = choose_route(["email", "line", "sms", "webhook"], contact)

        assert route is None
        assert reason == (
            "email: no consent; line: no address; sms: no consent; webhook: channel not available"
        )

    def test_a_contact_without_consents_recorded_gets_nothing(self) -> None:
        assert choose_route(["email"], {"email": "a@example.com", "consents": None}) == (
            None,
            "email: no consent",
        )


def context(**order: Any) -> dict[str, Any]:
    return {
        "customer": {"name": "Hana", "email": "hana@example.com"},
        "shop": {"name": "Kissa Tokyo", "locale": "ja"},
        "order": {
            "order_id": "o-1001",
            "amount": "4200",
            "currency": "JPY",
            "items": [{"sku": "TEA-1", "name": "Sencha", "quantity": 2}],
            **order,
        },
    }


class TestRenderer:
    def test_english_thank_you_uses_customer_shop_and_order(self) -> None:
        rendered = Renderer().render("post_purchase.thank_you", "en", context())

        assert rendered.subject == "Thank you for your order o-1001"
        assert rendered.text.startswith("Hello Hana,")
        assert "at Kissa Tokyo" in rendered.text
        assert "Total: 4200 JPY" in rendered.text
        assert "- Sencha x 2" in rendered.text
        assert rendered.html is None

    def test_japanese_thank_you(self) -> None:
        rendered = Renderer().render("post_purchase.thank_you", "ja", context())

        assert rendered.subject == "ご注文ありがとうございます（o-1001）"
        assert rendered.text.startswith("Hana様")
        assert "Kissa Tokyoをご利用いただき" in rendered.text
        assert "合計: 4200 JPY" in rendered.text
        assert "・Sencha × 2" in rendered.text

    def test_a_regional_locale_uses_its_language(self) -> None:
        rendered = Renderer().render("post_purchase.delivery_check", "ja-JP", context())

        assert rendered.subject == "商品は無事に届きましたか？"

    @pytest.mark.parametrize("locale", ["fr", "pt-BR", None])
    def test_an_unknown_locale_falls_back_to_english(self, locale: str | None) -> None:
        rendered = Renderer().render("post_purchase.delivery_check", locale, context())

        assert rendered.subject == "Has your order arrived?"
        assert "Your order o-1001 should be with you by now." in rendered.text

    def test_a_customer_without_a_name_is_greeted_generically(self) -> None:
        values = context()
        values["customer"]["name"] = None

        assert Renderer().render("post_purchase.usage_tips", "en", values).text.startswith("Hello there,")
        assert Renderer().render("post_purchase.usage_tips", "ja", values).text.startswith("お客様")

    def test_an_unknown_template_is_reported(self) -> None:
        with pytest.raises(TemplateNotFound):
            Renderer().render("post_purchase.nothing_like_this", "en", context())

    def test_a_missing_variable_fails_instead_of_rendering_blank(self) -> None:
        values = context()
        del values["order"]["amount"]

        with pytest.raises(UndefinedError):
            Renderer().render("post_purchase.thank_you", "en", values)


class TestTemplateSandbox:
    @pytest.mark.parametrize(
        "source",
        ["{{ ''.__class__.__mro__ }}", "{{ customer.__class__.__init__.__globals__ }}"],
    )
    def test_unsafe_attribute_access_is_refused(self, source: str) -> None:
        renderer = Renderer()
        renderer._library["en"]["evil.template"] = {"subject": source, "text": "x"}

        with pytest.raises(SecurityError):
            renderer.render("evil.template", "en", context())
