"""The survey-service's unit of work."""

from __future__ import annotations

from retention_shared.messaging.outbox import OutboxWriter
from retention_shared.uow import SqlAlchemyUnitOfWork
from survey_service.adapters.bulk import insert_rows
from survey_service.adapters.repository import SurveyRepository


class BulkOutboxWriter(OutboxWriter):
    """Writes a transaction's events in one statement: a batch of answers has one event per answer,
    and a statement per event would cost a round trip each."""

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        insert_rows(self._session, self._tables.outbox, pending)


class SurveyUnitOfWork(SqlAlchemyUnitOfWork):
    surveys: SurveyRepository

    def _start(self) -> None:
        self.outbox = BulkOutboxWriter(self.session, self._tables, self.clock)
        self.surveys = SurveyRepository(self.session)
