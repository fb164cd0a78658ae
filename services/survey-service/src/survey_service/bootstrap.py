"""The one place where the survey-service's adapters are wired to its handlers and routes."""

from __future__ import annotations

import threading
from functools import partial

from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from retention_shared.events import topics
from retention_shared.runtime import PlatformContext, ServiceRuntime
from retention_shared.tenancy import CachedKeyDirectory
from retention_shared.web import ServiceApi, principal_dependency
from survey_service.adapters import tables
from survey_service.config import SurveySettings
from survey_service.domain.tokens import InvitationSigner
from survey_service.entrypoints.api.routes import Wiring, build_router
from survey_service.entrypoints.web.pages import build_pages
from survey_service.service_layer import handlers
from survey_service.service_layer.batching import AnswerBatcher
from survey_service.service_layer.erasure import customer_erased
from survey_service.service_layer.invitations import Links
from survey_service.service_layer.responses import submit_answers
from survey_service.service_layer.uow import SurveyUnitOfWork

NAME = "survey-service"


def bootstrap(
    platform: PlatformContext, engine: Engine, settings: SurveySettings | None = None
) -> ServiceRuntime:
    settings = settings or SurveySettings()
    outbox_committed = threading.Event()
    uow_factory = partial(
        SurveyUnitOfWork,
        sessionmaker(engine, expire_on_commit=False),
        tables=tables.messaging,
        clock=platform.clock,
        source=NAME,
        on_commit=outbox_committed.set,
    )
    signer = InvitationSigner(platform.settings.signing_secret.get_secret_value())
    answers = AnswerBatcher(
        lambda batch: submit_answers(uow=uow_factory(), signer=signer, settings=settings, answers=batch)
    )
    directory = CachedKeyDirectory(engine, tables.tenancy.api_keys)
    wiring = Wiring(
        uow_factory=uow_factory,
        links=Links(signer=signer, public_base_url=platform.settings.public_base_url),
        settings=settings,
        answers=answers,
        authenticate=principal_dependency(
            lambda _request: directory,
            platform.rate_limiter,
            operator_token=platform.settings.admin_token.get_secret_value(),
        ),
    )
    pages = build_pages(uow_factory=uow_factory, signer=signer, settings=settings, answers=answers)
    runtime = ServiceRuntime(
        name=NAME,
        engine=engine,
        tables=tables.messaging,
        api=ServiceApi(NAME, [build_router(wiring), pages]),
        uow_factory=uow_factory,
        topics=[topics.TENANCY, topics.CUSTOMER, topics.INSIGHT],
        handlers={
            **handlers.tenancy_with_default_surveys(tables.tenancy),
            "customer_upserted": handlers.customer_upserted,
            "segment_changed": handlers.segment_changed,
            "customer_erased": customer_erased,
        },
        outbox_committed=outbox_committed,
    )
    runtime.api.readiness["database"] = runtime.check_database
    return runtime
