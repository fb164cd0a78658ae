"""History import: check a whole file, then store and publish its events in chunked transactions.

Nothing is half-written: the file is checked completely before the first write, and any invalid
row refuses the whole import. The writes then go in chunks, one transaction each, exactly as
`POST /v1/events` stores events (`ingested_events`, idempotent on shop and event id, plus the
outbox). A crash between chunks leaves whole chunks behind; running the import again (or resuming
from a checkpoint) completes it, because the event ids derive from the file's order ids.
"""

from __future__ import annotations

import codecs
import hashlib
import io
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO
from zoneinfo import ZoneInfo

from sqlalchemy import select

from customer_api.adapters import tables
from customer_api.adapters.bulk import (
    AlreadyStored,
    SerializedEvent,
    encode_json,
    serialize_event,
    store_new_events,
)
from customer_api.domain.history_import import (
    DEFAULT_MAX_ERRORS,
    ColumnMapping,
    Format,
    HistoryEvent,
    ImportRejected,
    Record,
    RowError,
    RowParser,
    ValidationReport,
    history_events,
    read_records,
    validate,
)
from customer_api.service_layer.uow import CustomerApiUnitOfWork
from retention_shared.events.catalogue import spec_for
from retention_shared.events.envelope import partition_key

DEFAULT_CHUNK_SIZE = 5000
# Imported history feeds the history and segmentation but earns no loyalty points: the
# activity consumer tells these events apart by their source.
SOURCE = "customer-api/import"

UowFactory = Callable[[], CustomerApiUnitOfWork]

# The data holds only strings, integers, lists and objects: the same text as
# retention_shared.db.json_dumps writes, without building an encoder per call.
_encode_json = encode_json


class UnknownShop(LookupError):
    pass


@dataclass(frozen=True)
class ShopProfile:
    id: str
    timezone: str
    currency: str


@dataclass
class ImportProgress:
    """Where a running import stands, after each committed chunk."""

    rows: int = 0  # records of the file done; a resume skips this many
    events: int = 0
    imported: int = 0
    duplicates: int = 0


@dataclass
class ImportSummary:
    rows: int
    events: int
    imported: int
    duplicates: int
    purchases: int
    refunds: int
    recent: int
    resumed_from_row: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None


class FileSource:
    """A file to import, readable as often as needed (the check and the write each read it once)."""

    def __init__(self, path: Path, file_format: Format, encoding: str = "utf-8-sig") -> None:
        try:
            codecs.lookup(encoding)
        except LookupError as exc:
            raise ValueError(f"unknown encoding {encoding!r}") from exc
        self.path = path
        self.file_format: Format = file_format
        self.encoding = encoding
        self.size = path.stat().st_size
        self._sha256: str | None = None
        self._reading: BinaryIO | None = None

    @property
    def sha256(self) -> str:
        if self._sha256 is None:
            with self.path.open("rb") as handle:
                self._sha256 = hashlib.file_digest(handle, "sha256").hexdigest()
        return self._sha256

    @sha256.setter
    def sha256(self, value: str) -> None:
        """For a file whose digest was taken while it was written (an upload)."""
        self._sha256 = value

    def position(self) -> int:
        """How far the current read has got, in bytes (for progress bars)."""
        reading = self._reading
        return reading.tell() if reading is not None and not reading.closed else self.size

    def lines(self) -> Iterator[str]:
        with self.path.open("rb") as raw:
            self._reading = raw
            text = io.TextIOWrapper(raw, encoding=self.encoding, errors="strict", newline="")
            try:
                yield from text
            except UnicodeDecodeError as exc:
                raise ImportRejected(
                    [RowError(self._first_undecodable_line(), f"not {self.encoding} text: {exc.reason}")]
                ) from None
            finally:
                self._reading = None

    def _first_undecodable_line(self) -> int:
        decoder = codecs.getincrementaldecoder(self.encoding)(errors="strict")
        number = 0
        with self.path.open("rb") as handle:
            for number, raw in enumerate(handle, 1):  # noqa: B007 - the line reached is the answer
                try:
                    decoder.decode(raw)
                except UnicodeDecodeError:
                    return number
        return number

    def records(self, mapping: ColumnMapping) -> Iterator[Record]:
        return read_records(self.lines(), self.file_format, mapping)


def shop_profile(uow_factory: UowFactory, shop_id: str) -> ShopProfile:
    with uow_factory() as uow:
        row = uow.session.execute(
            select(tables.shops.c.timezone, tables.shops.c.currency).where(tables.shops.c.id == shop_id)
        ).first()
    if row is None:
        raise UnknownShop(shop_id)
    return ShopProfile(shop_id, row.timezone, row.currency)


def parser_for(shop: ShopProfile, mapping: ColumnMapping, now: datetime) -> RowParser:
    return RowParser(mapping.with_currency(shop.currency), timezone=ZoneInfo(shop.timezone), now=now)


def check_file(
    source: FileSource,
    parser: RowParser,
    *,
    now: datetime,
    on_bytes: Callable[[int], None] | None = None,
    max_errors: int = DEFAULT_MAX_ERRORS,
) -> ValidationReport:
    """Read the whole file once (a suspected split order costs a second read). `on_bytes` hears how
    far the check has got, now and then."""
    return validate(
        lambda: source.records(parser.mapping),
        parser,
        now=now,
        max_errors=max_errors,
        on_rows=(lambda _rows: on_bytes(source.position())) if on_bytes is not None else None,
    )


