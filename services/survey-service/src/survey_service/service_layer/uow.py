"""The survey-service's unit of work."""

from __future__ import annotations

from retention_shared.uow import SqlAlchemyUnitOfWork


class SurveyUnitOfWork(SqlAlchemyUnitOfWork):
    pass
