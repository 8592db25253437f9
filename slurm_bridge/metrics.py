"""Prometheus metrics of the daemon, in a registry of their own (never prometheus_client's global one).

Gauges that describe "what is there now" (nodes, instances, spend, budgets,
blocked scopes) are replaced as a whole on each update: a label combination
that is no longer reported disappears from /metrics instead of keeping its last
value. They are served from a snapshot that is swapped in one step, so a scrape
never sees a half-updated set. Counters and the loop histogram are ordinary
prometheus_client metrics.

Label values are expected to be short codes (a decision reason such as
"budget", not a message with job ids in it): every distinct value is a time
series kept for ever.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .models import Node

NODE_STATES = ("powered_down", "powering_up", "idle", "allocated", "mixed", "down", "draining",
               "powering_down", "other")
LOOPS = ("watch", "reconcile", "ingest", "prices")
# Loops take from milliseconds (a quiet watch) to minutes (a reconcile over slow cloud APIs).
LOOP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

_DOWN_FLAGS = {"FAIL", "INVALID_REG"}
_DRAIN_FLAGS = {"DRAIN", "DRAINING", "DRAINED"}


def node_state_label(node: Node) -> str:
    """One of NODE_STATES for a node, from its base state and flags, first match wins:

    down (base DOWN or ERROR, or flag FAIL/INVALID_REG: unusable whatever else it is, e.g. `down~`
    after ResumeTimeout or `down%` while the bridge powers a failed launch down), draining (DRAIN:
    no new jobs, `drain~` included), powering_down (POWERING_DOWN, or POWER_DOWN: asked to power
    down, `idle!`), powered_down (`idle~`), powering_up (`alloc#`, `idle#`), then the base state
    idle / allocated / mixed, and other for anything else (FUTURE, UNKNOWN, ...).
    """
    base = (node.state or "").upper()
    flags = {f.upper() for f in node.flags}
    if base in ("DOWN", "ERROR") or flags & _DOWN_FLAGS:
        return "down"
    if flags & _DRAIN_FLAGS or base in _DRAIN_FLAGS:
        return "draining"
    if "POWERING_DOWN" in flags or "POWER_DOWN" in flags:
        return "powering_down"
    if "POWERED_DOWN" in flags:
        return "powered_down"
    if "POWERING_UP" in flags:
        return "powering_up"
    return {"IDLE": "idle", "ALLOCATED": "allocated", "MIXED": "mixed"}.get(base, "other")


def node_counts(nodes: Iterable[Node], pool_of, pools: Iterable[str] = ()) -> dict[tuple[str, str], int]:
    """Count NODES per (pool, state label) for `Metrics.set_nodes`.

    POOL_OF maps a node name to its pool name, or None for a node in no pool (skipped).
    Every state of every pool seen or listed in POOLS is present, zero included, so a
    pool's series do not come and go as nodes change state.
    """
    counts: dict[tuple[str, str], int] = {}
    for pool in pools:
        for state in NODE_STATES:
            counts[(pool, state)] = 0
    for node in nodes:
        pool = pool_of(node.name)
        if pool is None:
            continue
        for state in NODE_STATES:
            counts.setdefault((pool, state), 0)
        counts[(pool, node_state_label(node))] += 1
    return counts


class _SnapshotGauges(Collector):
    """Gauge families whose whole sample set is replaced at once."""

    def __init__(self, specs: Mapping[str, tuple[str, tuple[str, ...]]]):
        self._specs = dict(specs)            # name -> (help, label names)
        self._values: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in specs}
        self._lock = threading.Lock()

    def replace(self, name: str, values: Mapping[tuple[str, ...], float]) -> None:
        labels = self._specs[name][1]
        fresh: dict[tuple[str, ...], float] = {}
        for key, value in values.items():
            key = tuple(str(k) for k in key)
            if len(key) != len(labels):
                raise ValueError(f"{name}: expected labels {labels}, got {key!r}")
            fresh[key] = float(value)
        with self._lock:
            self._values[name] = fresh

    def describe(self) -> Iterator[GaugeMetricFamily]:
        for name, (doc, labels) in self._specs.items():
            yield GaugeMetricFamily(name, doc, labels=labels)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            snapshot = {name: dict(values) for name, values in self._values.items()}
        for name, (doc, labels) in self._specs.items():
            family = GaugeMetricFamily(name, doc, labels=labels)
            for key, value in sorted(snapshot[name].items()):
                family.add_metric(list(key), value)
            yield family


class Metrics:
    """Every metric the daemon exports, set from plain values."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        self._server = None
        self._thread = None
        self._snap = _SnapshotGauges({
            "slurm_bridge_nodes": ("Cloud nodes per pool and state.", ("pool", "state")),
            "slurm_bridge_instances": ("Instances up per provider and region.", ("provider", "region")),
            "slurm_bridge_spend_usd_month": ("Cloud spend this calendar month, USD.", ("account",)),
            "slurm_bridge_budget_usd_month": ("Monthly cloud budget, USD.", ("account",)),
            "slurm_bridge_blocked_scopes": ("1 while a provider scope is blocked after a failure.",
                                            ("provider", "region", "scope", "kind")),
        })
        self.registry.register(self._snap)
        self.burst_eligible_jobs = Gauge(
            "slurm_bridge_burst_eligible_jobs", "Pending jobs currently made eligible for cloud pools.",
            registry=self.registry)
        self.last_reconcile = Gauge(
            "slurm_bridge_last_reconcile_timestamp_seconds", "Unix time the last reconcile finished.",
            registry=self.registry)
        self.launches = Counter(
            "slurm_bridge_launches", "Instances launched.", ("provider", "region"), registry=self.registry)
        self.launch_failures = Counter(
            "slurm_bridge_launch_failures", "Failed launches by failure kind.", ("provider", "region", "kind"),
            registry=self.registry)
        self.decisions = Counter(
            "slurm_bridge_decisions", "Burst decisions taken for pending jobs.", ("decision", "reason"),
            registry=self.registry)
        self.loop_duration = Histogram(
            "slurm_bridge_loop_duration_seconds", "Duration of one run of a daemon loop.", ("loop",),
            buckets=LOOP_BUCKETS, registry=self.registry)

    # -- replaced sets -------------------------------------------------------------------------

    def set_nodes(self, counts: Mapping[tuple[str, str], int]) -> None:
        """COUNTS: {(pool, state): n}, state one of NODE_STATES; replaces every previous pair."""
        bad = sorted({state for _, state in counts if state not in NODE_STATES})
        if bad:
            raise ValueError(f"unknown node state label(s) {bad}; expected one of {NODE_STATES}")
        self._snap.replace("slurm_bridge_nodes", counts)

    def set_instances(self, counts: Mapping[tuple[str, str], int]) -> None:
        """COUNTS: {(provider, region): instances up}."""
        self._snap.replace("slurm_bridge_instances", counts)

    def set_spend(self, usd_by_account: Mapping[str, float]) -> None:
        self._snap.replace("slurm_bridge_spend_usd_month", {(a,): v for a, v in usd_by_account.items()})

    def set_budgets(self, usd_by_account: Mapping[str, float]) -> None:
        self._snap.replace("slurm_bridge_budget_usd_month", {(a,): v for a, v in usd_by_account.items()})

    def set_blocked(self, blocks: Iterable[tuple[str, str | None, str, str]]) -> None:
        """BLOCKS: (provider, region or None for a provider-wide block, scope, kind), each active now.

        Several zone blocks in one region collapse into one series (the label set has no zone).
        """
        self._snap.replace("slurm_bridge_blocked_scopes",
                           {(p, r or "", s, k): 1 for p, r, s, k in blocks})

    # -- single values ----------------------------------------------------------------------

    def set_burst_eligible(self, n: int) -> None:
        self.burst_eligible_jobs.set(n)

    def set_last_reconcile(self, ts: float | None = None) -> None:
        self.last_reconcile.set(time.time() if ts is None else ts)

    # -- counters and histogram -------------------------------------------------------------

    def count_launch(self, provider: str, region: str, n: int = 1) -> None:
        self.launches.labels(provider, region).inc(n)

    def count_launch_failure(self, provider: str, region: str, kind: str, n: int = 1) -> None:
        """KIND: a providers.base.FailureKind value (capacity, quota, throttled, ...)."""
        self.launch_failures.labels(provider, region, kind).inc(n)

    def count_decision(self, decision: str, reason: str) -> None:
        self.decisions.labels(decision, reason).inc()

    def observe_loop(self, name: str, seconds: float) -> None:
        if name not in LOOPS:
            raise ValueError(f"unknown loop {name!r}; expected one of {LOOPS}")
        self.loop_duration.labels(name).observe(seconds)

    # -- HTTP --------------------------------------------------------------------------------

    def serve(self, addr: str, port: int):
        """Serve /metrics on ADDR:PORT from a daemon thread; returns the WSGIServer.

        prometheus_client 0.26's start_http_server returns (server, thread); port 0 picks a
        free port (`server.server_port`). Stop it with `close()` (or server.shutdown()).
        """
        if self._server is not None:
            raise RuntimeError("metrics server already running")
        started = start_http_server(port, addr, registry=self.registry)
        if started is None:   # before 0.20 it returned None: no way to stop it
            raise RuntimeError("slurm-bridge needs prometheus_client >= 0.20 (start_http_server returns the server)")
        self._server, self._thread = started
        return self._server

    def close(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._server = self._thread = None
