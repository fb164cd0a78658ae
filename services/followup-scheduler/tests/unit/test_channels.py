"""SMS, LINE, webhook and survey-service adapters against a real local HTTP server."""

from __future__ import annotations

import base64
import time
import uuid
from urllib.parse import parse_qs

import httpx
import pytest

from followup_scheduler.adapters.channels.base import (
    OutgoingMessage,
    PermanentChannelError,
    RetryPolicy,
    TransientChannelError,
)
from followup_scheduler.adapters.channels.directory import ChannelDirectory
from followup_scheduler.adapters.channels.http import (
    SIGNATURE_HEADER,
    LineChannel,
    SmsChannel,
    WebhookChannel,
    verify,
)
from followup_scheduler.adapters.surveys import (
    HttpSurveyInvitations,
    SurveyFatigue,
    SurveyRejected,
    SurveyUnavailable,
)
from followup_scheduler.adapters.unsubscribe import UnsubscribeLinks
from retention_shared.testing.smtp import free_port

FAST = RetryPolicy(attempts=3, initial_s=0.01, max_s=0.02)


def message(**overrides: object) -> OutgoingMessage:
    values: dict[str, object] = {
        "channel": "sms",
        "recipient": "+819012345678",
        "subject": "Thanks",
        "text": "Thank you for your order o-1",
        "html": None,
        "idempotency_key": "shop_1.post_purchase.o-1.thank_you",
        "sender_name": "Kissa",
        "locale": "en",
        "metadata": {
            "shop_id": "shop_1",
            "customer_id": "c1",
            "playbook": "post_purchase",
            "step": "thank_you",
        },
    }
    values.update(overrides)
    return OutgoingMessage(**values)  # type: ignore[arg-type]


@pytest.fixture
def client() -> httpx.Client:
    return httpx.Client(timeout=5)


class TestSms:
    def test_twilio_shaped_request(self, http_server, client) -> None:  # type: ignore[no-untyped-def]
        channel = SmsChannel(
            client,
            base_url=http_server.url,
            account_sid="AC123",
            auth_token="tok",
            from_number="+15550000",
            retry=FAST,
        )

        channel.send(message())

        (request,) = http_server.requests
        assert request.path == "/2010-04-01/Accounts/AC123/Messages.json"
        assert parse_qs(request.body.decode()) == {
            "To": ["+819012345678"],
            "From": ["+15550000"],
            "Body": ["Thank you for your order o-1"],
        }
        assert request.headers["authorization"] == "Basic " + base64.b64encode(b"AC123:tok").decode()
        assert request.headers["idempotency-key"] == "shop_1.post_purchase.o-1.thank_you"

    def test_a_server_error_is_retried_with_backoff_then_succeeds(self, http_server, client) -> None:  # type: ignore[no-untyped-def]
        http_server.answer(503)
        http_server.answer(429)
        channel = SmsChannel(
            client, base_url=http_server.url, account_sid="AC1", auth_token="t", from_number="+1", retry=FAST
        )

        channel.send(message())

        assert len(http_server.requests) == 3

    def test_persistent_server_errors_are_transient(self, http_server, client) -> None:  # type: ignore[no-untyped-def]
        for _ in range(3):
            http_server.answer(500)
        channel = SmsChannel(
            client, base_url=http_server.url, account_sid="AC1", auth_token="t", from_number="+1", retry=FAST
        )

        with pytest.raises(TransientChannelError, match="HTTP 500"):
            channel.send(message())

    def test_bad_credentials_are_permanent_and_not_retried(self, http_server, client) -> None:  # type: ignore[no-untyped-def]
        http_server.answer(401, {"message": "Authenticate"})
        channel = SmsChannel(
            client, base_url=http_server.url, account_sid="AC1", auth_token="t", from_number="+1", retry=FAST
        )

        with pytest.raises(PermanentChannelError, match="HTTP 401"):
            channel.send(message())
        assert len(http_server.requests) == 1

    def test_nothing_listening_is_transient(self, client) -> None:  # type: ignore[no-untyped-def]
        channel = SmsChannel(
            client,
            base_url=f"http://127.0.0.1:{free_port()}",
            account_sid="AC1",
            auth_token="t",
            from_number="+1",
            retry=FAST,
        )

        with pytest.raises(TransientChannelError, match="unreachable"):
            channel.send(message())


class TestLine:
    def test_push_message_with_a_stable_retry_key(self, http_server, client) -> None:  # type: ignore[no-untyped-def]
        channel = LineChannel(client, access_token="line-token", base_url=http_server.url, retry=FAST)

        channel.send(message(channel="line", recipient="U123"))
        channel.send(message(channel="line", recipient="U123"))

        first, second = http_server.requests
        assert first.path == "/v2/bot/message/push"
        assert first.headers["authorization"] == "Bearer line-token"
        assert first.json() == {
            "to": "U123",
            "messages": [{"type": "text", "text": "Thanks\n\nThank you for your order o-1"}],
        }
        retry_key = first.headers["x-line-retry-key"]
        assert uuid.UUID(retry_key) and second.headers["x-line-retry-key"] == retry_key

    def test_an_already_accepted_retry_is_success(self, http_server, client) -> None:  # type: ignore[no-untyped-def]
        http_server.answer(
            409, {"message": "retry key already accepted"}, {"x-line-accepted-request-id": "abc"}
        )
        channel = LineChannel(client, access_token="t", base_url=http_server.url, retry=FAST)

        channel.send(message(channel="line", recipient="U1"))


