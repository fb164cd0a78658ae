"""How services plug into the platform: each declares a ServiceDefinition (found through the
`retention.services` entry point group) whose bootstrap wires its adapters into a ServiceRuntime."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import Engine, MetaData, text

from retention_shared.clock import Clock
from retention_shared.config import Mode, PlatformSettings
from retention_shared.db import create_db_engine
from retention_shared.events.topics import ALL_TOPICS, Topic
from retention_shared.messaging.consumer import BatchHandler, Handler
from retention_shared.messaging.kafka import KafkaPublisher, KafkaSubscriber, broker_reachable, group_backlog
from retention_shared.messaging.local import LocalLog, LocalPublisher, LocalSubscriber
from retention_shared.messaging.outbox import MessagingTables
from retention_shared.messaging.ports import Publisher, Subscriber
from retention_shared.ratelimit import KeyRateLimiter
from retention_shared.uow import SqlAlchemyUnitOfWork
from retention_shared.web import ServiceApi

if TYPE_CHECKING:
    import typer

# The order services start in; it also orders the OpenAPI document.
SERVICE_ORDER = ("customer-api", "segmentation-worker", "followup-scheduler", "survey-service")


class Bus(Protocol):
    def publisher(self, client_id: str) -> Publisher: ...

    def subscriber(self, *, group: str, topics: list[str], client_id: str) -> Subscriber: ...

    def backlog(self, group: str, topics: list[str]) -> dict[str, int]:
        """Records of each topic the consumer group has not committed yet."""
        ...

    def check(self) -> None:
        """Raise if the broker cannot be reached."""
        ...


class KafkaBus:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def publisher(self, client_id: str) -> Publisher:
        return KafkaPublisher(self.bootstrap, client_id=client_id)

    def subscriber(self, *, group: str, topics: list[str], client_id: str) -> Subscriber:
        return KafkaSubscriber(self.bootstrap, group_id=group, topics=topics, client_id=client_id)

    def backlog(self, group: str, topics: list[str]) -> dict[str, int]:
        return group_backlog(self.bootstrap, group, topics)

    def check(self) -> None:
        if not broker_reachable(self.bootstrap):
            raise ConnectionError(f"Kafka at {self.bootstrap} is unreachable")


class LocalBus:
    def __init__(self, path: Path) -> None:
        self.log = LocalLog(path)

    def publisher(self, client_id: str) -> Publisher:
        return LocalPublisher(self.log)

    def subscriber(self, *, group: str, topics: list[str], client_id: str) -> Subscriber:
        return LocalSubscriber(self.log, group_id=group, topics=topics)

    def backlog(self, group: str, topics: list[str]) -> dict[str, int]:
        committed = self.log.committed(group, topics)
        return {topic: self.log.count_after(topic, committed[topic]) for topic in topics}

    def check(self) -> None:
        self.log.end("healthcheck")


@dataclass
class PlatformContext:
    settings: PlatformSettings
    clock: Clock

    @cached_property
    def bus(self) -> Bus:
        if self.settings.mode is Mode.DISTRIBUTED:
            return KafkaBus(self.settings.kafka_bootstrap)
        return LocalBus(self.settings.data_dir / "bus.db")

    @cached_property
    def rate_limiter(self) -> KeyRateLimiter:
        """One limiter per process, shared by every service in it."""
        return KeyRateLimiter(self.settings.rate_limit)

    def topic_name(self, topic: Topic) -> str:
        return topic.qualified(self.settings.topic_namespace)

    def all_topic_names(self) -> list[str]:
        names = [self.topic_name(topic) for topic in ALL_TOPICS]
        return names + [f"{name}.dlq" for name in names]


@dataclass
class PeriodicJob:
    name: str
    interval_s: float
    run: Callable[[], object]


@dataclass
class ServiceRuntime:
    """A service wired for one process: its API, its event handlers and its background jobs."""

    name: str
    engine: Engine
    tables: MessagingTables
    api: ServiceApi
    uow_factory: Callable[[], SqlAlchemyUnitOfWork]
    topics: list[Topic] = field(default_factory=list)
    handlers: dict[str, Handler] = field(default_factory=dict)
    # Optional: one function that applies a whole batch of these event types at once.
    batch_handler: BatchHandler | None = None
    batch_types: frozenset[str] = frozenset()
    jobs: list[PeriodicJob] = field(default_factory=list)
    outbox_committed: threading.Event = field(default_factory=threading.Event)

    @property
    def consumer_group(self) -> str:
        return self.name

    def check_database(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))


@dataclass(frozen=True)
class ServiceDefinition:
    name: str
    title: str
    database_setting: str
    sqlite_file: str
    metadata: MetaData
    migrations_dir: Path
    bootstrap: Callable[[PlatformContext, Engine], ServiceRuntime]
    # Optional: adds the service's own commands to the `retention` CLI (called once at its start).
    commands: Callable[[typer.Typer], None] | None = None

    def database_url(self, settings: PlatformSettings) -> str:
        return settings.database_url_for(self.database_setting, self.sqlite_file)

    def create_engine(self, settings: PlatformSettings) -> Engine:
        return create_db_engine(self.database_url(settings))


def discover_services() -> dict[str, ServiceDefinition]:
    """Every installed service, in start order."""
    found: dict[str, ServiceDefinition] = {}
    for entry in entry_points(group="retention.services"):
        definition = entry.load()
        found[definition.name] = definition
    ordered = {name: found[name] for name in SERVICE_ORDER if name in found}
    ordered.update({name: d for name, d in found.items() if name not in ordered})
    return ordered


def service_named(name: str) -> ServiceDefinition:
    services = discover_services()
    if name not in services:
        raise KeyError(f"unknown service {name!r}; installed: {', '.join(services) or 'none'}")
    return services[name]
