"""The survey-service's unit of work."""

from __future__ import annotations

from retention_shared.uow import SqlAlchemyUnitOfWork
from survey_service.adapters.repository import SurveyRepository


class SurveyUnitOfWork(SqlAlchemyUnitOfWork):
    surveys: SurveyRepository

    def _start(self) -> None:
        # The kit's outbox writer already writes a batch of answers' events in one COPY.
        self.surveys = SurveyRepository(self.session)
