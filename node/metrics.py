"""Prometheus metrics (prometheus-client). Labels are bounded: no per-job labels."""

from __future__ import annotations

import platform
from functools import cache

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
)

from . import __version__

REGISTRY = CollectorRegistry(auto_describe=True)
# the process (CPU, memory, open files, start time), the garbage collector and the interpreter
for _collector in (PROCESS_COLLECTOR, GC_COLLECTOR, PLATFORM_COLLECTOR):
    REGISTRY.register(_collector)
BUILD = Info("cronring_build", "The running cronring", registry=REGISTRY)
BUILD.info({"version": __version__, "python": platform.python_version()})

FIRES = Counter("cronring_fires_total", "Executions sent, by final state", ["state"], registry=REGISTRY)
LATENESS = Histogram(
    "cronring_fire_lateness_seconds", "Delay between the tick and the first attempt leaving the node",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=REGISTRY,
)
DURATION = Histogram("cronring_fire_duration_seconds", "Execution duration, all attempts", registry=REGISTRY)
CLAIMS = Counter("cronring_claims_total", "Claims attempted, by result (won, lost)", ["result"], registry=REGISTRY)
FENCE_REJECTIONS = Counter("cronring_fence_rejections_total", "Claims lost to a newer fence: job dropped",
                           registry=REGISTRY)
HANDOVERS = Counter("cronring_handovers_total", "Jobs taken over or released", ["direction"], registry=REGISTRY)
MISFIRES = Counter("cronring_misfires_total", "Ticks not run, by reason (missed, skipped, overlap)", ["reason"],
                   registry=REGISTRY)
REDELIVERIES = Counter("cronring_redeliveries_total",
                       "at_least_once executions re-sent by a new owner after their claimer was lost", registry=REGISTRY)
ABANDONED = Counter("cronring_abandoned_total", "Claimed executions never sent", registry=REGISTRY)
HTTP_STATUS = Counter("cronring_target_responses_total", "Target responses by status class", ["class"],
                      registry=REGISTRY)
RETRIES = Counter("cronring_retries_total", "Retried attempts", registry=REGISTRY)
MEMBERS = Gauge("cronring_members", "Live members in this node's view", registry=REGISTRY)
EPOCH = Gauge("cronring_ring_epoch", "Ring epoch in this node's view", registry=REGISTRY)
OWNED = Gauge("cronring_owned_jobs", "Jobs this node owns", registry=REGISTRY)
JOBS = Gauge("cronring_catalogue_jobs", "Jobs in this node's catalogue (its share of the ring)", registry=REGISTRY)
CATALOGUE_RESYNCS = Counter("cronring_catalogue_full_resyncs_total",
                            "Full re-syncs of the catalogue's share: 'digest' (matched the table, nothing read) or 'read'",
                            ["how"], registry=REGISTRY)
LOCK_RELEASE_FAILURES = Counter("cronring_lock_release_failures_total",
                                "Lock releases that failed (retried until the lock is gone)", registry=REGISTRY)
STUCK = Gauge("cronring_jobs_stuck", "Jobs the ring gives this node whose lock another node has kept "
              "for longer than member_ttl", registry=REGISTRY)
TICKS = Counter("cronring_ticks_total", "Scheduled instants of owned jobs audited a minute later, by fate",
                ["fate"], registry=REGISTRY)
TICKS_UNACCOUNTED = Counter("cronring_ticks_unaccounted_total",
                            "Audited instants that were due, not paused, and have no execution row (a bug)",
                            registry=REGISTRY)
ALERTS = Counter("cronring_alerts_total", "Alerts this node tried to send, by type and outcome (sent, retry, failed)",
                 ["type", "outcome"], registry=REGISTRY)
AUTH_FAILURES = Counter("cronring_auth_failures_total", "Wrong API tokens and failed logins", registry=REGISTRY)
API_REQUESTS = Counter("cronring_api_requests_total", "API requests by status class", ["class"], registry=REGISTRY)
API_LATENCY = Histogram("cronring_api_request_duration_seconds", "API and page requests by route (streams excluded)",
                        ["route", "method"], registry=REGISTRY,
                        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
DATABASE_SWITCHES = Counter("cronring_database_primary_switches_total",
                            "Times this node moved to another MariaDB host (the writable one)", registry=REGISTRY)
STREAM_CLIENTS = Gauge("cronring_stream_clients", "Live-stream (SSE) clients connected to this node", registry=REGISTRY)


@cache
def fires(state: str) -> Counter:
    """The FIRES child for a state, bound once (labels() per fire costs more than the increment)."""
    return FIRES.labels(state)


@cache
def status_class(status: int) -> Counter:
    return HTTP_STATUS.labels(f"{status // 100}xx")


@cache
def misfires(reason: str) -> Counter:
    return MISFIRES.labels(reason)


@cache
def ticks(fate: str) -> Counter:
    return TICKS.labels(fate)


@cache
def api_latency(route: str, method: str) -> Histogram:
    return API_LATENCY.labels(route, method)
LOOP_LAG = Histogram(
    "cronring_event_loop_lag_seconds", "How late the node's event loop woke its own timers (the heartbeat's "
    "every second, the scheduler's): a stalled loop holds heartbeats, timers and every request", buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=REGISTRY,
)
