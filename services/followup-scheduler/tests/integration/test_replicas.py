"""Durable timers on real PostgreSQL: replicas share due steps, and a killed scheduler resumes."""

from __future__ import annotations

import collections
import multiprocessing
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from followup_scheduler.adapters import tables
from followup_scheduler.config import SchedulerSettings
from followup_scheduler.loadgen import noon_zone, run_replica, seed_due_steps
from followup_scheduler.service import definition
from retention_shared.db import create_db_engine
from retention_shared.migrate import upgrade
from retention_shared.testing.processes import Process, base_env
from retention_shared.testing.smtp import SmtpServer, free_port

pytestmark = pytest.mark.integration

SHOP = "shop_load"
# 12:00 in Tokyo: inside office hours, so quiet hours hold nothing back.
NOW = datetime(2026, 1, 5, 3, 0, tzinfo=UTC)


def migrated(database_factory: Callable[[], str]) -> str:
    url = database_factory()
    upgrade(definition, url)
    return url


def counts(url: str) -> dict[str, int]:
    engine = create_db_engine(url, pool_size=1)
    with engine.connect() as connection:
        by_status = dict(
            connection.execute(
                sa.select(tables.steps.c.status, sa.func.count()).group_by(tables.steps.c.status)
            ).all()
        )
        by_status["messages"] = connection.execute(
            sa.select(sa.func.count()).select_from(tables.messages)
        ).scalar_one()
    engine.dispose()
    return {str(k): int(v) for k, v in by_status.items()}


@pytest.mark.timeout(900)
def test_two_replicas_share_ten_thousand_due_steps_without_duplicates(
    database_factory: Callable[[], str], smtp_server: SmtpServer
) -> None:
    url = migrated(database_factory)
    seed_engine = create_db_engine(url, pool_size=1)
    seed_due_steps(seed_engine, shop_id=SHOP, count=10_000, due_at=NOW)
    seed_engine.dispose()
    context = multiprocessing.get_context("spawn")
    started, go, results = context.Semaphore(0), context.Event(), context.Queue()
    replicas = [
        context.Process(target=run_replica, args=(url, smtp_server.port, NOW, started, go, results))
        for _ in range(2)
    ]
    for replica in replicas:
        replica.start()
    for _ in replicas:
        assert started.acquire(timeout=120), "a replica did not start"
    go.set()  # both start together, so neither drains the backlog alone
    handled = [results.get(timeout=840) for _ in replicas]
    for replica in replicas:
        replica.join(timeout=30)

    assert all(isinstance(count, int) for count in handled), handled
    mails = smtp_server.wait_for(10_000, timeout_s=30)
    ids = collections.Counter(mail.message_id for mail in mails)
    assert len(mails) == 10_000
    assert len(ids) == 10_000 and max(ids.values()) == 1
    assert sum(handled) == 10_000
    assert min(handled) > 1000, handled  # both replicas took a real share
    assert counts(url) == {"sent": 10_000, "messages": 10_000}


@pytest.mark.timeout(900)
def test_a_scheduler_killed_mid_dispatch_resumes_with_nothing_lost(
    tmp_path: Path,
    database_factory: Callable[[], str],
    kafka: str,
    topic_namespace: str,
    smtp_server: SmtpServer,
) -> None:
    total = 1500
    url = migrated(database_factory)
    seed_engine = create_db_engine(url, pool_size=1)
    now = datetime.now(UTC)  # the scheduler process runs on the system clock
    seed_due_steps(seed_engine, shop_id=SHOP, count=total, due_at=now, timezone=noon_zone(now))
    seed_engine.dispose()
    env = base_env(tmp_path, smtp_server.port)
    env.update(
        RETENTION_MODE="distributed",
        RETENTION_KAFKA_BOOTSTRAP=kafka,
        RETENTION_TOPIC_NAMESPACE=topic_namespace,
        RETENTION_FOLLOWUP_DATABASE_URL=url,
    )
    kills = 0
    deadline = time.monotonic() + 780
    while len(smtp_server.received) < total and time.monotonic() < deadline:
        scheduler = Process(
            "followup-scheduler-consumer",
            ["run", "consumer", "followup-scheduler"],
            env,
            tmp_path / "scheduler.log",
            free_port(),
        )
        scheduler.start()
        if kills < 3:
            # Kill it without warning once it has worked through another part of the backlog.
            target = min(total - 1, len(smtp_server.received) + 300)
            while len(smtp_server.received) < target and time.monotonic() < deadline:
                time.sleep(0.01)
            assert scheduler.popen is not None
            scheduler.popen.send_signal(signal.SIGKILL)
            scheduler.popen.wait()
            kills += 1
            continue
        smtp_server.wait_for(total, timeout_s=max(1.0, deadline - time.monotonic()))
        # uvicorn re-raises the signal after its graceful shutdown, so -SIGTERM is a clean exit too.
        assert scheduler.stop() in (0, -signal.SIGTERM)
    assert kills == 3

    mails = smtp_server.received
    ids = collections.Counter(mail.message_id for mail in mails)
    # Nothing lost: every step reached the server, each under its own Message-ID.
    assert len(ids) == total
    # Nothing repeated beyond what SMTP cannot avoid: at most the batch in flight at each kill
    # is handed over again, under the same Message-IDs, so receivers drop the copies.
    assert len(mails) - total <= kills * SchedulerSettings().dispatch_batch_size
    assert counts(url) == {"sent": total, "messages": total}