def import_rows(
    *,
    uow_factory: UowFactory,
    shop_id: str,
    rows: Iterable[HistoryEvent],
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    on_progress: Callable[[ImportProgress], None] | None = None,
    correlation_id: str | None = None,
) -> ImportProgress:
    """Store and publish the events, `chunk_size` per transaction; each new event once, whatever
    was stored before. `on_progress` runs after each commit, in order, before the next chunk is
    handed to the database.

    While one chunk is being written (on a worker thread, which mostly waits for the database), the
    next one is read and prepared here, so reading the file and writing overlap."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    clock = uow_factory().clock
    progress = ImportProgress()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="history-import") as writer:
        in_flight: Future[_Written] | None = None
        careful = False  # after a chunk with duplicates, expect more (a re-run or a resume)
        for chunk in _chunks(rows, chunk_size):
            prepared = _prepare(chunk, shop_id, clock.now(), correlation_id)
            if in_flight is not None:
                written = in_flight.result()
                careful = written.imported < written.events
                _account(written, progress, on_progress)
            in_flight = writer.submit(_write_chunk, uow_factory, shop_id, prepared, careful)
        if in_flight is not None:
            _account(in_flight.result(), progress, on_progress)
    return progress


@dataclass
class _Prepared:
    events: list[SerializedEvent]
    last_row: int
    received_at: datetime


@dataclass
class _Written:
    last_row: int
    events: int
    imported: int


def _chunks(rows: Iterable[HistoryEvent], size: int) -> Iterator[list[HistoryEvent]]:
    chunk: list[HistoryEvent] = []
    for event in rows:
        chunk.append(event)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _prepare(chunk: list[HistoryEvent], shop_id: str, now: datetime, correlation_id: str | None) -> _Prepared:
    shop_json = _encode_json(shop_id)
    correlation_json = _encode_json(correlation_id)
    serialized = [_serialize(event, shop_json, correlation_json) for event in chunk]
    return _Prepared(serialized, chunk[-1].last_row, now)


def _write_chunk(uow_factory: UowFactory, shop_id: str, prepared: _Prepared, careful: bool) -> _Written:
    try:
        return _write_transaction(uow_factory, shop_id, prepared, careful=careful)
    except AlreadyStored:
        return _write_transaction(uow_factory, shop_id, prepared, careful=True)


def _write_transaction(
    uow_factory: UowFactory, shop_id: str, prepared: _Prepared, *, careful: bool
) -> _Written:
    """One transaction: the new events and their outbox rows."""
    with uow_factory() as uow:
        outbox = uow.outbox
        inserted = store_new_events(
            uow.session, shop_id, prepared.events, prepared.received_at, careful=careful
        )
        for event in prepared.events:
            if event.event_id in inserted:
                inserted.discard(event.event_id)  # an id twice in one chunk is published once
                outbox.add_serialized(
                    event_id=event.event_id,
                    topic=_TOPICS[event.type],
                    key=partition_key(shop_id, event.customer_id),
                    envelope=event.envelope,
                )
        added = outbox.pending
        uow.commit()
    return _Written(prepared.last_row, len(prepared.events), added)


def _account(
    written: _Written, progress: ImportProgress, on_progress: Callable[[ImportProgress], None] | None
) -> None:
    progress.rows = written.last_row
    progress.events += written.events
    progress.imported += written.imported
    progress.duplicates += written.events - written.imported
    if on_progress is not None:
        on_progress(progress)


_TOPICS = {name: spec_for(name).topic.name for name in ("purchase_made", "refund_issued")}


def envelope_json(event: HistoryEvent, shop_json: str, correlation_json: str) -> str:
    """The event's envelope as JSON (see `serialize_event`)."""
    return _serialize(event, shop_json, correlation_json).envelope


def _serialize(event: HistoryEvent, shop_json: str, correlation_json: str) -> SerializedEvent:
    return serialize_event(
        event_id=event.id,
        event_type=event.type,
        customer_id=event.customer_id,
        occurred_at=event.occurred_at,
        data=event.data,
        source=SOURCE,
        shop_json=shop_json,
        correlation_json=correlation_json,
    )


def import_file(
    *,
    uow_factory: UowFactory,
    shop_id: str,
    source: FileSource,
    mapping: ColumnMapping,
    now: datetime,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    skip_rows: int | Callable[[str], int] = 0,
    on_checked: Callable[[ValidationReport], None] | None = None,
    on_progress: Callable[[ImportProgress], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
    correlation_id: str | None = None,
    max_errors: int = DEFAULT_MAX_ERRORS,
) -> ImportSummary:
    """Check the whole file, then import it. Raises ImportRejected (nothing written) if any row is
    invalid, UnknownShop if the shop does not exist.

    `skip_rows` resumes after that many records; given a function, it is asked with the file's
    SHA-256 once the file was found valid."""
    shop = shop_profile(uow_factory, shop_id)
    parser = parser_for(shop, mapping, now)
    report = check_file(source, parser, now=now, on_bytes=on_bytes, max_errors=max_errors)
    if not report.valid:
        raise report.rejection()
    if on_checked is not None:
        on_checked(report)
    skip = skip_rows(source.sha256) if callable(skip_rows) else skip_rows
    progress = import_rows(
        uow_factory=uow_factory,
        shop_id=shop_id,
        rows=history_events(source.records(parser.mapping), parser, skip_rows=skip),
        chunk_size=chunk_size,
        on_progress=on_progress,
        correlation_id=correlation_id or f"import-{source.sha256[:16]}",
    )
    return ImportSummary(
        rows=report.rows,
        events=report.events,
        imported=progress.imported,
        duplicates=progress.duplicates,
        purchases=report.purchases,
        refunds=report.refunds,
        recent=report.recent,
        resumed_from_row=skip,
        first_at=report.first_at,
        last_at=report.last_at,
    )
