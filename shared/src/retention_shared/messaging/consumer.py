"""At-least-once consumption with effectively-once effects.

Each poll's batch is applied in one DB transaction; the inbox drops events already applied;
offsets are committed only after that transaction commits. A record that cannot be decoded,
or whose handler keeps failing, goes to `<topic>.dlq` with the error in its headers, and the
batch goes on. Infrastructure failures (DB or broker down) retry the whole batch instead, so a
valid event is never dead-lettered because a dependency was briefly away.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from tenacity import Retrying, before_sleep_log, retry_if_exception_type, stop_when_event_set
from tenacity import wait_exponential_jitter as backoff

from retention_shared.events.catalogue import validate_data
from retention_shared.events.envelope import Envelope, EnvelopeError, decode_envelope
from retention_shared.logs import correlation_id
from retention_shared.messaging.ports import Publisher, PublishError, Record, Subscriber
from retention_shared.metrics import CONSUMER_LAG, DEAD_LETTERED, EVENTS_CONSUMED
from retention_shared.uow import SqlAlchemyUnitOfWork

log = logging.getLogger(__name__)

Handler = Callable[[Envelope, Any], None]
BatchHandler = Callable[[list[Envelope], Any], None]


def _single(batch_handler: BatchHandler) -> Handler:
    def handle_one(envelope: Envelope, uow: Any) -> None:
        batch_handler([envelope], uow)

    return handle_one


class PermanentError(Exception):
    """Raised by a handler when retrying cannot help; the record is dead-lettered at once."""


INFRASTRUCTURE_ERRORS = (OperationalError, PublishError)


@dataclass
class _DeadLetter:
    record: Record
    error: BaseException


class ConsumerRunner:
    def __init__(
        self,
        *,
        service: str,
        group: str,
        subscriber: Subscriber,
        dead_letters: Publisher,
        uow_factory: Callable[[], SqlAlchemyUnitOfWork],
        handlers: Mapping[str, Handler],
        batch_handler: BatchHandler | None = None,
        batch_types: frozenset[str] = frozenset(),
        max_attempts: int = 5,
        retry_delay_s: float = 0.05,
        poll_timeout_ms: int = 200,
        batch_size: int = 500,
    ) -> None:
        self.service = service
        self.group = group
        self._subscriber = subscriber
        self._dead_letters = dead_letters
        self._uow_factory = uow_factory
        self._batch_handler = batch_handler
        self._batch_types = batch_types if batch_handler is not None else frozenset()
        # Every type the batch handler covers also needs a one-event path for the fallback.
        self._handlers: dict[str, Handler] = {
            **{t: _single(batch_handler) for t in self._batch_types if batch_handler is not None},
            **handlers,
        }
        self._max_attempts = max_attempts
        self._retry_delay_s = retry_delay_s
        self._poll_timeout_ms = poll_timeout_ms
        self._batch_size = batch_size
        self._stopping = threading.Event()
        self._last_lag_check = 0.0

    def stop(self) -> None:
        """Finish the batch in flight, then return from run()."""
        self._stopping.set()

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                self.run_once()
        finally:
            self._subscriber.close()

    def run_once(self) -> int:
        records = self._subscriber.poll(self._poll_timeout_ms, self._batch_size)
        self._report_lag()
        if not records:
            return 0
        try:
            for attempt in Retrying(
                retry=retry_if_exception_type(INFRASTRUCTURE_ERRORS),
                wait=backoff(multiplier=0.1, max=10),
                stop=stop_when_event_set(self._stopping),
                before_sleep=before_sleep_log(log, logging.WARNING),
                reraise=True,
            ):
                with attempt:
                    self._apply_batch(records)
        except INFRASTRUCTURE_ERRORS:
            # Stopping while the DB or broker is away: leave the offsets where they were.
            self._subscriber.rewind(records)
            return 0
        self._subscriber.commit(records)
        return len(records)

    def _apply_batch(self, records: list[Record]) -> None:
        dead: list[_DeadLetter] = []
        with self._uow_factory() as uow:
            pending = self._new_events(records, uow, dead)
            grouped = [item for item in pending if item[1].type in self._batch_types]
            if grouped:
                self._apply_group(grouped, uow, dead)
                pending = [item for item in pending if item[1].type not in self._batch_types]
            for record, envelope in pending:
                token = correlation_id.set(envelope.correlation_id or envelope.id)
                try:
                    self._apply_with_retries(envelope, record, uow, self._handlers[envelope.type], dead)
                finally:
                    correlation_id.reset(token)
            for letter in dead:
                self._send_to_dead_letter_topic(letter)
            if dead:
                self._dead_letters.flush()
            uow.commit()
        for letter in dead:
            DEAD_LETTERED.labels(self.service, letter.record.topic).inc()
            log.error(
                "dead-lettered record",
                extra={
                    "topic": letter.record.topic,
                    "partition": letter.record.partition,
                    "offset": letter.record.offset,
                    "error": str(letter.error),
                },
            )

    def _new_events(
        self, records: list[Record], uow: SqlAlchemyUnitOfWork, dead: list[_DeadLetter]
    ) -> list[tuple[Record, Envelope]]:
        """Decode the batch, dead-letter what cannot be decoded, and drop what the inbox has seen."""
        decoded: list[tuple[Record, Envelope]] = []
        outcomes: Counter[tuple[str, str]] = Counter()
        for record in records:
            try:
                envelope = _decode(record.value)
            except EnvelopeError as exc:
                dead.append(_DeadLetter(record, exc))
                outcomes[(record.topic, "invalid")] += 1
                continue
            if envelope.type not in self._handlers:
                outcomes[(record.topic, "ignored")] += 1
                continue
            decoded.append((record, envelope))
        seen = uow.inbox.seen_many(self.group, [(e.shop_id, e.id) for _, e in decoded])
        fresh: list[tuple[Record, Envelope]] = []
        for record, envelope in decoded:
            identity = (envelope.shop_id, envelope.id)
            if identity in seen:
                outcomes[(record.topic, "duplicate")] += 1
                continue
            seen.add(identity)  # a repeat later in the same batch is a duplicate too
            fresh.append((record, envelope))
        self._count(outcomes)
        return fresh

    def _apply_group(
        self, group: list[tuple[Record, Envelope]], uow: SqlAlchemyUnitOfWork, dead: list[_DeadLetter]
    ) -> None:
        """Apply events through the batch handler, in order. A group that fails is halved and each
        half applied in turn, down to single events with retries and the dead-letter topic: a
        poison event costs a few attempts on ever smaller groups instead of sending the whole poll
        one event at a time, and every customer's events still apply in their order."""
        if len(group) == 1:
            record, envelope = group[0]
            token = correlation_id.set(envelope.correlation_id or envelope.id)
            try:
                self._apply_with_retries(envelope, record, uow, self._handlers[envelope.type], dead)
            finally:
                correlation_id.reset(token)
            return
        if self._try_group(group, uow):
            return
        middle = len(group) // 2
        self._apply_group(group[:middle], uow, dead)
        self._apply_group(group[middle:], uow, dead)

    def _try_group(self, group: list[tuple[Record, Envelope]], uow: SqlAlchemyUnitOfWork) -> bool:
        """Apply events through the batch handler in one savepoint; False if it failed and was undone."""
        assert self._batch_handler is not None
        savepoint = uow.session.begin_nested()
        try:
            self._batch_handler([envelope for _, envelope in group], uow)
            uow.outbox.flush()
            uow.inbox.record_many(self.group, [(e.shop_id, e.id) for _, e in group])
            savepoint.commit()
        except OperationalError:
            raise
        except Exception as exc:
            self._undo(savepoint, uow)
            log.warning("batch of %d failed (%s); applying it in halves", len(group), exc)
            return False
        self._count(Counter((record.topic, "processed") for record, _ in group))
        return True

    def _count(self, outcomes: Counter[tuple[str, str]]) -> None:
        # One increment per topic and outcome, not per record: a labelled counter's lookup costs
        # more than the increment, and a poll holds hundreds of records.
        for (topic, outcome), count in outcomes.items():
            EVENTS_CONSUMED.labels(self.service, topic, outcome).inc(count)

    def _apply_with_retries(
        self,
        envelope: Envelope,
        record: Record,
        uow: SqlAlchemyUnitOfWork,
        handler: Handler,
        dead: list[_DeadLetter],
    ) -> None:
        for attempt in range(1, self._max_attempts + 1):
            savepoint = uow.session.begin_nested()
            try:
                handler(envelope, uow)
                uow.outbox.flush()
                uow.inbox.record(self.group, envelope.shop_id, envelope.id)
                savepoint.commit()
                EVENTS_CONSUMED.labels(self.service, record.topic, "processed").inc()
                return
            except OperationalError:
                raise
            except (PermanentError, ValidationError, DBAPIError) as exc:
                # Integrity and data errors will fail the same way next time.
                self._undo(savepoint, uow)
                dead.append(_DeadLetter(record, exc))
                EVENTS_CONSUMED.labels(self.service, record.topic, "failed").inc()
                return
            except Exception as exc:
                self._undo(savepoint, uow)
                if attempt == self._max_attempts:
                    dead.append(_DeadLetter(record, exc))
                    EVENTS_CONSUMED.labels(self.service, record.topic, "failed").inc()
                    return
                log.warning("handler failed (attempt %d), retrying: %s", attempt, exc)
                time.sleep(min(self._retry_delay_s * 2 ** (attempt - 1), 2.0))

    @staticmethod
    def _undo(savepoint: Any, uow: SqlAlchemyUnitOfWork) -> None:
        savepoint.rollback()
        uow.outbox.discard()

    def _send_to_dead_letter_topic(self, letter: _DeadLetter) -> None:
        record = letter.record
        headers = [
            ("error", str(letter.error)[:2000].encode()),
            ("error_type", type(letter.error).__name__.encode()),
            ("original_topic", record.topic.encode()),
            ("original_partition", str(record.partition).encode()),
            ("original_offset", str(record.offset).encode()),
            ("consumer_group", self.group.encode()),
            ("failed_at", datetime.now(UTC).isoformat().encode()),
        ]
        key = record.key.decode(errors="replace") if record.key else ""
        self._dead_letters.send(f"{record.topic}.dlq", key, record.value, headers)

    def _report_lag(self) -> None:
        now = time.monotonic()
        if now - self._last_lag_check < 5:
            return
        self._last_lag_check = now
        lag = self._subscriber.lag()
        if lag is not None:
            CONSUMER_LAG.labels(self.service).set(lag)


def _decode(raw: bytes) -> Envelope:
    """decode_envelope's result, faster: pydantic parses and validates the JSON in one pass instead
    of json.loads building the document first. Whatever the one pass refuses goes through
    decode_envelope itself, so a record is refused exactly when it was, with the same message."""
    try:
        envelope = Envelope.model_validate_json(raw)
        validate_data(envelope.type, envelope.data, envelope.schemaversion)
    except (ValueError, KeyError):  # ValidationError is a ValueError
        return decode_envelope(raw)
    return envelope
