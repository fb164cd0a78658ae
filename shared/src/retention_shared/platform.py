"""Assembling services into a process: the all-in-one app, a single service's API, or its workers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from retention_shared.clock import Clock, SystemClock
from retention_shared.config import Mode, PlatformSettings
from retention_shared.migrate import upgrade
from retention_shared.runner import Workers
from retention_shared.runtime import PlatformContext, ServiceDefinition, ServiceRuntime, discover_services
from retention_shared.web import ServiceApi, create_app

log = logging.getLogger(__name__)


@dataclass
class Assembly:
    platform: PlatformContext
    runtimes: list[ServiceRuntime]

    def workers(self, *, relay: bool = True, consume: bool = True, jobs: bool = True) -> Workers:
        return Workers(self.platform, self.runtimes, relay=relay, consume=consume, jobs=jobs)

    def apis(self) -> list[ServiceApi]:
        apis = [runtime.api for runtime in self.runtimes]
        bus = self.platform.bus
        apis.append(ServiceApi("platform", [], {"broker": bus.check}))
        return apis

    def dispose(self) -> None:
        for runtime in self.runtimes:
            runtime.engine.dispose()


def assemble(
    definitions: list[ServiceDefinition],
    settings: PlatformSettings | None = None,
    clock: Clock | None = None,
    *,
    migrate: bool = False,
) -> Assembly:
    """Bootstrap the given services for this process."""
    settings = settings or PlatformSettings()
    platform = PlatformContext(settings=settings, clock=clock or SystemClock())
    runtimes = []
    for definition in definitions:
        if migrate:
            upgrade(definition, definition.database_url(settings))
        engine = definition.create_engine(settings)
        runtimes.append(definition.bootstrap(platform, engine))
    return Assembly(platform, runtimes)


def all_in_one_app(settings: PlatformSettings | None = None, clock: Clock | None = None) -> FastAPI:
    """Every service in one process: SQLite files, the in-process bus, one port."""
    settings = settings or PlatformSettings()
    if settings.mode is not Mode.EMBEDDED:
        log.info("all-in-one app in %s mode", settings.mode)
    assembly = assemble(list(discover_services().values()), settings, clock, migrate=True)
    return app_with_workers(assembly, "Retention", "all-in-one")


def app_with_workers(assembly: Assembly, title: str, service: str, *, run_workers: bool = True) -> FastAPI:
    workers = assembly.workers()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if run_workers:
            workers.start()
        try:
            yield
        finally:
            workers.stop()
            assembly.dispose()

    background = [ServiceApi("workers", [], liveness={"loops": workers.check_alive})] if run_workers else []
    app = create_app(title, service, [*assembly.apis(), *background])
    app.router.lifespan_context = lifespan
    app.state.assembly = assembly
    app.state.workers = workers
    return app
