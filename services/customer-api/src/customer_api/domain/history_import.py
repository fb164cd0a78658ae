"""History import: order exports (CSV or JSON Lines) mapped onto purchase and refund events.

Plain Python, no framework. A file goes through three steps:

1. a reader (`read_csv`, `read_jsonl`) turns it into `Record`s: the raw value of every mapped field,
   with the line the record starts on;
2. `RowParser` checks and converts one record into an `ImportRow`, or raises `RowError` naming the
   line, the column and what is wrong;
3. `OrderAssembler` turns consecutive purchase rows of one order into one `purchase_made` with
   several items, and every refund row into one `refund_issued`.

`validate` runs the three over a whole file without keeping it in memory and collects the first
errors; `history_events` is the same pipeline for writing, once the file was found valid.

Event ids derive from the order id (`import:<order_id>`), so importing a file again adds nothing.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from retention_shared.events.envelope import ID_PATTERN

REQUIRED_FIELDS = ("customer_id", "order_id", "occurred_at", "amount")
OPTIONAL_FIELDS = ("currency", "sku", "name", "category", "quantity", "unit_price", "kind")
FIELDS = REQUIRED_FIELDS + OPTIONAL_FIELDS
OPTIONS = (
    "default_currency",
    "date_format",
    "amount_scope",
    "refund_kinds",
    "purchase_kinds",
    "delimiter",
)
Format = Literal["csv", "jsonl"]
AmountScope = Literal["row", "order"]
Kind = Literal["purchase", "refund"]

DEFAULT_REFUND_KINDS = frozenset({"refund", "refunded", "return", "returned"})
DEFAULT_PURCHASE_KINDS = frozenset({"purchase", "order", "sale", "paid"})  # and always an empty kind
MAX_ITEMS = 1000  # the catalogue's limit on items per purchase_made
# The follow-up playbooks ignore purchases older than this (followup_scheduler Trigger.max_event_age),
# so only imported orders younger than it start follow-ups; `validate` counts them as `recent`.
FOLLOWUP_HORIZON = timedelta(days=2)
FUTURE_TOLERANCE = timedelta(days=1)
DEFAULT_MAX_ERRORS = 20
PROGRESS_EVERY = 10_000

_ID = re.compile(ID_PATTERN.removeprefix("^").removesuffix("$")).fullmatch
_AMOUNT = re.compile(r"-?\d+(\.\d+)?").fullmatch
_PLAIN_AMOUNT = re.compile(r"\d+(\.\d+)?").fullmatch
_CURRENCY = re.compile(r"[A-Z]{3}").fullmatch


class MappingError(ValueError):
    """A column mapping that cannot be used (unknown field, bad option value)."""


@dataclass
class RowError(Exception):
    """What is wrong with one line of the file; `column` is the file's own column name."""

    line: int
    message: str
    column: str | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = f"line {self.line}"
        if self.column is not None:
            where += f", column {self.column!r}"
            if self.field is not None and self.field != self.column:
                where += f" ({self.field})"
        return f"{where}: {self.message}"


class ImportRejected(Exception):
    """The file is invalid; nothing was written."""

    def __init__(self, errors: list[RowError], total: int | None = None) -> None:
        self.errors = errors
        self.total = total if total is not None else len(errors)
        more = f" (and {self.total - len(errors)} more)" if self.total > len(errors) else ""
        super().__init__("; ".join(str(e) for e in errors[:3]) + more)


