"""Every benchmark module; importing one registers its benchmarks (in this order)."""

from __future__ import annotations

from bench import (
    console_overview,
    customer_api,
    followup_dispatch,
    kafka_baseline,
    platform_e2e,
    segmentation_fit,
    segmentation_incremental,
    segmentation_recompute,
    survey_results,
    survey_submit,
)

MODULES = (
    kafka_baseline,
    platform_e2e,
    customer_api,
    segmentation_fit,
    survey_submit,
    survey_results,
    segmentation_incremental,
    segmentation_recompute,
    followup_dispatch,
    console_overview,
)
