"""Survey response submissions per process: POST /v1/responses against one API process, and the
answer writer in process."""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from bench.infra import ServiceProcess, fresh_databases, platform_env, running
from bench.profiling import profile_table
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
from survey_service.service_layer.uow import SurveyUnitOfWork

TARGET_PER_S = 2000
IN_FLIGHT = 256
# As many answers in flight as in process. Each connection waits for its answer before sending the
# next, so with few connections the figure measures the answer writer's round trip (a batch's
# transaction) rather than what the process can take: 2,000 answers/s at ~100 ms each are ~200 in
# flight.
HTTP_CONNECTIONS = 256
COMMENT_SHARE = 0.3
FAILURES_KEPT = 5


def _answer(rng: random.Random) -> tuple[int, str | None]:
    score = rng.choice((0, 2, 5, 6, 7, 8, 8, 9, 9, 10, 10))
    comment = "配送が早くて助かりました。" * rng.randint(1, 4) if rng.random() < COMMENT_SHARE else None
    return score, comment


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _count(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(tables.responses)).scalar_one())


# --- in process: the answer writer alone ----------------------------------------------------------


def _drive(
    tokens: list[str], in_flight: int, submit: Callable[[str, random.Random], Awaitable[None]]
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
        return time.perf_counter() - started

    return asyncio.run(main()), latencies


# --- over HTTP: a small HTTP/1.1 load generator ---------------------------------------------------
#
# httpx's AsyncClient costs more CPU per request than the route it would measure (its pool walks
# every connection for each request), and it shares the machine's cores with the API process. This
# client does only what the measurement needs: every request is encoded before the clock starts,
# each keep-alive connection sends one request and reads its whole response (status line, headers,
# Content-Length bytes of body) before the next, and nothing is decoded beyond the status code.


class _ServerClosed(Exception):
    """The connection closed before a whole response arrived."""


@dataclass
class HttpLoad:
    """What sending a list of requests gave."""

    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # from writing a request to its last byte
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    failures: list[str] = field(default_factory=list)  # a few examples, for the report

    @property
    def succeeded(self) -> int:
        return sum(count for status, count in self.statuses.items() if 200 <= status < 300)

    @property
    def errors(self) -> int:
        return sum(self.statuses.values()) - self.succeeded + self.transport_errors

    def note(self, failure: str) -> None:
        if len(self.failures) < FAILURES_KEPT:
            self.failures.append(failure[:300])


def json_post(host: str, path: str, document: object) -> bytes:
    """The bytes of one HTTP/1.1 POST of a JSON document."""
    body = json.dumps(document, ensure_ascii=False).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes, bool]:
    """Send one request and read its response: (status, body, whether the connection stays open)."""
    writer.write(request)
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise _ServerClosed from exc
    status_line, *headers = head[:-4].split(b"\r\n")
    status = int(status_line.split(b" ", 2)[1])
    length, keep_alive = 0, True
    for header in headers:
        name, _, value = header.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            keep_alive = value.strip().lower() != b"close"
        elif name == b"transfer-encoding":
            raise RuntimeError("the load generator reads only responses with a Content-Length")
    try:
        body = await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError as exc:
        raise _ServerClosed from exc
    return status, body, keep_alive


async def _send_all(
    host: str, port: int, requests: Sequence[bytes], connections: int, timeout_s: float
) -> HttpLoad:
    load = HttpLoad()
    pending: Iterator[bytes] = iter(requests)
    # Connected before the clock starts: the run measures requests, not TCP handshakes.
    opened = [await asyncio.open_connection(host, port) for _ in range(connections)]

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for request in pending:
                started = time.perf_counter()
                try:
                    status, body, keep_alive = await _exchange(reader, writer, request)
                except (_ServerClosed, ConnectionError) as exc:
                    # Not sent again: whether it was recorded is unknown, and it counts as an error.
                    load.transport_errors += 1
                    load.note(f"connection lost: {exc!r}")
                    keep_alive = False
                else:
                    load.latencies.append(time.perf_counter() - started)
                    load.statuses[status] += 1
                    if not 200 <= status < 300:
                        load.note(f"{status}: {body.decode(errors='replace')}")
                if not keep_alive:
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
        finally:
            writer.close()

    started = time.perf_counter()
    async with asyncio.timeout(timeout_s):
        await asyncio.gather(*(connection(reader, writer) for reader, writer in opened))
    load.seconds = time.perf_counter() - started
    return load


def send_all(host: str, port: int, requests: Sequence[bytes], connections: int) -> HttpLoad:
    """Send every request once over `connections` keep-alive connections, each waiting for its
    answer before sending its next request (so `connections` are in flight)."""
    try:
        import uvloop
    except ImportError:  # uvicorn runs without it too; so does this client, at a little more CPU
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    timeout_s = 120 + len(requests) / 50  # a stuck run fails instead of hanging `make bench`
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_send_all(host, port, requests, connections, timeout_s))


