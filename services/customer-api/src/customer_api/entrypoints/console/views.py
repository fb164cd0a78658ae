"""Turning API answers into what the templates show: KPI cards, the timeline, charts, form documents.

Plain functions of data, so they are tested without a browser or a server.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import yaml
from markupsafe import Markup

from customer_api.entrypoints.console import charts
from customer_api.entrypoints.console.gateway import Answer
from customer_api.entrypoints.console.i18n import translator

Translate = Callable[..., str]


def translate(locale: str) -> Translate:
    return translator(locale)


@dataclass(frozen=True)
class KpiSpec:
    key: str
    # "higher" or "lower": which way is better, and so which way the target points.
    better: str
    target: float | None
    kind: str  # count, rate (0..1), money, score


# The seeds' KPIs, in the order the overview shows them, with the seeds' targets where they give one:
# NPS >= 50, CSAT >= 4.0, CES <= 2.0, churn <= 5% a month.
KPIS: tuple[KpiSpec, ...] = (
    KpiSpec("active_customers", "higher", None, "count"),
    KpiSpec("retention_rate", "higher", None, "rate"),
    KpiSpec("churn_rate", "lower", 0.05, "rate"),
    KpiSpec("repeat_purchase_rate", "higher", None, "rate"),
    KpiSpec("arpu", "higher", None, "money"),
    KpiSpec("average_clv", "higher", None, "money"),
    KpiSpec("nps", "higher", 50.0, "score"),
    KpiSpec("csat", "higher", 4.0, "score"),
    KpiSpec("ces", "lower", 2.0, "score"),
    KpiSpec("returning_revenue", "higher", None, "money"),
)
# Names the KPI API may use for the same measures.
KPI_ALIASES = {
    "returning_customer_revenue": "returning_revenue",
    "revenue_from_returning_customers": "returning_revenue",
    "clv_average": "average_clv",
    "avg_clv": "average_clv",
    "repeat_rate": "repeat_purchase_rate",
}


@dataclass(frozen=True)
class KpiCard:
    spec: KpiSpec
    value: float | None
    previous: float | None
    unavailable: bool

    @property
    def change(self) -> float | None:
        if self.value is None or self.previous is None:
            return None
        return self.value - self.previous

    @property
    def on_target(self) -> bool | None:
        if self.spec.target is None or self.value is None:
            return None
        return (
            self.value >= self.spec.target if self.spec.better == "higher" else self.value <= self.spec.target
        )

    @property
    def improved(self) -> bool | None:
        change = self.change
        if change is None or change == 0:
            return None
        return change > 0 if self.spec.better == "higher" else change < 0


def format_value(value: float | None, kind: str, currency: str = "") -> str:
    if value is None:
        return "—"
    if kind == "rate":
        return f"{value * 100:.1f}%"
    if kind == "count":
        return f"{value:,.0f}"
    if kind == "money":
        return f"{value:,.0f}{(' ' + currency) if currency else ''}"
    return f"{value:.1f}" if abs(value) < 100 else f"{value:,.0f}"


def format_percent(value: Any) -> str:
    number = _number(value)
    return "—" if number is None else f"{number * 100:.1f}%"


def format_change(card: KpiCard) -> str:
    change = card.change
    if change is None:
        return "—"
    sign = "+" if change > 0 else ""
    if card.spec.kind == "rate":
        return f"{sign}{change * 100:.1f} pt"
    return f"{sign}{format_value(change, card.spec.kind)}"


def _number(value: Any) -> float | None:
    if isinstance(value, dict):
        value = value.get("value")
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(Decimal(str(value)))
    except (InvalidOperation, ValueError):
        return None


def kpi_values(document: Any) -> dict[str, float | None]:
    """KPI name → number, from `{"kpis": {...}}`, `{"kpis": [{"name", "value"}]}` or a flat object."""
    if not isinstance(document, dict):
        return {}
    source: Any = document.get("kpis", document)
    values: dict[str, float | None] = {}
    if isinstance(source, list):
        for item in source:
            if isinstance(item, dict) and "name" in item:
                values[KPI_ALIASES.get(str(item["name"]), str(item["name"]))] = _number(item.get("value"))
    elif isinstance(source, dict):
        for name, value in source.items():
            values[KPI_ALIASES.get(str(name), str(name))] = _number(value)
    return values


# Which figure of a survey's results is the seeds' measure: NPS itself; CSAT and CES as the mean
# score (CSAT on 1-5 against >= 4.0, CES on 1-7 against <= 2.0).
SURVEY_FIGURE = {"nps": "nps", "csat": "mean", "ces": "mean"}


def survey_per_kind(surveys: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Kind → the survey to report: the shop's default of that kind, else its first live one."""
    chosen: dict[str, str] = {}
    for survey in surveys:
        kind = str(survey.get("kind", ""))
        if kind not in SURVEY_FIGURE or survey.get("archived"):
            continue
        if survey.get("default_for") == kind or kind not in chosen:
            chosen[kind] = str(survey.get("survey_id"))
    return chosen


