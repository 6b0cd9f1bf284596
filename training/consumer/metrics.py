"""The consumer's Prometheus metrics and the tally of one polled batch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from secml.settings import Settings


@dataclass
class ConsumerMetrics:
    """The consumer's Prometheus metrics, on their own registry."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.consumed = Counter(
            "consumer_messages_consumed", "Control messages read from Kafka", registry=r
        )
        self.dispatched = Counter(
            "consumer_messages_dispatched",
            "Flow runs created from control messages",
            ["deployment"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "consumer_messages_dead_lettered",
            "Invalid control messages sent to the dead-letter topic",
            registry=r,
        )
        self.duplicates = Counter(
            "consumer_duplicates_skipped",
            "Redelivered or repeated messages whose run already existed",
            registry=r,
        )
        self.dispatch_errors = Counter(
            "consumer_dispatch_errors", "Failed dispatch attempts (retried)", registry=r
        )
        self.commit_errors = Counter(
            "consumer_commit_errors", "Failed offset commits (retried)", registry=r
        )
        self.lag = Gauge(
            "consumer_lag_messages",
            "Messages on the control topic not yet consumed by this consumer",
            ["topic", "partition"],
            registry=r,
        )
        self.assigned = Gauge(
            "consumer_assigned_partitions",
            "Partitions of the control topic this consumer holds (0 while it has not joined)",
            registry=r,
        )
        self.dispatch_seconds = Histogram(
            "consumer_dispatch_seconds",
            "Time to validate and dispatch one polled batch",
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )


@dataclass
class BatchResult:
    """What one polled batch did."""

    consumed: int = 0
    dispatched: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    failed: int = 0
    commit: dict[Any, int] = field(default_factory=dict)


def serve_metrics(metrics: ConsumerMetrics, settings: Settings) -> Any:
    """Expose ``metrics`` on ``settings.consumer_metrics_port``; return the HTTP server."""
    server, _thread = start_http_server(
        settings.consumer_metrics_port, addr=settings.host, registry=metrics.registry
    )
    return server
