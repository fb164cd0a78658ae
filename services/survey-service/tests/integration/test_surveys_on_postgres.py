"""The survey-service on real PostgreSQL (migrated with Alembic): the whole answer path, and the locks
that keep concurrent invitations and submissions correct."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from retention_shared.clock import ManualClock
from retention_shared.config import DEFAULT_SIGNING_SECRET, Mode, PlatformSettings
from retention_shared.events.envelope import build_envelope
from retention_shared.platform import app_with_workers, assemble
from retention_shared.runtime import ServiceRuntime, service_named
from retention_shared.testing.harness import ADMIN_TOKEN
from survey_service.adapters import tables

pytestmark = pytest.mark.integration

THREADS = 12


class Service:
    def __init__(self, client: TestClient, runtime: ServiceRuntime, clock: ManualClock) -> None:
        self.client = client
        self.runtime = runtime
        self.clock = clock
        self.shop_id = f"shop_{secrets.token_hex(6)}"
        self.headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Retention-Shop": self.shop_id}
        self.deliver(
            "shop_registered",
            None,
            {"name": "Kissa", "timezone": "Asia/Tokyo", "currency": "JPY", "locale": "ja"},
        )

    def deliver(self, event_type: str, customer_id: str | None, data: dict[str, Any]) -> None:
        event = build_envelope(
            type=event_type,
            source="test",
            shop_id=self.shop_id,
            customer_id=customer_id,
            data=data,
            time=self.clock.now(),
        )
        with self.runtime.uow_factory() as uow:
            self.runtime.handlers[event_type](event, uow)
            uow.commit()

    def scalar(self, statement: Any) -> Any:
        with self.runtime.engine.connect() as connection:
            return connection.execute(statement).scalar_one()


@pytest.fixture
def service(tmp_path: Path, database_factory: Callable[[], str]) -> Iterator[Service]:
    settings = PlatformSettings(
        mode=Mode.DISTRIBUTED,
        data_dir=tmp_path,
        admin_token=ADMIN_TOKEN,
        signing_secret=DEFAULT_SIGNING_SECRET,
        survey_database_url=database_factory(),
        topic_namespace="",
    )
    clock = ManualClock()
    assembly = assemble([service_named("survey-service")], settings, clock, migrate=True)
    app = app_with_workers(assembly, "t", "survey-service", run_workers=False)
    with TestClient(app, follow_redirects=False) as client:
        yield Service(client, assembly.runtimes[0], clock)


def tallied_scores(service: Service) -> dict[int, int]:
    """Every score with a non-zero count in the response tallies, summed over days and groups."""
    totals: dict[int, int] = {}
    with service.runtime.engine.connect() as connection:
        for row in connection.execute(select(tables.response_tallies)).mappings():
            for score, column in enumerate(tables.SCORE_COLUMNS):
                if row[column]:
                    totals[score] = totals.get(score, 0) + row[column]
    return totals


def run_together(calls: list[Callable[[], Any]]) -> list[Any]:
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


class TestAnswerPathOnPostgres:
    def test_invite_answer_update_results_and_erase(self, service: Service) -> None:
        service.deliver("segment_changed", "c1", {"from": None, "to": "at_risk"})
        invitation = service.client.post(
            "/v1/surveys/nps/invitations",
            json={"customer_id": "c1", "context": {"type": "ticket", "id": "T-1"}},
            headers=service.headers,
        ).json()
        page = service.client.get(f"/s/{invitation['token']}")
        assert page.status_code == 200 and "Kissa" in page.text
        assert service.client.post(f"/s/{invitation['token']}", data={"score": "2"}).status_code == 303
        updated = service.client.post(
            "/v1/responses", json={"token": invitation["token"], "score": 8, "comment": "fixed\x00 now"}
        )
        assert updated.status_code == 200 and updated.json()["comment"] == "fixed now"
        results = service.client.get("/v1/surveys/nps/results", headers=service.headers).json()
        assert results["summary"]["responses"] == 1 and results["summary"]["passives"] == 1
        assert results["by_segment"][0]["segment"] == "at_risk"
        assert results["by_touchpoint"][0]["touchpoint"] == "ticket"
        assert service.scalar(select(func.sum(tables.response_tallies.c.score_8))) == 1

        service.deliver("customer_erased", "c1", {"erasure_id": "era-1"})
        assert service.scalar(select(func.count()).select_from(tables.responses)) == 0
        after = service.client.get("/v1/surveys/nps/results", headers=service.headers).json()
        assert after["summary"] == results["summary"]
        payloads = service.scalar(
            select(func.count()).where(tables.messaging.outbox.c.payload.contains('"survey_answered"'))
        )
        assert payloads == 2  # the first answer, and the change of score


class TestResultsOnPostgres:
    def test_one_grouping_sets_scan_gives_the_trend_and_both_breakdowns(self, service: Service) -> None:
        from datetime import timedelta

        answers = [
            ("c1", "champions", "order", 10),
            ("c2", "champions", "ticket", 9),
            ("c3", "at_risk", "ticket", 1),
            ("c4", None, "order", 7),
        ]
        for number, (customer, segment, context_type, score) in enumerate(answers):
            if segment:
                service.deliver("segment_changed", customer, {"from": None, "to": segment})
            if number == 2:
                service.clock.advance(timedelta(days=7))
            token = service.client.post(
                "/v1/surveys/nps/invitations",
                json={"customer_id": customer, "context": {"type": context_type, "id": "X"}},
                headers=service.headers,
            ).json()["token"]
            assert (
                service.client.post("/v1/responses", json={"token": token, "score": score}).status_code == 201
            )
        service.client.post(
            "/v1/surveys/nps/invitations",
            json={"customer_id": "c5", "context": {"type": "order", "id": "X"}},
            headers=service.headers,
        )
        body = service.client.get("/v1/surveys/nps/results", headers=service.headers).json()
        assert (body["summary"]["responses"], body["summary"]["invitations"], body["summary"]["nps"]) == (
            4,
            5,
            25.0,
        )
        assert [(p["period_start"], p["responses"], p["nps"]) for p in body["trend"]] == [
            ("2026-01-05", 2, 100.0),
            ("2026-01-12", 2, -50.0),
        ]
        assert {(s["segment"], s["responses"], s["invitations"]) for s in body["by_segment"]} == {
            ("champions", 2, 2),
            ("at_risk", 1, 1),
            (None, 1, 2),
        }
        assert {(t["touchpoint"], t["responses"], t["nps"]) for t in body["by_touchpoint"]} == {
            ("purchase", 2, 50.0),
            ("ticket", 2, 0.0),
        }
        monthly = service.client.get(
            "/v1/surveys/nps/results",
            params={"interval": "month", "segment": "champions"},
            headers=service.headers,
        ).json()
        assert [(p["period_start"], p["responses"]) for p in monthly["trend"]] == [("2026-01-01", 2)]


class TestConcurrency:
    def test_concurrent_invitations_for_one_customer_create_exactly_one(self, service: Service) -> None:
        def invite(number: int) -> int:
            return service.client.post(
                "/v1/surveys/nps/invitations",
                json={"customer_id": "c1", "context": {"type": "order", "id": f"O-{number}"}},
                headers=service.headers,
            ).status_code

        statuses = run_together([lambda n=n: invite(n) for n in range(THREADS)])
        assert sorted(statuses) == [201] + [409] * (THREADS - 1)
        assert service.scalar(select(func.count()).select_from(tables.invitations)) == 1

    def test_concurrent_requests_with_one_idempotency_key_share_one_invitation(
        self, service: Service
    ) -> None:
        def invite() -> tuple[int, str]:
            response = service.client.post(
                "/v1/surveys/csat/invitations",
                json={"customer_id": "c1", "context": {"type": "ticket", "id": "T-1"}},
                headers={**service.headers, "Idempotency-Key": "step-1"},
            )
            return response.status_code, response.json()["invitation_id"]

        answers = run_together([invite] * THREADS)
        assert sorted(status for status, _ in answers) == [200] * (THREADS - 1) + [201]
        assert len({invitation for _, invitation in answers}) == 1

    def test_concurrent_submissions_of_one_link_make_one_response_and_consistent_tallies(
        self, service: Service
    ) -> None:
        token = service.client.post(
            "/v1/surveys/nps/invitations",
            json={"customer_id": "c1", "context": {"type": "order", "id": "O-1"}},
            headers=service.headers,
        ).json()["token"]

        def submit(score: int) -> int:
            return service.client.post("/v1/responses", json={"token": token, "score": score}).status_code

        statuses = run_together([lambda s=s: submit(s % 11) for s in range(THREADS)])
        assert sorted(statuses) == [200] * (THREADS - 1) + [201]
        assert service.scalar(select(func.count()).select_from(tables.responses)) == 1
        final_score = service.scalar(select(tables.responses.c.score))
        assert tallied_scores(service) == {final_score: 1}
        events = []
        with service.runtime.engine.connect() as connection:
            for payload in connection.execute(select(tables.messaging.outbox.c.payload)).scalars():
                envelope = json.loads(payload)
                if envelope["type"] == "survey_answered":
                    events.append(envelope)
        assert events[-1]["data"]["score"] == final_score


class TestTransactionsTakeTurns:
    def test_separate_transactions_on_one_link_serialise_on_its_lock(self, service: Service) -> None:
        """As two API replicas would: each submission its own transaction, no shared writer."""
        from retention_shared.config import DEFAULT_SIGNING_SECRET
        from survey_service.config import SurveySettings
        from survey_service.domain.tokens import InvitationSigner
        from survey_service.service_layer.responses import submit_answer

        token = service.client.post(
            "/v1/surveys/ces/invitations",
            json={"customer_id": "c1", "context": {"type": "ticket", "id": "T-1"}},
            headers=service.headers,
        ).json()["token"]
        signer = InvitationSigner(DEFAULT_SIGNING_SECRET)

        def submit(score: int) -> bool:
            _, created = submit_answer(
                uow=service.runtime.uow_factory(),
                signer=signer,
                settings=SurveySettings(),
                token=token,
                score=score,
                comment=None,
            )
            return created

        created = run_together([lambda s=s: submit(1 + s % 7) for s in range(THREADS)])
        assert sorted(created) == [False] * (THREADS - 1) + [True]
        final_score = service.scalar(select(tables.responses.c.score))
        assert tallied_scores(service) == {final_score: 1}
