"""The segmentation-worker's unit of work."""

from __future__ import annotations

from retention_shared.uow import SqlAlchemyUnitOfWork
from segmentation_worker.adapters.repository import StateRepository


class SegmentationUnitOfWork(SqlAlchemyUnitOfWork):
    state: StateRepository

    def _start(self) -> None:
        self.state = StateRepository(self.session)
