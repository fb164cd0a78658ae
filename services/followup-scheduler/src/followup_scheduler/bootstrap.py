"""The one place where the followup-scheduler's adapters are wired to its handlers and routes."""

from __future__ import annotations

import threading
from functools import partial

import httpx
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from followup_scheduler.adapters import tables
from followup_scheduler.adapters.channels.directory import ChannelDirectory
from followup_scheduler.adapters.channels.smtp import SmtpChannel
from followup_scheduler.adapters.rendering import Renderer
from followup_scheduler.adapters.surveys import HttpSurveyInvitations
from followup_scheduler.adapters.unsubscribe import UnsubscribeLinks
from followup_scheduler.config import SchedulerSettings
from followup_scheduler.entrypoints.api.deliveries import build_deliveries_router
from followup_scheduler.entrypoints.api.playbooks import build_playbook_router
from followup_scheduler.entrypoints.api.routes import build_router
from followup_scheduler.entrypoints.api.settings import build_settings_router
from followup_scheduler.entrypoints.api.unsubscribe import build_unsubscribe_router
from followup_scheduler.service_layer import erasure, handlers
from followup_scheduler.service_layer.birthdays import start_birthday_runs
from followup_scheduler.service_layer.dispatch import Dispatcher
from followup_scheduler.service_layer.uow import SchedulerUnitOfWork
from retention_shared.events import topics
from retention_shared.events.envelope import Envelope
from retention_shared.runtime import PeriodicJob, PlatformContext, ServiceRuntime
from retention_shared.tenancy import CachedKeyDirectory, tenancy_handlers
from retention_shared.web import ServiceApi, principal_dependency

NAME = "followup-scheduler"
DISPATCH_POLL_S = 0.1  # how often the dispatcher looks for steps that fell due by the clock
TRIGGER_EVENTS = (
    "purchase_made",
    "refund_issued",
    "login_dropped",
    "ticket_opened",
    "ticket_resolved",
    "segment_changed",
    "churn_risk_changed",
    "tier_changed",
    "survey_answered",
)


def bootstrap(platform: PlatformContext, engine: Engine) -> ServiceRuntime:
    settings = platform.settings
    config = SchedulerSettings()
    outbox_committed = threading.Event()
    steps_due = threading.Event()  # set when a commit scheduled steps due at once; wakes the dispatcher
    uow_factory = partial(
        SchedulerUnitOfWork,
        sessionmaker(engine, expire_on_commit=False),
        tables=tables.messaging,
        clock=platform.clock,
        source=NAME,
        on_commit=outbox_committed.set,
        on_steps_due=steps_due.set,
    )
    directory = CachedKeyDirectory(engine, tables.tenancy.api_keys)
    authenticate = principal_dependency(
        lambda _request: directory,
        platform.rate_limiter,
        operator_token=settings.admin_token.get_secret_value(),
    )
    renderer = Renderer()
    links = UnsubscribeLinks(settings.signing_secret.get_secret_value(), settings.public_base_url)
    http_client = httpx.Client(timeout=httpx.Timeout(10.0, connect=5.0))
    platform_email = SmtpChannel(settings.smtp_host, settings.smtp_port, settings.smtp_sender)
    channel_directory = ChannelDirectory({"email": platform_email}, http_client)
    dispatcher = Dispatcher(
        uow_factory=uow_factory,
        channels={"email": platform_email},
        renderer=renderer,
        batch_size=config.dispatch_batch_size,
        send_concurrency=config.dispatch_send_concurrency,
        directory=channel_directory,
        surveys=HttpSurveyInvitations(
            http_client,
            base_url=settings.public_base_url,
            admin_token=settings.admin_token.get_secret_value(),
        ),
        survey_base_url=settings.public_base_url,
        unsubscribe=links,
        wakeup=steps_due,
    )
    replica = tenancy_handlers(tables.tenancy)

    def shop_registered(event: Envelope, uow: SchedulerUnitOfWork) -> None:
        replica["shop_registered"](event, uow)
        handlers.shop_registered(event, uow)

    others: dict[str, handlers.Handler] = {
        **replica,
        "shop_registered": shop_registered,
        "customer_upserted": handlers.customer_upserted,
        "consent_changed": handlers.consent_changed,
        "customer_erased": erasure.customer_erased,
    }
    api = ServiceApi(
        NAME,
        [
            build_router(uow_factory=uow_factory, authenticate=authenticate),
            build_playbook_router(uow_factory=uow_factory, authenticate=authenticate, renderer=renderer),
            build_settings_router(
                uow_factory=uow_factory, authenticate=authenticate, directory=channel_directory
            ),
            build_deliveries_router(uow_factory=uow_factory, authenticate=authenticate),
            build_unsubscribe_router(uow_factory=uow_factory, links=links),
        ],
    )
    runtime = ServiceRuntime(
        name=NAME,
        engine=engine,
        tables=tables.messaging,
        api=api,
        uow_factory=uow_factory,
        topics=[topics.TENANCY, topics.CUSTOMER, topics.ACTIVITY, topics.INSIGHT, topics.SURVEY],
        handlers={**others, **{event_type: handlers.trigger for event_type in TRIGGER_EVENTS}},
        # A poll's events go through the batch handler, every type, so that they apply in their
        # order: the triggers with their state read in bulk, the others through their own handler.
        # (A batch that fails is applied in halves, down to single events through `handlers`.)
        batch_handler=handlers.batch_handler(others),
        batch_types=frozenset({*others, *TRIGGER_EVENTS}),
        jobs=[
            # run_once waits (up to 100 ms, or until a commit schedules a step due now) by itself.
            PeriodicJob("dispatcher", 0.0, partial(dispatcher.run_once, DISPATCH_POLL_S)),
            PeriodicJob("birthdays", 3600, partial(start_birthday_runs, uow_factory)),
        ],
        outbox_committed=outbox_committed,
    )
    runtime.api.readiness["database"] = runtime.check_database
    return runtime
