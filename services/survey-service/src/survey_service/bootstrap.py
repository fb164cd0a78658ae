"""The one place where the survey-service's adapters are wired to its handlers and routes."""

from __future__ import annotations

import threading
from functools import partial

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from retention_shared.events import topics
from retention_shared.runtime import PlatformContext, ServiceRuntime
from retention_shared.tenancy import tenancy_handlers
from retention_shared.web import ServiceApi
from survey_service.adapters import tables
from survey_service.service_layer.erasure import customer_erased
from survey_service.service_layer.uow import SurveyUnitOfWork

NAME = "survey-service"


def bootstrap(platform: PlatformContext, engine: Engine) -> ServiceRuntime:
    outbox_committed = threading.Event()
    uow_factory = partial(
        SurveyUnitOfWork,
        sessionmaker(engine, expire_on_commit=False),
        tables=tables.messaging,
        clock=platform.clock,
        source=NAME,
        on_commit=outbox_committed.set,
    )
    runtime = ServiceRuntime(
        name=NAME,
        engine=engine,
        tables=tables.messaging,
        api=ServiceApi(NAME, []),
        uow_factory=uow_factory,
        topics=[topics.TENANCY, topics.CUSTOMER],
        handlers={**tenancy_handlers(tables.tenancy), "customer_erased": customer_erased},
        outbox_committed=outbox_committed,
    )
    runtime.api.readiness["database"] = runtime.check_database
    return runtime