@dataclass(frozen=True)
class ColumnMapping:
    """Which column of the file holds each field, and how to read the values.

    Fields not named here are looked up under their own name (a `sku` column maps to `sku`).
    """

    columns: Mapping[str, str] = field(default_factory=dict)
    default_currency: str | None = None
    date_format: str | None = None
    amount_scope: AmountScope = "row"
    refund_kinds: frozenset[str] = DEFAULT_REFUND_KINDS
    purchase_kinds: frozenset[str] = DEFAULT_PURCHASE_KINDS
    delimiter: str = ","

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ColumnMapping:
        """Build a mapping from one flat document: field names map to column names, option names to
        their values (as in a mapping YAML file, query parameters or `--map FIELD=COLUMN`)."""
        columns: dict[str, str] = {}
        values: dict[str, Any] = {}
        for key, value in options.items():
            if value is None:
                continue
            if key in FIELDS:
                if not isinstance(value, str) or not value.strip():
                    raise MappingError(f"{key}: expected a column name")
                columns[key] = value.strip()
            elif key in ("refund_kinds", "purchase_kinds"):
                items = value.split(",") if isinstance(value, str) else value
                if not isinstance(items, list | tuple | set | frozenset):
                    raise MappingError(f"{key}: expected a list of values")
                values[key] = frozenset(str(item).strip().lower() for item in items)
            elif key in OPTIONS:
                values[key] = str(value)
            else:
                known = ", ".join(FIELDS + OPTIONS)
                raise MappingError(f"{key}: unknown field or option; expected one of {known}")
        mapping = cls(columns=columns, **values)
        mapping.check()
        return mapping

    def check(self) -> None:
        if self.default_currency is not None and not _CURRENCY(self.default_currency):
            raise MappingError(f"default_currency: {self.default_currency!r} is not an ISO 4217 code")
        if self.amount_scope not in ("row", "order"):
            raise MappingError(f"amount_scope: expected 'row' or 'order', not {self.amount_scope!r}")
        if len(self.delimiter) != 1:
            raise MappingError("delimiter: expected one character")
        if self.refund_kinds & self.purchase_kinds:
            overlap = ", ".join(sorted(self.refund_kinds & self.purchase_kinds))
            raise MappingError(f"refund_kinds and purchase_kinds overlap: {overlap}")
        if self.date_format is not None:
            try:
                datetime(2024, 1, 2, 3, 4, 5).strftime(self.date_format)
            except ValueError as exc:
                raise MappingError(f"date_format: {exc}") from exc

    def with_currency(self, currency: str) -> ColumnMapping:
        """This mapping with `currency` as the default, unless one was chosen already."""
        if self.default_currency is not None:
            return self
        return ColumnMapping(
            columns=self.columns,
            default_currency=currency,
            date_format=self.date_format,
            amount_scope=self.amount_scope,
            refund_kinds=self.refund_kinds,
            purchase_kinds=self.purchase_kinds,
            delimiter=self.delimiter,
        )

    def column(self, field_name: str) -> str:
        return self.columns.get(field_name, field_name)

    def fingerprint(self) -> str:
        """Identifies what the mapping does, so a resumed import can tell it is the same one."""
        document = {
            "columns": dict(sorted(self.columns.items())),
            "default_currency": self.default_currency,
            "date_format": self.date_format,
            "amount_scope": self.amount_scope,
            "refund_kinds": sorted(self.refund_kinds),
            "purchase_kinds": sorted(self.purchase_kinds),
            "delimiter": self.delimiter,
        }
        return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(slots=True)
class Record:
    """One record of the file: the raw value of each mapped field (None when absent or empty)."""

    line: int
    row: int  # 1-based among the data records; resuming skips whole records by this number
    values: dict[str, Any]
    error: RowError | None = None


# --- readers ---------------------------------------------------------------------------------


def read_records(lines: Iterable[str], file_format: Format, mapping: ColumnMapping) -> Iterator[Record]:
    if file_format == "csv":
        return read_csv(lines, mapping)
    if file_format == "jsonl":
        return read_jsonl(lines, mapping)
    raise MappingError(f"format: expected csv or jsonl, not {file_format!r}")


