"""Queries on the survey-service's tables."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Date,
    DateTime,
    Table,
    and_,
    any_,
    bindparam,
    cast,
    delete,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from survey_service.adapters.bulk import insert_rows
from survey_service.adapters.tables import (
    SCORE_COLUMNS,
    invitations,
    response_tallies,
    responses,
    survey_customers,
    surveys,
    tenancy,
)


class SurveyRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def _insert(self, table: Table) -> Any:
        dialect = self._session.get_bind().dialect.name
        return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)

    # --- shops and customers -----------------------------------------------------------------

    def shop(self, shop_id: str) -> dict[str, Any] | None:
        row = (
            self._session.execute(select(tenancy.shops).where(tenancy.shops.c.shop_id == shop_id))
            .mappings()
            .first()
        )
        return dict(row) if row else None

    def customer(self, shop_id: str, customer_id: str) -> dict[str, Any] | None:
        row = (
            self._session.execute(
                select(survey_customers).where(
                    survey_customers.c.shop_id == shop_id, survey_customers.c.customer_id == customer_id
                )
            )
            .mappings()
            .first()
        )
        return dict(row) if row else None

    def remember_customer(self, shop_id: str, customer_id: str, **values: Any) -> None:
        """Upsert what we know of a customer (locale, segment); only the given columns change."""
        statement = self._insert(survey_customers).values(shop_id=shop_id, customer_id=customer_id, **values)
        self._session.execute(
            statement.on_conflict_do_update(
                index_elements=["shop_id", "customer_id"],
                set_={name: statement.excluded[name] for name in values},
            )
        )

    def claim_invitation_slot(self, shop_id: str, customer_id: str, now: datetime, cutoff: datetime) -> bool:
        """Atomically record an invitation now unless the customer was invited after `cutoff`.

        The row lock of the upsert makes concurrent invitations for one customer take turns, so
        two of them can never both pass the fatigue check."""
        statement = self._insert(survey_customers).values(
            shop_id=shop_id, customer_id=customer_id, last_invited_at=now
        )
        last = survey_customers.c.last_invited_at
        claimed = self._session.execute(
            statement.on_conflict_do_update(
                index_elements=["shop_id", "customer_id"],
                set_={"last_invited_at": now},
                where=or_(last.is_(None), last <= cutoff),
            ).returning(survey_customers.c.customer_id)
        ).first()
        return claimed is not None

    # --- surveys -------------------------------------------------------------------------------

    def survey(self, shop_id: str, survey_id: str) -> dict[str, Any] | None:
        row = (
            self._session.execute(
                select(surveys).where(surveys.c.shop_id == shop_id, surveys.c.survey_id == survey_id)
            )
            .mappings()
            .first()
        )
        return dict(row) if row else None

    def default_survey(self, shop_id: str, kind: str) -> dict[str, Any] | None:
        row = (
            self._session.execute(
                select(surveys).where(surveys.c.shop_id == shop_id, surveys.c.default_kind == kind)
            )
            .mappings()
            .first()
        )
        return dict(row) if row else None

    def default_kinds(self, shop_id: str) -> set[str]:
        rows = self._session.execute(
            select(surveys.c.default_kind).where(
                surveys.c.shop_id == shop_id, surveys.c.default_kind.is_not(None)
            )
        )
        return {row[0] for row in rows}

    def add_survey(self, values: dict[str, Any], *, if_default_missing: bool = False) -> bool:
        """Insert a survey; with `if_default_missing`, quietly skip if the shop already has that default."""
        statement = self._insert(surveys).values(**values)
        if if_default_missing:
            statement = statement.on_conflict_do_nothing(index_elements=["shop_id", "default_kind"])
        return bool(getattr(self._session.execute(statement), "rowcount", 0))

    def update_survey(self, shop_id: str, survey_id: str, values: dict[str, Any]) -> None:
        self._session.execute(
            update(surveys)
            .where(surveys.c.shop_id == shop_id, surveys.c.survey_id == survey_id)
            .values(**values)
        )

    def list_surveys(self, shop_id: str, *, include_archived: bool) -> list[dict[str, Any]]:
        query = select(surveys).where(surveys.c.shop_id == shop_id)
        if not include_archived:
            query = query.where(surveys.c.archived_at.is_(None))
        rows = self._session.execute(query.order_by(surveys.c.created_at, surveys.c.survey_id)).mappings()
        return [dict(row) for row in rows]

    # --- invitations ---------------------------------------------------------------------------

    def invitation_by_key(self, shop_id: str, idempotency_key: str) -> dict[str, Any] | None:
        row = (
            self._session.execute(
                select(invitations).where(
                    invitations.c.shop_id == shop_id, invitations.c.idempotency_key == idempotency_key
                )
            )
            .mappings()
            .first()
        )
        return dict(row) if row else None

    def add_invitation(self, values: dict[str, Any]) -> None:
        self._session.execute(insert(invitations).values(**values))

    def invitations_for_answer(
        self, token_ids: Sequence[str], *, lock: bool, with_texts: bool = False
    ) -> dict[str, dict[str, Any]]:
        """The invitations behind these tokens (by token id), with survey, shop and any answer so far.

        With `lock`, the invitation rows stay locked until commit, in token order, so two submissions
        of one link take turns. The lock is taken by a statement of its own: PostgreSQL re-reads a
        row it waited for, but not the rows joined to it, so a locking join would miss the answer
        the other transaction just gave. The survey's texts come only `with_texts` (for the page)."""
        wanted = self._token_in(token_ids)
        if lock:
            self._session.execute(
                select(invitations.c.invitation_id)
                .where(wanted)
                .order_by(invitations.c.token_id)
                .with_for_update()
            )
        survey_columns = [surveys.c.comment_enabled] + ([surveys.c.texts] if with_texts else [])
        query = (
            select(
                invitations,
                *survey_columns,
                tenancy.shops.c.name.label("shop_name"),
                tenancy.shops.c.timezone.label("shop_timezone"),
                responses.c.response_id,
                responses.c.score,
                responses.c.comment,
                responses.c.answered_at,
                responses.c.revision,
            )
            .join(surveys, surveys.c.survey_id == invitations.c.survey_id)
            .outerjoin(tenancy.shops, tenancy.shops.c.shop_id == invitations.c.shop_id)
            .outerjoin(responses, responses.c.invitation_id == invitations.c.invitation_id)
            .where(wanted)
        )
        return {row["token_id"]: dict(row) for row in self._session.execute(query).mappings()}

    def _token_in(self, token_ids: Sequence[str]) -> ColumnElement[bool]:
        # On PostgreSQL the ids travel as one array parameter: an IN list of a batch's hundreds of
        # parameters makes a statement of new text for every batch size, which psycopg and the
        # server parse again each time.
        if self._session.get_bind().dialect.name == "postgresql":
            return invitations.c.token_id == any_(
                bindparam("token_ids", list(token_ids), type_=postgresql.ARRAY(invitations.c.token_id.type))
            )
        return invitations.c.token_id.in_(token_ids)

    # --- responses -----------------------------------------------------------------------------

    def add_responses(self, rows: list[dict[str, Any]]) -> None:
        insert_rows(self._session, responses, rows)

    def update_responses(self, changes: dict[str, dict[str, Any]]) -> None:
        if not changes:
            return
        statement = (
            update(responses)
            .where(responses.c.response_id == bindparam("target_id"))
            .values(
                score=bindparam("score"),
                comment=bindparam("comment"),
                updated_at=bindparam("updated_at"),
                revision=bindparam("revision"),
            )
        )
        rows = [{"target_id": response_id, **values} for response_id, values in changes.items()]
        self._session.connection().execute(statement, rows)

    def count(self, table: Table, shop_id: str, day: date, key: dict[str, Any], column: str, by: int) -> None:
        """Add `by` to one tally row (inserted at `by` if new)."""
        statement = self._insert(table).values(shop_id=shop_id, day=day, **key, **{column: by})
        self._session.execute(
            statement.on_conflict_do_update(
                index_elements=[c.name for c in table.primary_key.columns],
                set_={column: table.c[column] + statement.excluded[column]},
            )
        )

    def count_responses(self, deltas: list[tuple[tuple[Any, ...], list[int]]]) -> None:
        """Add to the response tallies: ((shop, survey, day, touchpoint, segment), change per score)
        each, every key at most once."""
        if not deltas:
            return
        names = ("shop_id", "survey_id", "day", "touchpoint", "segment")
        rows = [
            {**dict(zip(names, key, strict=True)), **dict(zip(SCORE_COLUMNS, change, strict=True))}
            for key, change in deltas
        ]
        insert_rows(self._session, response_tallies, rows, add_on_conflict=SCORE_COLUMNS)

    def comments(
        self,
        shop_id: str,
        survey_id: str,
        *,
        conditions: Sequence[ColumnElement[bool]],
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        query = select(responses).where(
            responses.c.shop_id == shop_id,
            responses.c.survey_id == survey_id,
            responses.c.comment.is_not(None),
            *conditions,
        )
        if after is not None:
            at, response_id = after
            query = query.where(
                or_(
                    responses.c.answered_at < at,
                    and_(responses.c.answered_at == at, responses.c.response_id < response_id),
                )
            )
        query = query.order_by(responses.c.answered_at.desc(), responses.c.response_id.desc()).limit(limit)
        return [dict(row) for row in self._session.execute(query).mappings()]

    def stream_responses(
        self, shop_id: str, survey_id: str, conditions: Sequence[ColumnElement[bool]]
    ) -> Iterator[dict[str, Any]]:
        query = (
            select(responses)
            .where(responses.c.shop_id == shop_id, responses.c.survey_id == survey_id, *conditions)
            .order_by(responses.c.answered_at, responses.c.response_id)
            .execution_options(yield_per=1000)
        )
        for row in self._session.execute(query).mappings():
            yield dict(row)

    # --- tallies -------------------------------------------------------------------------------

    def breakdowns(
        self,
        table: Table,
        counts: Sequence[str],
        shop_id: str,
        survey_id: str,
        *,
        interval: str,
        first_day: date | None,
        last_day: date | None,
        segment: str | None,
    ) -> dict[str, list[tuple[Any, ...]]]:
        """Sums of the tally's count columns per period, per segment and per touchpoint, within the
        days and segment: {"period": [(period, sum, ...)], "segment": [...], "touchpoint": [...]}.

        On PostgreSQL this is one scan of the tallies with GROUPING SETS, the periods cut by
        date_trunc (`interval` is day, week or month; weeks start on Monday). Elsewhere it is a
        query per breakdown, by day, and the caller folds the days into periods."""
        where = [table.c.shop_id == shop_id, table.c.survey_id == survey_id]
        if first_day is not None:
            where.append(table.c.day >= first_day)
        if last_day is not None:
            where.append(table.c.day <= last_day)
        if segment is not None:
            where.append(table.c.segment == segment)
        sums = [func.sum(table.c[name]) for name in counts]
        found: dict[str, list[tuple[Any, ...]]] = {"period": [], "segment": [], "touchpoint": []}
        if self._session.get_bind().dialect.name != "postgresql":
            for name, key in (
                ("period", table.c.day),
                ("segment", table.c.segment),
                ("touchpoint", table.c.touchpoint),
            ):
                rows = self._session.execute(select(key, *sums).where(*where).group_by(key))
                found[name] = [tuple(row) for row in rows]
            return found
        # A date cast to timestamp (not timestamptz) truncates without time-zone arithmetic.
        period = cast(func.date_trunc(interval, cast(table.c.day, DateTime)), Date)
        sets = func.grouping_sets(tuple_(period), tuple_(table.c.segment), tuple_(table.c.touchpoint))
        # GROUPING() has a bit set for each of these columns that a row's set leaves out.
        which = func.grouping(period, table.c.segment, table.c.touchpoint)
        query = select(which, period, table.c.segment, table.c.touchpoint, *sums).where(*where)
        names = {0b011: ("period", 1), 0b101: ("segment", 2), 0b110: ("touchpoint", 3)}
        for row in self._session.execute(query.group_by(sets)):
            name, position = names[row[0]]
            found[name].append((row[position], *row[4:]))
        return found

    # --- erasure -------------------------------------------------------------------------------

    def erase_customer(self, shop_id: str, customer_id: str) -> dict[str, int]:
        """Delete the customer's answers, comments, links and record; the tallies keep the counts."""
        comments = self._session.execute(
            select(func.count()).where(
                responses.c.shop_id == shop_id,
                responses.c.customer_id == customer_id,
                responses.c.comment.is_not(None),
            )
        ).scalar_one()
        purged = {"comments": int(comments)}
        for name, table in (
            ("responses", responses),
            ("invitations", invitations),
            ("customer_records", survey_customers),
        ):
            result = self._session.execute(
                delete(table).where(table.c.shop_id == shop_id, table.c.customer_id == customer_id)
            )
            purged[name] = int(getattr(result, "rowcount", 0) or 0)
        return purged
