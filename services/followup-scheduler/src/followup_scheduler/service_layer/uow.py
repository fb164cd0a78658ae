"""The followup-scheduler's unit of work."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from followup_scheduler.adapters.repository import SchedulerRepository
from retention_shared.uow import SqlAlchemyUnitOfWork


class SchedulerUnitOfWork(SqlAlchemyUnitOfWork):
    """Adds the scheduler's repository, and `on_steps_due`: called after a commit that scheduled a
    step due at once (a handler sets `steps_due_now`), so the dispatcher need not wait for its poll."""

    repo: SchedulerRepository

    def __init__(self, *args: Any, on_steps_due: Callable[[], None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_steps_due = on_steps_due
        self.steps_due_now = False

    def _start(self) -> None:
        self.repo = SchedulerRepository(self.session)
        self.steps_due_now = False

    def commit(self) -> None:
        due, self.steps_due_now = self.steps_due_now, False
        super().commit()
        if due and self._on_steps_due is not None:
            self._on_steps_due()
