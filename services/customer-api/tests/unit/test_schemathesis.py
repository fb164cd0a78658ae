"""Property-based checks of the customer-api against its own OpenAPI document (schemathesis):
whatever the input, no 5xx and no response that breaks the documented schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from retention_shared.config import Mode, PlatformSettings
from retention_shared.platform import app_with_workers, assemble
from retention_shared.runtime import service_named
from retention_shared.testing.harness import ADMIN_TOKEN


@pytest.fixture(scope="module")
def customer_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    data_dir: Path = tmp_path_factory.mktemp("schemathesis")
    settings_ = PlatformSettings(
        mode=Mode.EMBEDDED, data_dir=data_dir, admin_token=ADMIN_TOKEN, rate_limit="100000/second"
    )
    assembly = assemble([service_named("customer-api")], settings_, migrate=True)
    app = app_with_workers(assembly, "customer-api", "customer-api", run_workers=False)
    with TestClient(app) as client:
        key = client.post(
            "/v1/shops", json={"name": "Fuzz"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        yield app, key.json()["api_key"]
    assembly.dispose()


def test_no_server_errors_and_responses_match_the_schema(customer_api: tuple[Any, str]) -> None:
    app, key = customer_api
    api_schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 20, "the customer-api's operations were not all found"
    for operation in operations:
        fuzz(operation, ADMIN_TOKEN if operation.path.startswith("/v1/shops") else key)


def fuzz(operation: Any, token: str) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Any) -> None:
        # Business rules beyond JSON Schema (real IANA zones, dialable phone numbers, ISO 4217 codes)
        # rightly reject some schema-valid inputs, so that one check does not apply.
        case.call_and_validate(
            headers={"Authorization": f"Bearer {token}"}, excluded_checks=[positive_data_acceptance]
        )

    check()
