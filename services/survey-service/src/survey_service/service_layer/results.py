"""Results: the survey's figures over a period, as a trend and broken down by segment and touchpoint,
read from the daily tallies; and the comments, as a list or a CSV export."""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement

from retention_shared.problems import invalid
from survey_service.adapters.tables import SCORE_COLUMNS, invitation_tallies, response_tallies, responses
from survey_service.domain.metrics import metrics_for
from survey_service.domain.surveys import SCALES, Kind, is_detractor
from survey_service.service_layer.surveys import resolve_survey
from survey_service.service_layer.uow import SurveyUnitOfWork


class Interval(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


def period_start(day: date, interval: Interval) -> date:
    if interval is Interval.DAY:
        return day
    if interval is Interval.WEEK:
        return day - timedelta(days=day.weekday())  # ISO weeks start on Monday
    return day.replace(day=1)


@dataclass(frozen=True)
class ResultsQuery:
    first_day: date | None = None
    last_day: date | None = None
    segment: str | None = None
    interval: Interval = Interval.WEEK


def _window(query: ResultsQuery) -> dict[str, Any]:
    return {
        "interval": query.interval.value,
        "first_day": query.first_day,
        "last_day": query.last_day,
        "segment": query.segment,
    }


def _rate(answered: int, invited: int) -> float | None:
    return round(answered / invited, 4) if invited else None


def _group(kind: Kind, histogram: dict[int, int], invited: int) -> dict[str, Any]:
    answered = sum(histogram.values())
    return {
        "responses": answered,
        "invitations": invited,
        "response_rate": _rate(answered, invited),
        **metrics_for(kind, histogram),
    }


def survey_results(
    *, uow: SurveyUnitOfWork, shop_id: str, survey_id: str, query: ResultsQuery
) -> dict[str, Any]:
    if query.first_day and query.last_day and query.first_day > query.last_day:
        raise invalid("query.from", "must not be after `to`")
    with uow:
        survey = resolve_survey(uow, shop_id, survey_id)
        kind = Kind(survey["kind"])

        answered = uow.surveys.breakdowns(
            response_tallies, SCORE_COLUMNS, shop_id, survey["survey_id"], **_window(query)
        )
        invited = uow.surveys.breakdowns(
            invitation_tallies, ("invitations",), shop_id, survey["survey_id"], **_window(query)
        )

    def histograms(rows: list[tuple[Any, ...]], key: Any = lambda value: value) -> dict[Any, dict[int, int]]:
        grouped: dict[Any, dict[int, int]] = defaultdict(dict)
        for group, *counts in rows:
            bucket = grouped[key(group)]
            for score, count in enumerate(counts):
                if count:
                    bucket[score] = bucket.get(score, 0) + int(count)
        return grouped

    def invitations(rows: list[tuple[Any, ...]], key: Any = lambda value: value) -> dict[Any, int]:
        totals: dict[Any, int] = defaultdict(int)
        for group, count in rows:
            totals[key(group)] += int(count)
        return totals

    def in_period(day: date) -> date:
        # PostgreSQL already cut the periods (a period's start maps to itself); SQLite gives days.
        return period_start(day, query.interval)

    overall: dict[int, int] = defaultdict(int)
    for histogram in histograms(answered["period"]).values():
        for score, count in histogram.items():
            overall[score] += count
    distribution = {score: overall.get(score, 0) for score in SCALES[kind].points}

    trend_hist = histograms(answered["period"], in_period)
    trend_invited = invitations(invited["period"], in_period)
    periods = sorted(set(trend_hist) | set(trend_invited))
    segment_hist, segment_invited = histograms(answered["segment"]), invitations(invited["segment"])
    touch_hist, touch_invited = histograms(answered["touchpoint"]), invitations(invited["touchpoint"])
    return {
        "survey_id": survey["survey_id"],
        "kind": kind.value,
        "from": query.first_day,
        "to": query.last_day,
        "segment": query.segment,
        "interval": query.interval.value,
        "summary": _group(kind, dict(overall), sum(count for _period, count in invited["period"])),
        "distribution": {str(score): count for score, count in distribution.items()},
        "trend": [
            {"period_start": period, **_group(kind, trend_hist.get(period, {}), trend_invited.get(period, 0))}
            for period in periods
        ],
        "by_segment": [
            {
                "segment": segment or None,
                **_group(kind, segment_hist.get(segment, {}), segment_invited.get(segment, 0)),
            }
            for segment in sorted(set(segment_hist) | set(segment_invited))
        ],
        "by_touchpoint": [
            {
                "touchpoint": touchpoint,
                **_group(kind, touch_hist.get(touchpoint, {}), touch_invited.get(touchpoint, 0)),
            }
            for touchpoint in sorted(set(touch_hist) | set(touch_invited))
        ],
    }


# --- comments ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommentFilter:
    min_score: int | None = None
    max_score: int | None = None
    first_day: date | None = None  # shop-local days, like the results
    last_day: date | None = None
    segment: str | None = None
    touchpoint: str | None = None

    def conditions(self, timezone: str | None) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        if self.first_day is not None:
            found.append(responses.c.answered_at >= day_start(self.first_day, timezone))
        if self.last_day is not None:
            found.append(responses.c.answered_at < day_start(self.last_day + timedelta(days=1), timezone))
        if self.min_score is not None:
            found.append(responses.c.score >= self.min_score)
        if self.max_score is not None:
            found.append(responses.c.score <= self.max_score)
        if self.segment is not None:
            found.append(responses.c.segment == self.segment)
        if self.touchpoint is not None:
            found.append(responses.c.touchpoint == self.touchpoint)
        return found


def day_start(day: date, timezone: str | None) -> datetime:
    """The moment a shop-local day begins (UTC for an unknown zone)."""
    try:
        zone = ZoneInfo(timezone) if timezone else UTC
    except (KeyError, ValueError):
        zone = UTC
    return datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)