def survey_figure(kind: str, answer: Answer) -> float | None:
    if not answer.ok or not isinstance(answer.data, dict):
        return None
    summary = answer.data.get("summary") or {}
    return _number(summary.get(SURVEY_FIGURE[kind])) if isinstance(summary, dict) else None


def kpi_cards(
    current: Answer, previous: Answer, surveys: dict[str, tuple[Answer, Answer]] | None = None
) -> list[KpiCard]:
    """One card per seeds' KPI: this period, the previous one, and the target where there is one."""
    now = kpi_values(current.data) if current.ok else {}
    before = kpi_values(previous.data) if previous.ok else {}
    for kind, (this_period, last_period) in (surveys or {}).items():
        now[kind] = survey_figure(kind, this_period)
        before[kind] = survey_figure(kind, last_period)
    cards = []
    for spec in KPIS:
        from_surveys = spec.key in SURVEY_FIGURE
        available = spec.key in now if from_surveys else current.ok and spec.key in now
        cards.append(KpiCard(spec, now.get(spec.key), before.get(spec.key), unavailable=not available))
    return cards


def comparison_chart(cards: Sequence[KpiCard], t: Translate) -> Markup | None:
    """This period against the previous one for the rates, where both are known."""
    rates = [card for card in cards if card.spec.kind == "rate" and card.value is not None]
    if not rates:
        return None
    return charts.grouped_bar_chart(
        [t(f"kpi_{card.spec.key}") for card in rates],
        [
            (t("current"), [(card.value or 0.0) * 100 for card in rates]),
            (t("previous"), [(card.previous or 0.0) * 100 for card in rates]),
        ],
        title=f"{t('current')} / {t('previous')}",
        unit="%",
    )


def survey_trend_charts(surveys: dict[str, tuple[Answer, Answer]], t: Translate) -> list[Markup]:
    """NPS, CSAT and CES over the period's days or weeks, each with the seeds' target line."""
    drawn = []
    for kind, (answer, _) in surveys.items():
        if not answer.ok or not isinstance(answer.data, dict):
            continue
        points = [
            (str(point.get("period_start", ""))[5:10], value)
            for point in answer.data.get("trend") or []
            if (value := _number(point.get(SURVEY_FIGURE[kind]))) is not None
        ]
        if points:
            spec = next(spec for spec in KPIS if spec.key == kind)
            drawn.append(
                charts.line_chart([(t(f"kpi_{kind}"), points)], title=t(f"kpi_{kind}"), target=spec.target)
            )
    return drawn


def cohort_chart(kpis: Answer, t: Translate) -> Markup | None:
    """The monthly cohort retention heat map from the KPI answer's `cohorts`."""
    if not kpis.ok or not isinstance(kpis.data, dict):
        return None
    cohorts = [c for c in kpis.data.get("cohorts") or [] if isinstance(c, dict)]
    if not cohorts:
        return None
    width = max(len(c.get("retention") or []) for c in cohorts)
    return charts.heat_map(
        [
            (f"{c.get('month')} ({c.get('customers')})", [_number(v) for v in c.get("retention") or []])
            for c in cohorts
        ],
        [f"M{index}" for index in range(width)],
        title=t("cohorts"),
    )


# --- the single customer view ------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineEntry:
    at: datetime | None
    kind: str
    summary: str
    status: str | None = None
    reason: str | None = None
    followup_id: str | None = None
    cancellable: bool = False


