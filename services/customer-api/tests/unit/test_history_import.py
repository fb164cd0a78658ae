"""The history import's parsing and mapping: plain Python, no database."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from customer_api.domain.history_import import (
    ColumnMapping,
    HistoryEvent,
    ImportRejected,
    MappingError,
    OrderSightings,
    Record,
    RowError,
    RowParser,
    ValidationReport,
    history_events,
    read_csv,
    read_jsonl,
    validate,
)
from customer_api.service_layer.history_import import _encode_json, envelope_json
from retention_shared.events.catalogue import PurchaseMade, RefundIssued
from retention_shared.events.envelope import build_envelope, decode_envelope

NOW = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
TOKYO = ZoneInfo("Asia/Tokyo")
HEADER = "customer_id,order_id,occurred_at,amount"


def csv_lines(*lines: str) -> list[str]:
    return [line + "\r\n" for line in lines]


def check(
    lines: list[str], mapping: ColumnMapping | None = None, file_format: str = "csv", **kwargs: Any
) -> ValidationReport:
    chosen = (mapping or ColumnMapping()).with_currency("JPY")
    parser = RowParser(chosen, timezone=TOKYO, now=NOW)
    reader = read_csv if file_format == "csv" else read_jsonl
    return validate(lambda: reader(lines, chosen), parser, now=NOW, **kwargs)


def events_of(lines: list[str], mapping: ColumnMapping | None = None, file_format: str = "csv") -> list[Any]:
    report = check(lines, mapping, file_format)
    assert report.valid, [str(e) for e in report.errors]
    chosen = (mapping or ColumnMapping()).with_currency("JPY")
    reader = read_csv if file_format == "csv" else read_jsonl
    return list(history_events(reader(lines, chosen), RowParser(chosen, timezone=TOKYO, now=NOW)))


def messages(report: ValidationReport) -> list[str]:
    return [str(error) for error in report.errors]


class TestErrorsNameTheLine:
    def test_a_missing_column_is_reported_on_the_header_line(self) -> None:
        report = check(csv_lines("customer_id,order_id,amount", "c1,o1,100"))

        assert messages(report) == [
            "line 1, column 'occurred_at': missing column; the header has 'customer_id', 'order_id', 'amount'"
        ]

    def test_a_mapped_column_missing_from_the_header_names_both(self) -> None:
        mapping = ColumnMapping.from_options({"customer_id": "Customer ID", "sku": "Lineitem sku"})

        report = check(csv_lines("Customer ID,order_id,occurred_at,amount", "c1,o1,2024-01-05,1"), mapping)

        assert len(report.errors) == 1
        assert str(report.errors[0]).startswith("line 1, column 'Lineitem sku' (sku): missing column")

    def test_an_unparsable_date_names_line_and_column(self) -> None:
        mapping = ColumnMapping.from_options({"occurred_at": "Created at"})

        report = check(
            csv_lines(
                "customer_id,order_id,Created at,amount",
                "c1,o1,2024-01-05,100",
                "c2,o2,05/01/2024,100",
            ),
            mapping,
        )

        assert messages(report) == [
            "line 3, column 'Created at' (occurred_at): cannot read '05/01/2024' as a date; expected "
            "RFC 3339 (2024-01-05T10:30:00+09:00) or a date (2024-01-05)"
        ]

    def test_a_negative_amount_is_refused_with_its_line(self) -> None:
        report = check(csv_lines(HEADER, "c1,o1,2024-01-05,100", "c2,o2,2024-01-05,-4800"))

        assert messages(report) == ["line 3, column 'amount': -4800 is negative; amounts must be 0 or more"]

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("", "is empty"),
            ('"4,800"', "'4,800' is not a decimal number such as 4800 or 12.50"),
            ("1e3", "'1e3' is not a decimal number such as 4800 or 12.50"),
            ("NaN", "'NaN' is not a decimal number such as 4800 or 12.50"),
        ],
    )
    def test_other_bad_amounts(self, value: str, message: str) -> None:
        report = check(csv_lines(HEADER, f"c1,o1,2024-01-05,{value}"))

        assert messages(report) == [f"line 2, column 'amount': {message}"]

    def test_every_bad_line_is_listed_up_to_the_limit_and_the_rest_counted(self) -> None:
        lines = csv_lines(HEADER, *[f"c{i},o{i},not-a-date,1" for i in range(30)])

        report = check(lines, max_errors=5)

        assert [error.line for error in report.errors] == [2, 3, 4, 5, 6]
        assert report.error_count == 30
        assert not report.valid

    def test_a_line_with_too_few_fields(self) -> None:
        report = check(csv_lines(HEADER, "c1,o1,2024-01-05"))

        assert messages(report) == ["line 2: 3 fields, but the header has 4"]

    def test_line_numbers_count_physical_lines_past_quoted_newlines_and_blank_lines(self) -> None:
        mapping = ColumnMapping.from_options({"name": "name", "sku": "sku"})
        lines = csv_lines(
            HEADER + ",sku,name",
            'c1,o1,2024-01-05,100,s1,"Sencha',
            'first flush"',
            "",
            "c2,o2,2024-01-05,-1,s2,Hojicha",
        )

        assert [error.line for error in check(lines, mapping).errors] == [5]

    def test_bad_ids_quantities_currencies_and_kinds(self) -> None:
        mapping = ColumnMapping.from_options({"sku": "sku", "quantity": "qty", "kind": "type"})
        report = check(
            csv_lines(
                HEADER + ",currency,sku,qty,type",
                "c 1,o1,2024-01-05,1,JPY,s,1,",
                "c2,o2,2024-01-05,1,yen!,s,1,",
                "c3,o3,2024-01-05,1,JPY,s,0,",
                "c4,o4,2024-01-05,1,JPY,s,1.5,",
                "c5,o5,2024-01-05,1,JPY,s,1,cancelled",
            ),
            mapping,
        )

        assert [(e.line, e.field) for e in report.errors] == [
            (2, "customer_id"),
            (3, "currency"),
            (4, "quantity"),
            (5, "quantity"),
            (6, "kind"),
        ]

    def test_a_date_in_the_future_is_refused(self) -> None:
        report = check(csv_lines(HEADER, "c1,o1,2026-03-01,1"))

        assert messages(report) == ["line 2, column 'occurred_at': '2026-03-01' is in the future"]

    def test_an_empty_file_and_a_header_only_file(self) -> None:
        assert messages(check([])) == ["line 1: the file is empty; expected a header line"]
        assert check(csv_lines(HEADER)).valid

    def test_jsonl_errors_name_the_line(self) -> None:
        lines = [
            json.dumps({"customer_id": "c1", "order_id": "o1", "occurred_at": "2024-01-05", "amount": 1}),
            "{not json",
            "[1, 2]",
            "",
            json.dumps({"customer_id": "c4", "order_id": "o4", "occurred_at": "2024-01-05", "amount": -2.5}),
            json.dumps({"customer_id": "c5", "order_id": "o5", "occurred_at": 20240105, "amount": 1}),
        ]

        report = check(lines, file_format="jsonl")

        assert messages(report) == [
            "line 2: not JSON: Expecting property name enclosed in double quotes (character 2)",
            "line 3: expected a JSON object",
            "line 5, column 'amount': -2.5 is negative; amounts must be 0 or more",
            "line 6, column 'occurred_at': expected a date string, got a number",
        ]


class TestMapping:
    def test_unknown_fields_and_bad_options_are_refused(self) -> None:
        with pytest.raises(MappingError, match="^customer: unknown field or option"):
            ColumnMapping.from_options({"customer": "Customer"})
        with pytest.raises(MappingError, match="^amount_scope:"):
            ColumnMapping.from_options({"amount_scope": "line"})
        with pytest.raises(MappingError, match="^default_currency:"):
            ColumnMapping.from_options({"default_currency": "yen"})
        with pytest.raises(MappingError, match="overlap"):
            ColumnMapping.from_options({"refund_kinds": "refund,sale"})

    def test_the_fingerprint_changes_with_what_the_mapping_does(self) -> None:
        plain = ColumnMapping.from_options({"customer_id": "Customer"})

        assert plain.fingerprint() == ColumnMapping.from_options({"customer_id": "Customer"}).fingerprint()
        assert plain.fingerprint() != ColumnMapping.from_options({"customer_id": "Client"}).fingerprint()

    def test_columns_are_found_by_mapped_name_and_optional_ones_by_their_own_name(self) -> None:
        mapping = ColumnMapping.from_options(
            {"customer_id": "Customer ID", "order_id": "Order", "occurred_at": "Date", "amount": "Total"}
        )
        lines = csv_lines("\ufeffOrder,Customer ID,Date,Total,sku,Ignored", "A-1,c1,2024-01-05,4800,TEA,x")

        (event,) = events_of(lines, mapping)

        assert event.customer_id == "c1"
        assert event.data["items"] == [{"sku": "TEA", "quantity": 1, "unit_price": "4800"}]


class TestEvents:
    def test_a_date_is_midnight_in_the_shops_zone_and_offsets_are_kept(self) -> None:
        lines = csv_lines(
            HEADER,
            "c1,o1,2024-01-05,1",
            "c1,o2,2024-01-05T10:30:00+02:00,1",
            "c1,o3,2024-01-05T10:30:00Z,1",
            "c1,o4,2024-01-05 10:30,1",
        )

        times = [event.occurred_at for event in events_of(lines)]

        assert times == [
            datetime(2024, 1, 4, 15, 0, tzinfo=UTC),
            datetime(2024, 1, 5, 8, 30, tzinfo=UTC),
            datetime(2024, 1, 5, 10, 30, tzinfo=UTC),
            datetime(2024, 1, 5, 1, 30, tzinfo=UTC),
        ]

    def test_a_date_format_can_be_configured(self) -> None:
        mapping = ColumnMapping.from_options({"date_format": "%d/%m/%Y %H:%M"})

        (event,) = events_of(csv_lines(HEADER, "c1,o1,05/01/2024 18:00,1"), mapping)

        assert event.occurred_at == datetime(2024, 1, 5, 9, 0, tzinfo=UTC)

    def test_consecutive_lines_of_one_order_make_one_purchase_with_items(self) -> None:
        mapping = ColumnMapping.from_options({"name": "name"})
        lines = csv_lines(
            HEADER + ",sku,name,quantity,unit_price",
            "c1,A-1,2024-01-05T10:00:00+09:00,4800,TEA-01,Sencha,2,2400",
            "c1,A-1,2024-01-05T10:00:00+09:00,1200,CUP-01,,1,1200",
            "c2,A-2,2024-01-06,999.50,,,,",
        )

        first, second = events_of(lines, mapping)

        assert first.id == "import:A-1"
        assert first.type == "purchase_made"
        assert first.data == {
            "order_id": "A-1",
            "amount": "6000",
            "currency": "JPY",
            "items": [
                {"sku": "TEA-01", "name": "Sencha", "quantity": 2, "unit_price": "2400"},
                {"sku": "CUP-01", "quantity": 1, "unit_price": "1200"},
            ],
        }
        assert (first.line, first.last_row) == (2, 2)
        assert second.data == {"order_id": "A-2", "amount": "999.50", "currency": "JPY", "items": []}
        assert (second.line, second.last_row) == (4, 3)

    def test_with_order_totals_further_lines_may_leave_the_amount_empty(self) -> None:
        mapping = ColumnMapping.from_options({"amount_scope": "order"})
        lines = csv_lines(
            HEADER + ",sku,unit_price",
            "c1,A-1,2024-01-05,6000,TEA-01,4800",
            "c1,A-1,2024-01-05,,CUP-01,1200",
            "c1,A-1,2024-01-05,6000,SPOON,0",
        )

        (event,) = events_of(lines, mapping)

        assert event.data["amount"] == "6000"
        assert len(event.data["items"]) == 3

    def test_with_order_totals_a_different_total_is_an_error(self) -> None:
        mapping = ColumnMapping.from_options({"amount_scope": "order"})
        lines = csv_lines(HEADER, "c1,A-1,2024-01-05,6000", "c1,A-1,2024-01-05,5000")

        assert [(e.line, e.field) for e in check(lines, mapping).errors] == [(3, "amount")]

    def test_an_order_split_over_two_places_is_an_error_naming_both_lines(self) -> None:
        lines = csv_lines(HEADER, "c1,A-1,2024-01-05,1", "c2,A-2,2024-01-05,1", "c1,A-1,2024-01-06,2")

        assert messages(check(lines)) == [
            "line 4, column 'order_id': order 'A-1' already appeared at line 2; the lines of one "
            "order must be consecutive (sort the file by order)"
        ]

    def test_the_bloom_filter_only_suspects_the_second_pass_confirms(self) -> None:
        # An 8-bit filter soon takes every order for a repeat; the confirming pass clears them all.
        lines = csv_lines(HEADER, *[f"c{i},o{i},2024-01-05,1" for i in range(50)])

        report = check(lines, sightings=OrderSightings(size_bits=8))

        assert report.valid
        assert report.purchases == 50

    def test_lines_of_one_order_must_share_customer_and_currency(self) -> None:
        lines = csv_lines(
            HEADER + ",currency",
            "c1,A-1,2024-01-05,1,JPY",
            "c2,A-1,2024-01-05,1,JPY",
            "c1,A-2,2024-01-05,1,JPY",
            "c1,A-2,2024-01-05,1,USD",
        )

        assert [(e.line, e.field) for e in check(lines).errors] == [(3, "customer_id"), (5, "currency")]

    def test_refund_lines_become_refunds_with_stable_ids(self) -> None:
        mapping = ColumnMapping.from_options({"kind": "Type"})
        lines = csv_lines(
            HEADER + ",Type",
            "c1,A-1,2024-01-05,6000,Sale",
            "c1,A-1,2024-01-09,1000,Refund",
            "c1,A-2,2024-01-10,10,",
        )

        purchase, refund, other = events_of(lines, mapping)

        assert refund.type == "refund_issued"
        assert refund.data == {"order_id": "A-1", "amount": "1000", "currency": "JPY"}
        assert refund.id.startswith("import:refund:A-1:")
        assert refund.id == events_of(lines, mapping)[1].id
        assert (purchase.type, other.type) == ("purchase_made", "purchase_made")

    def test_very_long_order_ids_get_a_hashed_event_id_within_the_limit(self) -> None:
        order_id = "A" * 128

        (event,) = events_of(csv_lines(HEADER, f"c1,{order_id},2024-01-05,1"))

        assert event.id.startswith("import:sha256:")
        assert len(event.id) <= 128
        assert event.data["order_id"] == order_id

    def test_a_unit_price_is_derived_from_the_line_amount(self) -> None:
        lines = csv_lines(HEADER + ",sku,quantity", "c1,A-1,2024-01-05,100,S,3", "c1,A-2,2024-01-05,90,S,3")

        first, second = events_of(lines)

        assert first.data["items"][0]["unit_price"] == "33.3333"
        assert second.data["items"][0]["unit_price"] == "30"

    def test_resuming_skips_whole_records(self) -> None:
        lines = csv_lines(HEADER, "c1,A-1,2024-01-05,1", "c1,A-1,2024-01-05,2", "c2,A-2,2024-01-05,3")
        mapping = ColumnMapping().with_currency("JPY")
        parser = RowParser(mapping, timezone=TOKYO, now=NOW)

        (event,) = history_events(read_csv(lines, mapping), parser, skip_rows=2)

        assert event.id == "import:A-2"

    def test_jsonl_values_may_be_numbers_and_nulls(self) -> None:
        document = {
            "customer_id": 42,
            "order_id": "A-1",
            "occurred_at": "2024-01-05",
            "amount": 12.5,
            "currency": None,
            "sku": "S",
            "quantity": 2,
        }

        (event,) = events_of([json.dumps(document)], file_format="jsonl")

        assert event.customer_id == "42"
        assert event.data["amount"] == "12.5"
        assert event.data["items"] == [{"sku": "S", "quantity": 2, "unit_price": "6.25"}]

    def test_the_report_counts_what_the_file_holds(self) -> None:
        mapping = ColumnMapping.from_options({"kind": "kind"})
        lines = csv_lines(
            HEADER + ",kind",
            "c1,A-1,2024-01-05,1,",
            "c1,A-1,2024-01-05,1,",
            "c1,A-1,2024-01-07,1,refund",
            "c2,A-2,2026-01-04T12:00:00Z,1,",
        )

        report = check(lines, mapping)

        assert (report.rows, report.events, report.purchases, report.refunds) == (4, 3, 2, 1)
        assert report.recent == 1  # A-2, within the follow-up horizon
        assert report.first_at == datetime(2024, 1, 4, 15, 0, tzinfo=UTC)
        assert report.last_at == datetime(2026, 1, 4, 12, 0, tzinfo=UTC)


class TestCatalogueShape:
    """The importer writes data and envelopes by hand for speed; they must be what the catalogue
    and build_envelope would make."""

    @pytest.fixture
    def events(self) -> list[HistoryEvent]:
        mapping = ColumnMapping.from_options({"kind": "kind", "name": "name", "category": "category"})
        lines = csv_lines(
            HEADER + ",kind,sku,name,category,quantity,currency",
            'c1,A-1,2024-01-05T10:00:00.250+09:00,4800.50,,TEA,"Sencha ""first"" \\ 日本",Tea,2,JPY',
            "c1,A-1,2024-01-05T10:00:00.250+09:00,0,,FREE,,,1,JPY",
            "c1,A-1,2024-01-09,100,refund,,,,,usd",
        )
        return events_of(lines, mapping)

    def test_the_data_is_in_the_catalogues_normal_form(self, events: list[HistoryEvent]) -> None:
        purchase, refund = events

        assert purchase.data == PurchaseMade.model_validate(purchase.data).model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
        assert refund.data == RefundIssued.model_validate(refund.data).model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
        assert refund.data["currency"] == "USD"

    @pytest.mark.parametrize("correlation", [None, "req-1"])
    def test_the_envelope_json_is_build_envelopes(
        self, events: list[HistoryEvent], correlation: str | None
    ) -> None:
        for event in events:
            expected = build_envelope(
                id=event.id,
                type=event.type,
                source="customer-api/import",
                shop_id="shop_1",
                customer_id=event.customer_id,
                data=event.data,
                time=event.occurred_at,
                correlation_id=correlation,
            ).model_dump_json()

            written = envelope_json(event, _encode_json("shop_1"), _encode_json(correlation))

            assert written == expected
            assert decode_envelope(written).data == event.data


def test_a_row_error_reads_well() -> None:
    assert str(RowError(7, "is empty", "Order", "order_id")) == "line 7, column 'Order' (order_id): is empty"
    assert str(RowError(7, "is empty", "order_id", "order_id")) == "line 7, column 'order_id': is empty"
    assert str(RowError(7, "broken")) == "line 7: broken"


def test_records_keep_the_raw_values() -> None:
    (record,) = read_csv(csv_lines(HEADER, "c1,o1,2024-01-05,1"), ColumnMapping())

    assert record == Record(
        2, 1, {"customer_id": "c1", "order_id": "o1", "occurred_at": "2024-01-05", "amount": "1"}
    )


def test_a_rejection_lists_errors_and_counts_the_rest() -> None:
    rejected = ImportRejected([RowError(2, "bad"), RowError(3, "bad")], total=10)

    assert rejected.total == 10
    assert "and 8 more" in str(rejected)


def test_blank_cells_are_empty_values() -> None:
    mapping = ColumnMapping.from_options({"kind": "kind", "purchase_kinds": ["sale"]})
    lines = csv_lines(HEADER + ",currency,sku,kind", "c1,o1,2024-01-05,1, , , ", "c2,  ,2024-01-05,1,,,")

    report = check(lines, mapping)

    assert messages(report) == ["line 3, column 'order_id': is empty"]
    (event,) = events_of(lines[:2], mapping)
    assert event.data == {"order_id": "o1", "amount": "1", "currency": "JPY", "items": []}
