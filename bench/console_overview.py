"""The console's overview page with a million customers and five million purchase events."""

from __future__ import annotations

import asyncio
import io
import re
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np

from bench.infra import fresh_databases, require_infrastructure
from bench.registry import Context, Result, Table, Target, benchmark

ADMIN_TOKEN = "bench-admin-token"
TARGET_P95_MS = 300
# Sampling stops after this long (but takes at least MIN_SAMPLES): each page view runs the KPI
# query twice, and `make bench` must stay bounded even when that query is slow.
SAMPLING_BUDGET_S = 120
MIN_SAMPLES = 2
MAX_SAMPLES = 30


@benchmark(
    "console_overview",
    title="Console: overview page with 1,000,000 customers and 5,000,000 purchase events",
    targets=(Target("overview_p95_ms", 0, f"p95 under {TARGET_P95_MS} ms (issue 7)", maximum=TARGET_P95_MS),),
    headline="overview_p95_ms",
)
def console_overview(ctx: Context) -> Result:
    """Every service's API in one process on fresh PostgreSQL databases migrated with Alembic, as the
    all-in-one app builds it (no workers run, so nothing else competes for the two cores). One shop
    is created through the API; its segmentation state is loaded with COPY: one row per customer
    (scored, with a CLV) and one order per purchase event, spread over two years. Then the
    segmentation-worker stores the shop's KPI snapshots, as its daily recompute does (timed). The
    operator signs in to the console, chooses the shop, and the timed request is
    `GET /console/?days=30` served in-process (ASGI, no network): the page asks `/v1/kpis` for
    this period and the previous one and the survey-service for its surveys, then renders the
    cards and the SVG charts. A KPI call for a period without a snapshot (30 days ending now) is
    timed as well, to show what the snapshots save."""
    require_infrastructure()
    customers = 100_000 if ctx.quick else 1_000_000
    events = customers * 5
    result = Result(
        parameters={"customers": f"{customers:,}", "purchase events (orders)": f"{events:,}", "shops": "1"}
    )
    with fresh_databases(4) as urls:
        app, assembly = _all_in_one(urls)
        try:
            shop_id = asyncio.run(_create_shop(app))
            seed_s = _seed_segmentation(urls[1], shop_id, customers, events)
            result.add("seed_s", "seeding (COPY) of the segmentation state", seed_s, "s")
            refresh_s = _store_kpi_snapshots(assembly, shop_id)
            result.add(
                "snapshots_s",
                "storing the KPI snapshots (the daily recompute's last step: 8 periods)",
                refresh_s,
                "s",
            )
            pages, kpis, checks = asyncio.run(_measure(app, shop_id))
        finally:
            assembly.dispose()
    _summarise(result, "overview", "GET /console/ (server time)", pages)
    _summarise(result, "kpi", "GET /v1/kpis for 30 days ending now (aggregated live, no snapshot)", kpis)
    result.tables.append(
        Table(
            "What the measured page showed",
            ["KPI card", "value"],
            [[name, value] for name, value in checks.items()],
        )
    )
    result.notes.append(
        "The page's two /v1/kpis calls (the 30 whole UTC days before today, and the 30 before those) "
        "are answered from the snapshots the daily recompute stores; a period without a current "
        "snapshot is aggregated live, as the last figure shows (each such call reads every order of "
        "its period and the one before it)."
    )
    return result


def _store_kpi_snapshots(assembly: Any, shop_id: str) -> float:
    """What the segmentation-worker's daily recompute does last for each shop."""
    from segmentation_worker.service_layer import queries

    (runtime,) = [r for r in assembly.runtimes if r.name == "segmentation-worker"]
    started = time.perf_counter()
    with runtime.uow_factory() as uow:
        queries.refresh_kpi_snapshots(uow, shop_id)
        uow.commit()
    return time.perf_counter() - started


def _all_in_one(urls: list[str]) -> tuple[Any, Any]:
    from retention_shared.config import Mode, PlatformSettings
    from retention_shared.platform import app_with_workers, assemble
    from retention_shared.runtime import discover_services

    settings = PlatformSettings(
        mode=Mode.DISTRIBUTED,
        admin_token=ADMIN_TOKEN,
        customer_api_database_url=urls[0],
        segmentation_database_url=urls[1],
        followup_database_url=urls[2],
        survey_database_url=urls[3],
        rate_limit="100000/second",
        log_level="WARNING",
    )
    assembly = assemble(list(discover_services().values()), settings, migrate=True)
    app = app_with_workers(assembly, "bench", "all-in-one", run_workers=False)
    return app, assembly


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://bench", timeout=600, follow_redirects=True
    )