def _timezone(uow: SurveyUnitOfWork, shop_id: str) -> str | None:
    shop = uow.surveys.shop(shop_id)
    return shop["timezone"] if shop else None


def _encode_cursor(row: dict[str, Any]) -> str:
    raw = json.dumps([row["answered_at"].isoformat(), row["response_id"]]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        at, response_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(at), str(response_id)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise invalid("query.cursor", "is not a cursor this API gave out") from exc


def _comment_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "response_id": row["response_id"],
        "customer_id": row["customer_id"],
        "score": row["score"],
        "detractor": is_detractor(Kind(row["kind"]), row["score"]),
        "comment": row["comment"],
        "touchpoint": row["touchpoint"],
        "segment": row["segment"],
        "context": {"type": row["context_type"], "id": row["context_id"]},
        "locale": row["locale"],
        "answered_at": row["answered_at"],
        "updated_at": row["updated_at"],
    }


def list_comments(
    *,
    uow: SurveyUnitOfWork,
    shop_id: str,
    survey_id: str,
    where: CommentFilter,
    cursor: str | None,
    limit: int,
) -> dict[str, Any]:
    after = _decode_cursor(cursor) if cursor else None
    with uow:
        survey = resolve_survey(uow, shop_id, survey_id)
        rows = uow.surveys.comments(
            shop_id,
            survey["survey_id"],
            conditions=where.conditions(_timezone(uow, shop_id)),
            after=after,
            limit=limit + 1,
        )
    page = rows[:limit]
    return {
        "comments": [_comment_view(row) for row in page],
        "next_cursor": _encode_cursor(page[-1]) if len(rows) > limit else None,
    }


CSV_COLUMNS = (
    "response_id",
    "answered_at",
    "updated_at",
    "customer_id",
    "score",
    "detractor",
    "touchpoint",
    "segment",
    "context_type",
    "context_id",
    "locale",
    "comment",
)


def _cell(value: Any) -> str:
    """A CSV cell that a spreadsheet shows as text: a leading =, +, - or @ would start a formula."""
    text = "" if value is None else value.isoformat() if isinstance(value, datetime) else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def export_csv(
    *, uow: SurveyUnitOfWork, shop_id: str, survey_id: str, where: CommentFilter
) -> tuple[str, Iterator[str]]:
    """The survey's responses as CSV (UTF-8 with a BOM, so spreadsheets read Japanese correctly).
    Returns (survey id, the CSV in chunks); the rows stream from the database as they are written."""
    with uow:
        survey_key = resolve_survey(uow, shop_id, survey_id)["survey_id"]
        conditions = where.conditions(_timezone(uow, shop_id))

    def chunks() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        buffer.write("\ufeff")
        writer.writerow(CSV_COLUMNS)
        with uow:
            for count, row in enumerate(
                uow.surveys.stream_responses(shop_id, survey_key, conditions), start=1
            ):
                writer.writerow(
                    [
                        _cell(row["response_id"]),
                        _cell(row["answered_at"]),
                        _cell(row["updated_at"]),
                        _cell(row["customer_id"]),
                        row["score"],
                        str(is_detractor(Kind(row["kind"]), row["score"])).lower(),
                        _cell(row["touchpoint"]),
                        _cell(row["segment"]),
                        _cell(row["context_type"]),
                        _cell(row["context_id"]),
                        _cell(row["locale"]),
                        _cell(row["comment"]),
                    ]
                )
                if count % 500 == 0:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
        yield buffer.getvalue()

    return survey_key, chunks()
