"""The segmentation-worker's unit of work."""

from __future__ import annotations

from retention_shared.uow import SqlAlchemyUnitOfWork
from segmentation_worker.adapters.messaging import ArrayInbox, ArrayOutboxWriter
from segmentation_worker.adapters.repository import StateRepository


class SegmentationUnitOfWork(SqlAlchemyUnitOfWork):
    state: StateRepository

    def _start(self) -> None:
        self.state = StateRepository(self.session)
        if self.state.dialect == "postgresql":
            # The consumer applies whole polls: one array statement per poll for the inbox and
            # the outbox instead of one statement per row.
            self.inbox = ArrayInbox(self.session, self._tables, self.clock)
            self.outbox = ArrayOutboxWriter(self.session, self._tables, self.clock)
