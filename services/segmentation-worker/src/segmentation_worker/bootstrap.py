"""The one place where the segmentation-worker's adapters are wired to its handlers and routes."""

from __future__ import annotations

import threading
from functools import partial

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from retention_shared.events import topics
from retention_shared.runtime import PeriodicJob, PlatformContext, ServiceRuntime
from retention_shared.tenancy import CachedKeyDirectory, tenancy_handlers
from retention_shared.web import ServiceApi, principal_dependency
from segmentation_worker.adapters import tables
from segmentation_worker.entrypoints.api.routes import build_router
from segmentation_worker.service_layer import erasure, handlers, queries, recompute
from segmentation_worker.service_layer.uow import SegmentationUnitOfWork

NAME = "segmentation-worker"
# How often the scheduler looks for due daily recomputes and queued on-demand ones.
RECOMPUTE_CHECK_INTERVAL_S = 30.0
# How soon the dashboard's KPI snapshots follow a new UTC day or late orders.
KPI_SNAPSHOT_CHECK_INTERVAL_S = 600.0


def bootstrap(platform: PlatformContext, engine: Engine) -> ServiceRuntime:
    outbox_committed = threading.Event()
    uow_factory = partial(
        SegmentationUnitOfWork,
        sessionmaker(engine, expire_on_commit=False),
        tables=tables.messaging,
        clock=platform.clock,
        source=NAME,
        on_commit=outbox_committed.set,
    )
    directory = CachedKeyDirectory(engine, tables.tenancy.api_keys)
    router = build_router(
        uow_factory=uow_factory,
        authenticate=principal_dependency(
            lambda _request: directory,
            platform.rate_limiter,
            operator_token=platform.settings.admin_token.get_secret_value(),
        ),
    )
    runtime = ServiceRuntime(
        name=NAME,
        engine=engine,
        tables=tables.messaging,
        api=ServiceApi(NAME, [router]),
        uow_factory=uow_factory,
        topics=[topics.TENANCY, topics.ACTIVITY, topics.CUSTOMER, topics.SURVEY],
        handlers={**tenancy_handlers(tables.tenancy), "customer_erased": erasure.customer_erased},
        batch_handler=handlers.apply_activity,
        batch_types=handlers.ACTIVITY_TYPES,
        outbox_committed=outbox_committed,
        jobs=[
            PeriodicJob(
                "recompute",
                RECOMPUTE_CHECK_INTERVAL_S,
                partial(recompute.run_due_recomputes, uow_factory=uow_factory, clock=platform.clock),
            ),
            PeriodicJob(
                "kpi-snapshots",
                KPI_SNAPSHOT_CHECK_INTERVAL_S,
                partial(queries.refresh_due_kpi_snapshots, uow_factory=uow_factory),
            ),
        ],
    )
    runtime.api.readiness["database"] = runtime.check_database
    return runtime
