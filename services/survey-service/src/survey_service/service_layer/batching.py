"""Group commit for answers: concurrent submissions in one process share a transaction.

Each request hands its answer to one writer thread and waits for its own outcome (an async route
waits without holding a thread, so thousands can be in flight). The writer takes whatever has
queued up while the previous transaction ran, plus what arrives within `linger_s` (2 ms), at most
`max_batch`, and applies it with `submit_answers` in one transaction: the round trips and the
commit are paid once per batch instead of once per answer. A lone answer waits at most `linger_s`.
If a batch fails as a whole (say, a database error), each of its answers is tried again alone,
so only an answer that fails by itself reports the failure.
"""

from __future__ import annotations

import asyncio
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
        self._queue: queue.SimpleQueue[tuple[Answer, Future[Outcome]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, answer: Answer) -> tuple[dict[str, Any], bool]:
        """Record the answer (blocking until its transaction committed); raises what makes it unusable."""
        return _result(self._enqueue(answer).result())

    async def submit_async(self, answer: Answer) -> tuple[dict[str, Any], bool]:
        """The same, awaiting the commit without holding a thread."""
        return _result(await asyncio.wrap_future(self._enqueue(answer)))

    def _enqueue(self, answer: Answer) -> Future[Outcome]:
        self._ensure_running()
        future: Future[Outcome] = Future()
        self._queue.put((answer, future))
        return future

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

    def _apply_batch(self, batch: list[tuple[Answer, Future[Outcome]]]) -> None:
        try:
            outcomes = self._apply([answer for answer, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            log.warning("a batch of %d answers failed (%s); applying them one by one", len(batch), exc)
            for item in batch:
                self._apply_batch([item])
            return
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            future.set_result(outcome)


def _result(outcome: Outcome) -> tuple[dict[str, Any], bool]:
    if isinstance(outcome, Exception):
        raise outcome
    return outcome