def read_csv(lines: Iterable[str], mapping: ColumnMapping) -> Iterator[Record]:
    """Records of a CSV file whose first line is the header. Blank lines are skipped.

    Raises ImportRejected (line 1) when a mapped or required column is not in the header."""
    reader = csv.reader(iter(lines), delimiter=mapping.delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise ImportRejected([RowError(1, "the file is empty; expected a header line")]) from None
    except csv.Error as exc:
        raise ImportRejected([RowError(1, f"unreadable header: {exc}")]) from None
    header = [name.strip().lstrip("\ufeff") for name in header]
    positions = {name: index for index, name in reversed(list(enumerate(header)))}
    index: dict[str, int] = {}
    missing: list[RowError] = []
    for name in FIELDS:
        column = mapping.column(name)
        if column in positions:
            index[name] = positions[column]
        elif name in mapping.columns or name in REQUIRED_FIELDS:
            missing.append(RowError(1, "missing column; the header has " + _names(header), column, name))
    if missing:
        raise ImportRejected(missing)
    if mapping.amount_scope == "order" and "unit_price" not in index and "sku" in index:
        # With order totals, a line's own amount is unknown: the item price must come from a column.
        raise ImportRejected(
            [RowError(1, "amount_scope 'order' with items needs a unit_price column", None, "unit_price")]
        )
    width = len(header)
    fields = list(index.items())
    consumed = 1
    row = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ImportRejected([RowError(reader.line_num, f"malformed CSV: {exc}")]) from None
        line = consumed + 1
        consumed = reader.line_num
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            continue
        row += 1
        if len(cells) != width:
            error = RowError(line, f"{len(cells)} fields, but the header has {width}")
            yield Record(line, row, {}, error)
            continue
        yield Record(line, row, {name: cells[position] or None for name, position in fields})


def read_jsonl(lines: Iterable[str], mapping: ColumnMapping) -> Iterator[Record]:
    """Records of a JSON Lines file: one object per line, fields under their mapped keys."""
    keys = [(name, mapping.column(name)) for name in FIELDS]
    row = 0
    for line, text in enumerate(lines, 1):
        if not text.strip():
            continue
        row += 1
        try:
            document = json.loads(text, parse_float=Decimal)
        except json.JSONDecodeError as exc:
            yield Record(line, row, {}, RowError(line, f"not JSON: {exc.msg} (character {exc.colno})"))
            continue
        if not isinstance(document, dict):
            yield Record(line, row, {}, RowError(line, "expected a JSON object"))
            continue
        yield Record(line, row, {name: document.get(key) for name, key in keys})


def _names(header: list[str]) -> str:
    shown = ", ".join(repr(name) for name in header[:12])
    return shown + (", …" if len(header) > 12 else "")


# --- one row ---------------------------------------------------------------------------------


@dataclass(slots=True)
class ImportRow:
    line: int
    row: int
    kind: Kind
    customer_id: str
    order_id: str
    occurred_at: datetime  # aware
    amount: Decimal | None  # None only on an order's further lines when amounts are order totals
    currency: str
    item: dict[str, Any] | None


class RowParser:
    """Checks and converts records. Dates without an offset are wall-clock time in the shop's zone."""

    def __init__(self, mapping: ColumnMapping, *, timezone: tzinfo, now: datetime) -> None:
        if mapping.default_currency is None:
            raise MappingError("default_currency: needed (the shop's currency)")
        self.mapping = mapping
        self.timezone = timezone
        self.latest = now + FUTURE_TOLERANCE
        self._default_currency = mapping.default_currency
        self._times: dict[str, datetime] = {}
        self._order_totals = mapping.amount_scope == "order"

    def error(self, record: Record, field_name: str, message: str) -> RowError:
        return RowError(record.line, message, self.mapping.column(field_name), field_name)

    def parse(self, record: Record, open_order: str | None = None) -> ImportRow:
        """`open_order`: the order the previous line belongs to, if it was a purchase (with order
        totals, that order's further lines may leave the amount empty)."""
        if record.error is not None:
            raise record.error
        values = record.values
        get = values.get
        # The common case is checked inline; anything unusual goes the slow way, which explains it.
        customer_id = get("customer_id")
        if type(customer_id) is not str or not _ID(customer_id):
            customer_id = self._identifier(record, values, "customer_id")
        order_id = get("order_id")
        if type(order_id) is not str or not _ID(order_id):
            order_id = self._identifier(record, values, "order_id")
        raw_kind = get("kind")
        kind = "purchase" if raw_kind is None else self._kind(record, raw_kind)
        raw_time = get("occurred_at")
        occurred_at = self._times.get(raw_time) if type(raw_time) is str else None
        if occurred_at is None or occurred_at > self.latest:
            occurred_at = self._timestamp(record, raw_time)
        raw_amount = get("amount")
        amount: Decimal | None
        if type(raw_amount) is str and _PLAIN_AMOUNT(raw_amount):
            amount = Decimal(raw_amount)
        elif raw_amount is None and self._order_totals and open_order == order_id and kind == "purchase":
            amount = None
        else:
            amount = self._amount(record, "amount", raw_amount)
        raw_currency = get("currency")
        currency = self._default_currency if raw_currency is None else self._currency(record, raw_currency)
        item = None if kind == "refund" or get("sku") is None else self._item(record, values, amount)
        return ImportRow(
            record.line, record.row, kind, customer_id, order_id, occurred_at, amount, currency, item
        )

    def order_id_of(self, record: Record) -> tuple[str, str] | None:
        """(kind, order id) of a valid record, cheaply; None if the record is invalid."""
        try:
            return self._kind(record, record.values.get("kind")), self._identifier(
                record, record.values, "order_id"
            )
        except RowError:
            return None

    def _identifier(self, record: Record, values: dict[str, Any], name: str) -> str:
        raw = values.get(name)
        if raw is None:
            raise self.error(record, name, "is empty")
        if isinstance(raw, bool) or not isinstance(raw, str | int):
            raise self.error(record, name, f"expected a string, got {_json_type(raw)}")
        value = str(raw).strip()
        if not value:
            raise self.error(record, name, "is empty")
        if not _ID(value):
            raise self.error(
                record,
                name,
                f"{_shorten(value)!r} is not an id: at most 128 characters, letters, digits and ._:@-",
            )
        return value

    def _kind(self, record: Record, raw: Any) -> Kind:
        value = str(raw).strip().lower() if raw is not None else ""
        if not value or value in self.mapping.purchase_kinds:
            return "purchase"
        if value in self.mapping.refund_kinds:
            return "refund"
        expected = ", ".join(repr(k) for k in sorted(self.mapping.purchase_kinds | self.mapping.refund_kinds))
        raise self.error(record, "kind", f"unknown kind {_shorten(value)!r}; expected one of {expected}")

    def _timestamp(self, record: Record, raw: Any) -> datetime:
        if raw is None:
            raise self.error(record, "occurred_at", "is empty")
        if not isinstance(raw, str):
            raise self.error(record, "occurred_at", f"expected a date string, got {_json_type(raw)}")
        if not raw.strip():
            raise self.error(record, "occurred_at", "is empty")
        cached = self._times.get(raw)
        if cached is None:
            cached = self._parse_time(record, raw.strip())
            if len(self._times) > 100_000:
                self._times.clear()
            self._times[raw] = cached
        if cached > self.latest:
            raise self.error(record, "occurred_at", f"{raw!r} is in the future")
        return cached

    def _parse_time(self, record: Record, text: str) -> datetime:
        fmt = self.mapping.date_format
        try:
            if fmt is not None:
                moment = datetime.strptime(text, fmt)
            elif len(text) == 10:
                moment = datetime.combine(date.fromisoformat(text), time())
            else:
                moment = datetime.fromisoformat(text)
        except ValueError:
            expected = (
                f"the date format {fmt!r}"
                if fmt
                else "RFC 3339 (2024-01-05T10:30:00+09:00) or a date (2024-01-05)"
            )
            raise self.error(
                record, "occurred_at", f"cannot read {_shorten(text)!r} as a date; expected {expected}"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=self.timezone)
        return moment.astimezone(UTC)

    def _amount(self, record: Record, name: str, raw: Any) -> Decimal:
        if raw is None:
            raise self.error(record, name, "is empty")
        if isinstance(raw, bool) or not isinstance(raw, str | int | Decimal):
            raise self.error(record, name, f"expected a number, got {_json_type(raw)}")
        text = str(raw).strip()
        if not text:
            raise self.error(record, name, "is empty")
        if not _AMOUNT(text):
            raise self.error(
                record, name, f"{_shorten(text)!r} is not a decimal number such as 4800 or 12.50"
            )
        if text.startswith("-"):
            if Decimal(text) == 0:
                text = text[1:]
            else:
                raise self.error(record, name, f"{text} is negative; amounts must be 0 or more")
        try:
            return Decimal(text)
        except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
            raise self.error(record, name, f"{text!r} is not a decimal number") from None

    def _currency(self, record: Record, raw: Any) -> str:
        value = str(raw).strip().upper() if raw is not None else ""
        if not value:
            return self._default_currency
        if not _CURRENCY(value):
            raise self.error(record, "currency", f"{_shorten(str(raw))!r} is not a 3-letter ISO 4217 code")
        return value

    def _item(self, record: Record, values: dict[str, Any], amount: Decimal | None) -> dict[str, Any] | None:
        raw_sku = values.get("sku")
        sku = str(raw_sku).strip() if raw_sku is not None else ""
        if not sku:
            return None  # an order line without an item: only its amount counts
        if len(sku) > 128:
            raise self.error(record, "sku", "longer than 128 characters")
        quantity = self._quantity(record, values.get("quantity"))
        raw_price = values.get("unit_price")
        if raw_price is not None:
            unit_price = self._amount(record, "unit_price", raw_price)
        elif amount is not None and not self._order_totals:
            unit_price = _divide(amount, quantity)
        else:
            raise self.error(record, "unit_price", "is empty; with order totals each item needs its price")
        item: dict[str, Any] = {"sku": sku}
        name = values.get("name")
        if name is not None:
            item["name"] = self._text(record, "name", name, 500)
        category = values.get("category")
        if category is not None:
            item["category"] = self._text(record, "category", category, 128)
        item["quantity"] = quantity
        item["unit_price"] = str(unit_price)
        return item

    def _quantity(self, record: Record, raw: Any) -> int:
        if raw is None:
            return 1
        if type(raw) is str and raw.isdigit() and raw.isascii() and raw[0] != "0":
            return int(raw)
        try:
            if isinstance(raw, bool):
                raise ValueError
            value = int(raw) if isinstance(raw, int | str) else int(Decimal(raw).to_integral_exact())
            if isinstance(raw, Decimal) and raw != value:
                raise ValueError
        except (ValueError, InvalidOperation, TypeError):
            raise self.error(record, "quantity", f"{_shorten(str(raw))!r} is not a whole number") from None
        if value < 1:
            raise self.error(record, "quantity", f"{value} is less than 1")
        return value

    def _text(self, record: Record, name: str, raw: Any, limit: int) -> str:
        value = str(raw).strip()
        if len(value) > limit:
            raise self.error(record, name, f"longer than {limit} characters")
        return value


def _divide(amount: Decimal, quantity: int) -> Decimal:
    if quantity == 1:
        return amount
    share = amount / quantity
    if share == share.to_integral_value():
        return share.quantize(Decimal(1))
    return _trim(share)


def _trim(value: Decimal) -> Decimal:
    """At most 4 decimal places, without trailing zeros and never in exponent notation."""
    text = f"{value.quantize(Decimal('0.0001')):f}".rstrip("0").rstrip(".")
    return Decimal(text)


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json_type(value: Any) -> str:
    if value is True or value is False:
        return "a boolean"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int | Decimal):
        return "a number"
    return type(value).__name__