# --- where the CPU went (Linux; figures are left out elsewhere) ----------------------------------

_TICK_S = 1 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01


def _cpu_s(stat_path: Path) -> float | None:
    """User + system CPU seconds from a /proc/<pid>[/task/<tid>]/stat file."""
    try:
        fields = stat_path.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) * _TICK_S


def _threads_cpu_s(pid: int) -> dict[int, float]:
    threads: dict[int, float] = {}
    with suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            seconds = _cpu_s(Path(f"/proc/{pid}/task/{tid}/stat"))
            if seconds is not None:
                threads[int(tid)] = seconds
    return threads


def _machine_busy_s() -> float | None:
    """CPU seconds spent on anything but idle and I/O wait, all cores together, since boot."""
    try:
        ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    # guest time is counted in user time already
    return (sum(ticks[:8]) - idle) * _TICK_S


def _database_backends(engine: sa.Engine) -> list[int]:
    """The server processes of the connections to this database, other than the asking one."""
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()"
            )
        )
        return [int(pid) for (pid,) in rows]


@dataclass
class CpuSnapshot:
    api_threads: dict[int, float]
    database: dict[int, float]
    client: float
    machine: float | None

    @classmethod
    def take(cls, api_pid: int, backends: list[int]) -> CpuSnapshot:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        database = {}
        for pid in backends:
            seconds = _cpu_s(Path(f"/proc/{pid}/stat"))
            if seconds is not None:
                database[pid] = seconds
        return cls(_threads_cpu_s(api_pid), database, usage.ru_utime + usage.ru_stime, _machine_busy_s())


def _cpu_figures(
    result: Result, before: CpuSnapshot, after: CpuSnapshot, api_pid: int, answers: int, seconds: float
) -> None:
    """CPU per answer of each party, and how busy the whole machine was."""

    def spent(start: dict[int, float], end: dict[int, float], keys: Callable[[int], bool]) -> float:
        # A thread or backend that appeared during the run started at zero.
        return sum(end[key] - start.get(key, 0.0) for key in end if keys(key))

    if not after.api_threads:
        result.notes.append("CPU per answer is not reported: this system has no /proc.")
        return
    per_answer = 1e6 / answers
    main = spent(before.api_threads, after.api_threads, lambda tid: tid == api_pid)
    others = spent(before.api_threads, after.api_threads, lambda tid: tid != api_pid)
    client = after.client - before.client
    result.add("api_main_us", "over HTTP: API main thread (HTTP, event loop)", main * per_answer, "µs/answer")
    result.add(
        "api_writer_us", "over HTTP: API other threads (answer writer)", others * per_answer, "µs/answer"
    )
    accounted = main + others + client
    if after.database:
        database = spent(before.database, after.database, lambda _pid: True)
        accounted += database
        result.add("db_us", "over HTTP: PostgreSQL backends", database * per_answer, "µs/answer")
    result.add("client_us", "over HTTP: load generator", client * per_answer, "µs/answer")
    if before.machine is not None and after.machine is not None:
        busy = after.machine - before.machine
        result.add("machine_busy", "over HTTP: whole machine busy", busy / seconds, "cores")
        result.add(
            "machine_other",
            "over HTTP: of which outside this benchmark",
            max(0.0, busy - accounted) / seconds,
            "cores",
        )


