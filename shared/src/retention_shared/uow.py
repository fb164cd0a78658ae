"""The unit of work: it owns the transaction, and only it commits. Outgoing events go to the
outbox in that same commit."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel
from sqlalchemy.orm import Session

from retention_shared.clock import Clock
from retention_shared.events.catalogue import spec_for, validate_data
from retention_shared.events.envelope import Envelope, build_envelope
from retention_shared.logs import correlation_id
from retention_shared.messaging.outbox import Inbox, MessagingTables, OutboxWriter


class SqlAlchemyUnitOfWork:
    """Base unit of work; services subclass it to add their repositories in `_start`."""

    session: Session
    outbox: OutboxWriter
    inbox: Inbox

    def __init__(
        self,
        session_factory: Callable[[], Session],
        *,
        tables: MessagingTables,
        clock: Clock,
        source: str,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self._session_factory = session_factory
        self._tables = tables
        self.clock = clock
        self.source = source
        self._on_commit = on_commit
        self._read_only = False

    def reading(self) -> Self:
        """Use as `with uow.reading():` for a block that only reads.

        On PostgreSQL its statements then run in autocommit: no BEGIN and ROLLBACK round trips,
        which are a large share of a small read. Each statement still sees one consistent
        snapshot; a block that needs several statements to agree should use a transaction.
        """
        self._read_only = True
        return self

    def __enter__(self) -> Self:
        self.session = self._session_factory()
        if self._read_only and self.session.get_bind().dialect.name == "postgresql":
            self.session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        self.outbox = OutboxWriter(self.session, self._tables, self.clock)
        self.inbox = Inbox(self.session, self._tables, self.clock)
        self._start()
        return self

    def _start(self) -> None:
        """Hook for subclasses: build repositories on self.session."""

    def __exit__(self, *exc_info: object) -> None:
        self.session.rollback()
        self.session.close()
        self._read_only = False

    def commit(self) -> None:
        if self._read_only:
            # In autocommit every write would already be durable, one statement at a time.
            raise RuntimeError("a unit of work entered with reading() cannot commit")
        had_events = self.outbox.pending > 0
        self.outbox.flush()
        self.session.commit()
        if had_events and self._on_commit is not None:
            self._on_commit()

    def rollback(self) -> None:
        self.session.rollback()

    def publish(
        self,
        event_type: str,
        *,
        shop_id: str,
        customer_id: str | None,
        data: BaseModel | dict[str, Any],
        time: datetime | None = None,
        event_id: str | None = None,
    ) -> Envelope:
        """Validate an event against the catalogue and add it to this transaction's outbox.

        Data given as an instance of the event's own catalogue model was validated when it was
        made and is used as it is: dumping and validating it again costs a noticeable share of a
        small write (an eighth of recording a survey answer)."""
        validated: BaseModel
        if type(data) is spec_for(event_type).model:
            validated = data
        else:
            payload = data.model_dump(mode="json", by_alias=True) if isinstance(data, BaseModel) else data
            validated = validate_data(event_type, payload)
        envelope = build_envelope(
            id=event_id,
            type=event_type,
            source=self.source,
            shop_id=shop_id,
            customer_id=customer_id,
            data=validated.model_dump(mode="json", by_alias=True, exclude_none=True),
            time=time or self.clock.now(),
            correlation_id=correlation_id.get(),
        )
        self.outbox.add(envelope)
        return envelope
