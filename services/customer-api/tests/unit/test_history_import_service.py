"""The history import against the customer-api's real SQLite database: the service layer and the
`retention import` command."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from customer_api.adapters import tables
from customer_api.adapters.import_checkpoint import Checkpoint, CheckpointStore
from customer_api.domain.history_import import ColumnMapping, ImportRejected, history_events
from customer_api.service_layer import history_import as service
from customer_api.service_layer.history_import import FileSource, ImportProgress, import_file, import_rows
from retention_shared import cli
from retention_shared.events.envelope import decode_envelope
from retention_shared.testing.harness import Api

HEADER = "customer_id,order_id,occurred_at,amount,sku,quantity,kind"


def write_orders(path: Path, count: int, *, start: int = 0, extra: list[str] | None = None) -> Path:
    lines = [HEADER]
    for n in range(start, start + count):
        lines.append(f"c{n % 7},ORD-{n},2024-{1 + n % 12:02d}-{1 + n % 28:02d},{100 + n},SKU-{n % 5},1,")
    lines.extend(extra or [])
    path.write_text("\n".join(lines) + "\n")
    return path


class Outcome:
    def __init__(self, api: Api) -> None:
        self.api = api

    def events(self) -> int:
        return self.api.count(tables.ingested_events)

    def published(self) -> list[Any]:
        """The imported events in the outbox (the shop's registration events aside)."""
        with self.api.engine.connect() as connection:
            payloads = connection.execute(
                select(tables.messaging.outbox.c.payload).order_by(tables.messaging.outbox.c.id)
            ).scalars()
            envelopes = [decode_envelope(payload) for payload in payloads]
        return [e for e in envelopes if e.type in ("purchase_made", "refund_issued")]


@pytest.fixture
def outcome(api: Api) -> Outcome:
    return Outcome(api)


def run_import(api: Api, shop: dict[str, Any], path: Path, **kwargs: Any) -> service.ImportSummary:
    return import_file(
        uow_factory=api.uow_factory,
        shop_id=shop["id"],
        source=FileSource(path, "csv"),
        mapping=kwargs.pop("mapping", ColumnMapping()),
        now=datetime.now(UTC),
        **kwargs,
    )


class TestImport:
    def test_rows_are_stored_and_published_like_ingested_events(
        self, api: Api, shop: dict[str, Any], outcome: Outcome, tmp_path: Path
    ) -> None:
        path = write_orders(
            tmp_path / "orders.csv",
            3,
            extra=["c0,ORD-0,2024-02-01,50,,,refund", "c9,ORD-9,2024-02-02T10:00:00+09:00,10,,,"],
        )

        summary = run_import(api, shop, path, chunk_size=2)

        assert (summary.rows, summary.events, summary.imported, summary.duplicates) == (5, 5, 5, 0)
        assert (summary.purchases, summary.refunds) == (4, 1)
        published = outcome.published()
        assert [e.type for e in published] == ["purchase_made"] * 3 + ["refund_issued", "purchase_made"]
        first = published[0]
        assert (first.id, first.shop_id, first.customer_id, first.source) == (
            "import:ORD-0",
            shop["id"],
            "c0",
            "customer-api/import",
        )
        assert first.time == datetime(2023, 12, 31, 15, 0, tzinfo=UTC)  # midnight in Asia/Tokyo
        assert first.data == {
            "order_id": "ORD-0",
            "amount": "100",
            "currency": "JPY",
            "items": [{"sku": "SKU-0", "quantity": 1, "unit_price": "100"}],
        }
        with api.engine.connect() as connection:
            stored = connection.execute(
                select(tables.ingested_events).where(tables.ingested_events.c.event_id == "import:ORD-0")
            ).one()
        assert (stored.type, stored.customer_id) == ("purchase_made", "c0")
        assert json.loads(stored.payload) == first.data

    def test_importing_the_same_file_again_adds_nothing(
        self, api: Api, shop: dict[str, Any], outcome: Outcome, tmp_path: Path
    ) -> None:
        path = write_orders(tmp_path / "orders.csv", 25)
        run_import(api, shop, path, chunk_size=10)

        again = run_import(api, shop, path, chunk_size=10)

        assert (again.imported, again.duplicates) == (0, 25)
        assert outcome.events() == 25
        assert len(outcome.published()) == 25

    def test_an_overlapping_file_adds_only_the_new_orders(
        self, api: Api, shop: dict[str, Any], outcome: Outcome, tmp_path: Path
    ) -> None:
        run_import(api, shop, write_orders(tmp_path / "first.csv", 20))

        later = run_import(api, shop, write_orders(tmp_path / "second.csv", 20, start=15), chunk_size=4)

        assert (later.imported, later.duplicates) == (15, 5)
        assert outcome.events() == 35
        assert len({e.id for e in outcome.published()}) == len(outcome.published()) == 35

    def test_an_invalid_file_writes_nothing(
        self, api: Api, shop: dict[str, Any], outcome: Outcome, tmp_path: Path
    ) -> None:
        path = write_orders(tmp_path / "orders.csv", 30, extra=["c1,ORD-X,2024-02-30,10,,,"])
        before = api.count(tables.messaging.outbox)

        with pytest.raises(ImportRejected) as rejected:
            run_import(api, shop, path, chunk_size=5)

        assert [str(e) for e in rejected.value.errors] == [
            "line 32, column 'occurred_at': cannot read '2024-02-30' as a date; expected RFC 3339 "
            "(2024-01-05T10:30:00+09:00) or a date (2024-01-05)"
        ]
        assert outcome.events() == 0
        assert api.count(tables.messaging.outbox) == before

    def test_an_unknown_shop_is_refused(self, api: Api, tmp_path: Path) -> None:
        with pytest.raises(service.UnknownShop):
            run_import(api, {"id": "shop_nobody"}, write_orders(tmp_path / "orders.csv", 1))

    def test_the_same_refund_twice_in_one_chunk_is_stored_and_published_once(
        self, api: Api, shop: dict[str, Any], outcome: Outcome, tmp_path: Path
    ) -> None:
        refund = "c0,ORD-0,2024-03-01,5,,,refund"
        path = write_orders(tmp_path / "orders.csv", 1, extra=[refund, refund])

        summary = run_import(api, shop, path)

        assert (summary.events, summary.imported, summary.duplicates) == (3, 2, 1)
        assert [e.type for e in outcome.published()] == ["purchase_made", "refund_issued"]


class TestResume:
    def test_a_crash_between_chunks_leaves_whole_chunks_and_the_rest_follows_on_resume(
        self, api: Api, shop: dict[str, Any], outcome: Outcome, tmp_path: Path
    ) -> None:
        path = write_orders(tmp_path / "orders.csv", 23)
        committed: list[int] = []

        def crash_after_the_first_chunk(progress: ImportProgress) -> None:
            committed.append(progress.rows)
            raise KeyboardInterrupt("the power went out")

        with pytest.raises(KeyboardInterrupt):
            run_import(api, shop, path, chunk_size=10, on_progress=crash_after_the_first_chunk)

        assert committed == [10]
        assert outcome.events() == 10
        resumed = run_import(api, shop, path, chunk_size=10, skip_rows=committed[-1])
        assert (resumed.resumed_from_row, resumed.imported, resumed.duplicates) == (10, 13, 0)
        assert outcome.events() == 23
        assert sorted(int(e.id.removeprefix("import:ORD-")) for e in outcome.published()) == list(range(23))

    def test_a_crash_before_the_checkpoint_was_saved_costs_only_duplicates(
        self, api: Api, shop: dict[str, Any], outcome: Outcome, tmp_path: Path
    ) -> None:
        path = write_orders(tmp_path / "orders.csv", 23)
        with pytest.raises(KeyboardInterrupt):
            run_import(api, shop, path, chunk_size=10, on_progress=_raise(KeyboardInterrupt()))

        resumed = run_import(api, shop, path, chunk_size=10, skip_rows=0)

        assert (resumed.imported, resumed.duplicates) == (13, 10)
        assert len(outcome.published()) == 23

    def test_import_rows_writes_each_chunk_in_one_transaction(
        self, api: Api, shop: dict[str, Any], outcome: Outcome, tmp_path: Path
    ) -> None:
        path = write_orders(tmp_path / "orders.csv", 12)
        mapping = ColumnMapping()
        parser = service.parser_for(
            service.shop_profile(api.uow_factory, shop["id"]), mapping, datetime.now(UTC)
        )
        events = list(history_events(FileSource(path, "csv").records(parser.mapping), parser))
        seen: list[tuple[int, int]] = []

        progress = import_rows(
            uow_factory=api.uow_factory,
            shop_id=shop["id"],
            rows=events,
            chunk_size=5,
            on_progress=lambda p: seen.append((p.rows, outcome.events())),
        )

        assert seen == [(5, 5), (10, 10), (12, 12)]
        assert (progress.events, progress.imported, progress.duplicates) == (12, 12, 0)


def _raise(error: BaseException) -> Any:
    def fail(_progress: ImportProgress) -> None:
        raise error

    return fail


@pytest.fixture
def retention(api: Api, tmp_path: Path) -> Any:
    """`retention …` with the service commands loaded, on the test's embedded database."""
    cli.load_service_commands()
    runner = CliRunner()

    def invoke(*arguments: str) -> Any:
        return runner.invoke(
            cli.app, list(arguments), env={"RETENTION_DATA_DIR": str(tmp_path), "RETENTION_MODE": "embedded"}
        )

    return invoke


class TestCommand:
    def test_the_service_registers_its_import_command(self, retention: Any) -> None:
        assert "import" in {command.name for command in cli.app.registered_commands}
        assert retention("import", "--help").exit_code == 0

    def test_import_maps_columns_and_reports(
        self, retention: Any, shop: dict[str, Any], outcome: Outcome, tmp_path: Path
    ) -> None:
        path = tmp_path / "export.csv"
        path.write_text(
            "Customer ID,Order,Created at,Total,Currency\n"
            "c1,A-1,05/01/2024 10:00,4800,JPY\n"
            "c1,A-2,06/01/2024 10:00,12.50,USD\n"
        )

        result = retention(
            "import",
            str(path),
            "--shop",
            shop["id"],
            "--map",
            "customer_id=Customer ID",
            "--map",
            "order_id=Order",
            "--map",
            "occurred_at=Created at",
            "--map",
            "amount=Total",
            "--map",
            "currency=Currency",
            "--date-format",
            "%d/%m/%Y %H:%M",
        )

        assert result.exit_code == 0, result.output
        assert "imported 2 new event(s), 0 already there" in result.output
        assert [(e.data["amount"], e.data["currency"]) for e in outcome.published()] == [
            ("4800", "JPY"),
            ("12.50", "USD"),
        ]
        assert not list((tmp_path / "imports").glob("*.json"))  # done: no resume point left

    def test_a_mapping_file_and_jsonl(
        self, retention: Any, shop: dict[str, Any], outcome: Outcome, tmp_path: Path
    ) -> None:
        mapping = tmp_path / "mapping.yaml"
        mapping.write_text("customer_id: customer\norder_id: order\namount: total\nrefund_kinds: [return]\n")
        path = tmp_path / "history.jsonl"
        path.write_text(
            '{"customer": "c1", "order": "A-1", "occurred_at": "2024-01-05", "total": 4800}\n'
            '{"customer": "c1", "order": "A-1", "occurred_at": "2024-01-08", "total": 800,'
            ' "kind": "return"}\n'
        )

        result = retention(
            "import", str(path), "--shop", shop["id"], "--mapping", str(mapping), "--currency", "eur"
        )

        assert result.exit_code == 0, result.output
        assert [(e.type, e.data["currency"]) for e in outcome.published()] == [
            ("purchase_made", "EUR"),
            ("refund_issued", "EUR"),
        ]

    def test_an_invalid_file_lists_the_lines_and_writes_nothing(
        self, retention: Any, shop: dict[str, Any], outcome: Outcome, tmp_path: Path
    ) -> None:
        path = write_orders(
            tmp_path / "orders.csv", 5, extra=["c1,ORD-X,2024-01-05,-3,,,", "c1,,2024-01-05,3,,,"]
        )

        result = retention("import", str(path), "--shop", shop["id"])

        assert result.exit_code == 1
        assert "nothing was written" in result.output
        assert "line 7, column 'amount': -3 is negative" in result.output
        assert "line 8, column 'order_id': is empty" in result.output
        assert outcome.events() == 0

    def test_an_interrupted_import_resumes_from_its_checkpoint(
        self,
        retention: Any,
        api: Api,
        shop: dict[str, Any],
        outcome: Outcome,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        path = write_orders(tmp_path / "orders.csv", 25)
        save = CheckpointStore.save

        def save_then_crash(store: CheckpointStore, checkpoint: Checkpoint) -> None:
            save(store, checkpoint)
            raise KeyboardInterrupt

        monkeypatch.setattr(CheckpointStore, "save", save_then_crash)
        crashed = retention("import", str(path), "--shop", shop["id"], "--chunk-size", "10")
        assert crashed.exit_code != 0
        assert outcome.events() == 10
        (saved,) = (tmp_path / "imports").glob("*.json")
        assert json.loads(saved.read_text())["rows"] == 10

        monkeypatch.setattr(CheckpointStore, "save", save)
        result = retention("import", str(path), "--shop", shop["id"], "--chunk-size", "10")

        assert result.exit_code == 0, result.output
        assert "resuming after row 10" in result.output
        assert "imported 25 new event(s), 0 already there" in result.output
        assert outcome.events() == 25
        assert len(outcome.published()) == 25
        assert not saved.exists()

    def test_restart_ignores_the_checkpoint(
        self, retention: Any, shop: dict[str, Any], outcome: Outcome, tmp_path: Path
    ) -> None:
        path = write_orders(tmp_path / "orders.csv", 8)
        source = FileSource(path, "csv")
        CheckpointStore(tmp_path / "imports").save(
            Checkpoint(shop["id"], source.sha256, ColumnMapping().fingerprint(), rows=8)
        )

        result = retention("import", str(path), "--shop", shop["id"], "--restart")

        assert "resuming" not in result.output
        assert "imported 8 new event(s)" in result.output
        assert outcome.events() == 8

    def test_mistakes_in_the_call_are_explained(
        self, retention: Any, shop: dict[str, Any], tmp_path: Path
    ) -> None:
        path = write_orders(tmp_path / "orders.txt", 1)

        unknown_format = retention("import", str(path), "--shop", shop["id"])
        bad_map = retention("import", str(path), "--shop", shop["id"], "--format", "csv", "--map", "client=C")
        no_shop = retention("import", str(path), "--shop", "shop_nobody", "--format", "csv")

        assert unknown_format.exit_code == 2
        assert "--format csv" in unknown_format.output
        assert bad_map.exit_code == 2
        assert "FIELD=COLUMN" in bad_map.output
        assert no_shop.exit_code == 1
        assert "no shop 'shop_nobody'" in no_shop.output
