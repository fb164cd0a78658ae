"""The segmentation-worker's command in the `retention` CLI: `retention analyze TRANSACTIONS.csv`.

It needs no servers and no database: it reads a transaction file, fits the models and prints or
writes the per-customer results. See docs/analyze.md.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from segmentation_worker.domain.segments import SCHEMES

if TYPE_CHECKING:
    from segmentation_worker.domain.analysis import Analysis, Columns, Transactions

console = Console(stderr=True)
# Below this size the file is read in well under a second: no progress bar.
PROGRESS_BAR_MIN_BYTES = 5_000_000


class OutputFormat(StrEnum):
    json = "json"
    csv = "csv"
    html = "html"


class Unit(StrEnum):
    days = "days"
    weeks = "weeks"


def register_commands(app: typer.Typer) -> None:
    app.command("analyze")(analyze)


def _calibration_end(text: str | None) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a date like 1997-09-30", param_hint="--calibration-end"
        ) from None


def analyze(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="CSV of transactions")
    ],
    customer_col: Annotated[str, typer.Option("--customer-col", help="Column with the customer id")],
    date_col: Annotated[str, typer.Option("--date-col", help="Column with the transaction date")],
    amount_col: Annotated[str, typer.Option("--amount-col", help="Column with the amount (not negative)")],
    calibration_end: Annotated[
        str | None,
        typer.Option(
            "--calibration-end",
            help="YYYY-MM-DD: fit on transactions up to this day, compare predictions with the ones after it "
            "(default: the last day in the file, no comparison)",
        ),
    ] = None,
    time_unit: Annotated[
        Unit, typer.Option("--time-unit", help="Time unit of recency, T and the horizon")
    ] = Unit.weeks,
    horizon: Annotated[
        float | None,
        typer.Option(
            "--horizon",
            min=0,
            help="Expected purchases over this many time units (default: a year, 365 days or 52 weeks)",
        ),
    ] = None,
    output_format: Annotated[OutputFormat, typer.Option("--format", help="Output format")] = OutputFormat.csv,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", dir_okay=False, help="Write here instead of standard output"),
    ] = None,
    clv_months: Annotated[
        int, typer.Option("--clv-months", min=1, max=120, help="CLV horizon in months")
    ] = 12,
    monthly_discount: Annotated[
        float, typer.Option("--monthly-discount", min=0, max=1, help="Discount rate per month for the CLV")
    ] = 0.01,
    segments: Annotated[
        str, typer.Option("--segments", help=f"Segment scheme: {' or '.join(SCHEMES)}")
    ] = "standard",
    date_format: Annotated[
        str | None,
        typer.Option("--date-format", help="strptime format if the dates are not ISO, e.g. '%d/%m/%Y'"),
    ] = None,
    delimiter: Annotated[str, typer.Option("--delimiter", help="Field separator of the file")] = ",",
    encoding: Annotated[str, typer.Option(help="Text encoding of the file, e.g. cp932")] = "utf-8-sig",
) -> None:
    """Fit BG/NBD and Gamma-Gamma to a shop's transactions and score every customer, with no servers.

    Prints the fitted parameters (to standard error).

    Writes per customer: RFM scores, segment, probability alive, expected purchases, expected spend, CLV.

    With --calibration-end, also compares the predictions with the purchases after that day.

    Nothing is written if the file has a bad line. See docs/analyze.md.
    """
    # Imported here, not at the top: every `retention` command loads this module to register
    # `analyze`, and only this one needs scipy and the report templates.
    from segmentation_worker.domain.analysis import AnalysisOptions, Columns, TransactionFileError, analyse
    from segmentation_worker.entrypoints import report

    if segments not in SCHEMES:
        raise typer.BadParameter(f"choose one of {', '.join(SCHEMES)}", param_hint="--segments")
    if len(delimiter) != 1:
        raise typer.BadParameter("must be one character", param_hint="--delimiter")
    options = AnalysisOptions(
        calibration_end=_calibration_end(calibration_end),
        time_unit="days" if time_unit is Unit.days else "weeks",
        horizon=horizon,
        clv_months=clv_months,
        monthly_discount_rate=monthly_discount,
        segment_scheme=segments,
    )
    columns = Columns(customer=customer_col, date=date_col, amount=amount_col)
    try:
        transactions = _read(file, columns, delimiter=delimiter, date_format=date_format, encoding=encoding)
        with console.status("fitting the models") as status:
            analysis = analyse(transactions, options, on_step=lambda step: status.update(step))
    except TransactionFileError as exc:
        console.print(f"[red]error:[/] {file.name}: {exc}")
        raise typer.Exit(2) from None
    except UnicodeDecodeError as exc:
        console.print(f"[red]error:[/] {file.name} is not {encoding} text ({exc.reason}); try --encoding")
        raise typer.Exit(2) from None
    _print_parameters(analysis)
    title = f"Customer analysis of {file.name}"
    with _destination(output) as out:
        if output_format is OutputFormat.json:
            report.write_json(analysis, out)
        elif output_format is OutputFormat.csv:
            report.write_csv(analysis, out)
        else:
            out.write(report.render_html(analysis, title=title))
    if output is not None:
        console.print(f"wrote {analysis.customers:,} customers to {output}")


def _read(
    file: Path, columns: Columns, *, delimiter: str, date_format: str | None, encoding: str
) -> Transactions:
    from segmentation_worker.domain.analysis import read_transactions

    size = file.stat().st_size
    with file.open("rb") as raw, io.TextIOWrapper(raw, encoding=encoding, newline="") as text:
        if size < PROGRESS_BAR_MIN_BYTES or not console.is_terminal:
            return read_transactions(text, columns, delimiter=delimiter, date_format=date_format)
        with Progress(
            TextColumn("reading"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rows]:>12,} rows"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task("reading", total=size, rows=0)

            def progressed(rows: int) -> None:
                # The byte position of the underlying file: ahead of the parser by at most a buffer.
                bar.update(task, completed=raw.tell(), rows=rows)

            return read_transactions(
                text, columns, delimiter=delimiter, date_format=date_format, on_progress=progressed
            )


@contextlib.contextmanager
def _destination(output: Path | None) -> Iterator[TextIO]:
    """Standard output, or the file: written under a temporary name and renamed when complete, so a
    failure leaves no half-written file (and an older file of that name untouched)."""
    if output is None:
        yield sys.stdout
        return
    partial = output.with_name(f".{output.name}.{os.getpid()}.{datetime.now().strftime('%H%M%S%f')}.partial")
    try:
        with partial.open("w", encoding="utf-8", newline="") as out:
            yield out
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)


def _print_parameters(analysis: Analysis) -> None:
    fitted = analysis.models
    table = Table(title="Fitted parameters", show_header=True)
    table.add_column("model")
    table.add_column("parameter")
    table.add_column("value", justify="right")
    table.add_column("std. error", justify="right")
    if fitted.bgnbd is not None and fitted.bgnbd_diagnostics is not None:
        errors = fitted.bgnbd_diagnostics.standard_errors
        for name, value in vars(fitted.bgnbd).items():
            table.add_row("BG/NBD", name, f"{value:.4g}", f"{errors.get(name, float('nan')):.3g}")
    if fitted.gamma_gamma is not None and fitted.gamma_gamma_diagnostics is not None:
        errors = fitted.gamma_gamma_diagnostics.standard_errors
        for name, value in vars(fitted.gamma_gamma).items():
            table.add_row("Gamma-Gamma", name, f"{value:.4g}", f"{errors.get(name, float('nan')):.3g}")
    console.print(
        f"{analysis.transactions:,} transactions, {analysis.customers:,} customers; calibration "
        f"{analysis.first_day} to {analysis.calibration_end} (time in {analysis.options.time_unit})"
    )
    if table.row_count:
        console.print(table)
    for problem in fitted.problems:
        console.print(f"[yellow]not fitted:[/] {problem}")
    holdout = analysis.holdout
    if holdout is not None:
        predicted = holdout.predicted_total
        console.print(
            f"holdout {holdout.start} to {holdout.end}: {holdout.actual_total:,.0f} repeat purchases, "
            + (f"{predicted:,.1f} predicted" if predicted is not None else "no prediction (no BG/NBD fit)")
        )