class TestWebhook:
    def test_signed_like_stripe_and_verifiable_by_the_shop(self, http_server, client) -> None:  # type: ignore[no-untyped-def]
        secret = "whsec_0123456789abcdef"
        channel = WebhookChannel(client, url=f"{http_server.url}/hooks/retention", secret=secret, retry=FAST)

        channel.send(
            message(
                channel="webhook",
                recipient="shop",
                metadata={"type": "followup.staff_task", "step": "escalate"},
            )
        )

        (request,) = http_server.requests
        header = request.headers[SIGNATURE_HEADER.lower()]
        assert header.startswith("t=") and ",v1=" in header
        assert verify(secret, header, request.body, now=time.time())
        assert not verify("wrong-secret-000000", header, request.body, now=time.time())
        assert not verify(secret, header, request.body + b" ", now=time.time())
        assert not verify(secret, header, request.body, now=time.time() + 3600)  # replayed later
        payload = request.json()
        assert (payload["type"], payload["step"], payload["id"]) == (
            "followup.staff_task",
            "escalate",
            "shop_1.post_purchase.o-1.thank_you",
        )
        assert request.headers["idempotency-key"] == payload["id"]

    def test_a_misconfigured_url_is_a_permanent_failure(self, client) -> None:  # type: ignore[no-untyped-def]
        channel = WebhookChannel(client, url="ftp://shop.example/hook", secret="x" * 16, retry=FAST)

        with pytest.raises(PermanentChannelError, match="misconfigured URL"):
            channel.send(message(channel="webhook"))


class TestChannelDirectory:
    def test_shop_configuration_overrides_and_disables(self, http_server, client) -> None:  # type: ignore[no-untyped-def]
        platform_email = object()
        directory = ChannelDirectory({"email": platform_email}, client)  # type: ignore[dict-item]
        rows = [
            {
                "channel": "webhook",
                "enabled": True,
                "settings": {"url": http_server.url},
                "secrets": {"secret": "s" * 16},
                "updated_at": 1,
            },
            {"channel": "email", "enabled": False, "settings": {}, "secrets": {}, "updated_at": 1},
        ]

        channels = directory.channels_for("shop_1", rows)

        assert set(channels) == {"webhook"}
        assert directory.channels_for("shop_1", rows)["webhook"] is channels["webhook"]  # reused


class TestSurveyInvitations:
    def test_an_invitation_as_the_operator_for_the_shop(self, http_server, client) -> None:  # type: ignore[no-untyped-def]
        http_server.answer(
            201,
            {
                "invitation_id": "inv_1",
                "url": "https://s.example/i/1",
                "token": "t1",
                "expires_at": "2026-02-01T00:00:00Z",
            },
        )
        surveys = HttpSurveyInvitations(client, base_url=http_server.url, admin_token="op-token")

        invitation = surveys.invite(
            shop_id="shop_1",
            survey="csat",
            customer_id="c1",
            context={"type": "order", "id": "o-1"},
            locale="ja",
            idempotency_key="k-1",
        )

        assert invitation.url == "https://s.example/i/1"
        (request,) = http_server.requests
        assert request.path == "/v1/surveys/csat/invitations"
        assert request.json() == {
            "customer_id": "c1",
            "context": {"type": "order", "id": "o-1"},
            "locale": "ja",
        }
        assert request.headers["authorization"] == "Bearer op-token"
        assert request.headers["x-retention-shop"] == "shop_1"
        assert request.headers["idempotency-key"] == "k-1"

    @pytest.mark.parametrize(
        ("status", "body", "error"),
        [
            (
                409,
                {"type": "https://retention.dev/problems/survey-fatigue", "title": "Conflict", "status": 409},
                SurveyFatigue,
            ),
            (503, {}, SurveyUnavailable),
            (404, {"type": "about:blank", "title": "Not Found", "status": 404}, SurveyRejected),
        ],
    )
    def test_refusals(self, http_server, client, status, body, error) -> None:  # type: ignore[no-untyped-def]
        http_server.answer(status, body, {"Content-Type": "application/problem+json"})
        surveys = HttpSurveyInvitations(client, base_url=http_server.url, admin_token="op")

        with pytest.raises(error):
            surveys.invite(
                shop_id="s", survey="nps", customer_id="c", context={}, locale="en", idempotency_key="k"
            )


class TestUnsubscribeLinks:
    def test_round_trip_and_tamper(self) -> None:
        links = UnsubscribeLinks("secret", "https://retention.example/")
        token = links.token("shop_1", "c1", "email")

        assert links.url("shop_1", "c1", "email") == f"https://retention.example/u/{token}"
        request = links.read(token)
        assert request is not None and (request.shop_id, request.customer_id, request.channel) == (
            "shop_1",
            "c1",
            "email",
        )
        assert links.read(token[:-2] + "AA") is None
        assert UnsubscribeLinks("other", "https://x").read(token) is None
