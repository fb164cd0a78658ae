"""Answers applied in batches: one transaction for many, each with its own outcome, and the writer
that groups concurrent submissions."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from retention_shared.config import DEFAULT_SIGNING_SECRET
from survey_service.adapters import tables
from survey_service.config import SurveySettings
from survey_service.domain.tokens import InvitationSigner
from survey_service.service_layer.batching import AnswerBatcher
from survey_service.service_layer.responses import (
    Answer,
    InvalidAnswer,
    LinkState,
    LinkUnusable,
    Outcome,
    submit_answers,
)


def signer_of(survey_api: Any) -> InvitationSigner:
    return InvitationSigner(DEFAULT_SIGNING_SECRET)  # what the test app is configured with


class TestOneTransactionForManyAnswers:
    def test_each_answer_gets_its_own_outcome(self, survey_api: Any, shop: Any) -> None:
        _, headers = shop
        first = survey_api.invite(headers, customer_id="c1")["token"]
        second = survey_api.invite(headers, customer_id="c2")["token"]
        outcomes = submit_answers(
            uow=survey_api.runtime.uow_factory(),
            signer=signer_of(survey_api),
            settings=SurveySettings(),
            answers=[
                Answer(first, 9),
                Answer("forged", 9),
                Answer(second, 42),
                Answer(first, 3, "changed my mind"),  # the same link again, later in the batch
            ],
        )
        created, forged, out_of_range, changed = outcomes
        assert isinstance(created, tuple) and created[1] is True
        assert isinstance(forged, LinkUnusable) and forged.state is LinkState.INVALID
        assert isinstance(out_of_range, InvalidAnswer) and out_of_range.field == "score"
        assert isinstance(changed, tuple) and changed[1] is False
        assert changed[0]["response_id"] == created[0]["response_id"] and changed[0]["score"] == 3
        assert survey_api.count(tables.responses) == 1
        assert [e["data"]["score"] for e in survey_api.published("survey_answered")] == [9, 3]
        results = survey_api.client.get("/v1/surveys/nps/results", headers=headers).json()
        assert results["distribution"]["3"] == 1 and results["distribution"]["9"] == 0


class TestAnswerBatcher:
    def test_concurrent_answers_share_batches_and_each_gets_its_outcome(self) -> None:
        seen: list[int] = []
        release = threading.Event()

        def apply(batch: Sequence[Answer]) -> list[Outcome]:
            seen.append(len(batch))
            release.wait(5)  # hold the first batch so that the others queue up behind it
            return [({"token": answer.token}, True) for answer in batch]

        batcher = AnswerBatcher(apply, linger_s=0)
        results: dict[int, Any] = {}

        def submit(number: int) -> None:
            results[number] = batcher.submit(Answer(f"t{number}", 1))

        threads = [threading.Thread(target=submit, args=(n,)) for n in range(20)]
        threads[0].start()
        while not seen:
            threading.Event().wait(0.01)
        for thread in threads[1:]:
            thread.start()
        threading.Event().wait(0.2)
        release.set()
        for thread in threads:
            thread.join(5)
        assert {n: r[0]["token"] for n, r in results.items()} == {n: f"t{n}" for n in range(20)}
        assert seen[0] == 1 and sum(seen) == 20 and max(seen[1:]) > 1

    def test_a_failing_batch_is_retried_answer_by_answer(self) -> None:
        batches: list[list[str]] = []

        def apply(batch: Sequence[Answer]) -> list[Outcome]:
            batches.append([answer.token for answer in batch])
            if any(answer.token == "poison" for answer in batch):
                raise RuntimeError("database said no")
            return [({"token": answer.token}, True) for answer in batch]

        batcher = AnswerBatcher(apply)
        from concurrent.futures import Future

        items: list[tuple[Answer, Future[Outcome]]] = [
            (Answer(token, 1), Future()) for token in ("a", "poison", "b")
        ]
        batcher._apply_batch(items)
        assert batches[0] == ["a", "poison", "b"] and batches[1:] == [["a"], ["poison"], ["b"]]
        assert items[0][1].result() == ({"token": "a"}, True)
        with pytest.raises(RuntimeError):
            items[1][1].result()
        assert items[2][1].result() == ({"token": "b"}, True)

    def test_an_unusable_link_raises_for_its_submitter(self) -> None:
        batcher = AnswerBatcher(lambda batch: [LinkUnusable(LinkState.EXPIRED) for _ in batch])
        with pytest.raises(LinkUnusable):
            batcher.submit(Answer("old", 1))


class TestAsyncSubmitters:
    def test_one_wake_up_per_batch_settles_every_waiter_and_skips_a_cancelled_one(self) -> None:
        release = threading.Event()
        seen: list[int] = []

        def apply(batch: Sequence[Answer]) -> list[Outcome]:
            seen.append(len(batch))
            release.wait(5)
            return [
                InvalidAnswer("score", "out of range") if a.token == "bad" else ({"token": a.token}, True)
                for a in batch
            ]

        batcher = AnswerBatcher(apply, linger_s=0)

        async def main() -> list[Any]:
            first = asyncio.ensure_future(batcher.submit_async(Answer("first", 1)))
            while not seen:
                await asyncio.sleep(0.01)
            tasks = [asyncio.ensure_future(batcher.submit_async(Answer(f"t{n}", 1))) for n in range(10)]
            bad = asyncio.ensure_future(batcher.submit_async(Answer("bad", 1)))
            gone = asyncio.ensure_future(batcher.submit_async(Answer("gone", 1)))
            await asyncio.sleep(0.1)
            gone.cancel()
            release.set()
            return await asyncio.gather(first, *tasks, bad, gone, return_exceptions=True)

        first, *rest, bad, gone = asyncio.run(main())
        assert first == ({"token": "first"}, True)
        assert [r[0]["token"] for r in rest] == [f"t{n}" for n in range(10)]
        assert isinstance(bad, InvalidAnswer) and bad.field == "score"
        assert isinstance(gone, asyncio.CancelledError)
        assert seen == [1, 12]  # the queued answers shared the second batch
