"""Queries on the customer-api's tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from customer_api.adapters import loyalty_tables, tables


def insert_ignoring_duplicates(
    session: Session, table: Any, rows: Sequence[dict[str, Any]], returning: Any
) -> set[Any]:
    """Insert rows, skipping those whose key exists; return the `returning` values of rows inserted.

    One statement executed with many parameter sets: SQLAlchemy compiles it once and batches
    the rows itself ("insertmanyvalues"), instead of compiling a fresh 500-row VALUES per chunk.
    """
    if not rows:
        return set()
    dialect = session.get_bind().dialect.name
    insert_fn = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert_fn(table).on_conflict_do_nothing().returning(returning)
    return set(session.execute(statement, list(rows)).scalars())


class CustomerRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def get(self, shop_id: str, customer_id: str, *, for_update: bool = False) -> dict[str, Any] | None:
        query = select(tables.customers).where(
            tables.customers.c.shop_id == shop_id, tables.customers.c.customer_id == customer_id
        )
        if for_update:
            query = query.with_for_update()
        row = self._session.execute(query).mappings().first()
        return dict(row) if row else None

    def insert_if_absent(self, values: dict[str, Any]) -> bool:
        """Insert the customer unless a concurrent request just did; True if this call created it."""
        created = insert_ignoring_duplicates(
            self._session, tables.customers, [values], tables.customers.c.customer_id
        )
        return bool(created)

    def page(
        self,
        shop_id: str,
        *,
        limit: int,
        after: str | None,
        updated_since: datetime | None,
        attributes: dict[str, str],
        segment: str | None = None,
        churn_risk: str | None = None,
        tier: str | None = None,
        text: str | None = None,
    ) -> list[dict[str, Any]]:
        query = select(tables.customers).where(tables.customers.c.shop_id == shop_id)
        if text:
            # The id itself, or the start of the email or the name, in any case (indexed).
            pattern = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            query = query.where(
                or_(
                    tables.customers.c.customer_id == text,
                    func.lower(tables.customers.c.email).like(pattern, escape="\\"),
                    func.lower(tables.customers.c.name).like(pattern, escape="\\"),
                )
            )
        if tier is not None:
            accounts = loyalty_tables.loyalty_accounts
            query = query.join(
                accounts,
                (accounts.c.shop_id == tables.customers.c.shop_id)
                & (accounts.c.customer_id == tables.customers.c.customer_id),
            ).where(accounts.c.tier == tier)
        if segment is not None or churn_risk is not None:
            insights = tables.customer_insights
            query = query.join(
                insights,
                (insights.c.shop_id == tables.customers.c.shop_id)
                & (insights.c.customer_id == tables.customers.c.customer_id),
            )
            if segment is not None:
                query = query.where(insights.c.segment == segment)
            if churn_risk is not None:
                query = query.where(insights.c.churn_risk == churn_risk)
        if after is not None:
            query = query.where(tables.customers.c.customer_id > after)
        if updated_since is not None:
            query = query.where(tables.customers.c.updated_at >= updated_since)
        for name, value in attributes.items():
            query = query.where(tables.customers.c.attributes[name].as_string() == value)
        rows = self._session.execute(query.order_by(tables.customers.c.customer_id).limit(limit)).mappings()
        return [dict(row) for row in rows]

    def profile(self, shop_id: str, customer_id: str) -> dict[str, Any] | None:
        """The customer row with its insights and its consents, in one statement (see `_PROFILE`)."""
        rows = self._session.execute(_PROFILE, {"shop_id": shop_id, "customer_id": customer_id}).all()
        if not rows:
            return None
        first = rows[0]
        found = dict(zip(_CUSTOMER_NAMES, first[: len(_CUSTOMER_NAMES)], strict=True))
        insight = first[len(_CUSTOMER_NAMES) : _CONSENT_START]
        found["insights"] = dict(zip(_INSIGHT_NAMES, insight[1:], strict=True)) if insight[0] else None
        found["consents"] = {
            row[_CONSENT_START]: dict(zip(_CONSENT_NAMES, row[_CONSENT_START + 1 :], strict=True))
            for row in rows
            if row[_CONSENT_START] is not None
        }
        return found

    def upcoming_followups(self, shop_id: str, customer_id: str, *, limit: int) -> list[dict[str, Any]]:
        parameters = {"shop_id": shop_id, "customer_id": customer_id, "limit": limit}
        return [dict(row) for row in self._session.execute(_UPCOMING, parameters).mappings()]

    def consent_history(self, shop_id: str, customer_id: str) -> list[dict[str, Any]]:
        history = tables.consent_history
        query = (
            select(
                history.c.channel,
                history.c.granted,
                history.c.legal_basis,
                history.c.source,
                history.c.changed_at,
            )
            .where(history.c.shop_id == shop_id, history.c.customer_id == customer_id)
            .order_by(history.c.id)
        )
        return [dict(row) for row in self._session.execute(query).mappings()]

    def update(self, shop_id: str, customer_id: str, values: dict[str, Any]) -> None:
        self._session.execute(
            update(tables.customers)
            .where(tables.customers.c.shop_id == shop_id, tables.customers.c.customer_id == customer_id)
            .values(**values)
        )

    def consents(self, shop_id: str, customer_id: str) -> dict[str, dict[str, Any]]:
        rows = self._session.execute(
            select(tables.consents).where(
                tables.consents.c.shop_id == shop_id, tables.consents.c.customer_id == customer_id
            )
        ).mappings()
        return {row["channel"]: dict(row) for row in rows}

    def set_consent(
        self,
        shop_id: str,
        customer_id: str,
        channel: str,
        granted: bool,
        basis: str,
        source: str,
        at: datetime,
    ) -> None:
        values = {
            "shop_id": shop_id,
            "customer_id": customer_id,
            "channel": channel,
            "granted": granted,
            "legal_basis": basis,
            "source": source,
            "changed_at": at,
        }
        dialect = self._session.get_bind().dialect.name
        insert_fn = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert_fn(tables.consents).values(**values)
        self._session.execute(
            statement.on_conflict_do_update(
                index_elements=["shop_id", "customer_id", "channel"],
                set_={k: statement.excluded[k] for k in ("granted", "legal_basis", "source", "changed_at")},
            )
        )
        self._session.execute(insert(tables.consent_history).values(**values))


def _profile_statement() -> tuple[Select[Any], list[str], list[str], list[str]]:
    """The single customer view's GET is the API's hottest read: one statement fetches the
    customer, its insights (one row) and its consents (one row per channel), because a round trip
    costs more than the join. It is built once: building a select of some twenty labelled columns
    costs more CPU than running it."""
    customer, insight, consent = tables.customers, tables.customer_insights, tables.consents
    insight_columns = [c for c in insight.c if c.name not in ("shop_id", "customer_id")]
    consent_columns = [consent.c.granted, consent.c.legal_basis, consent.c.source, consent.c.changed_at]
    statement = (
        select(*customer.c, insight.c.customer_id, *insight_columns, consent.c.channel, *consent_columns)
        .select_from(
            customer.outerjoin(
                insight,
                (insight.c.shop_id == customer.c.shop_id) & (insight.c.customer_id == customer.c.customer_id),
            ).outerjoin(
                consent,
                (consent.c.shop_id == customer.c.shop_id) & (consent.c.customer_id == customer.c.customer_id),
            )
        )
        .where(customer.c.shop_id == bindparam("shop_id"), customer.c.customer_id == bindparam("customer_id"))
    )
    return (
        statement,
        [c.name for c in customer.c],
        [c.name for c in insight_columns],
        [c.name for c in consent_columns],
    )


_PROFILE, _CUSTOMER_NAMES, _INSIGHT_NAMES, _CONSENT_NAMES = _profile_statement()
_CONSENT_START = len(_CUSTOMER_NAMES) + 1 + len(_INSIGHT_NAMES)

_UPCOMING = (
    select(
        tables.customer_followups.c.step_id,
        tables.customer_followups.c.playbook,
        tables.customer_followups.c.step,
        tables.customer_followups.c.due_at,
        tables.customer_followups.c.updated_at,
    )
    .where(
        tables.customer_followups.c.shop_id == bindparam("shop_id"),
        tables.customer_followups.c.customer_id == bindparam("customer_id"),
        tables.customer_followups.c.status == "scheduled",
    )
    .order_by(tables.customer_followups.c.due_at)
    .limit(bindparam("limit"))
)
