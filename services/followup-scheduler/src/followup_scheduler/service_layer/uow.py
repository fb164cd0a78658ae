"""The followup-scheduler's unit of work."""

from __future__ import annotations

from followup_scheduler.adapters.repository import SchedulerRepository
from retention_shared.uow import SqlAlchemyUnitOfWork


class SchedulerUnitOfWork(SqlAlchemyUnitOfWork):
    repo: SchedulerRepository

    def _start(self) -> None:
        self.repo = SchedulerRepository(self.session)
