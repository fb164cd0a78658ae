"""The recompute: refit a shop's models, re-score every customer at once and emit what changed.

Time moves segments without any event: a customer who stops buying drifts from champion to at
risk. A recompute runs daily at each shop's configured local hour, and on demand
(`POST /v1/segmentation/recompute`). One recompute is one transaction: the new fits, every
customer's scores, the segment history and the outgoing events commit together or not at all.
"""

from __future__ import annotations

import logging
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from retention_shared.clock import Clock
from retention_shared.events.catalogue import (
    ChurnRiskChanged,
    LoginDropped,
    RfmScores,
    SegmentChanged,
)
from segmentation_worker.domain.churn import BANDS, RANK, typical_gap_days, usual_gap_days
from segmentation_worker.domain.config import SegmentationConfig, config_from_document
from segmentation_worker.domain.logins import detect_login_drops
from segmentation_worker.domain.scoring import (
    MODEL_TIME_UNIT,
    Buyers,
    Fits,
    Scores,
    ShopContext,
    quintile_edges_of,
    score,
)
from segmentation_worker.service_layer import queries
from segmentation_worker.service_layer.context import current_fits
from segmentation_worker.service_layer.handlers import clv_moved, customer_scored_data
from segmentation_worker.service_layer.uow import SegmentationUnitOfWork

if TYPE_CHECKING:
    from segmentation_worker.domain import models

log = logging.getLogger(__name__)

# A fit on a sample of this many customers is as good as one on all of them for a handful of
# parameters, and keeps a million-customer shop's refit within seconds.
FIT_SAMPLE = 200_000

UowFactory = Callable[[], SegmentationUnitOfWork]


def recompute_shop(uow: SegmentationUnitOfWork, shop_id: str, *, now: datetime) -> dict[str, Any]:
    """Refit, re-score and emit for one shop inside `uow` (the caller commits). Returns a summary."""
    started = time.perf_counter()
    config = config_from_document(uow.state.config_document(shop_id))
    snapshot = uow.state.buyers_snapshot(shop_id, now)
    buyers = Buyers(
        first_days_ago=snapshot["first_days_ago"],
        last_days_ago=snapshot["last_days_ago"],
        purchase_days=snapshot["purchase_days"],
        net_spend=snapshot["net_spend"],
    )
    loaded_s = time.perf_counter() - started
    fits, fit_report = refit(uow, shop_id, buyers, snapshot["customer_id"], now)
    gaps = usual_gap_days(buyers.first_days_ago, buyers.last_days_ago, buyers.purchase_days)
    typical_gap = typical_gap_days(gaps, config.churn.default_interval_days)
    edges = quintile_edges_of(buyers)
    context = ShopContext(
        config=config,
        shop_average_spend=float(buyers.net_spend.mean()) if buyers.size else 0.0,
        typical_gap_days=typical_gap,
        edges=edges,
        fits=fits,
    )
    scored = score(buyers, context)
    fitted_s = time.perf_counter() - started - loaded_s

    ids = snapshot["customer_id"]
    old_segments = snapshot["segment"]
    segments = scored.segment.astype(object)
    segment_changed = np.flatnonzero(old_segments != segments)
    old_ranks = np.array([RANK.get(band or "low", 0) for band in snapshot["churn_band"]], dtype=np.int8)
    band_worsened = np.flatnonzero(scored.churn_rank > old_ranks)
    bands = np.array(BANDS, dtype=object)[scored.churn_rank]
    moved = np.flatnonzero(_moved(snapshot, scored, segments, bands))
    write_started = time.perf_counter()
    uow.state.write_scores(
        shop_id,
        {
            "customer_id": ids[moved],
            "r_score": scored.r[moved],
            "f_score": scored.f[moved],
            "m_score": scored.m[moved],
            "segment": segments[moved],
            "p_alive": scored.p_alive[moved],
            "expected_purchases": scored.expected_purchases[moved],
            "expected_spend": scored.expected_spend[moved],
            "clv": scored.clv[moved],
            "churn_band": bands[moved],
            "churn_score": scored.churn_score[moved],
        },
        scored_at=now,
    )
    written_s = time.perf_counter() - write_started
    # Customers the consumer re-scored while we computed kept its scores (the write skipped
    # them), and it already announced their changes.
    skipped = uow.state.customers_updated_after(shop_id, now)
    rescored = np.flatnonzero(clv_moved(snapshot["clv"], scored.clv))
    if skipped:
        fresh = np.array([customer_id not in skipped for customer_id in ids], dtype=bool)
        segment_changed = segment_changed[fresh[segment_changed]]
        band_worsened = band_worsened[fresh[band_worsened]]
        rescored = rescored[fresh[rescored]]
    history = []
    for index in segment_changed:
        previous = old_segments[index]
        rfm = RfmScores(r=int(scored.r[index]), f=int(scored.f[index]), m=int(scored.m[index]))
        history.append(
            {
                "shop_id": shop_id,
                "customer_id": ids[index],
                "changed_at": now,
                "from_segment": previous,
                "to_segment": segments[index],
            }
        )
        uow.publish(
            "segment_changed",
            shop_id=shop_id,
            customer_id=ids[index],
            data=SegmentChanged.model_validate({"from": previous, "to": segments[index], "rfm": rfm}),
        )
    uow.state.add_history(history)
    for index in band_worsened:
        p_alive = scored.p_alive[index]
        uow.publish(
            "churn_risk_changed",
            shop_id=shop_id,
            customer_id=ids[index],
            data=ChurnRiskChanged.model_validate(
                {
                    "from": snapshot["churn_band"][index],
                    "to": bands[index],
                    "probability_alive": None if np.isnan(p_alive) else float(p_alive),
                }
            ),
        )
    for index in rescored:
        uow.publish(
            "customer_scored",
            shop_id=shop_id,
            customer_id=ids[index],
            data=customer_scored_data(
                scored.clv[index], scored.expected_purchases[index], scored.p_alive[index], config
            ),
        )
    login_drops = detect_and_emit_login_drops(uow, shop_id, config, now)
    # A shop without buyers has no cut points yet (they are infinite, which JSON cannot hold).
    learned_edges = edges if buyers.size else None
    uow.state.save_shop_learning(shop_id, edges=learned_edges, typical_interval_days=typical_gap, at=now)
    return {
        "customers": int(buyers.size),
        "scores_written": int(moved.size),
        "segment_changes": int(segment_changed.size),
        "churn_risk_worsened": int(band_worsened.size),
        "login_drops": login_drops,
        "fits": fit_report,
        "seconds": {
            "load": round(loaded_s, 3),
            "fit_and_score": round(fitted_s, 3),
            "write_scores": round(written_s, 3),
            "total": round(time.perf_counter() - started, 3),
        },
    }