# --- rows to events --------------------------------------------------------------------------


@dataclass(slots=True)
class HistoryEvent:
    """One event to store and publish, made from the records `first_row`..`last_row`."""

    id: str
    type: Literal["purchase_made", "refund_issued"]
    customer_id: str
    occurred_at: datetime  # UTC
    data: dict[str, Any]
    line: int
    last_row: int


def purchase_event_id(order_id: str) -> str:
    return _event_id("import:", order_id)


def refund_event_id(order_id: str, occurred_at: datetime, amount: Decimal) -> str:
    digest = hashlib.sha256(f"{order_id}|{occurred_at.isoformat()}|{amount}".encode()).hexdigest()[:16]
    return _event_id("import:refund:", f"{order_id}:{digest}")


def _event_id(prefix: str, key: str) -> str:
    candidate = prefix + key
    if len(candidate) <= 128:
        return candidate
    return prefix + "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:64]


class OrderAssembler:
    """Consecutive purchase rows of one order make one purchase; each refund row is one refund.

    Feed rows in file order; `feed` returns the events completed by that row, `finish` the last."""

    def __init__(self, amount_scope: AmountScope = "row") -> None:
        self.amount_scope = amount_scope
        self._rows: list[ImportRow] = []
        self.open_order: str | None = None  # the order of the purchase lines being collected

    def feed(self, row: ImportRow) -> list[HistoryEvent]:
        if row.kind == "purchase" and row.order_id == self.open_order:
            self._check_continuation(row)
            self._rows.append(row)
            return []
        done = self.finish()
        if row.kind == "refund":
            done.append(self._refund(row))
        else:
            self._rows = [row]
            self.open_order = row.order_id
        return done

    def finish(self) -> list[HistoryEvent]:
        if not self._rows:
            return []
        rows, self._rows, self.open_order = self._rows, [], None
        return [self._purchase(rows)]

    def reset(self) -> None:
        self._rows = []
        self.open_order = None

    def _check_continuation(self, row: ImportRow) -> None:
        first = self._rows[0]
        if row.customer_id != first.customer_id:
            raise RowError(
                row.line,
                f"order {row.order_id!r} belongs to customer {first.customer_id!r} "
                f"(line {first.line}), not {row.customer_id!r}",
                None,
                "customer_id",
            )
        if row.currency != first.currency:
            raise RowError(
                row.line,
                f"order {row.order_id!r} is in {first.currency} (line {first.line}), not {row.currency}",
                None,
                "currency",
            )
        if self.amount_scope == "order" and row.amount is not None and row.amount != first.amount:
            raise RowError(
                row.line,
                f"order {row.order_id!r} totals {first.amount} (line {first.line}); a further line "
                f"must repeat that total or leave it empty, not {row.amount}",
                None,
                "amount",
            )
        if len(self._rows) >= MAX_ITEMS:
            raise RowError(row.line, f"order {row.order_id!r} has more than {MAX_ITEMS} lines")

    def _purchase(self, rows: list[ImportRow]) -> HistoryEvent:
        first = rows[0]
        if len(rows) == 1:
            amount, occurred_at = first.amount, first.occurred_at
            items = [first.item] if first.item is not None else []
        else:
            if self.amount_scope == "order":
                amount = first.amount
            else:
                amount = sum((row.amount for row in rows if row.amount is not None), Decimal(0))
            occurred_at = min(row.occurred_at for row in rows)
            items = [row.item for row in rows if row.item is not None]
        order_id = first.order_id
        event_id = "import:" + order_id if len(order_id) <= 121 else purchase_event_id(order_id)
        data = {"order_id": order_id, "amount": str(amount), "currency": first.currency, "items": items}
        return HistoryEvent(
            event_id, "purchase_made", first.customer_id, occurred_at, data, first.line, rows[-1].row
        )

    def _refund(self, row: ImportRow) -> HistoryEvent:
        assert row.amount is not None
        return HistoryEvent(
            id=refund_event_id(row.order_id, row.occurred_at, row.amount),
            type="refund_issued",
            customer_id=row.customer_id,
            occurred_at=row.occurred_at,
            data={"order_id": row.order_id, "amount": str(row.amount), "currency": row.currency},
            line=row.line,
            last_row=row.row,
        )


