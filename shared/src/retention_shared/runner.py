"""Running services: background loops (outbox relay, consumer, periodic jobs) and the HTTP server."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial

from retention_shared.messaging.consumer import ConsumerRunner
from retention_shared.messaging.outbox import OutboxRelay
from retention_shared.runtime import PlatformContext, ServiceRuntime

log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL_S = 3600
# Published outbox rows are kept a week for inspection. The inbox remembers event ids for 30 days,
# the window in which a redelivered or re-sent event is recognised as a duplicate.
OUTBOX_KEEP = timedelta(days=7)
INBOX_KEEP = timedelta(days=30)


def housekeeping(runtime: ServiceRuntime, relay: OutboxRelay) -> tuple[int, int]:
    """Purge published outbox rows and old inbox entries, so neither table grows without bound."""
    purged_outbox = relay.purge_published(OUTBOX_KEEP)
    with runtime.uow_factory() as uow:
        purged_inbox = uow.inbox.purge_older_than(INBOX_KEEP)
        uow.commit()
    if purged_outbox or purged_inbox:
        log.info(
            "housekeeping of %s: %d outbox rows, %d inbox rows purged",
            runtime.name,
            purged_outbox,
            purged_inbox,
        )
    return purged_outbox, purged_inbox


@dataclass
class _Loop:
    name: str
    thread: threading.Thread
    stop: Callable[[], None]


@dataclass
class Workers:
    """The background half of one or more services, each loop on its own thread."""

    platform: PlatformContext
    runtimes: list[ServiceRuntime]
    relay: bool = True
    consume: bool = True
    jobs: bool = True
    _loops: list[_Loop] = field(default_factory=list)
    _stopping: threading.Event = field(default_factory=threading.Event)
    consumers: list[ConsumerRunner] = field(default_factory=list)
    relays: list[OutboxRelay] = field(default_factory=list)

    def start(self) -> None:
        settings = self.platform.settings
        for runtime in self.runtimes:
            if self.relay:
                relay = OutboxRelay(
                    service=runtime.name,
                    engine=runtime.engine,
                    tables=runtime.tables,
                    publisher=self.platform.bus.publisher(f"{runtime.name}-relay"),
                    clock=self.platform.clock,
                    namespace=settings.topic_namespace,
                    batch_size=settings.relay_batch_size,
                )
                self.relays.append(relay)
                self._spawn(f"{runtime.name}-relay", self._relay_loop(runtime, relay))
                self._spawn(
                    f"{runtime.name}-housekeeping",
                    self._periodic(partial(housekeeping, runtime, relay), HOUSEKEEPING_INTERVAL_S),
                )
            if self.consume and (runtime.handlers or runtime.batch_handler):
                consumer = ConsumerRunner(
                    service=runtime.name,
                    group=runtime.consumer_group,
                    subscriber=self.platform.bus.subscriber(
                        group=runtime.consumer_group,
                        topics=[self.platform.topic_name(topic) for topic in runtime.topics],
                        client_id=f"{runtime.name}-consumer",
                    ),
                    dead_letters=self.platform.bus.publisher(f"{runtime.name}-dlq"),
                    uow_factory=runtime.uow_factory,
                    handlers=runtime.handlers,
                    batch_handler=runtime.batch_handler,
                    batch_types=runtime.batch_types,
                    max_attempts=settings.consumer_max_attempts,
                    poll_timeout_ms=settings.consumer_poll_timeout_ms,
                    batch_size=settings.consumer_batch_size,
                )
                self.consumers.append(consumer)
                self._loops.append(
                    _Loop(
                        f"{runtime.name}-consumer",
                        threading.Thread(target=consumer.run, name=f"{runtime.name}-consumer", daemon=True),
                        consumer.stop,
                    )
                )
                self._loops[-1].thread.start()
            if self.jobs:
                for job in runtime.jobs:
                    self._spawn(f"{runtime.name}-{job.name}", self._periodic(job.run, job.interval_s))

    def check_alive(self) -> None:
        """A liveness check: fails when a loop's thread has ended while nobody asked it to stop
        (an uncaught error), so the process is restarted rather than left silently idle."""
        if self._stopping.is_set():
            return
        ended = [loop.name for loop in self._loops if not loop.thread.is_alive()]
        if ended:
            raise RuntimeError(f"background loops ended unexpectedly: {', '.join(ended)} (see the logs)")

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._loops.append(_Loop(name, thread, self._stopping.set))
        thread.start()

    def _relay_loop(self, runtime: ServiceRuntime, relay: OutboxRelay) -> Callable[[], None]:
        interval = self.platform.settings.relay_interval_ms / 1000

        def loop() -> None:
            last_backlog_check = 0.0
            while not self._stopping.is_set():
                try:
                    published = relay.relay_once()
                    if time.monotonic() - last_backlog_check > 5:
                        relay.backlog()
                        last_backlog_check = time.monotonic()
                except Exception:
                    log.exception("outbox relay of %s failed; retrying", runtime.name)
                    published = 0
                    self._stopping.wait(1.0)
                if published == 0:
                    runtime.outbox_committed.wait(interval)
                    runtime.outbox_committed.clear()

        return loop

    def _periodic(self, job: Callable[[], object], interval_s: float) -> Callable[[], None]:
        def loop() -> None:
            while not self._stopping.is_set():
                try:
                    job()
                except Exception:
                    log.exception("periodic job failed; it will run again")
                self._stopping.wait(interval_s)

        return loop

    def stop(self, timeout_s: float = 30.0) -> None:
        """Let every loop finish what it has in flight, then return."""
        self._stopping.set()
        for loop in self._loops:
            loop.stop()
        deadline = time.monotonic() + timeout_s
        for loop in self._loops:
            loop.thread.join(max(0.0, deadline - time.monotonic()))
        unfinished = [loop.name for loop in self._loops if loop.thread.is_alive()]
        self._loops.clear()
        if unfinished:
            log.error("workers still busy after %.0fs: %s", timeout_s, ", ".join(unfinished))
        else:
            log.info("workers stopped: every loop finished its work in flight")

    def wait_for_signal(self) -> None:
        """Block until SIGTERM or SIGINT, then stop gracefully."""
        received = threading.Event()

        def _handle(signum: int, _frame: object) -> None:
            log.info("signal %s received: finishing the batch in flight", signum)
            received.set()

        signal.signal(signal.SIGTERM, _handle)
        signal.signal(signal.SIGINT, _handle)
        while not received.is_set():
            received.wait(0.5)
        self.stop()