# Differences below these are noise of the daily refit: such customers keep their stored values.
P_ALIVE_TOLERANCE = 0.005
RELATIVE_TOLERANCE = 0.01


def _moved(
    snapshot: dict[str, np.ndarray], scored: Scores, segments: np.ndarray, bands: np.ndarray
) -> np.ndarray:
    """Customers whose scores changed enough to be written back: any change of RFM score,
    segment or churn band, a probability moving by half a point, or a prediction by 1%."""
    moved = (snapshot["segment"] != segments) | (snapshot["churn_band"] != bands)
    for name, new_score in (("r_score", scored.r), ("f_score", scored.f), ("m_score", scored.m)):
        moved |= snapshot[name] != new_score  # NaN (never scored) differs from every score
    for name in ("p_alive", "churn_score"):
        moved |= _differs(snapshot[name], getattr(scored, name), absolute=P_ALIVE_TOLERANCE)
    for name in ("expected_purchases", "expected_spend", "clv"):
        moved |= _differs(snapshot[name], getattr(scored, name), relative=RELATIVE_TOLERANCE)
    return moved


def _differs(old: np.ndarray, new: np.ndarray, *, absolute: float = 0.0, relative: float = 0.0) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        apart = np.abs(new - old) > np.maximum(absolute, relative * np.abs(old))
    return apart | (np.isnan(old) != np.isnan(new))


