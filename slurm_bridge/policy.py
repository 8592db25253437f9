"""When a pending on-prem job may leave for the cloud, and to which pools.

Pure: the daemon and the simulator feed it the same facts and get the same
decisions. A job is made eligible (its burst partitions are added, its own
partition stays first) only when every condition holds; otherwise the
decision carries the first reason it is kept on-prem, so `status` and the
decision log can say why.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterable, Mapping

from . import residency, selector
from .config import Config, PoolConfig
from .models import Job
from .prices import PriceBook

# Slurm's reasons for a job that waits only for room; anything else (held, dependency, QOS or
# association limits, begin time, reservation) would not start in the cloud either.
WAITING_FOR_ROOM = frozenset({"Resources", "Priority"})
OPT_OUT_FEATURE = "onprem"


@dataclass(frozen=True)
class Decision:
    job_id: int
    burst: bool
    reason: str                          # for people: says exactly why
    partitions: tuple[str, ...] = ()     # the job's new partition list, when burst
    pools: tuple[str, ...] = ()
    code: str = ""                       # for machines (metrics labels): one of a few words


@dataclass(frozen=True)
class Facts:
    now: float
    active_cloud_nodes: int                       # instances launching or up
    spend_month: Mapping[str, float]              # account -> USD this month
    blocked: Callable[[str, str], str | None]     # (provider, region) -> why in backoff, or None
    book: PriceBook | None = None


def month_start(now: float) -> float:
    t = datetime.fromtimestamp(now, tz=timezone.utc)
    return datetime(t.year, t.month, 1, tzinfo=timezone.utc).timestamp()


def shape_problem(pool: PoolConfig, job: Job) -> str | None:
    """Why POOL's nodes cannot hold JOB, or None when they can."""
    g = job.gres
    if g.gpus_per_node > pool.gpu_count:
        return f"needs {g.gpus_per_node} GPUs per node, pool has {pool.gpu_count}"
    if g.gpu_type and pool.gpu_type and g.gpu_type.lower() != pool.gpu_type.lower():
        return f"needs {g.gpu_type} GPUs, pool has {pool.gpu_type}"
    if g.gpu_type and not pool.gpu_type and g.gpus_per_node:
        return f"needs {g.gpu_type} GPUs, pool's GPUs are untyped"
    if job.node_count > pool.size:
        return f"needs {job.node_count} nodes, pool has {pool.size}"
    cpus_per_node = -(-job.cpus // max(job.node_count, 1))
    if cpus_per_node > pool.cpus:
        return f"needs {cpus_per_node} CPUs per node, pool has {pool.cpus}"
    mem = job.memory_per_node_mb or (job.memory_per_cpu_mb or 0) * cpus_per_node
    if mem > pool.memory_mb:
        return f"needs {mem} MB per node, pool has {pool.memory_mb}"
    return None


def _opted_out(job: Job) -> bool:
    return OPT_OUT_FEATURE in residency.feature_names(job.features)


def decide_one(cfg: Config, job: Job, facts: Facts, committed: int, _launchable: dict | None = None) -> Decision:
    watched = set(cfg.slurm.watch_partitions)
    burst_parts = {p.partition for p in cfg.pools}
    if job.state != "PENDING" or not watched.intersection(job.partitions):
        return Decision(job.job_id, False, "not pending in a watched partition", code="not_watched")
    if burst_parts.intersection(job.partitions):
        return Decision(job.job_id, False, "already eligible for the cloud", code="already_eligible")
    if job.reason not in WAITING_FOR_ROOM:
        return Decision(job.job_id, False, f"waits for {job.reason or 'scheduling'}, not for room",
                        code="not_waiting_for_room")
    waited = facts.now - job.submit_time.timestamp() if job.submit_time else 0.0
    if waited < cfg.policy.burst_after:
        return Decision(job.job_id, False, f"waited {waited:.0f}s of {cfg.policy.burst_after}s",
                        code="too_early")
    account = cfg.account(job.account)
    if not account.burst:
        return Decision(job.job_id, False, f"account {job.account} does not burst", code="account_stays")
    if _opted_out(job):
        return Decision(job.job_id, False, f"opted out (--constraint={OPT_OUT_FEATURE})", code="opted_out")
    if not job.batch:
        return Decision(job.job_id, False, "interactive allocation", code="interactive")
    if account.budget_usd_month is not None:
        spent = facts.spend_month.get(job.account, 0.0)
        if spent >= account.budget_usd_month:
            return Decision(job.job_id, False,
                            f"account {job.account} spent {spent:.2f} of {account.budget_usd_month:.2f} USD this month",
                            code="over_budget")
    zone = residency.job_zone(cfg, job.account, [p for p in job.partitions if p in watched], job.features)
    fitting, why_not = [], []
    for pool in cfg.pools:
        if (problem := shape_problem(pool, job)) is not None:
            why_not.append(f"{pool.name}: {problem}")
        elif pool.zone.countries is not None and zone.countries is not None \
                and not pool.zone.countries & zone.countries:
            why_not.append(f"{pool.name}: zone {pool.zone.name} shares no country with the job's")
        elif not _can_launch(cfg, pool, zone, facts, _launchable if _launchable is not None else {}):
            why_not.append(f"{pool.name}: no launchable region inside the job's zone right now")
        else:
            fitting.append(pool)
    if not fitting:
        return Decision(job.job_id, False, "no pool fits: " + "; ".join(why_not) if why_not else "no pools",
                        code="no_pool_fits")
    if committed + job.node_count > cfg.policy.max_cloud_nodes:
        return Decision(job.job_id, False,
                        f"cloud node limit: {committed} of {cfg.policy.max_cloud_nodes} in use or promised",
                        code="node_limit")
    parts = tuple(job.partitions) + tuple(p.partition for p in fitting)
    return Decision(job.job_id, True, "waited for room past burst_after", parts, tuple(p.name for p in fitting),
                    code="burst")


def _can_launch(cfg: Config, pool: PoolConfig, zone, facts: Facts, memo: dict) -> bool:
    # Tens of thousands of pending jobs share a handful of (pool, zone) pairs: rank each once per cycle.
    key = (pool.name, zone.countries)
    if key not in memo:
        memo[key] = bool(selector.rank(cfg, pool, zone, facts.blocked, facts.book)[0])
    return memo[key]


def decide(cfg: Config, jobs: Iterable[Job], facts: Facts) -> list[Decision]:
    """One decision per pending job in a watched partition, oldest first (first come, first burst)."""
    jobs = sorted((j for j in jobs if j.state == "PENDING"),
                  key=lambda j: (j.submit_time or datetime.max.replace(tzinfo=timezone.utc), j.job_id))
    burst_parts = {p.partition for p in cfg.pools}
    # Jobs already eligible but not yet running hold cloud nodes too: count them against the limit.
    committed = facts.active_cloud_nodes + sum(j.node_count for j in jobs if burst_parts.intersection(j.partitions))
    out, memo = [], {}
    for job in jobs:
        d = decide_one(cfg, job, facts, committed, memo)
        if d.burst:
            committed += job.node_count
        out.append(d)
    return out
