"""HTTP routes of the segmentation-worker: segments, scores, models, configuration, recompute, KPIs."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import AwareDatetime

from retention_shared.events.envelope import ID_PATTERN
from retention_shared.problems import Problem, field_error, not_found
from retention_shared.tenancy import Principal
from retention_shared.web import PROBLEM_RESPONSES, Authenticator, require_scope
from segmentation_worker.domain.config import SegmentationConfig, config_from_document
from segmentation_worker.entrypoints.api.schemas import (
    ChurnRisk,
    ClvBucket,
    ClvDistributionRead,
    CohortRead,
    FitRead,
    KpisRead,
    LastNps,
    LoginRhythm,
    ModelsRead,
    Predictions,
    RecomputeRun,
    RfmRead,
    ScoresRead,
    SegmentList,
    SegmentMember,
    SegmentMemberPage,
    SegmentMove,
    SegmentMoves,
    SegmentRead,
    SegmentTransition,
)
from segmentation_worker.service_layer import queries
from segmentation_worker.service_layer.recompute import request_recompute
from segmentation_worker.service_layer.uow import SegmentationUnitOfWork

CustomerId = Annotated[str, Path(pattern=ID_PATTERN)]
SegmentName = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
Cursor = Annotated[str | None, Query(max_length=400, description="next_cursor of the previous page")]


def build_router(
    *, uow_factory: Callable[[], SegmentationUnitOfWork], authenticate: Authenticator
) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["segments"], responses=_problems(401, 403, 422, 429))
    can_read = require_scope(authenticate, "customers:read")
    is_admin = require_scope(authenticate, "admin")

    @router.get("/segments", response_model=SegmentList)
    def list_segments(principal: Principal = Depends(can_read)) -> SegmentList:
        """Each segment of the shop's scheme: customers, revenue and its share, average CLV."""
        with uow_factory() as uow:
            config = config_from_document(uow.state.config_document(principal.shop_id))
            summaries = queries.segment_summaries(uow, principal.shop_id)
        return SegmentList(
            mode=config.mode,
            scheme=config.scheme,
            total_customers=sum(s.customers for s in summaries),
            segments=[SegmentRead(**vars(s)) for s in summaries],
        )

    @router.get("/segments/moves", response_model=SegmentMoves, responses=_problems(422))
    def segment_moves(
        start: Annotated[
            AwareDatetime | None, Query(alias="from", description="Start, inclusive; 90 days ago by default")
        ] = None,
        end: Annotated[
            AwareDatetime | None, Query(alias="to", description="End, exclusive; now by default")
        ] = None,
        principal: Principal = Depends(can_read),
    ) -> SegmentMoves:
        """How customers moved between segments in the period: one count per (from, to) pair."""
        with uow_factory().reading() as uow:
            end = end or uow.clock.now()
            start = start or end - timedelta(days=90)
            if end <= start:
                raise _invalid_query("to", "must be after from")
            moves = queries.segment_moves(uow, principal.shop_id, start=start, end=end)
        return SegmentMoves(start=start, end=end, moves=[SegmentMove(**move) for move in moves])

    @router.get("/segments/clv-distribution", response_model=ClvDistributionRead)
    def clv_distribution(
        bins: Annotated[int, Query(ge=2, le=50, description="Number of ranges")] = 10,
        principal: Principal = Depends(can_read),
    ) -> ClvDistributionRead:
        """The shop's buyers by CLV: equal ranges up to the 99th percentile, the last open-ended."""
        with uow_factory().reading() as uow:
            found = queries.clv_distribution(uow, principal.shop_id, bins=bins)
        return ClvDistributionRead(
            buckets=[ClvBucket(low=low, high=high, customers=n) for low, high, n in found.buckets],
            customers_without_clv=found.customers_without_clv,
        )

    @router.get("/segments/{name}/customers", response_model=SegmentMemberPage, responses=_problems(400, 404))
    def segment_customers(
        name: SegmentName,
        sort: Annotated[Literal["clv", "churn_risk"], Query(description="Highest first")] = "clv",
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: Cursor = None,
        principal: Principal = Depends(can_read),
    ) -> SegmentMemberPage:
        """A page of the segment's customers, by CLV or churn risk (highest first), then by id."""
        after = _position(cursor) if cursor else None
        with uow_factory() as uow:
            known = {s.name for s in queries.segment_summaries(uow, principal.shop_id)}
            if name not in known:
                raise not_found("segment")
            rows = queries.segment_members(uow, principal.shop_id, name, sort=sort, limit=limit, after=after)
        last = rows[-1] if len(rows) == limit else None
        return SegmentMemberPage(
            segment=name,
            sort=sort,
            items=[_member(row) for row in rows],
            next_cursor=_encode(f"{float(last['sort_value'])!r}|{last['customer_id']}") if last else None,
        )

    @router.get("/customers/{customer_id}/scores", response_model=ScoresRead, responses=_problems(404))
    def get_scores(customer_id: CustomerId, principal: Principal = Depends(can_read)) -> ScoresRead:
        """The customer's behavioural state, RFM scores, segment, predictions and segment history."""
        with uow_factory() as uow:
            state = uow.state.get(principal.shop_id, customer_id)
            if state is None:
                raise not_found("customer")
            config = config_from_document(uow.state.config_document(principal.shop_id))
            now = uow.clock.now()
            windows = config.login_drop
            recent_from = now.date() - timedelta(days=windows.recent_days)
            recent, baseline = uow.state.login_stats(
                principal.shop_id,
                customer_id,
                recent_from=recent_from,
                baseline_from=recent_from - timedelta(days=windows.baseline_days),
            )
            history = uow.state.history_of(principal.shop_id, customer_id)
        net = Decimal(state["gross_spend"]) - Decimal(state["refunded"])
        return ScoresRead(
            customer_id=customer_id,
            segment=state["segment"],
            segment_since=state["segment_since"],
            rfm=_rfm(state),
            purchase_count=state["purchase_count"],
            purchase_days=state["purchase_days"],
            first_purchase_at=state["first_purchase_at"],
            last_purchase_at=state["last_purchase_at"],
            net_spend=net,
            mean_spend=(net / state["purchase_count"]).quantize(Decimal("0.0001"))
            if state["purchase_count"]
            else None,
            open_tickets=state["open_tickets"],
            last_login_at=state["last_login_at"],
            logins=LoginRhythm(
                count=state["login_count"],
                first_at=state["first_login_at"],
                last_at=state["last_login_at"],
                recent_days=windows.recent_days,
                recent_logins=recent,
                baseline_days=windows.baseline_days,
                baseline_logins=baseline,
                recent_per_week=round(recent * 7 / windows.recent_days, 4),
                baseline_per_week=round(baseline * 7 / windows.baseline_days, 4),
                in_drop=bool(state["login_drop_active"]),
            ),
            last_nps=LastNps(score=state["last_nps_score"], at=state["last_nps_at"])
            if state["last_nps_at"] is not None
            else None,
            predictions=Predictions(
                p_alive=state["p_alive"],
                expected_purchases=state["expected_purchases"],
                expected_spend=state["expected_spend"],
                clv=state["clv"],
                horizon_months=config.clv.horizon_months,
            ),
            churn_risk=ChurnRisk(band=state["churn_band"], score=state["churn_score"]),
            history=[
                SegmentTransition(
                    at=h["changed_at"], from_segment=h["from_segment"], to_segment=h["to_segment"]
                )
                for h in history
            ],
            scored_at=state["scored_at"],
            as_of=state["updated_at"],
        )

    @router.get("/models", response_model=ModelsRead)
    def get_models(principal: Principal = Depends(can_read)) -> ModelsRead:
        """The shop's current BG/NBD and Gamma-Gamma fits, with their diagnostics (null before the first)."""
        with uow_factory() as uow:
            fits = queries.model_fits(uow, principal.shop_id)
        return ModelsRead(bgnbd=_fit(fits.get("bgnbd")), gamma_gamma=_fit(fits.get("gamma_gamma")))

    @router.get("/segmentation/config", response_model=SegmentationConfig)
    def get_config(principal: Principal = Depends(is_admin)) -> SegmentationConfig:
        """The shop's segmentation settings (the defaults until it sets its own)."""
        with uow_factory() as uow:
            return config_from_document(uow.state.config_document(principal.shop_id))

    @router.put("/segmentation/config", response_model=SegmentationConfig)
    def put_config(body: SegmentationConfig, principal: Principal = Depends(is_admin)) -> SegmentationConfig:
        """Replace the shop's settings; a recompute is queued so that segments follow them at once."""
        with uow_factory() as uow:
            now = uow.clock.now()
            uow.state.save_config(principal.shop_id, body.model_dump(mode="json"), now)
            request_recompute(uow, principal.shop_id, trigger="config", now=now)
            uow.commit()
        return body

    @router.post(
        "/segmentation/recompute",
        status_code=202,
        response_model=RecomputeRun,
        responses={202: {"headers": {"Location": {"schema": {"type": "string"}}}}},
    )
    def post_recompute(response: Response, principal: Principal = Depends(is_admin)) -> dict[str, Any]:
        """Queue a recompute of the shop (refit, re-score, emit changes); follow Location for its status."""
        with uow_factory() as uow:
            run_id = request_recompute(uow, principal.shop_id, trigger="request", now=uow.clock.now())
            uow.commit()
            run = uow.state.run(principal.shop_id, run_id)
        response.headers["Location"] = f"/v1/segmentation/recomputes/{run_id}"
        assert run is not None
        return run

    @router.get("/segmentation/recomputes/{run_id}", response_model=RecomputeRun, responses=_problems(404))
    def get_recompute(
        run_id: Annotated[str, Path(max_length=64)], principal: Principal = Depends(can_read)
    ) -> dict[str, Any]:
        """A recompute's status and, once finished, its summary or error."""
        with uow_factory() as uow:
            run = uow.state.run(principal.shop_id, run_id)
        if run is None:
            raise not_found("recompute")
        return run

    @router.get("/kpis", response_model=KpisRead, responses=_problems(400))
    def get_kpis(
        start: Annotated[
            AwareDatetime, Query(alias="from", description="Start, inclusive (ISO 8601 with offset)")
        ],
        end: Annotated[AwareDatetime, Query(alias="to", description="End, exclusive")],
        principal: Principal = Depends(can_read),
    ) -> KpisRead:
        """Retention, churn and repeat-purchase rates, ARPU, average CLV, active customers and a
        monthly cohort retention matrix for the period (definitions in docs/kpis.md)."""
        if end <= start:
            raise _invalid_query("to", "must be after from")
        if end - start > queries.MAX_KPI_PERIOD:
            raise _invalid_query("to", "the period may span at most five years")
        with uow_factory() as uow:
            answer = queries.kpis(uow, principal.shop_id, start=start, end=end)
        result = answer.kpis
        return KpisRead(
            start=start,
            end=end,
            active_customers=result.active_customers,
            new_customers=result.new_customers,
            revenue=result.revenue,
            arpu=result.arpu,
            repeat_purchase_rate=result.repeat_purchase_rate,
            retention_rate=result.retention_rate,
            churn_rate=result.churn_rate,
            previous_period_customers=result.previous_period_customers,
            returning_revenue=result.returning_revenue,
            average_clv=answer.average_clv,
            cohorts=[
                CohortRead(month=c.month, customers=c.customers, retention=c.retention)
                for c in result.cohorts
            ],
            computed_at=answer.computed_at,
        )

    return router


