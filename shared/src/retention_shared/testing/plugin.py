"""pytest fixtures: an injectable clock, real SMTP, fresh PostgreSQL databases, Kafka namespaces."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import pytest

from retention_shared.clock import ManualClock
from retention_shared.testing import infra
from retention_shared.testing.smtp import SmtpServer


@pytest.fixture
def manual_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    try:
        yield server
    finally:
        server.stop()


def _unavailable(what: str) -> None:
    message = f"{what} is not reachable (start it with `make infra`)"
    if infra.infrastructure_required():
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres() -> str:
    """The admin URL of the test PostgreSQL server."""
    if not infra.postgres_available():
        _unavailable("PostgreSQL")
    return infra.ADMIN_URL


@pytest.fixture
def database_factory(postgres: str) -> Iterator[Callable[[], str]]:
    """Creates fresh databases and drops them after the test."""
    created: list[str] = []

    def make() -> str:
        url = infra.create_database()
        created.append(url)
        return url

    yield make
    for url in created:
        infra.drop_database(url)


@pytest.fixture(scope="session")
def kafka() -> str:
    """The bootstrap address of the test Kafka broker."""
    if not infra.kafka_available():
        _unavailable("Kafka")
    return infra.KAFKA_BOOTSTRAP


@pytest.fixture
def topic_namespace(kafka: str) -> str:
    """A namespace of fresh topics (all of the catalogue's, and their dead-letter topics)."""
    from retention_shared.events.topics import ALL_TOPICS
    from retention_shared.messaging.kafka import ensure_topics

    namespace = f"t{secrets.token_hex(4)}"
    names = [topic.qualified(namespace) for topic in ALL_TOPICS]
    ensure_topics(kafka, names + [f"{name}.dlq" for name in names], partitions=3, replication=1)
    return namespace
