"""What one simulated run comes to: waits, spend (priced by `costs.attribute`), residency, usage."""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Mapping

from ..costs import Attribution, Interval, JobRun, attribute
from ..selector import country_of
from .cloud import CloudNode

if TYPE_CHECKING:
    from .engine import Engine

ONPREM = "onprem"            # the jobs_per_region key of jobs that ran on-prem
DAY = 86400.0
_RUNS_PER_PIECE = 32


@dataclass(frozen=True)
class SimResult:
    strategy: str
    jobs: int
    finished: int                        # jobs that ran to their end; the others never found room
    cloud_jobs: int
    wait_mean_s: float
    wait_p50_s: float
    wait_p95_s: float
    cloud_spend_usd: Decimal             # costs.attribute's ledger_total
    overhead_usd: Decimal                # boot + idle + failed launches
    overhead_share: float | None         # overhead / spend; None when nothing was spent
    onprem_gpu_hours: float
    cloud_gpu_hours: float
    cloud_node_hours: float
    launches: int                        # nodes launched
    failed_launches: int                 # nodes whose launch the region refused
    jobs_per_region: Mapping[str, int]   # "provider/region", or "onprem"
    residency_violations: int            # cloud runs in a country outside the job's zone
    wall_s: float                        # how long the simulation took
    wait_cdf: tuple[float, ...] = field(repr=False)       # every started job's wait, sorted
    spend_per_day: tuple[float, ...] = field(repr=False)  # USD per day since the first submit
    ledger: tuple[Interval, ...] = field(repr=False)      # every node life, as the daemon's ledger would hold it
    runs: tuple[JobRun, ...] = field(repr=False)          # every job run, on-prem nodes named onprem-<n>

    def as_dict(self, *, series: bool = False) -> dict:
        """Plain JSON-ready values; SERIES adds the wait CDF and the spend per day."""
        out = {
            "strategy": self.strategy, "jobs": self.jobs, "finished": self.finished, "cloud_jobs": self.cloud_jobs,
            "wait_mean_s": self.wait_mean_s, "wait_p50_s": self.wait_p50_s, "wait_p95_s": self.wait_p95_s,
            "cloud_spend_usd": float(self.cloud_spend_usd), "overhead_usd": float(self.overhead_usd),
            "overhead_share": self.overhead_share, "onprem_gpu_hours": self.onprem_gpu_hours,
            "cloud_gpu_hours": self.cloud_gpu_hours, "cloud_node_hours": self.cloud_node_hours,
            "launches": self.launches, "failed_launches": self.failed_launches,
            "jobs_per_region": dict(self.jobs_per_region), "residency_violations": self.residency_violations,
            "wall_s": self.wall_s,
        }
        if series:
            out["wait_cdf"] = list(self.wait_cdf)
            out["spend_per_day"] = list(self.spend_per_day)
        return out