@benchmark(
    "survey_submit",
    title="Survey response submissions per process (PostgreSQL)",
    targets=(
        Target(
            "http_submit_rate",
            TARGET_PER_S,
            f"≥ {TARGET_PER_S:,} response submissions/s per process, over HTTP (survey issue)",
        ),
    ),
)
def survey_submit(ctx: Context) -> Result:
    """A fresh PostgreSQL database with one shop and open NPS invitations (written in bulk); 30% of
    the answers carry a comment. Over HTTP (the target): one `retention run api survey-service`
    process (uvicorn, one worker, as deployed) takes POST /v1/responses on N invitations from 256
    keep-alive connections, each sending its next answer when the last one is answered (as many in
    flight as in process; with fewer, the answer writer's transaction time rather than the process
    bounds the rate). The load
    generator is a small HTTP/1.1 client in the benchmark process (asyncio streams on uvloop,
    requests encoded before the clock starts, each response read whole and its status checked):
    httpx's client cost more CPU per request than the service. A warm-up of N/20 answers goes
    first, untimed. Every non-2xx answer counts as an error and is reported; the rate counts only
    2xx answers, and the responses in the database must match the 201s. The CPU that the API
    process (its event-loop thread and its answer writer), PostgreSQL's backends and the client
    spent per answer, and how busy the machine was, come from /proc. In process (secondary): 256
    submissions in flight (asyncio tasks) go straight to the service's answer writer, the same
    writer behind POST /v1/responses and the response page: it applies the answers waiting at once
    in one transaction (verify each token's MAC, lock the invitations, insert the responses, add
    them to the daily tallies, write survey_answered to the outbox, commit once). Both rates are N
    over the wall time from the first submission to the last answer."""
    count = 4_000 if ctx.quick else 30_000
    warmup = count // 20
    logs = ctx.log_dir("survey_submit")
    result = Result(
        parameters={
            "submissions": f"{count:,} over HTTP (after {warmup:,} untimed), {count:,} in process",
            "in flight": f"{HTTP_CONNECTIONS} connections over HTTP, {IN_FLIGHT} tasks in process",
            "comments": f"{COMMENT_SHARE:.0%} of answers",
        }
    )
    profile_path = logs / "survey-service-api.prof"
    with fresh_databases(1) as (database_url,):
        assembly = survey_assembly(database_url, logs / "var")
        try:
            runtime = assembly.runtimes[0]
            engine = runtime.engine
            shop_id = register_shop(assembly)
            survey_id = default_survey_id(engine, shop_id)
            over_http = bulk_invitations(engine, shop_id, survey_id, warmup + count).tokens
            in_process = bulk_invitations(engine, shop_id, survey_id, count).tokens

            rng = random.Random(7)
            requests = []
            for token in over_http:
                score, comment = _answer(rng)
                document: dict[str, object] = {"token": token, "score": score}
                if comment is not None:
                    document["comment"] = comment
                requests.append(json_post("bench", "/v1/responses", document))

            env = platform_env(**survey_env(database_url, logs / "var"))
            api = ServiceProcess(
                "survey-service-api",
                ["run", "api", "survey-service"],
                env,
                logs / "api.log",
                profile_to=profile_path if ctx.profile else None,
            )
            with running([api]):
                assert api.popen is not None
                warm = send_all("127.0.0.1", api.port, requests[:warmup], HTTP_CONNECTIONS)
                backends = _database_backends(engine)
                before = CpuSnapshot.take(api.popen.pid, backends)
                load = send_all("127.0.0.1", api.port, requests[warmup:], HTTP_CONNECTIONS)
                after = CpuSnapshot.take(api.popen.pid, backends)
            created = warm.statuses[201] + load.statuses[201]
            if _count(engine) != created:
                raise RuntimeError(f"{_count(engine)} responses recorded for {created} answers of 201")

            # The same wiring as the service's routes: answers go through its group-commit writer.
            signer = InvitationSigner(assembly.platform.settings.signing_secret.get_secret_value())
            settings = SurveySettings()

            def survey_uow() -> SurveyUnitOfWork:
                uow = runtime.uow_factory()
                assert isinstance(uow, SurveyUnitOfWork)
                return uow

            batcher = AnswerBatcher(
                lambda batch: submit_answers(
                    uow=survey_uow(), signer=signer, settings=settings, answers=batch
                )
            )

            async def submit(token: str, rng: random.Random) -> None:
                score, comment = _answer(rng)
                await batcher.submit_async(Answer(token, score, comment))

            seconds, latencies = _drive(in_process, IN_FLIGHT, submit)
            if _count(engine) != created + count:
                raise RuntimeError(f"{_count(engine) - created} responses recorded for {count} submissions")
        finally:
            assembly.dispose()

    result.add(
        "http_submit_rate",
        "over HTTP, one API process: POST /v1/responses",
        load.succeeded / load.seconds,
        "responses/s",
    )
    result.add("http_p50_ms", "over HTTP: latency p50", statistics.median(load.latencies) * 1000, "ms")
    result.add("http_p99_ms", "over HTTP: latency p99", _percentile(load.latencies, 0.99) * 1000, "ms")
    result.add("http_errors", "over HTTP: errors (non-2xx or connection lost)", load.errors, "answers")
    _cpu_figures(result, before, after, api.popen.pid, count, load.seconds)
    result.add("submit_rate", "in process: answer writer alone", count / seconds, "responses/s")
    result.add("submit_p50_ms", "in process: latency p50", statistics.median(latencies) * 1000, "ms")
    result.add("submit_p99_ms", "in process: latency p99", _percentile(latencies, 0.99) * 1000, "ms")

    statuses = ", ".join(f"{count:,} × {status}" for status, count in sorted(load.statuses.items()))
    result.notes.append(f"HTTP answers: {statuses}; {load.transport_errors} connections lost.")
    result.notes += [f"error example: {failure}" for failure in warm.failures + load.failures]
    result.notes.append(
        "The API process, PostgreSQL and the load generator share the machine's cores; one uvicorn "
        "worker is one process, so the HTTP figure is what one API replica takes. Its event-loop "
        "thread and its answer writer share one interpreter lock: the sum of their CPU per answer "
        "bounds what one process can take."
    )
    if ctx.profile:
        result.notes.append("Run with --profile: the API process ran under cProfile, so its rate is lower.")
        if profile_path.exists():
            result.tables.append(profile_table("cProfile of the survey-service API process", profile_path))
    return result
