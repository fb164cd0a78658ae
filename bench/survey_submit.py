"""Survey response submissions per process: the answer path on PostgreSQL, in process and over HTTP."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import Awaitable, Callable

import httpx
import sqlalchemy as sa

from bench.infra import ServiceProcess, fresh_databases, platform_env, running
from bench.registry import Context, Result, Target, benchmark
from bench.survey_common import (
    bulk_invitations,
    default_survey_id,
    register_shop,
    survey_assembly,
    survey_env,
)
from survey_service.adapters import tables
from survey_service.config import SurveySettings
from survey_service.domain.tokens import InvitationSigner
from survey_service.service_layer.batching import AnswerBatcher
from survey_service.service_layer.responses import Answer, submit_answers

TARGET_PER_S = 2000
IN_FLIGHT = 256
HTTP_IN_FLIGHT = 64
COMMENT_SHARE = 0.3


def _answer(rng: random.Random) -> tuple[int, str | None]:
    score = rng.choice((0, 2, 5, 6, 7, 8, 8, 9, 9, 10, 10))
    comment = "配送が早くて助かりました。" * rng.randint(1, 4) if rng.random() < COMMENT_SHARE else None
    return score, comment


def _drive(
    tokens: list[str],
    in_flight: int,
    submit: Callable[[str, random.Random], Awaitable[None]],
    close: Callable[[], Awaitable[None]] | None = None,
) -> tuple[float, list[float]]:
    """Submit every token once, `in_flight` at a time; returns (seconds, per-submission latencies)."""
    latencies: list[float] = []

    async def main() -> float:
        rng = random.Random(7)
        pending = iter(tokens)

        async def worker() -> None:
            for token in pending:
                started = time.perf_counter()
                await submit(token, rng)
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        elapsed = time.perf_counter() - started
        if close is not None:
            await close()
        return elapsed

    return asyncio.run(main()), latencies


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _count(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(tables.responses)).scalar_one())


@benchmark(
    "survey_submit",
    title="Survey response submissions per process (PostgreSQL)",
    targets=(
        Target(
            "submit_rate",
            TARGET_PER_S,
            f"≥ {TARGET_PER_S:,} response submissions/s per process (survey issue)",
        ),
    ),
)
def survey_submit(ctx: Context) -> Result:
    """A fresh PostgreSQL database with one shop and N open NPS invitations (written in bulk).
    In process: 256 submissions in flight (asyncio tasks) go through the service's answer writer,
    the same path as POST /v1/responses and the response page: it applies the answers waiting at
    once in one transaction (verify each token's MAC, lock the invitations, insert the responses,
    add them to the daily tallies, write survey_answered to the outbox, commit once); 30% carry a
    comment. Over HTTP: a separate `retention run api survey-service` process (uvicorn, one
    worker) takes POST /v1/responses from 64 concurrent keep-alive connections of an httpx
    AsyncClient in the benchmark process, on a second set of invitations (a sixth as many).
    Both rates are N over the wall time from the first submission to the last answer."""
    count = 4_000 if ctx.quick else 30_000
    http_count = count // 6  # HTTP is the slower path; this keeps `make bench` short
    logs = ctx.log_dir("survey_submit")
    result = Result(
        parameters={
            "submissions": f"{count:,} in process, {http_count:,} over HTTP",
            "in flight": f"{IN_FLIGHT} in process, {HTTP_IN_FLIGHT} over HTTP",
            "comments": f"{COMMENT_SHARE:.0%} of answers",
        }
    )
    with fresh_databases(1) as (database_url,):
        assembly = survey_assembly(database_url, logs / "var")
        try:
            runtime = assembly.runtimes[0]
            engine = runtime.engine
            shop_id = register_shop(assembly)
            survey_id = default_survey_id(engine, shop_id)
            in_process = bulk_invitations(engine, shop_id, survey_id, count)
            over_http = bulk_invitations(engine, shop_id, survey_id, http_count)
            signer = InvitationSigner(assembly.platform.settings.signing_secret.get_secret_value())
            settings = SurveySettings()

            # The same wiring as the service's routes: answers go through its group-commit writer.
            batcher = AnswerBatcher(
                lambda batch: submit_answers(
                    uow=runtime.uow_factory(), signer=signer, settings=settings, answers=batch
                )
            )

            async def submit(token: str, rng: random.Random) -> None:
                score, comment = _answer(rng)
                await batcher.submit_async(Answer(token, score, comment))

            seconds, latencies = _drive(in_process.tokens, IN_FLIGHT, submit)
            if _count(engine) != count:
                raise RuntimeError(f"{_count(engine)} responses recorded for {count} submissions")
            result.add("submit_rate", "in process: submissions", count / seconds, "responses/s")
            result.add("submit_p50_ms", "in process: latency p50", statistics.median(latencies) * 1000, "ms")
            result.add("submit_p99_ms", "in process: latency p99", _percentile(latencies, 0.99) * 1000, "ms")

            env = platform_env(**survey_env(database_url, logs / "var"))
            api = ServiceProcess(
                "survey-service-api", ["run", "api", "survey-service"], env, logs / "api.log"
            )
            with running([api]):
                # Idle connections are dropped by the client first (uvicorn closes them after 5 s),
                # so a request never goes out on a connection the server is closing.
                limits = httpx.Limits(
                    max_connections=HTTP_IN_FLIGHT,
                    max_keepalive_connections=HTTP_IN_FLIGHT,
                    keepalive_expiry=1.0,
                )
                client = httpx.AsyncClient(base_url=api.url, timeout=60, limits=limits)

                async def post(token: str, rng: random.Random) -> None:
                    score, comment = _answer(rng)
                    body: dict[str, object] = {"token": token, "score": score}
                    if comment is not None:
                        body["comment"] = comment
                    try:
                        response = await client.post("/v1/responses", json=body)
                        accepted = {201}
                    except httpx.TransportError:
                        # Sent again: if the first one did land, this one updates it (200).
                        response = await client.post("/v1/responses", json=body)
                        accepted = {200, 201}
                    if response.status_code not in accepted:
                        raise RuntimeError(f"{response.status_code}: {response.text}")

                http_seconds, http_latencies = _drive(over_http.tokens, HTTP_IN_FLIGHT, post, client.aclose)
            if _count(engine) != count + http_count:
                recorded = _count(engine) - count
                raise RuntimeError(f"{recorded} responses recorded for {http_count} HTTP submissions")
            result.add(
                "http_submit_rate", "over HTTP: POST /v1/responses", http_count / http_seconds, "responses/s"
            )
            result.add(
                "http_p50_ms", "over HTTP: latency p50", statistics.median(http_latencies) * 1000, "ms"
            )
            result.add(
                "http_p99_ms", "over HTTP: latency p99", _percentile(http_latencies, 0.99) * 1000, "ms"
            )
        finally:
            assembly.dispose()
    result.notes.append(
        "Over HTTP the client shares the machine's 2 cores with the API process and PostgreSQL; "
        "one uvicorn worker is one process, so the HTTP figure is what one API replica takes."
    )
    return result