# --- whole files -----------------------------------------------------------------------------


class OrderSightings:
    """Remembers which orders were seen, in constant memory: a Bloom filter (no false negatives, a
    few false positives). A positive is only a suspect; `validate` confirms suspects in a second pass."""

    def __init__(self, size_bits: int = 1 << 27) -> None:
        if size_bits < 8 or size_bits & (size_bits - 1):
            raise ValueError("size_bits must be a power of two, at least 8")
        self._bits = bytearray(size_bits // 8)
        self._mask = size_bits - 1

    def add(self, order_id: str) -> bool:
        """Record the order; True if it was (probably) recorded before. Python's string hash is
        salted per process, which is fine: one filter never outlives its process."""
        digest = hash(order_id) & 0xFFFF_FFFF_FFFF_FFFF
        low, high = digest & 0xFFFF_FFFF, (digest >> 32) | 1
        bits, mask = self._bits, self._mask
        seen = True
        for step in (0, 1, 2):
            position = (low + step * high) & mask
            byte, bit = position >> 3, 1 << (position & 7)
            if not bits[byte] & bit:
                seen = False
                bits[byte] |= bit
        return seen


@dataclass
class ValidationReport:
    rows: int = 0
    events: int = 0
    purchases: int = 0
    refunds: int = 0
    recent: int = 0  # purchases young enough to start follow-ups
    first_at: datetime | None = None
    last_at: datetime | None = None
    errors: list[RowError] = field(default_factory=list)
    error_count: int = 0

    @property
    def valid(self) -> bool:
        return self.error_count == 0

    def add_error(self, error: RowError, limit: int) -> None:
        self.error_count += 1
        if len(self.errors) < limit:
            self.errors.append(error)

    def rejection(self) -> ImportRejected:
        return ImportRejected(sorted(self.errors, key=lambda e: e.line), self.error_count)


def validate(
    open_records: Callable[[], Iterator[Record]],
    parser: RowParser,
    *,
    now: datetime,
    max_errors: int = DEFAULT_MAX_ERRORS,
    sightings: OrderSightings | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> ValidationReport:
    """Check a whole file in constant memory and count what it holds; collect the first errors.

    Besides each row, this finds an order whose rows are split over places in the file: one order's
    rows must be consecutive (they make one purchase, and the second part would otherwise be taken
    for a repeat of the first and dropped). `on_rows` hears the number of records read, every
    PROGRESS_EVERY records."""
    report = ValidationReport()
    sightings = sightings or OrderSightings()
    suspects: set[str] = set()
    assembler = OrderAssembler(parser.mapping.amount_scope)
    horizon = now - FOLLOWUP_HORIZON

    def count(events: list[HistoryEvent]) -> None:
        for event in events:
            report.events += 1
            if event.type == "purchase_made":
                report.purchases += 1
                if event.occurred_at > horizon:
                    report.recent += 1
            else:
                report.refunds += 1
            if report.first_at is None or event.occurred_at < report.first_at:
                report.first_at = event.occurred_at
            if report.last_at is None or event.occurred_at > report.last_at:
                report.last_at = event.occurred_at

    try:
        for record in open_records():
            report.rows = record.row
            if on_rows is not None and not record.row % PROGRESS_EVERY:
                on_rows(record.row)
            try:
                row = parser.parse(record, assembler.open_order)
                starts_order = row.kind == "purchase" and assembler.open_order != row.order_id
                count(assembler.feed(row))
            except RowError as error:
                report.add_error(error, max_errors)
                assembler.reset()
                continue
            if starts_order and sightings.add(row.order_id):
                suspects.add(row.order_id)
        count(assembler.finish())
    except ImportRejected as rejected:  # the header, or a file that cannot be read on
        for fatal in rejected.errors:
            report.add_error(fatal, max_errors)
        return report
    if suspects and report.valid:
        for split in _split_orders(open_records(), parser, suspects):
            report.add_error(split, max_errors)
    return report


def _split_orders(records: Iterator[Record], parser: RowParser, suspects: set[str]) -> Iterator[RowError]:
    """The second pass: which suspected orders really appear in two places."""
    first_line: dict[str, int] = {}
    previous: tuple[str, str] | None = None
    for record in records:
        current = parser.order_id_of(record)
        if current is not None and current[0] == "purchase" and current != previous:
            order_id = current[1]
            if order_id in suspects:
                if order_id in first_line:
                    yield RowError(
                        record.line,
                        f"order {order_id!r} already appeared at line {first_line[order_id]}; the lines "
                        "of one order must be consecutive (sort the file by order)",
                        parser.mapping.column("order_id"),
                        "order_id",
                    )
                else:
                    first_line[order_id] = record.line
        previous = current


def history_events(
    records: Iterator[Record], parser: RowParser, *, skip_rows: int = 0
) -> Iterator[HistoryEvent]:
    """The events of a file already found valid, skipping its first `skip_rows` records (a resume
    point is always the last record of an event). Raises RowError if the file turns out invalid."""
    assembler = OrderAssembler(parser.mapping.amount_scope)
    for record in records:
        if record.row <= skip_rows:
            continue
        yield from assembler.feed(parser.parse(record, assembler.open_order))
    yield from assembler.finish()