def refit(
    uow: SegmentationUnitOfWork, shop_id: str, buyers: Buyers, customer_ids: np.ndarray, now: datetime
) -> tuple[Fits, dict[str, Any]]:
    """Fit BG/NBD and Gamma-Gamma on the shop's buyers and store each successful fit as a new
    version. A model that cannot be fitted (too few buyers, no repeat buying) keeps its previous
    version, and the report says why."""
    from segmentation_worker.domain import models  # scipy: imported when first needed

    previous = current_fits(uow, shop_id)
    frequency, recency, age, mean_spend = buyers.model_inputs()
    sample = fit_sample(customer_ids)
    report: dict[str, Any] = {}
    bgnbd = previous.bgnbd
    try:
        params, diagnostics = models.fit_bgnbd(frequency[sample], recency[sample], age[sample])
        version = _store_fit(uow, shop_id, "bgnbd", params, diagnostics, buyers.size, now)
        bgnbd = params
        report["bgnbd"] = {"version": version, "seconds": round(diagnostics.seconds, 3)}
    except models.ModelFitError as error:
        report["bgnbd"] = {"error": str(error)}
    gamma_gamma = previous.gamma_gamma
    try:
        params_gg, diagnostics_gg = models.fit_gamma_gamma(frequency[sample], mean_spend[sample])
        version = _store_fit(uow, shop_id, "gamma_gamma", params_gg, diagnostics_gg, buyers.size, now)
        gamma_gamma = params_gg
        report["gamma_gamma"] = {"version": version, "seconds": round(diagnostics_gg.seconds, 3)}
    except models.ModelFitError as error:
        report["gamma_gamma"] = {"error": str(error)}
    return Fits(bgnbd=bgnbd, gamma_gamma=gamma_gamma), report


def fit_sample(customer_ids: np.ndarray, size: int = FIT_SAMPLE) -> np.ndarray:
    """Indices of the customers to fit on: all of them, or the `size` with the smallest hash of
    their id. The sample stays the same from day to day (only newcomers can join it), so a daily
    refit moves the parameters only as much as the data moved."""
    if customer_ids.size <= size:
        return np.arange(customer_ids.size)
    hashes = np.fromiter(
        (zlib.crc32(str(c).encode()) for c in customer_ids), dtype=np.int64, count=customer_ids.size
    )
    return np.sort(np.argpartition(hashes, size - 1)[:size])


def _store_fit(
    uow: SegmentationUnitOfWork,
    shop_id: str,
    model: str,
    params: models.BgNbdParams | models.GammaGammaParams,
    diagnostics: models.FitDiagnostics,
    population: int,
    now: datetime,
) -> int:
    document = asdict(diagnostics)
    document["notes"] = list(diagnostics.notes)
    document["population"] = population  # buyers in the shop; `customers` is the sample fitted
    document["standard_errors"] = {
        name: (None if not np.isfinite(value) else value)
        for name, value in diagnostics.standard_errors.items()
    }
    return uow.state.add_fit(
        shop_id,
        model=model,
        fitted_at=now,
        time_unit=MODEL_TIME_UNIT,
        parameters=asdict(params),
        diagnostics=document,
    )


def detect_and_emit_login_drops(
    uow: SegmentationUnitOfWork, shop_id: str, config: SegmentationConfig, now: datetime
) -> int:
    """Judge every customer with logins in the windows; emit `login_dropped` once per episode."""
    settings = config.login_drop
    today = now.date()
    recent_from = today - timedelta(days=settings.recent_days)
    baseline_from = recent_from - timedelta(days=settings.baseline_days)
    windows = uow.state.login_windows(
        shop_id, recent_from=recent_from, baseline_from=baseline_from, until=today
    )
    in_drop = uow.state.customers_in_login_drop(shop_id)
    # Customers in an episode whose logins all left the windows are judged too (and recover).
    customers = sorted(set(windows) | in_drop)
    counts = np.array([windows.get(c, (0, 0)) for c in customers], dtype=np.float64).reshape(-1, 2)
    verdict = detect_login_drops(counts[:, 0], counts[:, 1], [c in in_drop for c in customers], settings)
    dropped = [customers[i] for i in np.flatnonzero(verdict.dropped)]
    for index in np.flatnonzero(verdict.dropped):
        uow.publish(
            "login_dropped",
            shop_id=shop_id,
            customer_id=customers[index],
            data=LoginDropped(
                recent_rate_per_week=round(float(verdict.recent_per_week[index]), 4),
                baseline_rate_per_week=round(float(verdict.baseline_per_week[index]), 4),
                recent_days=settings.recent_days,
                baseline_days=settings.baseline_days,
            ),
        )
    # Login-drop customers may have no state row yet only if they never logged in, which the
    # windows exclude; every customer here has one.
    uow.state.set_login_drop(shop_id, dropped, True)
    uow.state.set_login_drop(shop_id, [customers[i] for i in np.flatnonzero(verdict.recovered)], False)
    # Logins older than the longest window are no longer needed.
    uow.state.purge_logins_before(shop_id, baseline_from - timedelta(days=7))
    return len(dropped)