def percentile(ordered: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default); 0 for no values."""
    if not ordered:
        return 0.0
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def build(sim: Engine, strategy: str, started: float) -> SimResult:
    """The result of a finished run; STARTED is its time.perf_counter() at the start."""
    n = len(sim.trace)
    waits = sorted(sim.start[i] - sim.submit[i] for i in range(n) if sim.start[i] is not None)
    ledger = sim.fleet.intervals()
    attribution = _price(sim)
    charges = attribution.charges if attribution else ()
    spent = sum((c.usd for c in charges), Fraction(0))
    overhead = sum((c.usd for c in charges if c.kind != "run"), Fraction(0))
    total = attribution.ledger_total if attribution else Decimal("0.00")
    cloud = [i for i in range(n) if sim.on_cloud[i]]
    onprem_gpu_s = sum(sim.gpn[i] * sim.nnodes[i] * sim.dur[i] for i in range(n)
                       if sim.start[i] is not None and not sim.on_cloud[i])
    return SimResult(
        strategy=strategy, jobs=n, finished=sim.done, cloud_jobs=len(cloud),
        wait_mean_s=sum(waits) / len(waits) if waits else 0.0,
        wait_p50_s=percentile(waits, 0.5), wait_p95_s=percentile(waits, 0.95),
        cloud_spend_usd=total, overhead_usd=Decimal(math.floor(overhead * 100 + Fraction(1, 2))).scaleb(-2),
        overhead_share=float(overhead / spent) if spent else None,
        onprem_gpu_hours=onprem_gpu_s / 3600,
        cloud_gpu_hours=sum(j.cloud_gpu_seconds for j in attribution.jobs) / 3600 if attribution else 0.0,
        cloud_node_hours=sum((iv.end or iv.start) - iv.start for iv in ledger) / 3600,
        launches=len(sim.fleet.lives), failed_launches=len(sim.fleet.failed),
        jobs_per_region=_per_region(sim), residency_violations=violations(sim),
        wait_cdf=tuple(waits), spend_per_day=_per_day(charges), ledger=tuple(ledger), runs=tuple(_runs(sim)),
        wall_s=time.perf_counter() - started,
    )


def violations(sim: Engine) -> int:
    """Cloud runs whose region's country (as the selector reads it) lies outside the job's zone."""
    bad = 0
    for i, nodes in enumerate(sim.ran_on):
        if sim.on_cloud[i]:
            for node in nodes:
                country = country_of(sim.cfg, node.offer.provider, node.offer.region)
                if country is None or not sim.zone(i).contains(country):
                    bad += 1
                    break
    return bad


def _per_region(sim: Engine) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for i, where in enumerate(sim.ran_on):
        if where is None:
            continue
        counts[f"{where[0].offer.provider}/{where[0].offer.region}" if sim.on_cloud[i] else ONPREM] += 1
    return dict(sorted(counts.items()))


def _runs(sim: Engine) -> list[JobRun]:
    out = []
    for i, where in enumerate(sim.ran_on):
        if where is None:
            continue
        t = sim.trace[i]
        names = tuple(node.name for node in where) if sim.on_cloud[i] else tuple(f"onprem-{k}" for k in where)
        tres = {"gres/gpu": sim.gpn[i] * sim.nnodes[i], "cpu": t.cpus or sim.nnodes[i], "node": sim.nnodes[i]}
        out.append(JobRun(str(i + 1), t.user, t.account, sim.partition_of(i), names, tres, sim.start[i],
                          sim.start[i] + sim.dur[i]))
    return out


def _price(sim: Engine) -> Attribution | None:
    """The cloud ledger priced by costs.attribute, the reports' own code.

    What a node cost, and how much of that was boot, idle or failed, depends only on when it was
    busy, not on who kept it busy; so each node goes in with its busy stretches as runs (one per
    stretch of constant GPU use) rather than one run per job. The totals are those of the per-job
    ledger in `SimResult.ledger` and `.runs` (costs.attribute on those gives the per-job split),
    at a fraction of the charges: costs.attribute charges every job present in every segment, and
    a node shared by eight jobs at a time has eight charges per segment.

    Each node's life also goes in as pieces of 32 stretches: costs.attribute compares each segment
    of an interval with every run on it, so a node busy for months would take minutes whole. A
    piece after the first starts busy, so no time in it is mistaken for boot: idle is idle wherever
    the cut falls.
    """
    intervals, runs = list(sim.fleet.failed), []
    for node in sim.fleet.lives:
        _cut(node, intervals, runs)
    if not intervals:
        return None
    until = max((iv.end if iv.end is not None else iv.start) for iv in intervals) + 1.0
    return attribute(intervals, runs, 0.0, until, "gpu")


def busy(node: CloudNode) -> list[tuple[float, float, int]]:
    """(start, end, GPUs in use) of every stretch in which NODE ran at least one job."""
    changes: dict[float, int] = {}
    for _, gpn, s, e in node.runs:
        if e > s:
            changes[s] = changes.get(s, 0) + gpn
            changes[e] = changes.get(e, 0) - gpn
    out: list[tuple[float, float, int]] = []
    used, since = 0, 0.0
    for t in sorted(changes):
        after = used + changes[t]
        if after != used:
            if used:
                out.append((since, t, used))
            since, used = t, after
    return out


def _cut(node: CloudNode, intervals: list[Interval], runs: list[JobRun]) -> None:
    stretches = busy(node)
    cuts = [node.launched, *(s for s, _, _ in stretches[_RUNS_PER_PIECE::_RUNS_PER_PIECE])]
    ends = [*cuts[1:], node.stopped]
    o = node.offer
    for k, (a, b) in enumerate(zip(cuts, ends, strict=True)):
        key = f"{node.key}/{k}"
        intervals.append(Interval(key, key, node.pool.name, o.provider, o.region, o.instance_type, o.spot,
                                  o.price_per_hour, a, b, started_by_job=node.started_by))
        for s, e, gpus in stretches[k * _RUNS_PER_PIECE:(k + 1) * _RUNS_PER_PIECE]:
            runs.append(JobRun(node.key, "", "", "", (key,), {"gres/gpu": gpus}, s, e))


def _per_day(charges) -> tuple[float, ...]:
    """USD per day since submit 0, each charge spread over the days it spans (floats: for plots)."""
    days: dict[int, float] = {}
    for c in charges:
        start, end, usd = float(c.start), float(c.end), float(c.usd)
        if end <= start:
            days[int(start // DAY)] = days.get(int(start // DAY), 0.0) + usd
            continue
        d = int(start // DAY)
        while d * DAY < end:
            part = (min(end, (d + 1) * DAY) - max(start, d * DAY)) / (end - start)
            days[d] = days.get(d, 0.0) + usd * part
            d += 1
    return tuple(days.get(d, 0.0) for d in range(max(days) + 1)) if days else ()
