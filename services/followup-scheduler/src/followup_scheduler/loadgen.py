"""Due steps in bulk and dispatcher replicas, for the replica tests and the dispatch benchmark.

Not used by the service itself."""

from __future__ import annotations

import cProfile
import pstats
import threading
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import Engine, insert
from sqlalchemy.orm import sessionmaker

from followup_scheduler.adapters import tables
from followup_scheduler.adapters.channels.smtp import SmtpChannel
from followup_scheduler.adapters.rendering import Renderer
from followup_scheduler.config import SchedulerSettings
from followup_scheduler.service_layer.defaults import default_playbooks
from followup_scheduler.service_layer.dispatch import Dispatcher
from followup_scheduler.service_layer.uow import SchedulerUnitOfWork
from retention_shared.clock import Clock, ManualClock, SystemClock
from retention_shared.db import create_db_engine

CHUNK = 2000


def seed_due_steps(
    engine: Engine,
    *,
    shop_id: str,
    count: int,
    due_at: datetime,
    timezone: str = "Asia/Tokyo",
    priority: str = "service",
) -> None:
    """A shop, `count` customers with email consent, and one due post-purchase thank-you each."""
    post_purchase = next(p for p in default_playbooks() if p.key == "post_purchase")
    document = post_purchase.model_dump(mode="json", by_alias=True)
    playbook_id = f"pb_{abs(hash(shop_id)) % 16**16:016x}"
    with engine.begin() as connection:
        connection.execute(
            insert(tables.tenancy.shops).values(
                shop_id=shop_id,
                name="Load Test Shop",
                timezone=timezone,
                currency="JPY",
                locale="en",
                registered_at=due_at,
            )
        )
        connection.execute(
            insert(tables.playbooks).values(
                id=playbook_id,
                shop_id=shop_id,
                key="post_purchase",
                version=1,
                enabled=True,
                trigger_event="purchase_made",
                document=document,
                created_at=due_at,
            )
        )
        connection.execute(
            insert(tables.playbook_versions).values(
                playbook_id=playbook_id, version=1, document=document, created_at=due_at
            )
        )
        for start in range(0, count, CHUNK):
            numbers = range(start, min(count, start + CHUNK))
            connection.execute(
                insert(tables.contacts), [_contact(shop_id, n, timezone, due_at) for n in numbers]
            )
            connection.execute(insert(tables.runs), [_run(shop_id, playbook_id, n, due_at) for n in numbers])
            connection.execute(insert(tables.steps), [_step(shop_id, n, due_at, priority) for n in numbers])


def noon_zone(now: datetime) -> str:
    """A timezone where it is 12:xx at `now`: customers there are outside any quiet hours."""
    offset = (12 - now.hour + 12) % 24 - 12  # hours east of UTC, in -12..11
    if offset == 0:
        return "Etc/GMT"
    return f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"  # the Etc zones' signs are inverted


def _contact(shop_id: str, n: int, timezone: str, now: datetime) -> dict[str, Any]:
    return {
        "shop_id": shop_id,
        "customer_id": f"c{n}",
        "email": f"c{n}@example.com",
        "name": f"Customer {n}",
        "locale": "en",
        "timezone": timezone,
        "consents": {"email": True},
        "updated_at": now,
    }


def _run(shop_id: str, playbook_id: str, n: int, now: datetime) -> dict[str, Any]:
    return {
        "id": f"run_{n:016x}",
        "shop_id": shop_id,
        "customer_id": f"c{n}",
        "playbook_id": playbook_id,
        "playbook_key": "post_purchase",
        "playbook_version": 1,
        "business_key": f"o-{n}",
        "trigger_event_id": f"evt-{n}",
        "context": {
            "event_type": "purchase_made",
            "event": {"order_id": f"o-{n}", "amount": "4800", "currency": "JPY", "items": []},
        },
        "status": "active",
        "holdout_group": "treated",
        "triggered_at": now,
        "started_at": now,
    }


def _step(shop_id: str, n: int, now: datetime, priority: str) -> dict[str, Any]:
    return {
        "id": f"stp_{n:016x}",
        "run_id": f"run_{n:016x}",
        "shop_id": shop_id,
        "customer_id": f"c{n}",
        "playbook_key": "post_purchase",
        "step_key": "thank_you",
        "position": 0,
        "action": "message",
        "priority": priority,
        "channels": ["email"],
        "template": "post_purchase.thank_you",
        "due_at": now,
        "first_due_at": now,
        "status": "scheduled",
        "idempotency_key": f"{shop_id}.post_purchase.o-{n}.thank_you",
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }


def dispatcher_for(
    url: str,
    smtp_port: int,
    clock: Clock,
    *,
    batch_size: int | None = None,
    send_concurrency: int | None = None,
) -> tuple[Dispatcher, Engine]:
    """The production Dispatcher with an SmtpChannel, on its own engine (batch size and send
    concurrency from the environment, as in the service, unless given)."""
    engine = create_db_engine(url, pool_size=2)
    uow_factory = partial(
        SchedulerUnitOfWork,
        sessionmaker(engine, expire_on_commit=False),
        tables=tables.messaging,
        clock=clock,
        source="followup-scheduler",
    )
    channel = SmtpChannel("127.0.0.1", smtp_port, "no-reply@retention.test")
    config = SchedulerSettings()
    dispatcher = Dispatcher(
        uow_factory=uow_factory,
        channels={"email": channel},
        renderer=Renderer(),
        batch_limit=10_000_000,
        batch_size=batch_size or config.dispatch_batch_size,
        send_concurrency=send_concurrency or config.dispatch_send_concurrency,
    )
    return dispatcher, engine


def run_replica(
    url: str,
    smtp_port: int,
    now: datetime | None,
    started: Any,
    go: Any,
    results: Any,
    *,
    batch_size: int | None = None,
    send_concurrency: int | None = None,
    profile_to: str | None = None,
) -> None:
    """One scheduler replica in its own process (own engine, own GIL) until nothing is due.

    The target of a `multiprocessing` spawn: it lives in an importable module for that reason.
    `now` fixes the clock (tests); None uses the system clock (benchmarks). `profile_to`: write
    cProfile stats of the dispatch (every thread) to this file."""
    dispatcher, engine = dispatcher_for(
        url,
        smtp_port,
        ManualClock(now) if now else SystemClock(),
        batch_size=batch_size,
        send_concurrency=send_concurrency,
    )
    profilers: list[cProfile.Profile] = []
    if profile_to is not None:
        profilers.append(cProfile.Profile())
        threading.setprofile(lambda *_: _profile_thread(profilers))
    started.release()
    go.wait()
    try:
        for profiler in profilers[:1]:
            profiler.enable()
        results.put(dispatcher.dispatch_due())
    except BaseException as exc:  # the parent reports it; a child's traceback would be lost
        results.put(repr(exc))
    finally:
        for profiler in profilers:
            profiler.disable()
        threading.setprofile(None)
        dispatcher.close()
        engine.dispose()
        if profile_to is not None:
            pstats.Stats(*profilers).dump_stats(profile_to)


def _profile_thread(profilers: list[cProfile.Profile]) -> None:
    """Called once in each new thread (the senders): profile it too."""
    profiler = cProfile.Profile()
    profilers.append(profiler)
    profiler.enable()
