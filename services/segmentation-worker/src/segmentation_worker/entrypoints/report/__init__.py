"""Outputs of `retention analyze`: JSON, CSV and a self-contained HTML report."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict
from typing import Any, TextIO

import numpy as np
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from segmentation_worker.domain.analysis import Analysis
from segmentation_worker.entrypoints.report import charts

DECIMALS = 6  # of the per-customer values in JSON and CSV

_environment = Environment(
    loader=PackageLoader("segmentation_worker.entrypoints.report", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null, numpy scalars plain numbers, floats rounded."""
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    return value


def overview(analysis: Analysis) -> dict[str, Any]:
    """Everything except the per-customer rows: the data's span, the fits and the holdout totals."""
    fitted = analysis.models
    options = analysis.options
    result: dict[str, Any] = {
        "data": {
            "transactions": analysis.transactions,
            "customers": analysis.customers,
            "first_day": analysis.first_day.isoformat(),
            "calibration_end": analysis.calibration_end.isoformat(),
            "last_day": analysis.last_day.isoformat(),
            "time_unit": options.time_unit,
            "horizon": options.horizon_units,
            "clv_months": options.clv_months,
            "monthly_discount_rate": options.monthly_discount_rate,
            "segment_scheme": options.segment_scheme,
        },
        "models": {
            "bgnbd": asdict(fitted.bgnbd) if fitted.bgnbd else None,
            "bgnbd_diagnostics": asdict(fitted.bgnbd_diagnostics) if fitted.bgnbd_diagnostics else None,
            "gamma_gamma": asdict(fitted.gamma_gamma) if fitted.gamma_gamma else None,
            "gamma_gamma_diagnostics": (
                asdict(fitted.gamma_gamma_diagnostics) if fitted.gamma_gamma_diagnostics else None
            ),
            "problems": list(fitted.problems),
        },
        "segments": [
            {"name": name, "label": label, "customers": count}
            for name, label, count in analysis.segment_sizes()
        ],
    }
    holdout = analysis.holdout
    if holdout is not None:
        result["holdout"] = {
            "start": holdout.start.isoformat(),
            "end": holdout.end.isoformat(),
            "length": holdout.length,
            "actual_repeat_purchases": holdout.actual_total,
            "predicted_repeat_purchases": holdout.predicted_total,
            "mean_absolute_error_per_customer": holdout.mean_absolute_error,
            "correlation_per_customer": holdout.correlation,
            "customers_new_in_holdout": holdout.new_customers,
            "by_calibration_frequency": holdout.by_frequency,
        }
    return _clean(result)


def write_json(analysis: Analysis, out: TextIO) -> None:
    """The overview, then the customers one per line (json's C encoder: fast for large files)."""
    document = json.dumps(overview(analysis), ensure_ascii=False, indent=1)
    out.write(document[: document.rindex("}")].rstrip() + ',\n "customers": [\n')
    first = True
    for row in analysis.rows(DECIMALS):
        out.write(("  " if first else ",\n  ") + json.dumps(row, ensure_ascii=False))
        first = False
    out.write("\n ]\n}\n")


def write_csv(analysis: Analysis, out: TextIO) -> None:
    """One row per customer; missing values are empty cells."""
    columns = analysis.columns(DECIMALS)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(zip(*columns.values(), strict=True))


def render_html(analysis: Analysis, *, title: str) -> str:
    info = overview(analysis)
    segment_sizes = analysis.segment_sizes()
    figures: dict[str, Markup] = {
        "segments": Markup(
            charts.horizontal_bars(
                [label for _, label, _ in segment_sizes],
                [count for _, _, count in segment_sizes],
                "Customers per segment",
            )
        ),
        "cohorts": Markup(
            charts.heat_map(
                [
                    f"{label} ({size:,})"
                    for label, size in zip(analysis.cohorts.cohorts, analysis.cohorts.sizes, strict=True)
                ],
                [str(month) for month in range(analysis.cohorts.shares.shape[1])],
                analysis.cohorts.shares,
                "Share of each monthly cohort buying k months after its first purchase (%)",
            )
        ),
    }
    if analysis.clv is not None:
        figures["clv"] = Markup(
            charts.histogram(
                analysis.clv, "Distribution of CLV", f"CLV over {analysis.options.clv_months} months"
            )
        )
    holdout = analysis.holdout
    if holdout is not None and holdout.predicted is not None:
        groups = holdout.by_frequency
        figures["holdout"] = Markup(
            charts.paired_bars(
                [f"{int(g['frequency'])}{'+' if g['or_more'] else ''}" for g in groups],
                [g["actual_mean"] for g in groups],
                [g["predicted_mean"] for g in groups],
                ("actual", "predicted"),
                "Mean repeat purchases in the holdout by calibration frequency",
                "repeat purchases in the calibration period",
            )
        )
    top = _top_customers(analysis, 20)
    return _environment.get_template("analysis.html.j2").render(
        title=title, info=info, figures=figures, top_customers=top
    )


def _top_customers(analysis: Analysis, count: int) -> list[dict[str, Any]]:
    """The customers with the highest CLV (or spend, without a model)."""
    key = analysis.clv if analysis.clv is not None else analysis.summary.total_spend
    order = np.argsort(-key, kind="stable")[:count].tolist()
    chosen = set(order)
    by_index = {index: row for index, row in enumerate(analysis.rows()) if index in chosen}
    return [by_index[index] for index in order]
