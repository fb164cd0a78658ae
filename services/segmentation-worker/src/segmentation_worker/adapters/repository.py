"""Queries on the segmentation-worker's tables, in bulk: a consumer applies a whole poll at once,
and a recompute reads and writes a whole shop as columns."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
from sqlalchemy import (
    ColumnElement,
    Table,
    Text,
    and_,
    bindparam,
    case,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from retention_shared.db import UTCDateTime, json_dumps
from segmentation_worker.adapters.tables import (
    customer_state,
    kpi_snapshots,
    login_days,
    model_fits,
    orders,
    recompute_runs,
    segment_history,
    segmentation_config,
    shop_stats,
    tenancy,
    tickets,
)

ZERO = Decimal(0)
CHUNK = 500
SECONDS_PER_DAY = 86_400.0

CustomerKey = tuple[str, str]
OrderKey = tuple[str, str]

# The columns a recompute reads and writes back, for every customer of a shop at once.
SNAPSHOT_COLUMNS = ("customer_id", "first_purchase_at", "last_purchase_at", "purchase_days", "net_spend")
# The scores a recompute compares with, to write back only the customers whose scores moved.
PREVIOUS_SCORES = (
    "r_score",
    "f_score",
    "m_score",
    "p_alive",
    "expected_purchases",
    "expected_spend",
    "clv",
    "churn_score",
)
# scored_at is written too, the same for every customer of a recompute.
SCORE_COLUMNS = (
    "r_score",
    "f_score",
    "m_score",
    "segment",
    "p_alive",
    "expected_purchases",
    "expected_spend",
    "clv",
    "churn_band",
    "churn_score",
    "scored_at",
)


class StateRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    @property
    def dialect(self) -> str:
        return self._session.get_bind().dialect.name

    # --- customers ------------------------------------------------------------------------------

    def get(self, shop_id: str, customer_id: str) -> dict[str, Any] | None:
        return self.states_for([(shop_id, customer_id)]).get((shop_id, customer_id))

    def states_for(self, keys: Iterable[CustomerKey]) -> dict[CustomerKey, dict[str, Any]]:
        found: dict[CustomerKey, dict[str, Any]] = {}
        for shop_id, customer_ids in self._by_shop(keys):
            rows = self._rows(customer_state, shop_id, customer_state.c.customer_id, customer_ids)
            found.update({(row["shop_id"], row["customer_id"]): row for row in rows})
        return found

    def save_states(self, rows: list[dict[str, Any]]) -> None:
        self._upsert(customer_state, rows, ["shop_id", "customer_id"])

    # --- orders ---------------------------------------------------------------------------------

    def orders_of(self, customers: Iterable[CustomerKey]) -> dict[OrderKey, dict[str, Any]]:
        found: dict[OrderKey, dict[str, Any]] = {}
        for shop_id, customer_ids in self._by_shop(customers):
            rows = self._rows(orders, shop_id, orders.c.customer_id, customer_ids)
            found.update({(row["shop_id"], row["order_id"]): row for row in rows})
        return found

    def orders_by_id(self, keys: Iterable[OrderKey]) -> dict[OrderKey, dict[str, Any]]:
        found: dict[OrderKey, dict[str, Any]] = {}
        for shop_id, order_ids in self._by_shop(keys):
            rows = self._rows(orders, shop_id, orders.c.order_id, order_ids)
            found.update({(row["shop_id"], row["order_id"]): row for row in rows})
        return found

    def save_orders(self, rows: list[dict[str, Any]]) -> None:
        self._upsert(orders, rows, ["shop_id", "order_id"])

    def kpi_figures(self, shop_id: str, start: datetime, end: datetime) -> dict[str, Any]:
        """The counts behind the period's KPIs, aggregated by the database (docs/kpis.md).

        A shop with millions of orders cannot ship them all to Python for each dashboard view, so
        every figure is a GROUP BY over the period's orders (index on shop and time) and the
        customers' state (first purchase); only the cohort matrix's cells come back as rows.
        """
        previous_start = start - (end - start)
        net = orders.c.amount - (
            func.least(orders.c.refunded, orders.c.amount)
            if self.dialect == "postgresql"
            else func.min(orders.c.refunded, orders.c.amount)
        )
        day = _calendar(orders.c.purchased_at, "day", self.dialect)
        of_shop = orders.c.shop_id == shop_id
        period = (
            select(
                orders.c.customer_id,
                func.count(func.distinct(day)).label("days"),
                func.min(day).label("first_day"),
                func.sum(net).label("revenue"),
            )
            .where(of_shop, orders.c.purchased_at >= start, orders.c.purchased_at < end)
            .group_by(orders.c.customer_id)
            .subquery()
        )
        state = customer_state
        first_day = _calendar(state.c.first_purchase_at, "day", self.dialect)
        active = self._session.execute(
            select(
                func.count(),
                func.coalesce(func.sum(period.c.revenue), 0),
                # Two purchase days up to the end: two in the period, or a first purchase on an
                # earlier day than the period's first (it is never later).
                func.coalesce(func.sum(_when((period.c.days >= 2) | (first_day < period.c.first_day), 1)), 0),
                func.coalesce(func.sum(_when(state.c.first_purchase_at >= start, 1)), 0),
                func.coalesce(func.sum(_when(state.c.first_purchase_at < start, period.c.revenue)), 0),
            ).select_from(
                period.outerjoin(
                    state, (state.c.shop_id == shop_id) & (state.c.customer_id == period.c.customer_id)
                )
            )
        ).one()
        previous = (
            select(orders.c.customer_id)
            .where(of_shop, orders.c.purchased_at >= previous_start, orders.c.purchased_at < start)
            .distinct()
            .subquery()
        )
        previous_count, retained = self._session.execute(
            select(
                func.count(),
                func.coalesce(func.sum(_when(period.c.customer_id.is_not(None), 1)), 0),
            ).select_from(previous.outerjoin(period, period.c.customer_id == previous.c.customer_id))
        ).one()
        first_month = _calendar(state.c.first_purchase_at, "month", self.dialect)
        newcomers = (
            (state.c.shop_id == shop_id)
            & (state.c.first_purchase_at >= start)
            & (state.c.first_purchase_at < end)
        )
        cohort_sizes: dict[Any, Any] = dict(
            self._session.execute(
                select(first_month, func.count()).where(newcomers).group_by(first_month)
            ).all()
        )
        order_month = _calendar(orders.c.purchased_at, "month", self.dialect)
        cells = self._session.execute(
            select(first_month, order_month, func.count(func.distinct(orders.c.customer_id)))
            .select_from(
                orders.join(
                    state,
                    (state.c.shop_id == orders.c.shop_id) & (state.c.customer_id == orders.c.customer_id),
                )
            )
            .where(of_shop, newcomers, orders.c.purchased_at < end)
            .group_by(first_month, order_month)
        ).all()
        return {
            "active_customers": int(active[0]),
            "revenue": float(active[1]),
            "repeat_customers": int(active[2]),
            "new_customers": int(active[3]),
            "returning_revenue": float(active[4]),
            "previous_period_customers": int(previous_count),
            "retained_customers": int(retained),
            "cohort_sizes": {str(month): int(count) for month, count in cohort_sizes.items()},
            "cohort_cells": [(str(cohort), str(month), int(count)) for cohort, month, count in cells],
        }

    # --- KPI snapshots --------------------------------------------------------------------------

    def kpi_snapshot(
        self, shop_id: str, start: datetime, end: datetime, *, margin: timedelta
    ) -> dict[str, Any] | None:
        """The stored figures of exactly this period, if no order of the period was written (or
        erased) after they were computed. Writes up to `margin` before count as after: a
        transaction stamps its orders when it starts and may commit after the snapshot's read."""
        found = (
            self._session.execute(
                select(kpi_snapshots).where(
                    kpi_snapshots.c.shop_id == shop_id,
                    kpi_snapshots.c.period_start == start,
                    kpi_snapshots.c.period_end == end,
                )
            )
            .mappings()
            .first()
        )
        if found is None:
            return None
        computed_at = found["computed_at"] - margin
        revised_at = self._session.execute(
            select(shop_stats.c.kpi_revised_at).where(shop_stats.c.shop_id == shop_id)
        ).scalar_one_or_none()
        if revised_at is not None and revised_at >= computed_at:
            return None
        # Orders written since (index on shop and updated_at): a purchase or refund dated inside
        # the period, or a first purchase before it, changes its figures. Later orders do not.
        written_since = self._session.execute(
            select(orders.c.order_id)
            .where(
                orders.c.shop_id == shop_id,
                orders.c.updated_at >= computed_at,
                or_(orders.c.purchased_at < end, orders.c.purchased_at.is_(None)),
            )
            .limit(1)
        ).first()
        return None if written_since is not None else dict(found)

    def save_kpi_snapshot(
        self,
        shop_id: str,
        start: datetime,
        end: datetime,
        *,
        figures: dict[str, Any],
        average_clv: float | None,
        computed_at: datetime,
    ) -> None:
        self._upsert(
            kpi_snapshots,
            [
                {
                    "shop_id": shop_id,
                    "period_start": start,
                    "period_end": end,
                    "figures": figures,
                    "average_clv": average_clv,
                    "computed_at": computed_at,
                }
            ],
            ["shop_id", "period_start", "period_end"],
        )

    def forget_kpi_snapshots(self, shop_id: str, *, computed_before: datetime) -> None:
        self._session.execute(
            delete(kpi_snapshots).where(
                kpi_snapshots.c.shop_id == shop_id, kpi_snapshots.c.computed_at < computed_before
            )
        )

    def shops_with_orders(self) -> list[str]:
        return list(
            self._session.execute(
                select(shop_stats.c.shop_id).where(shop_stats.c.buyers > 0).order_by(shop_stats.c.shop_id)
            ).scalars()
        )

    def mark_kpis_revised(self, shop_id: str, *, at: datetime) -> None:
        self._upsert(
            shop_stats, [{"shop_id": shop_id, "buyers": 0, "net_spend": ZERO}], ["shop_id"], update=False
        )
        self._session.execute(
            update(shop_stats).where(shop_stats.c.shop_id == shop_id).values(kpi_revised_at=at)
        )

    def average_clv(self, shop_id: str) -> float | None:
        found = self._session.execute(
            select(func.avg(customer_state.c.clv)).where(
                customer_state.c.shop_id == shop_id, customer_state.c.clv.is_not(None)
            )
        ).scalar_one_or_none()
        return None if found is None else float(found)

    # --- shop aggregates ------------------------------------------------------------------------

    def adjust_shops(self, deltas: dict[str, tuple[int, Decimal]]) -> dict[str, Decimal]:
        """Apply (buyers, net spend) deltas per shop; return each shop's new average net spend per buyer."""
        averages: dict[str, Decimal] = {}
        for shop_id, (buyers, net_spend) in sorted(deltas.items()):
            self._upsert(
                shop_stats, [{"shop_id": shop_id, "buyers": 0, "net_spend": ZERO}], ["shop_id"], update=False
            )
            row = self._session.execute(
                update(shop_stats)
                .where(shop_stats.c.shop_id == shop_id)
                .values(buyers=shop_stats.c.buyers + buyers, net_spend=shop_stats.c.net_spend + net_spend)
                .returning(shop_stats.c.buyers, shop_stats.c.net_spend)
            ).one()
            averages[shop_id] = Decimal(row.net_spend) / row.buyers if row.buyers else ZERO
        return averages

    def shop_stats_of(self, shop_id: str) -> dict[str, Any] | None:
        row = (
            self._session.execute(select(shop_stats).where(shop_stats.c.shop_id == shop_id))
            .mappings()
            .first()
        )
        return dict(row) if row else None

    def save_shop_learning(
        self,
        shop_id: str,
        *,
        edges: dict[str, list[float]] | None,
        typical_interval_days: float,
        at: datetime,
    ) -> None:
        self._upsert(
            shop_stats, [{"shop_id": shop_id, "buyers": 0, "net_spend": ZERO}], ["shop_id"], update=False
        )
        self._session.execute(
            update(shop_stats)
            .where(shop_stats.c.shop_id == shop_id)
            .values(quintile_edges=edges, typical_interval_days=typical_interval_days, last_recompute_at=at)
        )

    def save_quintile_edges(self, shop_id: str, edges: dict[str, list[float]]) -> None:
        self._upsert(
            shop_stats, [{"shop_id": shop_id, "buyers": 0, "net_spend": ZERO}], ["shop_id"], update=False
        )
        self._session.execute(
            update(shop_stats).where(shop_stats.c.shop_id == shop_id).values(quintile_edges=edges)
        )

    def save_shop_learning_time(self, shop_id: str, *, at: datetime) -> None:
        """Mark the shop as recomputed at `at` without changing what it learnt."""
        self._upsert(
            shop_stats, [{"shop_id": shop_id, "buyers": 0, "net_spend": ZERO}], ["shop_id"], update=False
        )
        self._session.execute(
            update(shop_stats).where(shop_stats.c.shop_id == shop_id).values(last_recompute_at=at)
        )

    def shop_timezones(self) -> dict[str, str]:
        """Every shop this service knows, with its timezone (UTC for shops only seen in activity)."""
        known = dict(self._session.execute(select(tenancy.shops.c.shop_id, tenancy.shops.c.timezone)).all())
        for (shop_id,) in self._session.execute(select(shop_stats.c.shop_id)).all():
            known.setdefault(shop_id, "UTC")
        return known

    def shop_timezone(self, shop_id: str) -> str:
        found = self._session.execute(
            select(tenancy.shops.c.timezone).where(tenancy.shops.c.shop_id == shop_id)
        ).scalar_one_or_none()
        return found or "UTC"

    # --- tickets and logins -----------------------------------------------------------------------

    def tickets_by_id(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for shop_id, ticket_ids in self._by_shop(keys):
            rows = self._rows(tickets, shop_id, tickets.c.ticket_id, ticket_ids)
            found.update({(row["shop_id"], row["ticket_id"]): row for row in rows})
        return found

    def save_tickets(self, rows: list[dict[str, Any]]) -> None:
        self._upsert(tickets, rows, ["shop_id", "ticket_id"])

    def open_ticket_counts(self, customers: Iterable[CustomerKey]) -> dict[CustomerKey, int]:
        counts: dict[CustomerKey, int] = {}
        for shop_id, customer_ids in self._by_shop(customers):
            ids = bindparam("ids", customer_ids, type_=postgresql.ARRAY(Text))
            of_customers = (
                tickets.c.customer_id == func.any(ids)
                if self.dialect == "postgresql"
                else tickets.c.customer_id.in_(customer_ids)
            )
            rows = self._session.execute(
                select(tickets.c.customer_id, func.count())
                .where(
                    tickets.c.shop_id == shop_id,
                    of_customers,
                    tickets.c.opened_at.is_not(None),
                    tickets.c.resolved_at.is_(None),
                )
                .group_by(tickets.c.customer_id)
            ).all()
            counts.update({(shop_id, customer_id): int(count) for customer_id, count in rows})
        return counts

    def add_logins(self, rows: list[dict[str, Any]]) -> None:
        """Add login counts per (shop, customer, day), unique in `rows`; existing days are incremented."""
        if not rows:
            return
        if self.dialect == "postgresql":
            self._array_upsert(
                login_days, rows, ["shop_id", "customer_id", "day"], {"logins": "t.logins + EXCLUDED.logins"}
            )
            return
        statement = sqlite.insert(login_days)
        statement = statement.on_conflict_do_update(
            index_elements=["shop_id", "customer_id", "day"],
            set_={"logins": login_days.c.logins + statement.excluded.logins},
        )
        for chunk in _chunks(rows):
            self._session.execute(statement, chunk)

    def login_windows(
        self, shop_id: str, *, recent_from: date, baseline_from: date, until: date
    ) -> dict[str, tuple[int, int]]:
        """Per customer with logins since `baseline_from`: (logins since `recent_from`, logins before)."""
        recent = func.sum(_when(login_days.c.day >= recent_from, login_days.c.logins))
        baseline = func.sum(_when(login_days.c.day < recent_from, login_days.c.logins))
        rows = self._session.execute(
            select(login_days.c.customer_id, recent, baseline)
            .where(
                login_days.c.shop_id == shop_id,
                login_days.c.day >= baseline_from,
                login_days.c.day < until,
            )
            .group_by(login_days.c.customer_id)
        ).all()
        return {customer_id: (int(r or 0), int(b or 0)) for customer_id, r, b in rows}

    def customers_in_login_drop(self, shop_id: str) -> set[str]:
        rows = self._session.execute(
            select(customer_state.c.customer_id).where(
                customer_state.c.shop_id == shop_id, customer_state.c.login_drop_active.is_(True)
            )
        ).scalars()
        return set(rows)

    def set_login_drop(self, shop_id: str, customer_ids: Sequence[str], active: bool) -> None:
        for chunk in _chunks(list(customer_ids)):
            self._session.execute(
                update(customer_state)
                .where(customer_state.c.shop_id == shop_id, customer_state.c.customer_id.in_(chunk))
                .values(login_drop_active=active)
            )

    def purge_logins_before(self, shop_id: str, day: date) -> None:
        self._session.execute(
            login_days.delete().where(login_days.c.shop_id == shop_id, login_days.c.day < day)
        )

    def login_stats(
        self, shop_id: str, customer_id: str, *, recent_from: date, baseline_from: date
    ) -> tuple[int, int]:
        windows = self._session.execute(
            select(
                func.sum(_when(login_days.c.day >= recent_from, login_days.c.logins)),
                func.sum(_when(login_days.c.day < recent_from, login_days.c.logins)),
            ).where(
                login_days.c.shop_id == shop_id,
                login_days.c.customer_id == customer_id,
                login_days.c.day >= baseline_from,
            )
        ).one()
        return int(windows[0] or 0), int(windows[1] or 0)

    # --- configuration, fits, history -----------------------------------------------------------

    def config_document(self, shop_id: str) -> dict[str, Any] | None:
        return self._session.execute(
            select(segmentation_config.c.document).where(segmentation_config.c.shop_id == shop_id)
        ).scalar_one_or_none()

    def save_config(self, shop_id: str, document: dict[str, Any], at: datetime) -> None:
        self._upsert(
            segmentation_config, [{"shop_id": shop_id, "document": document, "updated_at": at}], ["shop_id"]
        )

    def current_fits(self, shop_id: str) -> dict[str, dict[str, Any]]:
        """The latest fit of each model for the shop."""
        latest = (
            select(model_fits.c.model, func.max(model_fits.c.version).label("version"))
            .where(model_fits.c.shop_id == shop_id)
            .group_by(model_fits.c.model)
            .subquery()
        )
        rows = self._session.execute(
            select(model_fits)
            .join(
                latest,
                and_(model_fits.c.model == latest.c.model, model_fits.c.version == latest.c.version),
            )
            .where(model_fits.c.shop_id == shop_id)
        ).mappings()
        return {row["model"]: dict(row) for row in rows}

    def add_fit(
        self,
        shop_id: str,
        *,
        model: str,
        fitted_at: datetime,
        time_unit: str,
        parameters: dict[str, Any],
        diagnostics: dict[str, Any],
    ) -> int:
        version = self._session.execute(
            select(func.coalesce(func.max(model_fits.c.version), 0)).where(
                model_fits.c.shop_id == shop_id, model_fits.c.model == model
            )
        ).scalar_one()
        self._session.execute(
            model_fits.insert().values(
                shop_id=shop_id,
                model=model,
                version=version + 1,
                fitted_at=fitted_at,
                time_unit=time_unit,
                parameters=parameters,
                diagnostics=diagnostics,
            )
        )
        return int(version) + 1

    def add_history(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if self.dialect == "postgresql":
            # COPY: one round trip, where an executemany sends every row as a statement.
            names = ["shop_id", "customer_id", "changed_at", "from_segment", "to_segment"]
            raw = self._session.connection().connection.driver_connection
            assert raw is not None
            with (
                raw.cursor() as cursor,
                cursor.copy(f"COPY segment_history ({', '.join(names)}) FROM STDIN") as copy,
            ):
                for row in rows:
                    copy.write_row([row[name] for name in names])
            return
        for chunk in _chunks(rows, 5000):
            self._session.execute(segment_history.insert(), chunk)

    def history_of(self, shop_id: str, customer_id: str, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._session.execute(
            select(segment_history)
            .where(segment_history.c.shop_id == shop_id, segment_history.c.customer_id == customer_id)
            .order_by(segment_history.c.changed_at.desc(), segment_history.c.id.desc())
            .limit(limit)
        ).mappings()
        return [dict(row) for row in rows]

    # --- recompute: a whole shop as columns -------------------------------------------------------

    def buyers_snapshot(self, shop_id: str, now: datetime) -> dict[str, np.ndarray]:
        """Every buyer of the shop, as arrays: ids, days since first and last purchase, purchase
        days, net spend, and the scores they had (NaN, or None for names, where there were none)."""
        c = customer_state.c
        buyers = (c.shop_id == shop_id, c.purchase_count > 0)
        numbers = [
            _epoch(c.first_purchase_at, self.dialect),
            _epoch(c.last_purchase_at, self.dialect),
            c.purchase_days,
            c.gross_spend - c.refunded,
            *(c[name] for name in PREVIOUS_SCORES),
        ]
        names = [c.customer_id, c.segment, c.churn_band]
        if self.dialect == "postgresql":
            ids, segments, bands, floats = self._buyers_in_bulk(shop_id, len(numbers))
        else:
            rows = [tuple(row) for row in self._session.execute(select(*names, *numbers).where(*buyers))]
            ids = np.array([row[0] for row in rows], dtype=object)
            segments = np.array([row[1] for row in rows], dtype=object)
            bands = np.array([row[2] for row in rows], dtype=object)
            floats = np.array(
                [[np.nan if v is None else float(v) for v in row[3:]] for row in rows], dtype=np.float64
            )
            floats = floats.reshape(len(rows), len(numbers))
        now_epoch = now.timestamp()
        snapshot = {
            "customer_id": ids,
            "first_days_ago": (now_epoch - floats[:, 0]) / SECONDS_PER_DAY,
            "last_days_ago": (now_epoch - floats[:, 1]) / SECONDS_PER_DAY,
            "purchase_days": floats[:, 2].copy(),
            "net_spend": np.maximum(floats[:, 3], 0.0),
            "segment": segments,
            "churn_band": bands,
        }
        for offset, name in enumerate(PREVIOUS_SCORES, start=4):
            snapshot[name] = floats[:, offset].copy()
        return snapshot

    def _buyers_in_bulk(
        self, shop_id: str, width: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """PostgreSQL packs every buyer into a few values: ids, segments and bands as three texts,
        the numbers as one bytea of big-endian float8s. The aggregates read the same rows in the
        same order, so they line up; numpy reads the bytes without a Python object per value, and
        a million buyers arrive several times faster than fetched row by row."""
        numbers = " || ".join(
            f"float8send(coalesce(({expression})::float8, 'NaN'))"
            for expression in (
                "extract(epoch from first_purchase_at)",
                "extract(epoch from last_purchase_at)",
                "purchase_days",
                "gross_spend - refunded",
                *PREVIOUS_SCORES,
            )
        )
        raw = self._session.connection().connection.driver_connection
        assert raw is not None
        # Binary results: the bytea arrives as its bytes, not as hex text twice its size.
        with raw.cursor(binary=True) as cursor:
            cursor.execute(
                "SELECT string_agg(customer_id, E'\\n'), string_agg(coalesce(segment, ''), E'\\n'),"
                " string_agg(coalesce(churn_band, ''), E'\\n'), string_agg(numbers, ''::bytea), count(*)"
                f" FROM (SELECT customer_id, segment, churn_band, {numbers} AS numbers"
                "  FROM customer_state WHERE shop_id = %(shop_id)s AND purchase_count > 0) AS buyers",
                {"shop_id": shop_id},
            )
            found = cursor.fetchone()
        assert found is not None
        ids, segments, bands, packed, count = found
        if not count:
            empty = np.array([], dtype=object)
            return empty, empty, empty, np.empty((0, width))
        floats = np.frombuffer(packed, dtype=">f8").astype(np.float64).reshape(count, width)
        del packed
        return (
            np.array(ids.split("\n"), dtype=object),
            np.array([name or None for name in segments.split("\n")], dtype=object),
            np.array([name or None for name in bands.split("\n")], dtype=object),
            floats,
        )

    def write_scores(self, shop_id: str, columns: dict[str, Any], *, scored_at: datetime) -> None:
        """Write a recompute's results for many customers at once (set-based); NaN is NULL.

        PostgreSQL: COPY into a temporary table, then one UPDATE ... FROM. SQLite: executemany.
        """
        count = len(columns["customer_id"])
        if count == 0:
            return
        if self.dialect == "postgresql":
            self._copy_update(shop_id, columns, count, scored_at)
            return
        statement = (
            update(customer_state)
            .where(
                customer_state.c.shop_id == bindparam("b_shop_id"),
                customer_state.c.customer_id == bindparam("b_customer_id"),
                # A customer the consumer changed meanwhile keeps the consumer's fresher scores.
                customer_state.c.updated_at <= bindparam("b_scored_at"),
            )
            .values(
                {
                    **{name: bindparam(f"b_{name}") for name in SCORE_COLUMNS},
                    # SET expressions see the row as it was: the segment's start moves only on a change.
                    "segment_since": case(
                        (
                            customer_state.c.segment.is_distinct_from(bindparam("b_segment")),
                            bindparam("b_scored_at"),
                        ),
                        else_=customer_state.c.segment_since,
                    ),
                }
            )
        )
        values = {
            name: _python_values(columns[name]) for name in ("customer_id", *SCORE_COLUMNS) if name in columns
        }
        rows = [
            {
                "b_shop_id": shop_id,
                "b_scored_at": scored_at,
                **{f"b_{name}": v[index] for name, v in values.items()},
            }
            for index in range(count)
        ]
        for chunk in _chunks(rows, 5000):
            self._session.execute(statement, chunk)

    def _copy_update(self, shop_id: str, columns: dict[str, Any], count: int, scored_at: datetime) -> None:
        names = ["customer_id", *(name for name in SCORE_COLUMNS if name != "scored_at")]
        types = {
            "customer_id": "text",
            "r_score": "int",
            "f_score": "int",
            "m_score": "int",
            "segment": "text",
            "p_alive": "float8",
            "expected_purchases": "float8",
            "expected_spend": "float8",
            "clv": "float8",
            "churn_band": "text",
            "churn_score": "float8",
        }
        text_columns = [_copy_values(columns[name]) for name in names]
        raw = self._session.connection().connection.driver_connection
        assert raw is not None
        with raw.cursor() as cursor:
            cursor.execute(
                "CREATE TEMPORARY TABLE IF NOT EXISTS scores_incoming ("
                + ", ".join(f"{name} {types[name]}" for name in names)
                + ") ON COMMIT DROP"
            )
            cursor.execute("TRUNCATE scores_incoming")
            with cursor.copy(f"COPY scores_incoming ({', '.join(names)}) FROM STDIN") as copy:
                for start in range(0, count, 100_000):
                    rows = zip(*(column[start : start + 100_000] for column in text_columns), strict=True)
                    copy.write("\n".join(map("\t".join, rows)) + "\n")
            cursor.execute("ANALYZE scores_incoming")
            assignments = ", ".join(f"{name} = s.{name}" for name in names if name != "customer_id")
            cursor.execute(
                f"UPDATE customer_state AS c SET {assignments}, scored_at = %s,"
                " segment_since = CASE WHEN c.segment IS DISTINCT FROM s.segment"
                " THEN %s ELSE c.segment_since END"
                " FROM scores_incoming AS s WHERE c.shop_id = %s AND c.customer_id = s.customer_id"
                # A customer the consumer changed meanwhile keeps the consumer's fresher scores.
                " AND c.updated_at <= %s",
                (scored_at, scored_at, shop_id, scored_at),
            )

    def customers_updated_after(self, shop_id: str, moment: datetime) -> set[str]:
        """Customers whose state changed after `moment` (by the consumer, during a recompute)."""
        rows = self._session.execute(
            select(customer_state.c.customer_id).where(
                customer_state.c.shop_id == shop_id, customer_state.c.updated_at > moment
            )
        ).scalars()
        return set(rows)

    # --- recompute runs -------------------------------------------------------------------------

    def add_run(self, row: dict[str, Any]) -> None:
        self._session.execute(recompute_runs.insert().values(**row))

    def run(self, shop_id: str, run_id: str) -> dict[str, Any] | None:
        row = (
            self._session.execute(
                select(recompute_runs).where(
                    recompute_runs.c.shop_id == shop_id, recompute_runs.c.run_id == run_id
                )
            )
            .mappings()
            .first()
        )
        return dict(row) if row else None

    def queued_runs(self) -> list[dict[str, Any]]:
        rows = self._session.execute(
            select(recompute_runs)
            .where(recompute_runs.c.status == "queued")
            .order_by(recompute_runs.c.requested_at)
        ).mappings()
        return [dict(row) for row in rows]

    def update_run(self, run_id: str, **values: Any) -> None:
        self._session.execute(
            update(recompute_runs).where(recompute_runs.c.run_id == run_id).values(**values)
        )

    # --- plumbing -------------------------------------------------------------------------------

    def _by_shop(self, keys: Iterable[tuple[str, str]]) -> Iterable[tuple[str, list[str]]]:
        """Group (shop, id) pairs by shop; PostgreSQL takes a shop's ids as one array, however many."""
        return _by_shop(keys, size=None if self.dialect == "postgresql" else CHUNK)

    def _rows(self, table: Table, shop_id: str, column: Any, ids: list[str]) -> list[dict[str, Any]]:
        """The rows of `table` of one shop whose `column` is one of `ids`, as dicts."""
        if self.dialect != "postgresql":
            result = self._session.execute(select(table).where(table.c.shop_id == shop_id, column.in_(ids)))
            return [dict(row) for row in result.mappings()]
        # PostgreSQL: `= ANY(array)` is one parameter, where `IN (...)` renders, sends and parses
        # one per id; and psycopg's own rows skip SQLAlchemy's per-value result processing, whose
        # one job here (timestamps as UTC) is done below for the timestamp columns only.
        names = [c.name for c in table.c]
        stamps = [index for index, c in enumerate(table.c) if isinstance(c.type, UTCDateTime)]
        with self._raw_cursor() as cursor:
            cursor.execute(
                f"SELECT {', '.join(names)} FROM {table.name}"
                f" WHERE shop_id = %s AND {column.name} = ANY(%b::text[])",
                (shop_id, ids),
            )
            found = cursor.fetchall()
        rows: list[dict[str, Any]] = []
        for values in found:
            row = list(values)
            for index in stamps:
                if row[index] is not None:
                    row[index] = row[index].astimezone(UTC)
            rows.append(dict(zip(names, row, strict=True)))
        return rows

    def _upsert(
        self, table: Table, rows: list[dict[str, Any]], key: list[str], *, update: bool = True
    ) -> None:
        """Insert rows (unique by `key`), updating the rows that exist."""
        if not rows:
            return
        columns = [name for name in rows[0] if name not in key]
        if self.dialect == "postgresql" and update:
            self._array_upsert(table, rows, key, {name: f"EXCLUDED.{name}" for name in columns})
            return
        insert_fn = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        statement = insert_fn(table)
        if update:
            statement = statement.on_conflict_do_update(
                index_elements=key, set_={name: statement.excluded[name] for name in columns}
            )
        else:
            statement = statement.on_conflict_do_nothing(index_elements=key)
        for chunk in _chunks(rows):
            self._session.execute(statement, chunk)

    def _array_upsert(
        self, table: Table, rows: list[dict[str, Any]], key: list[str], assignments: dict[str, str]
    ) -> None:
        """PostgreSQL: one INSERT ... SELECT FROM unnest(arrays) ... ON CONFLICT, whatever the number
        of rows. Each column travels as one array parameter, so a batch of 500 customers is one
        statement and one round trip (a temporary table filled by COPY took four)."""
        names = list(rows[0])
        types = [_array_type(table.c[name].type) for name in names]
        updates = ", ".join(f"{name} = {value}" for name, value in assignments.items())
        columns = ", ".join(names)
        # Binary parameters: psycopg escapes each item of a text array in Python, binary is cheaper.
        arrays = ", ".join(f"%b::{type_}[]" for type_ in types)
        with self._raw_cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table.name} AS t ({columns}) SELECT {columns} FROM unnest({arrays})"
                f" AS incoming ({columns}) ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}",
                [
                    _array_values([row[name] for row in rows], type_)
                    for name, type_ in zip(names, types, strict=True)
                ],
            )

    def _raw_cursor(self) -> Any:
        raw = self._session.connection().connection.driver_connection
        assert raw is not None
        return raw.cursor()


def _array_type(column_type: Any) -> str:
    """The PostgreSQL type of a column without its length or precision: `text`, not varchar(128),
    so a too-long value fails on insert as it would without arrays instead of being cut short."""
    name = str(column_type.compile(dialect=postgresql.dialect())).split("(")[0].strip().lower()
    return "text" if name == "varchar" else name


def _array_values(values: list[Any], type_: str) -> list[Any]:
    """A column's values as one array parameter. psycopg dumps a list by the type of its items and
    refuses a mix (say a Decimal and an int in a numeric column): such a column, and JSON, goes as
    text, which PostgreSQL casts to the column's type."""
    if type_ == "jsonb":
        return [None if value is None else json_dumps(value) for value in values]
    if len({type(value) for value in values} - {type(None)}) <= 1:
        return values
    return [None if value is None else str(value) for value in values]


def _epoch(column: Any, dialect: str) -> ColumnElement[Any]:
    """Seconds since 1970 of a UTCDateTime column, computed by the database (no datetime objects)."""
    if dialect == "postgresql":
        return func.extract("epoch", column)
    # SQLite keeps UTCDateTime as naive UTC text; julianday counts days from noon, 4714 BC.
    return (func.julianday(column) - 2440587.5) * SECONDS_PER_DAY


def _calendar(column: Any, unit: str, dialect: str) -> ColumnElement[Any]:
    """The UTC day (YYYY-MM-DD) or month (YYYY-MM) of a UTCDateTime column, as text."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD" if unit == "day" else "YYYY-MM")
    # SQLite keeps UTCDateTime as naive UTC text, 'YYYY-MM-DD HH:MM:SS…'.
    return func.substr(column, 1, 10 if unit == "day" else 7)


def _when(condition: ColumnElement[bool], value: Any) -> ColumnElement[Any]:
    return case((condition, value), else_=0)


def _copy_values(values: Any) -> list[str]:
    """A column as COPY text fields: NaN and None are NULL. Ids and segment names never hold a
    tab, newline or backslash (their patterns forbid them), so nothing needs escaping."""
    array = np.asarray(values)
    if array.dtype.kind == "f":
        return [r"\N" if v != v else repr(v) for v in array.tolist()]
    return [r"\N" if v is None else str(v) for v in array.tolist()]


def _python_values(values: Any) -> list[Any]:
    array = np.asarray(values)
    if array.dtype.kind == "f":
        return [None if v != v else v for v in array.tolist()]
    return list(array.tolist())


def _by_shop(keys: Iterable[tuple[str, str]], size: int | None = CHUNK) -> Iterable[tuple[str, list[str]]]:
    """Group (shop, id) pairs by shop, in chunks: `shop = :s AND id IN (...)` plans in microseconds,
    where a row-value IN over (shop, id) pairs becomes hundreds of OR'ed conditions to plan."""
    grouped: dict[str, list[str]] = {}
    for shop_id, item_id in sorted(set(keys)):
        grouped.setdefault(shop_id, []).append(item_id)
    for shop_id, ids in grouped.items():
        if size is None:
            yield shop_id, ids
            continue
        for chunk in _chunks(ids, size):
            yield shop_id, chunk


def _chunks(items: list[Any], size: int = CHUNK) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
