from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from retention_shared.testing.processes import SERVICES, Platform, all_in_one, distributed
from retention_shared.testing.smtp import SmtpServer


@pytest.fixture
def distributed_platform(
    tmp_path: Path,
    database_factory: Callable[[], str],
    kafka: str,
    topic_namespace: str,
    smtp_server: SmtpServer,
) -> Iterator[Platform]:
    platform = distributed(
        tmp_path,
        databases={service: database_factory() for service in SERVICES},
        kafka=kafka,
        namespace=topic_namespace,
        smtp_port=smtp_server.port,
    )
    try:
        # Inside the try: a process that never became healthy must not outlive the test either.
        platform.start()
        yield platform
    finally:
        platform.stop()


@pytest.fixture
def embedded_platform(tmp_path: Path, smtp_server: SmtpServer) -> Iterator[Platform]:
    platform = all_in_one(tmp_path, smtp_port=smtp_server.port)
    try:
        # Inside the try: a process that never became healthy must not outlive the test either.
        platform.start()
        yield platform
    finally:
        platform.stop()


@pytest.fixture(params=["distributed", "embedded"])
def platform(request: pytest.FixtureRequest) -> Platform:
    """The same slice runs against both modes."""
    fixture: Platform = request.getfixturevalue(f"{request.param}_platform")
    return fixture
