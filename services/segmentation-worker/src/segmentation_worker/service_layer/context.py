"""What scoring needs to know about a shop, read once per batch or recompute."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from segmentation_worker.domain.config import config_from_document
from segmentation_worker.domain.scoring import Buyers, Fits, ShopContext, quintile_edges_of
from segmentation_worker.service_layer.uow import SegmentationUnitOfWork


def shop_context(uow: SegmentationUnitOfWork, shop_id: str, now: datetime) -> ShopContext:
    config = config_from_document(uow.state.config_document(shop_id))
    stats = uow.state.shop_stats_of(shop_id) or {}
    edges = stats.get("quintile_edges")
    if config.mode == "quintile" and edges is None:
        # Quintiles rank a customer against the whole shop: before the first recompute has
        # stored the cut points, compute them once from every buyer.
        snapshot = uow.state.buyers_snapshot(shop_id, now)
        buyers_now = Buyers(
            snapshot["first_days_ago"],
            snapshot["last_days_ago"],
            snapshot["purchase_days"],
            snapshot["net_spend"],
        )
        edges = quintile_edges_of(buyers_now)
        if buyers_now.size:  # with no buyer yet the cut points are infinite: nothing to keep
            uow.state.save_quintile_edges(shop_id, edges)
    buyers = int(stats.get("buyers") or 0)
    average = float(Decimal(stats.get("net_spend") or 0) / buyers) if buyers else 0.0
    return ShopContext(
        config=config,
        shop_average_spend=average,
        typical_gap_days=float(stats.get("typical_interval_days") or config.churn.default_interval_days),
        edges=edges,
        fits=current_fits(uow, shop_id),
    )


def current_fits(uow: SegmentationUnitOfWork, shop_id: str) -> Fits:
    """The shop's current model parameters; a model that never fitted is absent."""
    from segmentation_worker.domain import models  # scipy: imported when first needed

    rows = uow.state.current_fits(shop_id)
    bgnbd = rows.get("bgnbd")
    gamma_gamma = rows.get("gamma_gamma")
    return Fits(
        bgnbd=models.BgNbdParams(**bgnbd["parameters"]) if bgnbd and bgnbd["parameters"] else None,
        gamma_gamma=(
            models.GammaGammaParams(**gamma_gamma["parameters"])
            if gamma_gamma and gamma_gamma["parameters"]
            else None
        ),
    )
