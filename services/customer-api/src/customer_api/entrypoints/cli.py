"""The customer-api's commands in the `retention` CLI: `retention import` loads a shop's history.

The command writes to the customer-api's database of the configured mode (RETENTION_* settings:
the SQLite file under RETENTION_DATA_DIR in embedded mode, PostgreSQL in distributed mode); the
running platform's outbox relay then publishes the events. It does not call the HTTP API.
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import sessionmaker

from customer_api.adapters import tables
from customer_api.adapters.import_checkpoint import Checkpoint, CheckpointStore
from customer_api.domain.history_import import (
    FIELDS,
    FOLLOWUP_HORIZON,
    ColumnMapping,
    Format,
    ImportRejected,
    MappingError,
    ValidationReport,
)
from customer_api.service_layer.history_import import (
    DEFAULT_CHUNK_SIZE,
    FileSource,
    ImportProgress,
    ImportSummary,
    UnknownShop,
    import_file,
)
from customer_api.service_layer.uow import CustomerApiUnitOfWork
from retention_shared.clock import SystemClock
from retention_shared.config import PlatformSettings
from retention_shared.logs import configure_logging

console = Console(stderr=True)

FORMATS_BY_SUFFIX: dict[str, Format] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def register_commands(app: typer.Typer) -> None:
    app.command("import")(import_history)


def import_history(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="CSV or JSON Lines file")
    ],
    shop: Annotated[str, typer.Option("--shop", help="The shop's id (shop_…)")],
    file_format: Annotated[
        str | None, typer.Option("--format", help="csv or jsonl (default: from the file name)")
    ] = None,
    map_: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            help="FIELD=COLUMN, repeatable, e.g. --map 'customer_id=Customer ID'. "
            f"Fields: {', '.join(FIELDS)}",
        ),
    ] = None,
    mapping_file: Annotated[
        Path | None,
        typer.Option("--mapping", exists=True, dir_okay=False, help="YAML file of fields and options"),
    ] = None,
    currency: Annotated[
        str | None, typer.Option(help="Currency of rows without one (default: the shop's)")
    ] = None,
    date_format: Annotated[
        str | None, typer.Option(help="strptime format of the dates, e.g. '%d/%m/%Y %H:%M'")
    ] = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of the file, e.g. cp932")] = "utf-8-sig",
    chunk_size: Annotated[int, typer.Option(min=1, help="Events per transaction")] = DEFAULT_CHUNK_SIZE,
    restart: Annotated[
        bool, typer.Option("--restart", help="Ignore the resume point of an earlier attempt")
    ] = False,
) -> None:
    """Import a shop's past orders as purchase (and refund) events.

    The whole file is checked first: if any line is invalid, nothing is written.

    Then events are written in chunks: an interrupted import resumes, a repeated one adds nothing.
    """
    settings = PlatformSettings()
    configure_logging("WARNING", "text")
    try:
        mapping = _mapping(mapping_file, map_ or [], currency=currency, date_format=date_format)
        source = FileSource(file, _format(file, file_format), encoding)
    except (MappingError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None

    from customer_api.service import definition

    url = definition.database_url(settings)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        console.print(
            f"[red]error:[/] no customer-api database at {url.removeprefix('sqlite:///')}: start the "
            "platform once (`retention run all`), or set RETENTION_DATA_DIR / RETENTION_MODE"
        )
        raise typer.Exit(1)
    engine = definition.create_engine(settings)
    uow_factory = partial(
        CustomerApiUnitOfWork,
        sessionmaker(engine, expire_on_commit=False),
        tables=tables.messaging,
        clock=SystemClock(),
        source=definition.name,
    )
    checkpoints = CheckpointStore(settings.data_dir / "imports")
    started = time.monotonic()
    # The file is read on this thread while a chunk is written on another, which mostly waits for the
    # database; with the default 5 ms switch interval every wake-up of the writer waits for this
    # thread to let go of the GIL. Switching sooner made imports a quarter faster.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    try:
        summary, sha256 = _run(uow_factory, shop, source, mapping, chunk_size, checkpoints, restart)
    except UnknownShop:
        console.print(f"[red]error:[/] no shop {shop!r} in the customer-api database")
        raise typer.Exit(1) from None
    except ImportRejected as rejected:
        _print_rejection(rejected)
        raise typer.Exit(1) from None
    except DBAPIError as exc:
        console.print(f"[red]error:[/] database: {exc.orig}")
        console.print("Run `retention migrate customer-api` if the schema is missing.")
        raise typer.Exit(1) from None
    finally:
        sys.setswitchinterval(switch_interval)
        engine.dispose()
    checkpoints.clear(shop, sha256)
    _print_summary(summary, time.monotonic() - started)


def _run(
    uow_factory: Any,
    shop: str,
    source: FileSource,
    mapping: ColumnMapping,
    chunk_size: int,
    checkpoints: CheckpointStore,
    restart: bool,
) -> tuple[ImportSummary, str]:
    fingerprint = mapping.fingerprint()
    earlier = Checkpoint(shop, "", fingerprint, 0)
    with Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        TaskProgressColumn(),
        RowsPerSecond(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        checking = bar.add_task("checking", total=max(source.size, 1))
        importing: TaskID | None = None

        def resume_point(sha256: str) -> int:
            nonlocal earlier
            found = None if restart else checkpoints.load(shop, sha256, fingerprint)
            if found is None:
                earlier = Checkpoint(shop, sha256, fingerprint, 0)
                return 0
            earlier = found
            bar.console.print(f"resuming after row {found.rows:,} (use --restart to start over)")
            if importing is not None:
                bar.update(importing, completed=found.rows)
                bar.reset(importing, completed=found.rows)  # the speed counts this run's rows only
            return found.rows

        def checked(report: ValidationReport) -> None:
            nonlocal importing
            bar.update(checking, completed=source.size or 1)
            importing = bar.add_task("importing", total=max(report.rows, 1))

        def progressed(progress: ImportProgress) -> None:
            checkpoints.save(
                Checkpoint(
                    shop,
                    earlier.sha256,
                    fingerprint,
                    progress.rows,
                    earlier.imported + progress.imported,
                    earlier.duplicates + progress.duplicates,
                )
            )
            if importing is not None:
                bar.update(importing, completed=progress.rows)

        summary = import_file(
            uow_factory=uow_factory,
            shop_id=shop,
            source=source,
            mapping=mapping,
            now=uow_factory().clock.now(),
            chunk_size=chunk_size,
            skip_rows=resume_point,
            on_checked=checked,
            on_progress=progressed,
            on_bytes=lambda done: bar.update(checking, completed=done),
        )
        if importing is not None:
            bar.update(importing, completed=summary.rows or 1)
    summary.imported += earlier.imported
    summary.duplicates += earlier.duplicates
    return summary, source.sha256


class RowsPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        unit = "B/s" if task.description.strip() == "checking" else "rows/s"
        return Text(f"{speed:>10,.0f} {unit}" if speed else " " * 17, style="progress.data.speed")


def _format(file: Path, chosen: str | None) -> Format:
    name = chosen or FORMATS_BY_SUFFIX.get(file.suffix.lower())
    if name not in ("csv", "jsonl"):
        raise ValueError(f"cannot tell the format of {file.name}; pass --format csv or --format jsonl")
    return "csv" if name == "csv" else "jsonl"


def _mapping(
    mapping_file: Path | None, pairs: list[str], *, currency: str | None, date_format: str | None
) -> ColumnMapping:
    options: dict[str, Any] = {}
    if mapping_file is not None:
        document = yaml.safe_load(mapping_file.read_text()) or {}
        if not isinstance(document, dict):
            raise MappingError(f"{mapping_file}: expected a mapping of fields and options")
        options.update(document)
    for pair in pairs:
        field_name, separator, column = pair.partition("=")
        if not separator or field_name.strip() not in FIELDS:
            raise MappingError(f"--map {pair!r}: expected FIELD=COLUMN, FIELD one of {', '.join(FIELDS)}")
        options[field_name.strip()] = column
    if currency is not None:
        options["default_currency"] = currency.upper()
    if date_format is not None:
        options["date_format"] = date_format
    return ColumnMapping.from_options(options)


def _print_rejection(rejected: ImportRejected) -> None:
    console.print("[red]The file was not imported; nothing was written.[/]")
    for error in rejected.errors:
        console.print(f"  {error}", markup=False, highlight=False)
    if rejected.total > len(rejected.errors):
        console.print(f"  … and {rejected.total - len(rejected.errors)} more")


def _print_summary(summary: ImportSummary, seconds: float) -> None:
    def day(moment: datetime | None) -> str:
        return moment.date().isoformat() if moment else "-"

    rate = (summary.rows - summary.resumed_from_row) / seconds if seconds > 0 else 0.0
    console.print(
        f"[green]imported[/] {summary.imported:,} new event(s), {summary.duplicates:,} already there: "
        f"{summary.purchases:,} purchases and {summary.refunds:,} refunds from {summary.rows:,} rows, "
        f"{day(summary.first_at)} to {day(summary.last_at)}, in {seconds:.1f} s ({rate:,.0f} rows/s)"
    )
    if summary.recent:
        hours = int(FOLLOWUP_HORIZON.total_seconds() // 3600)
        console.print(
            f"[yellow]note:[/] {summary.recent:,} purchase(s) are less than {hours} hours old: the "
            "follow-up playbooks treat them like new orders (older ones start nothing)."
        )
