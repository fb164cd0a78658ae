"""Fixtures for customer-api tests: the customer-api alone, on SQLite, behind a TestClient."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from retention_shared.config import Mode, PlatformSettings
from retention_shared.platform import app_with_workers, assemble
from retention_shared.runtime import service_named
from retention_shared.testing.harness import ADMIN_TOKEN, Api

PROBLEM_JSON = "application/problem+json"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    settings = PlatformSettings(
        mode=Mode.EMBEDDED,
        data_dir=tmp_path,
        admin_token=ADMIN_TOKEN,
        customer_api_database_url=None,
        topic_namespace="",
    )
    assembly = assemble([service_named("customer-api")], settings, migrate=True)
    app = app_with_workers(assembly, "t", "customer-api", run_workers=False)
    with TestClient(app) as client:
        harness = Api(client, assembly.runtimes[0].engine)
        harness.uow_factory = assembly.runtimes[0].uow_factory
        yield harness


@pytest.fixture
def shop(api: Api) -> dict[str, Any]:
    return api.create_shop()
