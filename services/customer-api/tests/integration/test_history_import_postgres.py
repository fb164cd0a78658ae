"""The history import on real PostgreSQL: COPY into the events and the outbox, the careful path when
some events are there already, resuming, and two imports of one file at once."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from customer_api.adapters import bulk, tables
from customer_api.domain.history_import import ColumnMapping
from customer_api.service_layer.history_import import FileSource, ImportProgress, ImportSummary, import_file
from customer_api.service_layer.uow import CustomerApiUnitOfWork
from retention_shared.events.envelope import decode_envelope

pytestmark = pytest.mark.integration

ORDERS = 3000
UowFactory = Callable[[], CustomerApiUnitOfWork]


@pytest.fixture
def history(tmp_path: Path) -> Path:
    """3,000 orders (every third with two lines), every tenth refunded: 4,300 rows, 3,300 events."""
    lines = ["customer_id,order_id,occurred_at,amount,sku,name,quantity,kind"]
    for n in range(ORDERS):
        when = f"20{22 + n % 3}-{1 + n % 12:02d}-{1 + n % 28:02d}T{n % 24:02d}:15:00+09:00"
        lines.append(f'c{n % 400},ORD-{n},{when},{1000 + n},TEA-{n % 50},"Tea, ""No. {n % 50}""",1,')
        if n % 3 == 0:
            lines.append(f"c{n % 400},ORD-{n},{when},500,CUP\\1,Cup,2,")
        if n % 10 == 0:
            lines.append(f"c{n % 400},ORD-{n},2025-06-01,100,,,,refund")
    path = tmp_path / "history.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def run(uow_factory: UowFactory, shop_id: str, path: Path, **kwargs: Any) -> ImportSummary:
    return import_file(
        uow_factory=uow_factory,
        shop_id=shop_id,
        source=FileSource(path, "csv"),
        mapping=ColumnMapping(),
        now=datetime.now(UTC),
        **kwargs,
    )


def stored(engine: Engine) -> tuple[int, list[Any]]:
    with engine.connect() as connection:
        events = connection.execute(select(func.count()).select_from(tables.ingested_events)).scalar_one()
        payloads = connection.execute(
            select(tables.messaging.outbox.c.payload).order_by(tables.messaging.outbox.c.id)
        ).scalars()
        envelopes = [decode_envelope(payload) for payload in payloads]
    return int(events), [e for e in envelopes if e.type in ("purchase_made", "refund_issued")]


def test_a_few_thousand_rows_are_copied_once_and_published_in_file_order(
    uow_factory: UowFactory, shop_id: str, engine: Engine, history: Path
) -> None:
    summary = run(uow_factory, shop_id, history, chunk_size=500)

    assert (summary.rows, summary.events, summary.purchases, summary.refunds) == (4300, 3300, 3000, 300)
    assert (summary.imported, summary.duplicates) == (3300, 0)
    count, published = stored(engine)
    assert count == 3300
    assert len(published) == 3300
    assert [e.type for e in published[:3]] == ["purchase_made", "refund_issued", "purchase_made"]
    assert (published[0].id, published[2].id) == ("import:ORD-0", "import:ORD-1")
    first = published[0]
    assert first.data["amount"] == "1500"  # 1000 + 500: the two lines of ORD-0
    assert first.data["items"][0]["name"] == 'Tea, "No. 0"'
    assert first.data["items"][1] == {"sku": "CUP\\1", "name": "Cup", "quantity": 2, "unit_price": "250"}
    with engine.connect() as connection:
        row = connection.execute(
            select(tables.ingested_events).where(tables.ingested_events.c.event_id == "import:ORD-0")
        ).one()
    assert row.occurred_at == datetime(2021, 12, 31, 15, 15, tzinfo=UTC)  # 00:15 in Tokyo
    assert row.payload == first.model_dump_json(include={"data"})[8:-1]

    again = run(uow_factory, shop_id, history, chunk_size=500)

    assert (again.imported, again.duplicates) == (0, 3300)
    assert stored(engine)[0] == 3300
    assert len(stored(engine)[1]) == 3300


def test_events_stored_before_take_the_careful_path_and_are_not_published_twice(
    uow_factory: UowFactory,
    shop_id: str,
    engine: Engine,
    history: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    part = tmp_path / "part.csv"
    lines = history.read_text().splitlines()
    part.write_text("\n".join(lines[:1] + lines[1000:1200]) + "\n")
    partial_summary = run(uow_factory, shop_id, part)
    careful_chunks: list[int] = []
    through_stage = bulk._copy_through_stage

    def spy(session: Any, shop: str, events: Any, received_at: datetime) -> set[str]:
        careful_chunks.append(len(events))
        return through_stage(session, shop, events, received_at)

    monkeypatch.setattr(bulk, "_copy_through_stage", spy)

    summary = run(uow_factory, shop_id, history, chunk_size=400)

    assert careful_chunks  # the chunks holding stored events were written again, carefully
    assert len(careful_chunks) < 3300 / 400  # the others went straight in
    assert summary.duplicates == partial_summary.events
    assert summary.imported == 3300 - partial_summary.events
    count, published = stored(engine)
    assert count == 3300
    assert len({e.id for e in published}) == len(published) == 3300


def test_a_crash_between_chunks_resumes_at_the_last_committed_chunk(
    uow_factory: UowFactory, shop_id: str, engine: Engine, history: Path
) -> None:
    committed: list[int] = []

    def crash_after_two_chunks(progress: ImportProgress) -> None:
        committed.append(progress.rows)
        if len(committed) == 2:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        run(uow_factory, shop_id, history, chunk_size=1000, on_progress=crash_after_two_chunks)
    assert stored(engine)[0] == 2000

    resumed = run(uow_factory, shop_id, history, chunk_size=1000, skip_rows=committed[-1])

    assert (resumed.imported, resumed.duplicates) == (1300, 0)
    assert stored(engine)[0] == 3300
    assert len(stored(engine)[1]) == 3300


def test_two_imports_of_one_file_at_once_store_and_publish_each_event_once(
    uow_factory: UowFactory, shop_id: str, engine: Engine, history: Path
) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: run(uow_factory, shop_id, history, chunk_size=300), range(2)))

    assert sum(r.imported for r in results) == 3300
    assert sum(r.duplicates for r in results) == 3300
    count, published = stored(engine)
    assert count == 3300
    assert len({e.id for e in published}) == len(published) == 3300
