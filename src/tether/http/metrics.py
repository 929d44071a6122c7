"""Prometheus metrics of one HTTP app, in its own registry (two apps in a process don't clash).

- ``tether_runs_started_total{agent}`` / ``tether_runs_finished_total{status,reason}``: runs
  started through this app, counted when they end (``reason`` is ``none`` for a plain end).
- ``tether_stop_latency_seconds{reason}``: from a stop request reaching this process (cancel
  route, disconnect) to the run's terminal state, for runs this process drives.
- ``tether_active_runs``: runs this worker is driving, read at scrape time.
- ``tether_stream_clients``: SSE responses currently streaming.
"""

from collections.abc import Callable
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
_STOP_BUCKETS_S: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class HttpMetrics:
    """The Prometheus metrics of one HTTP app, in a registry of its own."""

    def __init__(self, *, active_runs: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        self.runs_started = Counter(
            "tether_runs_started",
            "Runs started through the HTTP API.",
            ["agent"],
            registry=self.registry,
        )
        self.runs_finished = Counter(
            "tether_runs_finished",
            "Runs started through the HTTP API that ended, by terminal status and reason.",
            ["status", "reason"],
            registry=self.registry,
        )
        self.stop_latency = Histogram(
            "tether_stop_latency_seconds",
            "From a stop request to the run's terminal state.",
            ["reason"],
            buckets=_STOP_BUCKETS_S,
            registry=self.registry,
        )
        self.active_runs = Gauge(
            "tether_active_runs", "Runs this worker is driving.", registry=self.registry
        )
        self.active_runs.set_function(active_runs)
        self.stream_clients = Gauge(
            "tether_stream_clients", "SSE responses currently streaming.", registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
