"""Group commit for answers: concurrent submissions in one process share a transaction.

Each request hands its answer to one writer thread and waits for its own outcome (an async route
waits without holding a thread, so thousands can be in flight). The writer takes whatever has
queued up while the previous transaction ran, plus what arrives within `linger_s` (2 ms), at most
`max_batch`, and applies it with `submit_answers` in one transaction: the round trips and the
commit are paid once per batch instead of once per answer. A lone answer waits at most `linger_s`.
If a batch fails as a whole (say, a database error), each of its answers is tried again alone,
so only an answer that fails by itself reports the failure.

Async submitters are woken once per batch and event loop, not once per answer: every wake-up
from another thread is a write to the loop's self-pipe and a round of its selector, and at
hundreds of answers per batch those cost more than applying the answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from survey_service.service_layer.responses import Answer, Outcome

log = logging.getLogger(__name__)

ApplyAnswers = Callable[[Sequence[Answer]], list[Outcome]]

# What a submitter waits on: a thread's future, or an asyncio future and the loop it belongs to.
Waiter = Future[Outcome] | tuple[asyncio.AbstractEventLoop, "asyncio.Future[Outcome]"]
# An answer's fate: its outcome, or the exception that kept it from having one.
Settled = tuple[Outcome, None] | tuple[None, BaseException]


class AnswerBatcher:
    def __init__(
        self,
        apply: ApplyAnswers,
        *,
        max_batch: int = 500,
        linger_s: float = 0.002,
        name: str = "survey-answers",
    ) -> None:
        self._apply = apply
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._name = name
        self._queue: queue.SimpleQueue[tuple[Answer, Waiter]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, answer: Answer) -> tuple[dict[str, Any], bool]:
        """Record the answer (blocking until its transaction committed); raises what makes it unusable."""
        future: Future[Outcome] = Future()
        self._enqueue(answer, future)
        return _result(future.result())

    async def submit_async(self, answer: Answer) -> tuple[dict[str, Any], bool]:
        """The same, awaiting the commit without holding a thread."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._enqueue(answer, (loop, future))
        return _result(await future)

    def _enqueue(self, answer: Answer, waiter: Waiter) -> None:
        self._ensure_running()
        self._queue.put((answer, waiter))

    def _ensure_running(self) -> None:
        # Started on first use, so processes that never take answers (consumers) have no writer.
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            deadline = time.monotonic() + self._linger_s
            while len(batch) < self._max_batch:
                remaining = deadline - time.monotonic()
                try:
                    batch.append(
                        self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
            self._apply_batch(batch)

    def _apply_batch(self, batch: list[tuple[Answer, Waiter]]) -> None:
        _settle([waiter for _, waiter in batch], self._outcomes([answer for answer, _ in batch]))

    def _outcomes(self, answers: list[Answer]) -> list[Settled]:
        try:
            return [(outcome, None) for outcome in self._apply(answers)]
        except Exception as exc:
            if len(answers) == 1:
                return [(None, exc)]
            log.warning("a batch of %d answers failed (%s); applying them one by one", len(answers), exc)
            return [settled for answer in answers for settled in self._outcomes([answer])]


def _settle(waiters: list[Waiter], settled: list[Settled]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Outcome], Settled]]] = {}
    for waiter, fate in zip(waiters, settled, strict=True):
        if isinstance(waiter, Future):
            outcome, error = fate
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(outcome)  # type: ignore[arg-type]
        else:
            loop, future = waiter
            by_loop.setdefault(loop, []).append((future, fate))
    for loop, fates in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(_settle_in_loop, fates)


def _settle_in_loop(fates: list[tuple[asyncio.Future[Outcome], Settled]]) -> None:
    for future, (outcome, error) in fates:
        if future.done():  # cancelled: the request went away while its answer was being recorded
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(outcome)  # type: ignore[arg-type]


def _result(outcome: Outcome) -> tuple[dict[str, Any], bool]:
    if isinstance(outcome, Exception):
        raise outcome
    return outcome
