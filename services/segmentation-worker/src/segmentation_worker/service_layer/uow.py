"""The segmentation-worker's unit of work."""

from __future__ import annotations

from segmentation_worker.adapters.repository import StateRepository
from retention_shared.uow import SqlAlchemyUnitOfWork


class SegmentationUnitOfWork(SqlAlchemyUnitOfWork):
    state: StateRepository

    def _start(self) -> None:
        self.state = StateRepository(self.session)
