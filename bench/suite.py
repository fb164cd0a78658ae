"""Every benchmark module; importing one registers its benchmarks (in this order)."""

from __future__ import annotations

from bench import kafka_baseline, platform_e2e

MODULES = (kafka_baseline, platform_e2e)
