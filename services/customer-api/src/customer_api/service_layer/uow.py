"""The customer-api's unit of work."""

from __future__ import annotations

from customer_api.adapters.repository import CustomerRepository
from retention_shared.uow import SqlAlchemyUnitOfWork


class CustomerApiUnitOfWork(SqlAlchemyUnitOfWork):
    customers: CustomerRepository

    def _start(self) -> None:
        self.customers = CustomerRepository(self.session)