def _moment(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _summary(kind: str, data: dict[str, Any]) -> str:
    if kind in ("purchase_made", "refund_issued"):
        parts = [
            str(data.get("order_id") or ""),
            f"{data.get('amount', '')} {data.get('currency', '')}".strip(),
        ]
        items = data.get("items") or []
        if items:
            parts.append(", ".join(str(item.get("name") or item.get("sku") or "") for item in items[:3]))
        return " · ".join(part for part in parts if part)
    if kind.startswith("ticket_"):
        return " · ".join(
            str(data[k]) for k in ("ticket_id", "subject", "channel", "category") if data.get(k)
        )
    if kind.startswith("survey") or "score" in data:
        return " · ".join(str(data[k]) for k in ("kind", "score", "comment") if data.get(k) is not None)
    scalars = [
        f"{k}: {v}" for k, v in data.items() if isinstance(v, str | int | float) and not isinstance(v, bool)
    ]
    return " · ".join(scalars[:4])


# Follow-up steps the scheduler still lets staff cancel (it answers 409 for the others).
CANCELLABLE = frozenset({"scheduled", "paused"})


def timeline(activity: Answer, followups: Answer) -> list[TimelineEntry]:
    """One timeline, newest first: the customer-api's activity history plus every follow-up step
    the scheduler knows (scheduled, sent, skipped with its reason, cancelled)."""
    entries: list[TimelineEntry] = []
    have_followups = followups.ok and isinstance(followups.data, dict)
    if activity.ok and isinstance(activity.data, dict):
        for entry in activity.data.get("entries", []):
            kind = str(entry.get("kind", ""))
            # The scheduler's own list is richer (status, reason); use it when it answered.
            if have_followups and kind.startswith("followup_"):
                continue
            entries.append(
                TimelineEntry(_moment(entry.get("at")), kind, _summary(kind, entry.get("data") or {}))
            )
    if have_followups:
        for step in followups.data.get("followups", []):
            status = str(step.get("status", ""))
            entries.append(
                TimelineEntry(
                    at=_moment(step.get("sent_at") or step.get("due_at")),
                    kind="followup",
                    summary=" · ".join(
                        str(part)
                        for part in (step.get("playbook"), step.get("step"), step.get("channel"))
                        if part
                    ),
                    status=status,
                    reason=step.get("reason"),
                    followup_id=str(step.get("id")),
                    cancellable=status in CANCELLABLE,
                )
            )
    entries.sort(key=lambda entry: entry.at.timestamp() if entry.at else 0.0, reverse=True)
    return entries


# --- forms ---------------------------------------------------------------------------------------


def tiers_text(tiers: Sequence[dict[str, Any]]) -> str:
    return "\n".join(f"{tier['name']} {tier['min_spend']} {tier['multiplier']}" for tier in tiers)


def loyalty_document(fields: dict[str, str], t: Translate) -> tuple[dict[str, Any], dict[str, str]]:
    """The loyalty settings body from the form, or errors by field; the API validates the rest."""
    errors: dict[str, str] = {}
    document: dict[str, Any] = {}
    for name in ("points_per_unit", "points_expire_after_days", "tier_window_days"):
        raw = fields.get(name, "").strip()
        if not raw.lstrip("-").isdigit():
            errors[name] = t("required") if not raw else f"'{raw}': whole number expected"
        else:
            document[name] = int(raw)
    unit = fields.get("unit_amount", "").strip()
    try:
        document["unit_amount"] = str(Decimal(unit))
    except InvalidOperation:
        errors["unit_amount"] = t("required") if not unit else f"'{unit}': number expected"
    tiers = []
    for number, line in enumerate(fields.get("tiers", "").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3:
            errors["tiers"] = f"line {number}: 'name min_spend multiplier' expected"
            break
        tiers.append({"name": parts[0], "min_spend": parts[1], "multiplier": parts[2]})
    if not tiers and "tiers" not in errors:
        errors["tiers"] = t("required")
    document["tiers"] = tiers
    return document, errors


def yaml_document(text: str) -> tuple[Any, dict[str, str]]:
    """Parse YAML (JSON is YAML too) into a document, or an error naming the line."""
    if not text.strip():
        return None, {"document": "empty"}
    try:
        return yaml.safe_load(text), {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        return None, {"document": f"{where}{getattr(exc, 'problem', None) or exc}"}


def as_yaml(document: Any) -> str:
    if document is None:
        return ""
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)


def items_of(answer: Answer | None, key: str) -> list[dict[str, Any]]:
    """The list in an answer, whether it is the body itself or under `key` (or `items`)."""
    if answer is None or not answer.ok:
        return []
    data = answer.data
    if isinstance(data, dict):
        data = data.get(key, data.get("items", []))
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


def error_for(errors: dict[str, str], *names: str) -> str | None:
    """The first error whose dotted field path is one of `names` or lies under one of them."""
    for field, message in errors.items():
        for name in names:
            if field == name or field.startswith(f"{name}."):
                return f"{field}: {message}" if field != name else message
    return None


# --- segments, deliveries, surveys ---------------------------------------------------------------


def segment_charts(answer: Answer, t: Translate) -> dict[str, Markup]:
    """Sizes, revenue share and average CLV per segment, from the segment list."""
    segments = items_of(answer, "segments")
    if not segments:
        return {}
    labels = [str(s.get("label") or s.get("name")) for s in segments]
    drawn = {
        "sizes": charts.bar_chart(
            [(label, _number(s.get("customers")) or 0.0) for label, s in zip(labels, segments, strict=True)],
            title=t("size"),
        ),
        "revenue": charts.bar_chart(
            [
                (label, (_number(s.get("revenue_share")) or 0.0) * 100)
                for label, s in zip(labels, segments, strict=True)
            ],
            title=t("revenue_share"),
            unit="%",
        ),
    }
    clv = [(label, _number(s.get("average_clv"))) for label, s in zip(labels, segments, strict=True)]
    if any(value is not None for _, value in clv):
        drawn["clv"] = charts.bar_chart(
            [(label, value or 0.0) for label, value in clv], title=t("clv_by_segment")
        )
    return drawn


def segment_moves_chart(answer: Answer, t: Translate) -> Markup | None:
    """Moves between segments as a grid: a row per segment left (or a first segment), a column
    per segment entered, each cell the number of moves."""
    moves = items_of(answer, "moves")
    if not moves:
        return None
    first = t("first_segment")
    sources = sorted({str(m.get("from_segment") or first) for m in moves}, key=lambda name: name != first)
    targets = sorted({str(m.get("to_segment")) for m in moves})
    counts = {
        (str(m.get("from_segment") or first), str(m.get("to_segment"))): _number(m.get("moves")) or 0.0
        for m in moves
    }
    return charts.heat_map(
        [(source, [counts.get((source, target)) for target in targets]) for source in sources],
        targets,
        title=t("transitions"),
        cell=44,
        percent=False,
    )


def clv_histogram(answer: Answer, t: Translate) -> Markup | None:
    buckets = items_of(answer, "buckets")
    if not buckets:
        return None
    bars = []
    for bucket in buckets:
        low, high = _number(bucket.get("from")) or 0.0, _number(bucket.get("to"))
        label = f"{low:,.0f}+" if high is None else f"{low:,.0f}–{high:,.0f}"
        bars.append((label, _number(bucket.get("customers")) or 0.0))
    return charts.bar_chart(bars, title=t("clv_distribution"))


def delivery_charts(summary: Answer, t: Translate) -> list[Markup]:
    rows = items_of(summary, "counts")
    if not rows:
        return []
    return [
        charts.bar_chart(
            [
                (f"{row.get('channel')} · {row.get('status')}", _number(row.get("count")) or 0.0)
                for row in rows
            ],
            title=t("by_channel"),
            highlight={
                f"{row.get('channel')} · {row.get('status')}"
                for row in rows
                if row.get("status") in ("failed", "dead_lettered")
            },
        )
    ]


@dataclass(frozen=True)
class SurveySection:
    survey: dict[str, Any]
    results: Answer
    comments: Answer
    figure: float | None
    charts: list[Markup]
    comment_rows: list[dict[str, Any]]


def survey_sections(
    surveys: Sequence[dict[str, Any]], results: Sequence[Answer], comments: Sequence[Answer], t: Translate
) -> list[SurveySection]:
    """Per survey: its figure, its trend against the target, breakdowns by segment and touchpoint."""
    sections = []
    for survey, result, comment in zip(surveys, results, comments, strict=True):
        kind = str(survey.get("kind", ""))
        figure_name = SURVEY_FIGURE.get(kind, "mean")
        target = {"nps": 50.0, "csat": 4.0, "ces": 2.0}.get(kind)
        drawn: list[Markup] = []
        if result.ok and isinstance(result.data, dict):
            trend = [
                (str(point.get("period_start", ""))[5:10], value)
                for point in result.data.get("trend") or []
                if (value := _number(point.get(figure_name))) is not None
            ]
            if trend:
                drawn.append(
                    charts.line_chart(
                        [(kind.upper(), trend)], title=f"{t('trends')}: {kind.upper()}", target=target
                    )
                )
            for key, label_of in (("by_segment", "segment"), ("by_touchpoint", "touchpoint")):
                bars = [
                    (str(group.get(label_of) or "—"), value)
                    for group in result.data.get(key) or []
                    if (value := _number(group.get(figure_name))) is not None
                ]
                if bars:
                    drawn.append(charts.bar_chart(bars, title=f"{t(key)}: {kind.upper()}"))
        sections.append(
            SurveySection(
                survey,
                result,
                comment,
                survey_figure(kind, result) if kind in SURVEY_FIGURE else None,
                drawn,
                items_of(comment, "comments"),
            )
        )
    return sections
