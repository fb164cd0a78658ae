"""Every answer carries a correlation id, and every request lands in the latency histogram under
its route template and status, errors included."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from retention_shared.logs import correlation_id
from retention_shared.metrics import REQUEST_LATENCY
from retention_shared.web import create_app

SERVICE = "observability-probe"


def _app() -> FastAPI:
    app = create_app("probe", SERVICE, [])

    @app.get("/items/{item_id}")
    def item(item_id: int) -> dict[str, object]:
        # The id must be visible to the handler (it goes into outgoing events and logs).
        return {"item": item_id, "correlation_id": correlation_id.get()}

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("unexpected")

    return app


def _count(template: str, status: str) -> float:
    for metric in REQUEST_LATENCY.collect():
        for sample in metric.samples:
            if (
                sample.name.endswith("_count")
                and sample.labels.get("service") == SERVICE
                and sample.labels.get("route") == template
                and sample.labels.get("status") == status
            ):
                return sample.value
    return 0.0


def test_an_incoming_correlation_id_is_used_and_echoed() -> None:
    response = TestClient(_app()).get("/items/7", headers={"X-Correlation-ID": "order-flow-42"})
    assert response.headers["X-Correlation-ID"] == "order-flow-42"
    assert response.json() == {"item": 7, "correlation_id": "order-flow-42"}


def test_a_request_without_one_gets_a_fresh_id_per_request() -> None:
    client = TestClient(_app())
    first = client.get("/items/1").headers["X-Correlation-ID"]
    second = client.get("/items/1").headers["X-Correlation-ID"]
    assert first and second and first != second


def test_an_overlong_correlation_id_is_cut_to_128_characters() -> None:
    response = TestClient(_app()).get("/items/1", headers={"X-Correlation-ID": "x" * 500})
    assert response.headers["X-Correlation-ID"] == "x" * 128


@pytest.mark.parametrize(
    ("path", "template", "status"),
    [
        ("/items/3", "/items/{item_id}", "200"),
        ("/items/not-a-number", "/items/{item_id}", "422"),
        ("/nowhere", "unmatched", "404"),
        ("/boom", "/boom", "500"),
    ],
)
def test_latency_is_recorded_per_route_template_and_status(path: str, template: str, status: str) -> None:
    before = _count(template, status)
    TestClient(_app(), raise_server_exceptions=False).get(path)
    assert _count(template, status) == before + 1
