"""The one place where the customer-api's adapters are wired to its handlers and routes."""

from __future__ import annotations

import threading
from functools import partial

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from customer_api.adapters import tables
from customer_api.entrypoints.api.dead_letters import build_dead_letter_router
from customer_api.entrypoints.api.imports import build_import_router
from customer_api.entrypoints.api.loyalty import build_loyalty_router
from customer_api.entrypoints.api.retention_policy import build_retention_policy_router
from customer_api.entrypoints.api.routes import build_router, operator_only
from customer_api.entrypoints.console.routes import build_console_router
from customer_api.entrypoints.console.sessions import SessionStore
from customer_api.service_layer import activity, erasure, loyalty, read_model, retention_policy
from customer_api.service_layer.uow import CustomerApiUnitOfWork
from retention_shared.events import topics
from retention_shared.runtime import PeriodicJob, PlatformContext, ServiceRuntime
from retention_shared.tenancy import CachedKeyDirectory
from retention_shared.web import ServiceApi, principal_dependency

NAME = "customer-api"


def bootstrap(platform: PlatformContext, engine: Engine) -> ServiceRuntime:
    outbox_committed = threading.Event()
    uow_factory = partial(
        CustomerApiUnitOfWork,
        sessionmaker(engine, expire_on_commit=False),
        tables=tables.messaging,
        clock=platform.clock,
        source=NAME,
        on_commit=outbox_committed.set,
    )
    directory = CachedKeyDirectory(engine, tables.api_keys)
    router = build_router(
        uow_factory=uow_factory,
        authenticate=principal_dependency(
            lambda _request: directory,
            platform.rate_limiter,
            operator_token=platform.settings.admin_token.get_secret_value(),
        ),
        admin_token=platform.settings.admin_token.get_secret_value(),
        signing_secret=platform.settings.signing_secret.get_secret_value(),
    )
    loyalty_router = build_loyalty_router(
        uow_factory=uow_factory,
        authenticate=principal_dependency(
            lambda _request: directory,
            platform.rate_limiter,
            operator_token=platform.settings.admin_token.get_secret_value(),
        ),
    )
    dead_letter_router = build_dead_letter_router(
        platform=platform, operator=operator_only(platform.settings.admin_token.get_secret_value())
    )
    runtime = ServiceRuntime(
        name=NAME,
        engine=engine,
        tables=tables.messaging,
        api=ServiceApi(NAME, [router, loyalty_router, dead_letter_router]),
        uow_factory=uow_factory,
        topics=[topics.CUSTOMER, topics.ACTIVITY, topics.INSIGHT, topics.FOLLOWUP, topics.SURVEY],
        handlers={**read_model.HANDLERS, "erasure_completed": erasure.erasure_completed},
        batch_handler=activity.apply_batch,
        batch_types=activity.BATCH_TYPES,
        jobs=[
            PeriodicJob(
                "loyalty-maintenance", 3600, partial(loyalty.run_maintenance, uow_factory=uow_factory)
            ),
            PeriodicJob(
                "raw-event-retention",
                3600,
                partial(retention_policy.purge_expired_events, uow_factory=uow_factory),
            ),
        ],
        outbox_committed=outbox_committed,
    )
    runtime.api.readiness["database"] = runtime.check_database
    runtime.api.routers.append(
        build_retention_policy_router(
            uow_factory=uow_factory,
            authenticate=principal_dependency(
                lambda _request: directory,
                platform.rate_limiter,
                operator_token=platform.settings.admin_token.get_secret_value(),
            ),
        )
    )
    runtime.api.routers.append(
        build_import_router(
            uow_factory=uow_factory,
            authenticate=principal_dependency(
                lambda _request: directory,
                platform.rate_limiter,
                operator_token=platform.settings.admin_token.get_secret_value(),
            ),
        )
    )
    # The console (HTML under /console) is the customer-api's browser entrypoint; it reaches data
    # only through the platform's public APIs, in-process or through the gateway.
    runtime.api.routers.append(
        build_console_router(
            store=SessionStore(
                engine, platform.clock, operator_token=platform.settings.admin_token.get_secret_value()
            ),
            directory=directory,
            operator_token=platform.settings.admin_token.get_secret_value(),
            gateway_url=platform.settings.gateway_url,
        )
    )
    return runtime
