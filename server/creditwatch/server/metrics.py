"""Prometheus metrics: one place that defines them, every component updates them.

Exposed over HTTP on `CREDITWATCH_METRICS_PORT` (unset: no metrics endpoint).
Names follow Prometheus conventions: `_seconds` histograms, `_total` counters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

RPC_SECONDS = Histogram(
    "creditwatch_rpc_seconds",
    "Time to answer an RPC (streams: until the stream ends), by method and status code.",
    ["method", "code"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
)
ALERTS_DISPATCHED = Counter(
    "creditwatch_alerts_dispatched_total",
    "Alerts this replica's hub offered to its streams (alerts of tenants with no stream"
    " on this replica are read past and not counted).",
)
ALERT_LAG_SECONDS = Histogram(
    "creditwatch_alert_lag_seconds",
    "From an alert's transaction start to this replica's hub offering it to streams.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
ALERT_STREAM_LAGGING = Counter(
    "creditwatch_alert_stream_overflows_total",
    "Times a stream's buffer overflowed and it fell back to reading from the database.",
)
SCORES = Counter("creditwatch_scores_total", "Scores computed and stored, by origin.", ["origin"])
INTAKE = Counter(
    "creditwatch_intake_total",
    "Company facts taken in (each in one transaction with its re-score and alerts), by kind.",
    ["kind"],
)
BATCH_CHUNK_FAILURES = Counter(
    "creditwatch_batch_chunk_failures_total",
    "Failed attempts at chunks of shared batch work, by kind (rescore, snapshot) and "
    "whether the attempt gave the chunk up.",
    ["kind", "given_up"],
)
JOBS_OFF_MODEL = Counter(
    "creditwatch_jobs_off_activated_model_total",
    "Runs of a score-storing job on a replica without the activated model: re-scoring is"
    " left to replicas that have it (none may: alert on this), the register feeds too"
    " until the policy rollout window after the activation has passed.",
    ["job"],
)
STREAM_CHUNKS = Counter(
    "creditwatch_stream_chunks_total",
    "StreamScores chunks of more than 64 items, by where their statements were scored "
    "(worker: a worker process; server: the server process, with no worker to do it).",
    ["scored_in"],
)
SUBSCRIBERS = Gauge(
    "creditwatch_alert_subscribers", "Open SubscribeAlerts streams on this replica."
)


def watch_subscribers(count: Callable[[], int]) -> None:
    """Report the open-stream count from `count()` at every scrape."""
    SUBSCRIBERS.set_function(count)


def serve(port: int, host: str = "0.0.0.0") -> Any:
    """Start the /metrics HTTP endpoint in a background thread."""
    server, _ = start_http_server(port, addr=host)
    log.info("metrics endpoint", extra={"port": server.server_port})
    return server