# --- scheduling -----------------------------------------------------------------------------------


def next_daily_run(last_run: datetime | None, *, hour: int, timezone: str, now: datetime) -> datetime:
    """When the shop's next daily recompute is due: the first `hour`:00 local time after the last
    run (or the most recent one before now for a shop never recomputed)."""
    zone = _zone(timezone)
    local_now = now.astimezone(zone)
    if last_run is None:
        candidate = local_now.replace(hour=hour, minute=0, second=0, microsecond=0)
        return candidate if candidate <= local_now else candidate - timedelta(days=1)
    local_last = last_run.astimezone(zone)
    candidate = local_last.replace(hour=hour, minute=0, second=0, microsecond=0)
    if candidate <= local_last:
        candidate = _add_local_day(candidate, zone, hour)
    return candidate


def _add_local_day(moment: datetime, zone: ZoneInfo, hour: int) -> datetime:
    # Add a calendar day in local time, so a DST change does not shift the hour.
    day = (moment.date() + timedelta(days=1)).isoformat()
    return datetime.fromisoformat(f"{day}T{hour:02d}:00:00").replace(tzinfo=zone)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def request_recompute(uow: SegmentationUnitOfWork, shop_id: str, *, trigger: str, now: datetime) -> str:
    """Queue a recompute of the shop; the scheduler job runs it. Returns the run id."""
    run_id = f"rcp_{uuid.uuid4().hex}"
    uow.state.add_run(
        {"run_id": run_id, "shop_id": shop_id, "trigger": trigger, "status": "queued", "requested_at": now}
    )
    return run_id


def run_due_recomputes(*, uow_factory: UowFactory, clock: Clock) -> list[str]:
    """The periodic job: queue daily runs that are due, then run every queued one, oldest first.

    Each run commits on its own; a failed run is recorded as failed with its error.
    """
    now = clock.now()
    with uow_factory() as uow:
        queued_shops = {run["shop_id"] for run in uow.state.queued_runs()}
        for shop_id, timezone in sorted(uow.state.shop_timezones().items()):
            if shop_id in queued_shops:
                continue
            stats = uow.state.shop_stats_of(shop_id) or {}
            config = config_from_document(uow.state.config_document(shop_id))
            due = next_daily_run(
                stats.get("last_recompute_at"), hour=config.recompute.hour, timezone=timezone, now=now
            )
            if due <= now:
                request_recompute(uow, shop_id, trigger="schedule", now=now)
        uow.commit()
        queued = uow.state.queued_runs()
    finished = []
    for run in queued:
        execute_run(uow_factory=uow_factory, clock=clock, run=run)
        finished.append(run["run_id"])
    return finished


def execute_run(*, uow_factory: UowFactory, clock: Clock, run: dict[str, Any]) -> None:
    started = clock.now()
    with uow_factory() as uow:
        uow.state.update_run(run["run_id"], status="running", started_at=started)
        uow.commit()
    try:
        with uow_factory() as uow:
            summary = recompute_shop(uow, run["shop_id"], now=started)
            uow.state.update_run(run["run_id"], status="succeeded", finished_at=clock.now(), summary=summary)
            uow.commit()
        log.info("recompute of %s: %s", run["shop_id"], summary)
    except Exception as error:
        log.exception("recompute of %s failed", run["shop_id"])
        with uow_factory() as uow:
            uow.state.update_run(
                run["run_id"], status="failed", finished_at=clock.now(), error=str(error)[:2000]
            )
            # A failed run still counts as today's, or the scheduler would retry it every minute.
            uow.state.save_shop_learning_time(run["shop_id"], at=started)
            uow.commit()
        return
    try:
        # After the scores, so the snapshots' average CLV is the new one. A failure here leaves
        # the dashboard on live (slower) figures; the run itself succeeded.
        with uow_factory() as uow:
            queries.refresh_kpi_snapshots(uow, run["shop_id"])
            uow.commit()
    except Exception:
        log.exception("storing the KPI snapshots of %s failed", run["shop_id"])