def _problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: PROBLEM_RESPONSES[status] for status in statuses}


def _rfm(state: dict[str, Any]) -> RfmRead | None:
    if state["r_score"] is None:
        return None
    return RfmRead(r=state["r_score"], f=state["f_score"], m=state["m_score"])


def _member(row: dict[str, Any]) -> SegmentMember:
    return SegmentMember(
        customer_id=row["customer_id"],
        rfm=_rfm(row),
        net_spend=Decimal(row["gross_spend"]) - Decimal(row["refunded"]),
        last_purchase_at=row["last_purchase_at"],
        clv=row["clv"],
        p_alive=row["p_alive"],
        churn_band=row["churn_band"],
        churn_score=row["churn_score"],
    )


def _fit(row: dict[str, Any] | None) -> FitRead | None:
    if row is None:
        return None
    return FitRead(
        version=row["version"],
        fitted_at=row["fitted_at"],
        time_unit=row["time_unit"],
        parameters=row["parameters"],
        diagnostics=row["diagnostics"],
    )


def _encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _position(cursor: str) -> queries.Position:
    try:
        decoded = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        value, separator, customer_id = decoded.partition("|")
        if not separator or not customer_id:
            raise ValueError(decoded)
        return queries.Position(value=float(value), customer_id=customer_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Problem(
            400,
            "Bad Request",
            "The cursor is not one this API gave out",
            errors=[field_error("cursor", "invalid")],
        ) from None


def _invalid_query(field: str, message: str) -> Problem:
    return Problem(422, "Unprocessable Content", message, errors=[field_error(f"query.{field}", message)])
