"""Survey invitations through the survey-service (a port and its httpx adapter)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import httpx


@dataclass(frozen=True)
class Invitation:
    invitation_id: str
    url: str
    token: str
    expires_at: str


class SurveyFatigue(Exception):
    """The survey-service refused: the customer was invited too recently."""


class SurveyUnavailable(Exception):
    """Transient: the survey-service is away or busy."""


class SurveyRejected(Exception):
    """Permanent: e.g. no such survey for the shop."""


class SurveyInvitations(Protocol):
    def invite(
        self,
        *,
        shop_id: str,
        survey: str,
        customer_id: str,
        context: dict[str, str],
        locale: str,
        idempotency_key: str,
        base_url: str | None = None,
    ) -> Invitation: ...


class HttpSurveyInvitations:
    """`POST {base_url}/v1/surveys/{survey}/invitations` as the operator acting for the shop."""

    def __init__(self, client: httpx.Client, *, base_url: str, admin_token: str) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._token = admin_token

    def invite(
        self,
        *,
        shop_id: str,
        survey: str,
        customer_id: str,
        context: dict[str, str],
        locale: str,
        idempotency_key: str,
        base_url: str | None = None,
    ) -> Invitation:
        url = f"{(base_url or self._base).rstrip('/')}/v1/surveys/{survey}/invitations"
        try:
            response = self._client.post(
                url,
                json={"customer_id": customer_id, "context": context, "locale": locale},
                headers={
                    "Authorization": f"Bearer {self._token}",
                    "X-Retention-Shop": shop_id,
                    "Idempotency-Key": idempotency_key,
                },
            )
        except httpx.TransportError as exc:
            raise SurveyUnavailable(f"survey-service unreachable: {exc}") from exc
        if response.status_code in (200, 201):
            body: dict[str, Any] = response.json()
            return Invitation(
                invitation_id=str(body["invitation_id"]),
                url=str(body["url"]),
                token=str(body.get("token", "")),
                expires_at=str(body.get("expires_at", "")),
            )
        problem_type = ""
        if response.headers.get("content-type", "").startswith(
            ("application/problem+json", "application/json")
        ):
            problem_type = str(response.json().get("type", ""))
        if response.status_code == 409 and problem_type.endswith("/survey-fatigue"):
            raise SurveyFatigue(problem_type)
        if response.status_code == 429 or response.status_code >= 500:
            raise SurveyUnavailable(f"survey-service: HTTP {response.status_code}")
        raise SurveyRejected(f"survey-service: HTTP {response.status_code}: {response.text[:200]}")
