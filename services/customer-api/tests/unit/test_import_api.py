"""`POST /v1/imports`: a streamed upload through the customer-api's own app."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from customer_api.adapters import tables
from customer_api.entrypoints.api.imports import build_import_router
from retention_shared.events.envelope import decode_envelope
from retention_shared.tenancy import Principal
from retention_shared.testing.harness import Api
from retention_shared.web import create_app

PROBLEM_JSON = "application/problem+json"
CSV = "text/csv"
EXPORT = (
    "Customer ID,Order,Date,Total,Type\n"
    "c1,A-1,2024-01-05,4800,\n"
    "c1,A-1,2024-01-05,1200,\n"
    "c2,A-2,2024-02-01T09:30:00+09:00,999.50,\n"
    "c1,A-1,2024-01-09,600,refund\n"
)
MAPPING = {
    "customer_id": "Customer ID",
    "order_id": "Order",
    "occurred_at": "Date",
    "amount": "Total",
    "kind": "Type",
}


def auth(shop: dict[str, Any], **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {shop['api_key']}", **headers}


def in_parts(text: str, size: int = 7) -> Iterator[bytes]:
    body = text.encode()
    for start in range(0, len(body), size):
        yield body[start : start + size]


def imported_ids(api: Api) -> list[str]:
    from sqlalchemy import select

    with api.engine.connect() as connection:
        payloads = connection.execute(select(tables.messaging.outbox.c.payload)).scalars().all()
    return sorted(
        e.id for e in map(decode_envelope, payloads) if e.type in ("purchase_made", "refund_issued")
    )


def test_a_streamed_csv_is_imported_and_counted(api: Api, shop: dict[str, Any]) -> None:
    response = api.client.post(
        "/v1/imports", params=MAPPING, content=in_parts(EXPORT), headers=auth(shop, **{"Content-Type": CSV})
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert {k: body[k] for k in ("rows", "events", "purchases", "refunds", "imported", "duplicates")} == {
        "rows": 4,
        "events": 3,
        "purchases": 2,
        "refunds": 1,
        "imported": 3,
        "duplicates": 0,
    }
    assert body["recent"] == 0
    assert body["first_at"] == "2024-01-04T15:00:00Z"
    assert len(body["sha256"]) == 64
    assert imported_ids(api)[:2] == ["import:A-1", "import:A-2"]
    assert api.count(tables.ingested_events) == 3


def test_sending_the_file_again_adds_nothing(api: Api, shop: dict[str, Any]) -> None:
    headers = auth(shop, **{"Content-Type": CSV})
    api.client.post("/v1/imports", params=MAPPING, content=EXPORT, headers=headers).raise_for_status()

    again = api.client.post("/v1/imports", params=MAPPING, content=EXPORT, headers=headers)

    assert (again.json()["imported"], again.json()["duplicates"]) == (0, 3)
    assert api.count(tables.ingested_events) == 3
    assert len(imported_ids(api)) == 3


def test_the_mapping_may_come_as_a_json_header_with_jsonl(api: Api, shop: dict[str, Any]) -> None:
    lines = "\n".join(
        json.dumps(document)
        for document in (
            {"customer": "c1", "order": "B-1", "at": "2024-03-01T10:00:00Z", "total": "10", "sku": "S"},
            {"customer": "c2", "order": "B-2", "at": "2024-03-02T10:00:00Z", "total": 20},
        )
    )
    mapping = {"customer_id": "customer", "order_id": "order", "occurred_at": "at", "amount": "total"}

    response = api.client.post(
        "/v1/imports",
        content=lines,
        headers=auth(
            shop, **{"Content-Type": "application/x-ndjson", "X-Import-Mapping": json.dumps(mapping)}
        ),
    )

    assert response.status_code == 200, response.text
    assert response.json()["imported"] == 2


def test_an_invalid_file_is_422_listing_lines_and_nothing_is_written(api: Api, shop: dict[str, Any]) -> None:
    bad = EXPORT + "c3,A-3,2024-13-01,5,\nc4,A-4,2024-01-01,-5,\n"
    before = api.count(tables.messaging.outbox)

    response = api.client.post(
        "/v1/imports", params=MAPPING, content=bad, headers=auth(shop, **{"Content-Type": CSV})
    )

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_JSON
    problem = response.json()
    assert problem["detail"] == "The file was not imported, nothing was written: 2 problem(s)"
    assert [(e["line"], e["field"], e["column"]) for e in problem["errors"]] == [
        (6, "occurred_at", "Date"),
        (7, "amount", "Total"),
    ]
    assert problem["errors"][1]["message"] == "-5 is negative; amounts must be 0 or more"
    assert (
        problem["errors"][1]["detail"]
        == "line 7, column 'Total' (amount): -5 is negative; amounts must be 0 or more"
    )
    assert api.count(tables.ingested_events) == 0
    assert api.count(tables.messaging.outbox) == before


def test_a_missing_column_is_422_on_line_1(api: Api, shop: dict[str, Any]) -> None:
    response = api.client.post(
        "/v1/imports", content="customer_id,order_id\nc1,o1\n", headers=auth(shop, **{"Content-Type": CSV})
    )

    assert response.status_code == 422
    assert [(e["line"], e["field"]) for e in response.json()["errors"]] == [(1, "occurred_at"), (1, "amount")]


@pytest.mark.parametrize(
    ("params", "headers", "field"),
    [
        ({"customer": "Customer"}, {}, "customer"),
        ({"amount_scope": "line"}, {}, "amount_scope"),
        ({}, {"X-Import-Mapping": "{not json"}, "X-Import-Mapping"),
        ({}, {"X-Import-Mapping": '["customer_id"]'}, "X-Import-Mapping"),
    ],
)
def test_a_bad_mapping_is_422_naming_it(
    api: Api, shop: dict[str, Any], params: dict[str, str], headers: dict[str, str], field: str
) -> None:
    response = api.client.post(
        "/v1/imports", params=params, content=EXPORT, headers=auth(shop, **{"Content-Type": CSV}, **headers)
    )

    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == field
    assert api.count(tables.ingested_events) == 0


def test_other_content_types_are_415(api: Api, shop: dict[str, Any]) -> None:
    response = api.client.post("/v1/imports", json={"rows": []}, headers=auth(shop))

    assert response.status_code == 415
    assert response.headers["content-type"] == PROBLEM_JSON


def test_a_charset_names_the_encoding(api: Api, shop: dict[str, Any]) -> None:
    body = "customer_id,order_id,occurred_at,amount,sku,name\nc1,o1,2024-01-05,1,S,緑茶\n".encode("cp932")

    response = api.client.post(
        "/v1/imports", content=body, headers=auth(shop, **{"Content-Type": "text/csv; charset=cp932"})
    )
    wrong = api.client.post("/v1/imports", content=body, headers=auth(shop, **{"Content-Type": CSV}))

    assert response.status_code == 200, response.text
    assert wrong.status_code == 422
    assert wrong.json()["errors"][0]["line"] == 2


def test_the_key_needs_the_events_write_scope(api: Api, shop: dict[str, Any]) -> None:
    created = api.client.post(
        "/v1/api-keys", json={"name": "reader", "scopes": ["customers:read"]}, headers=auth(shop)
    )
    assert created.status_code == 201, created.text

    response = api.client.post(
        "/v1/imports",
        content=EXPORT,
        headers={"Authorization": f"Bearer {created.json()['api_key']}", "Content-Type": CSV},
    )

    assert response.status_code == 403


def test_a_body_over_the_limit_is_413_and_leaves_no_spool_file(
    api: Api, shop: dict[str, Any], tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    app: FastAPI = create_app("t", "customer-api", [])
    app.include_router(
        build_import_router(
            uow_factory=api.uow_factory,
            authenticate=lambda: Principal(
                shop_id=shop["id"], key_id="k", scopes=frozenset({"events:write"})
            ),
            max_bytes=64,
            spool_dir=spool,
        )
    )

    with TestClient(app) as client:
        response = client.post("/v1/imports", content=in_parts(EXPORT * 3), headers={"Content-Type": CSV})

    assert response.status_code == 413
    assert response.headers["content-type"] == PROBLEM_JSON
    assert list(spool.iterdir()) == []
    assert api.count(tables.ingested_events) == 0