async def _create_shop(app: Any) -> str:
    async with _client(app) as client:
        response = await client.post(
            "/v1/shops", json={"name": "Bench Tea"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        response.raise_for_status()
        return str(response.json()["id"])


def _seed_segmentation(url: str, shop_id: str, customers: int, events: int) -> float:
    """COPY the customers' state and their orders (purchase events) into the segmentation database."""
    from retention_shared.db import create_db_engine

    started = time.perf_counter()
    rng = np.random.default_rng(11)
    now = datetime.now(UTC)
    horizon_s = 730 * 86_400
    # Every customer buys at least once; the remaining orders go to customers at random, so some
    # buy often and many once, with purchase times spread over two years.
    owners = np.concatenate([np.arange(customers), rng.integers(0, customers, events - customers)])
    ages_s = rng.uniform(0, horizon_s, events)
    amounts = np.round(rng.gamma(2.0, 2400.0, events), 0)
    first_age = np.zeros(customers)
    last_age = np.full(customers, np.inf)
    np.maximum.at(first_age, owners, ages_s)
    np.minimum.at(last_age, owners, ages_s)
    counts = np.bincount(owners, minlength=customers)
    spend = np.bincount(owners, weights=amounts, minlength=customers)
    clv = np.round(spend * rng.uniform(0.1, 0.8, customers), 2)
    now_s = now.timestamp()
    engine = create_db_engine(url, pool_size=1)
    try:
        with engine.begin() as connection:
            raw = connection.connection.driver_connection
            assert raw is not None
            with raw.cursor() as cursor:
                columns = "shop_id, order_id, customer_id, purchased_at, amount, refunded"
                with cursor.copy(f"COPY orders ({columns}) FROM STDIN") as copy:
                    buffer = io.StringIO()
                    for index in range(events):
                        at = datetime.fromtimestamp(now_s - ages_s[index], UTC).isoformat()
                        buffer.write(
                            f"{shop_id}\tORD-{index}\tcust-{owners[index]}\t{at}\t{amounts[index]:.0f}\t0\n"
                        )
                        if index % 200_000 == 199_999:
                            copy.write(buffer.getvalue())
                            buffer = io.StringIO()
                    copy.write(buffer.getvalue())
                columns = (
                    "shop_id, customer_id, first_purchase_at, last_purchase_at, purchase_count,"
                    " purchase_days, gross_spend, refunded, login_count, open_tickets, segment, clv,"
                    " login_drop_active, updated_at"
                )
                with cursor.copy(f"COPY customer_state ({columns}) FROM STDIN") as copy:
                    buffer = io.StringIO()
                    for index in range(customers):
                        first_at = datetime.fromtimestamp(now_s - first_age[index], UTC).isoformat()
                        last_at = datetime.fromtimestamp(now_s - last_age[index], UTC).isoformat()
                        buffer.write(
                            f"{shop_id}\tcust-{index}\t{first_at}\t{last_at}\t{counts[index]}\t{counts[index]}\t"
                            f"{spend[index]:.0f}\t0\t0\t0\tloyal\t{clv[index]}\tf\t{now.isoformat()}\n"
                        )
                        if index % 200_000 == 199_999:
                            copy.write(buffer.getvalue())
                            buffer = io.StringIO()
                    copy.write(buffer.getvalue())
            connection.exec_driver_sql("ANALYZE orders")
            connection.exec_driver_sql("ANALYZE customer_state")
    finally:
        engine.dispose()
    return time.perf_counter() - started


async def _measure(app: Any, shop_id: str) -> tuple[list[float], list[float], dict[str, str]]:
    async with _client(app) as client:
        form = await client.get("/console/sign-in")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token, "no CSRF field on the sign-in form"
        signed_in = await client.post(
            "/console/sign-in", data={"credential": ADMIN_TOKEN, "csrf_token": token[1]}
        )
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', signed_in.text)
        assert csrf, "no shop chooser after the operator's sign-in"
        chosen = await client.post("/console/shop", data={"csrf_token": csrf[1], "shop_id": shop_id})
        assert chosen.status_code == 200, chosen.text[:500]

        pages: list[float] = []
        checks: dict[str, str] = {}
        deadline = time.monotonic() + SAMPLING_BUDGET_S
        while len(pages) < MIN_SAMPLES or (len(pages) < MAX_SAMPLES and time.monotonic() < deadline):
            started = time.perf_counter()
            response = await client.get("/console/?days=30")
            pages.append(time.perf_counter() - started)
            assert response.status_code == 200
            checks = dict(re.findall(r'data-testid="kpi-([a-z_]+)">([^<]*)<', response.text))
            # A page whose KPI call failed would be fast and wrong: only whole pages count.
            assert checks.get("active_customers") not in (None, "—"), "the KPI API did not answer"

        now = datetime.now(UTC)
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Retention-Shop": shop_id}
        params = {"from": (now - timedelta(days=30)).isoformat(), "to": now.isoformat()}
        kpis: list[float] = []
        deadline = time.monotonic() + SAMPLING_BUDGET_S / 4
        while not kpis or (len(kpis) < MAX_SAMPLES and time.monotonic() < deadline):
            started = time.perf_counter()
            response = await client.get("/v1/kpis", params=params, headers=headers)
            kpis.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text[:500]
    return pages, kpis, checks


def _summarise(result: Result, prefix: str, label: str, seconds: list[float]) -> None:
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    result.add(f"{prefix}_p50_ms", f"{label}, p50", statistics.median(ordered) * 1000, "ms")
    result.add(
        f"{prefix}_p95_ms", f"{label}, p95", p95 * 1000, "ms", note=f"{len(ordered)} requests, one at a time"
    )
