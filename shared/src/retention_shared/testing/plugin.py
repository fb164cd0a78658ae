"""pytest fixtures: an injectable clock, real SMTP, fresh PostgreSQL databases, Kafka namespaces."""

from __future__ import annotations

import secrets
import warnings
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
def topic_namespace(kafka: str) -> Iterator[str]:
    """A namespace of fresh topics (all of the catalogue's, and their dead-letter topics).

    The topics are deleted afterwards so that a long-lived local broker does not
    pile up thousands of partitions (which slows its every restart).
    """
    from retention_shared.events.topics import ALL_TOPICS
    from retention_shared.messaging.kafka import delete_topics, ensure_topics

    namespace = f"t{secrets.token_hex(4)}"
    names = [topic.qualified(namespace) for topic in ALL_TOPICS]
    names += [f"{name}.dlq" for name in names]
    ensure_topics(kafka, names, partitions=3, replication=1)
    yield namespace
    try:
        delete_topics(kafka, names)
    except Exception as error:  # cleanup only: never fail the test over it
        warnings.warn(f"topics of namespace {namespace} left behind: {error}", stacklevel=1)


CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # The machine's network is closed: without these, Chromium keeps dialling Google's services.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.fixture(scope="module")
def chromium_browser() -> Iterator[object]:
    """Debian's headless Chromium driven by Playwright (`make infra` installs it; no browser downloads).

    `RETENTION_TEST_CHROMIUM` names another binary. Yields a `playwright.sync_api.Browser`.
    """
    import os
    import shutil

    executable = os.environ.get("RETENTION_TEST_CHROMIUM", "/usr/bin/chromium")
    if shutil.which(executable) is None:
        _unavailable(f"Chromium ({executable}; install Debian's chromium package or run `make infra`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()
