"""GET /v1/customers/{id} on real PostgreSQL: one joined statement in autocommit gives the whole
profile, and the autocommit connection goes back to the pool as a transactional one."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, insert, select

from customer_api.adapters import tables
from customer_api.service_layer import customers
from customer_api.service_layer.customers import ConsentChange, CustomerProfile
from customer_api.service_layer.uow import CustomerApiUnitOfWork
from retention_shared.problems import Problem

pytestmark = pytest.mark.integration

UowFactory = Callable[[], CustomerApiUnitOfWork]


def test_the_profile_joins_insights_consents_and_upcoming_followups(
    uow_factory: UowFactory, shop_id: str, engine: Engine
) -> None:
    customers.upsert_customer(
        uow=uow_factory(),
        shop_id=shop_id,
        customer_id="c1",
        profile=CustomerProfile(email="c1@example.com", name="Hanako", attributes={"plan": "gold"}),
        consents=[ConsentChange("email", True), ConsentChange("sms", False, source="store")],
    )
    now = datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(
            insert(tables.customer_insights).values(
                shop_id=shop_id, customer_id="c1", segment="loyal", churn_risk="low", probability_alive=0.9
            )
        )
        connection.execute(
            insert(tables.customer_followups),
            [
                {
                    "shop_id": shop_id,
                    "step_id": f"step-{n}",
                    "customer_id": "c1",
                    "playbook": "post_purchase",
                    "step": f"s{n}",
                    "status": "scheduled" if n != 2 else "sent",
                    "due_at": now + timedelta(days=n),
                    "updated_at": now,
                }
                for n in range(1, 4)
            ],
        )

    found = customers.read_customer(uow=uow_factory(), shop_id=shop_id, customer_id="c1")

    assert found["email"] == "c1@example.com" and found["attributes"] == {"plan": "gold"}
    assert "shop_id" not in found
    assert found["consents"]["email"]["granted"] is True
    assert found["consents"]["sms"] == {
        "granted": False,
        "legal_basis": "consent",
        "source": "store",
        "changed_at": found["consents"]["sms"]["changed_at"],
    }
    assert set(found["consents"]) == {"email", "sms"}
    assert found["insights"]["segment"] == "loyal" and found["insights"]["probability_alive"] == 0.9
    assert [step["step_id"] for step in found["next_followups"]] == ["step-1", "step-3"]


def test_a_customer_without_consents_or_insights_reads_as_empty(
    uow_factory: UowFactory, shop_id: str
) -> None:
    customers.upsert_customer(
        uow=uow_factory(), shop_id=shop_id, customer_id="bare", profile=CustomerProfile(), consents=[]
    )
    found = customers.read_customer(uow=uow_factory(), shop_id=shop_id, customer_id="bare")
    assert found["consents"] == {} and found["insights"] is None and found["next_followups"] == []


def test_an_unknown_customer_is_a_404(uow_factory: UowFactory, shop_id: str) -> None:
    with pytest.raises(Problem) as raised:
        customers.read_customer(uow=uow_factory(), shop_id=shop_id, customer_id="nobody")
    assert raised.value.status == 404


def test_a_reading_unit_of_work_cannot_commit(uow_factory: UowFactory) -> None:
    with pytest.raises(RuntimeError), uow_factory().reading() as uow:
        uow.commit()


def test_after_a_read_the_pooled_connection_is_transactional_again(
    uow_factory: UowFactory, shop_id: str, engine: Engine
) -> None:
    customers.upsert_customer(
        uow=uow_factory(), shop_id=shop_id, customer_id="c1", profile=CustomerProfile(), consents=[]
    )
    customers.read_customer(uow=uow_factory(), shop_id=shop_id, customer_id="c1")
    assert engine.pool.checkedin() == 1  # so the next unit of work gets the very connection read on
    # A write left uncommitted must vanish: if the connection had kept autocommit, it would stay.
    with uow_factory() as uow:
        uow.session.execute(
            tables.customers.delete().where(
                tables.customers.c.shop_id == shop_id, tables.customers.c.customer_id == "c1"
            )
        )
    with engine.connect() as connection:
        remaining = connection.execute(
            select(func.count()).select_from(tables.customers).where(tables.customers.c.shop_id == shop_id)
        ).scalar_one()
    assert remaining == 1


def test_search_by_the_start_of_an_email_or_name_uses_the_search_indexes(
    uow_factory: UowFactory, shop_id: str, engine: Engine
) -> None:
    for customer_id, email, name in (
        ("c1", "Aiko.Tanaka@example.com", "Aiko Tanaka"),
        ("c2", "kenji@example.com", "Kenji Sato"),
        ("c3", "sato@example.com", "Hana Sato"),
        ("c4", "promo@example.com", "50%_off club"),
    ):
        customers.upsert_customer(
            uow=uow_factory(),
            shop_id=shop_id,
            customer_id=customer_id,
            profile=CustomerProfile(email=email, name=name),
            consents=[],
        )

    def found(text: str) -> list[str]:
        rows, _ = customers.list_customers(
            uow=uow_factory(), shop_id=shop_id, limit=10, after=None, text=text
        )
        return [row["customer_id"] for row in rows]

    assert found("AIKO") == ["c1"]
    assert found("sato") == ["c3"]
    assert found("50%_") == ["c4"]
    assert found("50%x") == []

    # With sequential scans priced out, the plan shows whether the prefix search can use the
    # expression indexes (it cannot if the LIKE's escaping hides the prefix from the planner).
    with engine.begin() as connection:
        # Enough rows that reading the whole shop costs more than the index's prefix range.
        connection.exec_driver_sql(
            "INSERT INTO customers (shop_id, customer_id, email, name, attributes, created_at, updated_at)"
            " SELECT %(shop)s, 'bulk' || n, 'bulk' || n || '@example.com', 'Bulk ' || n, '{}', now(), now()"
            " FROM generate_series(1, 20000) AS n",
            {"shop": shop_id},
        )
        connection.exec_driver_sql("ANALYZE customers")
    with engine.connect() as connection:
        connection.exec_driver_sql("SET enable_seqscan = off")
        plan = "\n".join(
            row[0]
            for row in connection.exec_driver_sql(
                "EXPLAIN SELECT customer_id FROM customers WHERE shop_id = %(shop)s AND "
                "(lower(email) LIKE %(p)s ESCAPE '\\' OR lower(name) LIKE %(p)s ESCAPE '\\')",
                {"shop": shop_id, "p": "sato%"},
            )
        )
    assert "ix_customers_email_search" in plan and "ix_customers_name_search" in plan, plan
