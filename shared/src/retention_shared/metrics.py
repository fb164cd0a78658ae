"""Prometheus metrics every service exposes on /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUEST_LATENCY = Histogram(
    "retention_http_request_duration_seconds",
    "HTTP request latency",
    ["service", "method", "route", "status"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
EVENTS_CONSUMED = Counter(
    "retention_events_consumed_total", "Records consumed, by outcome", ["service", "topic", "outcome"]
)
EVENTS_PUBLISHED = Counter(
    "retention_events_published_total", "Records published by the outbox relay", ["service"]
)
CONSUMER_LAG = Gauge(
    "retention_consumer_lag", "Records behind the end of the assigned partitions", ["service"]
)
OUTBOX_BACKLOG = Gauge("retention_outbox_backlog", "Outbox rows not yet published", ["service"])
DEAD_LETTERED = Counter(
    "retention_dead_lettered_total", "Records sent to a dead-letter topic", ["service", "topic"]
)
