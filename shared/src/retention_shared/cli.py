"""The `retention` command: run services, migrate, manage topics, generate the event catalogue."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn
from rich.console import Console

from retention_shared.config import Mode, PlatformSettings
from retention_shared.logs import configure_logging
from retention_shared.runtime import discover_services, service_named

app = typer.Typer(help="Retention: keep and grow your existing customers.", no_args_is_help=True)
run_app = typer.Typer(
    help="Run the platform, a service's API, or a service's consumer.", no_args_is_help=True
)
topics_app = typer.Typer(help="Kafka topics.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead-letter topics: inspect and replay.", no_args_is_help=True)
app.add_typer(run_app, name="run")
app.add_typer(topics_app, name="topics")
app.add_typer(dlq_app, name="dlq")
console = Console(stderr=True)

ServiceArg = Annotated[
    str, typer.Argument(help="customer-api, segmentation-worker, followup-scheduler or survey-service")
]
Host = Annotated[str, typer.Option(help="Interface to listen on")]


def _settings(**overrides: object) -> PlatformSettings:
    settings = PlatformSettings(**overrides)  # type: ignore[arg-type]
    configure_logging(settings.log_level, settings.log_format)
    return settings


def _uvicorn(app_: Any, host: str, port: int) -> None:
    uvicorn.run(app_, host=host, port=port, log_config=None, access_log=False, timeout_graceful_shutdown=30)


@run_app.command("all")
def run_all(
    host: Host = "127.0.0.1", port: Annotated[int | None, typer.Option(help="default RETENTION_PORT")] = None
) -> None:
    """Every service in one process (embedded mode: SQLite under ./var and the in-process bus)."""
    from retention_shared.platform import all_in_one_app

    settings = _settings()
    chosen_port = port or settings.port
    console.print(f"[bold]Retention[/] all-in-one on http://{host}:{chosen_port}  (API docs: /docs)")
    _uvicorn(all_in_one_app(settings), host, chosen_port)


@run_app.command("api")
def run_api(service: ServiceArg, host: Host = "127.0.0.1", port: int = 8000) -> None:
    """A service's HTTP API alone (its outbox is relayed by its consumer process)."""
    from retention_shared.platform import app_with_workers, assemble

    settings = _settings()
    definition = service_named(service)
    assembly = assemble([definition], settings)
    _uvicorn(app_with_workers(assembly, definition.title, definition.name, run_workers=False), host, port)


@run_app.command("consumer")
def run_consumer(service: ServiceArg, host: Host = "127.0.0.1", port: int = 9100) -> None:
    """A service's consumer, outbox relay and scheduled jobs, with /healthz, /readyz and /metrics."""
    from retention_shared.platform import app_with_workers, assemble
    from retention_shared.web import ServiceApi

    settings = _settings()
    definition = service_named(service)
    assembly = assemble([definition], settings)
    for runtime in assembly.runtimes:
        runtime.api = ServiceApi(runtime.api.name, [], runtime.api.readiness)
    _uvicorn(app_with_workers(assembly, f"{definition.title} consumer", definition.name), host, port)


@app.command()
def migrate(service: Annotated[str, typer.Argument(help="a service name, or 'all'")] = "all") -> None:
    """Bring a service's database (or every one) to the newest schema."""
    from retention_shared.migrate import upgrade

    settings = _settings()
    definitions = list(discover_services().values()) if service == "all" else [service_named(service)]
    for definition in definitions:
        upgrade(definition, definition.database_url(settings))
        console.print(f"migrated {definition.name}")


@app.command()
def revision(service: ServiceArg, message: Annotated[str, typer.Option("-m", "--message")]) -> None:
    """Autogenerate a new migration for a service from its models (for developers)."""
    from retention_shared.migrate import new_revision

    new_revision(service_named(service), message)


@topics_app.command("ensure")
def topics_ensure() -> None:
    """Create every topic and its dead-letter topic (idempotent)."""
    from retention_shared.messaging.kafka import ensure_topics
    from retention_shared.runtime import PlatformContext

    settings = _settings(mode=Mode.DISTRIBUTED)
    platform = PlatformContext(settings=settings, clock=None)  # type: ignore[arg-type]
    created = ensure_topics(
        settings.kafka_bootstrap,
        platform.all_topic_names(),
        partitions=settings.topic_partitions,
        replication=settings.topic_replication,
    )
    console.print(
        f"topics: {len(created)} created, {len(platform.all_topic_names()) - len(created)} already there"
    )


@dlq_app.command("replay")
def dlq_replay(
    topic: Annotated[str, typer.Argument(help="the original topic, e.g. retention.activity.v1")],
    limit: Annotated[int, typer.Option(help="replay at most this many records")] = 1000,
    timeout_s: Annotated[float, typer.Option(help="stop when nothing arrives for this long")] = 5.0,
) -> None:
    """Publish dead-lettered records back to their topic, after the cause was fixed."""
    from retention_shared.messaging.replay import replay_dead_letters
    from retention_shared.runtime import KafkaBus

    settings = _settings(mode=Mode.DISTRIBUTED)
    replayed = replay_dead_letters(
        KafkaBus(settings.kafka_bootstrap), topic, limit=limit, idle_timeout_s=timeout_s
    )
    console.print(f"replayed {replayed} record(s) from {topic}.dlq")


@app.command()
def services() -> None:
    """List the installed services."""
    for definition in discover_services().values():
        console.print(f"{definition.name}\t{definition.title}")


@app.command()
def catalogue(
    out: Annotated[Path, typer.Option(help="where to write the catalogue")] = Path("docs/events"),
) -> None:
    """Generate the JSON Schema of every event and the AsyncAPI 3 document from the models."""
    from retention_shared.events.docs import write_catalogue

    written = write_catalogue(out)
    console.print(f"wrote {len(written)} files under {out}")


_service_commands_loaded = False


def load_service_commands() -> None:
    """Let each installed service add its own commands (`ServiceDefinition.commands`), once."""
    global _service_commands_loaded
    if _service_commands_loaded:
        return
    _service_commands_loaded = True
    try:
        definitions = list(discover_services().values())
    except Exception as exc:  # a broken service must not take `retention migrate` down with it
        console.print(f"[yellow]warning:[/] service commands unavailable: {exc}")
        return
    for definition in definitions:
        if definition.commands is not None:
            definition.commands(app)


def main() -> None:
    load_service_commands()
    app()


if __name__ == "__main__":
    main()
