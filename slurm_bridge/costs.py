"""Who pays for each cloud second: instance intervals x price, shared among the jobs that used them.

Pure logic: the caller reads the ledger (cost intervals) and sacct (job runs); nothing here does I/O.

Units and rounding, everywhere in this module:
- Times are epoch seconds (float in, float out). Each float is read as the decimal it prints as
  (``Fraction(repr(x))``), so a price of 2.4 $/h is exactly 2.4, not the nearest binary fraction.
- Money is computed exactly with ``fractions.Fraction`` and comes out as ``decimal.Decimal`` US dollars with
  two places. Every view (jobs + pool overhead, intervals, each ``group()``) is rounded with the
  largest-remainder method against the ledger total rounded half-up to the cent, so each view adds up to
  ``ledger_total`` exactly and each figure is within one cent of its exact value.
- GPU and node time comes out as float seconds (``gpu_seconds``) or float hours (``gpu_hours``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from fractions import Fraction
from itertools import pairwise
from math import floor

WEIGHTS = ("gpu", "billing")
GROUPS = ("account", "user", "partition", "pool", "region", "job", "array")
UNATTRIBUTED = "(unattributed)"   # group key of overhead charged to a pool, not a job
ONPREM = "(on-prem)"              # pool/region key of on-prem usage
UNKNOWN = "(unknown)"             # user/account/partition of a job named only by an interval's started_by_job
OVERHEAD_KINDS = ("boot", "idle", "failed")


@dataclass(frozen=True, slots=True)
class Interval:
    """One cloud instance's life, from the ledger."""

    key: str
    node: str
    pool: str
    provider: str
    region: str
    instance_type: str
    spot: bool
    usd_per_hour: float          # the price in force at launch
    start: float
    end: float | None            # None: still running (clipped to the period end)
    started_by_job: str | None = None
    failed: bool = False         # never ran a job: its whole life is overhead


@dataclass(frozen=True, slots=True)
class JobRun:
    """One job allocation, from sacct. A requeued job may have several runs under one job id."""

    job_id: str
    user: str
    account: str
    partition: str
    nodes: tuple[str, ...]
    tres: Mapping[str, int] = field(hash=False)   # AllocTRES, e.g. {"cpu": 4, "gres/gpu": 2, "billing": 4}
    start: float = 0.0
    end: float | None = None     # None: still running (clipped to the period end)


@dataclass(frozen=True, slots=True)
class Charge:
    """One exact share of one interval's cost: a job's part of a segment, or a stretch of overhead."""

    interval: str
    pool: str
    provider: str
    region: str
    instance_type: str
    job_id: str | None       # who pays: the job that ran (kind "run") or caused the resume; None: the pool
    kind: str                # "run", "boot", "idle" or "failed"
    start: Fraction
    end: Fraction
    usd: Fraction
    gpus: Fraction           # the job's GPUs on this node (run charges only)

    @property
    def seconds(self) -> Fraction:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Unmatched:
    """Job time on a cloud node that no ledger interval covers: a cloud job must never look free."""

    job_id: str
    node: str
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class JobCost:
    job_id: str
    user: str
    account: str
    partition: str
    run_cost: Decimal            # its share of the intervals it ran on
    overhead: Decimal            # boot/idle/failed time of the intervals its resume started
    gpu_seconds: float           # allocated GPUs x time within the period, cloud and on-prem
    cloud_gpu_seconds: float
    cloud_node_seconds: float
    onprem_gpu_seconds: float
    onprem_cost: Decimal | None  # None when no on-prem rate was given
    unmatched_seconds: float     # node-seconds on cloud nodes without an interval
    pools: tuple[str, ...]
    providers: tuple[str, ...]
    regions: tuple[str, ...]
    instance_types: tuple[str, ...]

    @property
    def total(self) -> Decimal:
        return self.run_cost + self.overhead

    def as_dict(self) -> dict:
        return asdict(self) | {"total": self.total}


@dataclass(frozen=True, slots=True)
class IntervalCost:
    key: str
    node: str
    pool: str
    provider: str
    region: str
    instance_type: str
    spot: bool
    usd_per_hour: float
    start: float                 # clipped to the period
    end: float
    running: bool
    failed: bool
    started_by_job: str | None
    jobs: tuple[str, ...]
    total: Decimal
    job_cost: Decimal
    boot_cost: Decimal           # before the first job (the whole life when no job ever ran on it)
    idle_cost: Decimal           # between and after jobs, until suspend
    failed_cost: Decimal         # the whole life of a failed launch

    @property
    def seconds(self) -> float:
        return self.end - self.start

    @property
    def overhead(self) -> Decimal:
        return self.boot_cost + self.idle_cost + self.failed_cost

    def as_dict(self) -> dict:
        return asdict(self) | {"seconds": self.seconds, "overhead": self.overhead}


@dataclass(frozen=True, slots=True)
class GroupRow:
    key: str
    spend: Decimal               # cloud: run_cost + overhead
    run_cost: Decimal
    overhead: Decimal
    overhead_share: float | None  # overhead / spend (exact values); None when nothing was spent
    gpu_hours: float             # cloud GPU-hours
    onprem_gpu_hours: float
    onprem_cost: Decimal | None
    jobs: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Attribution:
    since: float
    until: float
    weight: str
    ledger_total: Decimal
    jobs: tuple[JobCost, ...]
    intervals: tuple[IntervalCost, ...]
    pool_overhead: Mapping[str, Decimal]
    unmatched: tuple[Unmatched, ...]
    onprem_total: Decimal | None
    charges: tuple[Charge, ...]          # the exact shares every view is rounded from
    onprem_exact: Mapping[str, Fraction]  # job id -> exact on-prem cost (empty without a rate)

    def cloud_usage(self) -> list[tuple[float, float, float, float]]:
        """(start, end, gpus, usd) of every cloud run share, with overhead spread over them pro rata.

        The usd add up to the ledger total, so a GPU-hour moved on-prem is credited with the boot and
        idle time it would also have saved. This is the input costmodel.breakeven expects.
        """
        runs = [c for c in self.charges if c.kind == "run"]
        run_total = sum((c.usd for c in runs), Fraction(0))
        ledger = sum((c.usd for c in self.charges), Fraction(0))
        scale = ledger / run_total if run_total else Fraction(0)
        return [(float(c.start), float(c.end), float(c.gpus), float(c.usd * scale)) for c in runs]


def _exact(x: float) -> Fraction:
    return Fraction(repr(float(x)))


def _half_up_cents(x: Fraction) -> int:
    return floor(x * 100 + Fraction(1, 2))


def _dollars(cents: int) -> Decimal:
    return Decimal(cents).scaleb(-2)


def round_cents(amounts: Sequence[Fraction], total_cents: int | None = None) -> list[int]:
    """Largest-remainder rounding of non-negative amounts to cents that add up to TOTAL_CENTS.

    TOTAL_CENTS defaults to the exact sum rounded half-up. Ties go to the earlier amount, so the result
    is deterministic for a given order.
    """
    if total_cents is None:
        total_cents = _half_up_cents(sum(amounts, Fraction(0)))
    cents = [floor(a * 100) for a in amounts]
    short = total_cents - sum(cents)
    order = sorted(range(len(amounts)), key=lambda i: (cents[i] - amounts[i] * 100, i))
    assert 0 <= short <= len(amounts), "total_cents must be the sum rounded to a neighbouring cent"
    for i in order[:short]:
        cents[i] += 1
    return cents


def gpus_of(tres: Mapping[str, int]) -> int:
    """GPUs in an AllocTRES map: the untyped count, else the sum of the typed ones."""
    if "gres/gpu" in tres:
        return tres["gres/gpu"]
    return sum(v for k, v in tres.items() if k.startswith("gres/gpu:"))


def _weight_of(run: JobRun, weight: str) -> Fraction:
    per_job = gpus_of(run.tres) if weight == "gpu" else run.tres.get("billing", 0)
    return Fraction(per_job, len(_nodes(run)))


def _nodes(run: JobRun) -> tuple[str, ...]:
    return tuple(dict.fromkeys(run.nodes))


def _clip(start: float, end: float | None, since: Fraction, until: Fraction) -> tuple[Fraction, Fraction]:
    a = max(_exact(start), since)
    b = until if end is None else min(_exact(end), until)
    return a, max(a, b)   # an end before the start (clock skew) is a zero-length stretch


def _shares(present: list[JobRun], weight: str) -> list[Fraction]:
    """Each present job's share of a segment: by weight, then by CPUs, then equally."""
    for w in ([_weight_of(r, weight) for r in present],
              [Fraction(r.tres.get("cpu", 0), len(_nodes(r))) for r in present]):
        total = sum(w, Fraction(0))
        if total > 0:
            return [x / total for x in w]
    return [Fraction(1, len(present))] * len(present)


def _split(iv: Interval, runs: list[JobRun], since: Fraction, until: Fraction, weight: str) -> list[Charge]:
    """Cut one interval's period share into segments at job starts and ends, and charge each segment."""
    a, b = _clip(iv.start, iv.end, since, until)
    rate = _exact(iv.usd_per_hour) / 3600
    overhead_to = iv.started_by_job

    def charge(job: str | None, kind: str, s: Fraction, e: Fraction, usd: Fraction, gpus: Fraction) -> Charge:
        return Charge(iv.key, iv.pool, iv.provider, iv.region, iv.instance_type, job, kind, s, e, usd, gpus)

    if iv.failed:
        return [charge(overhead_to, "failed", a, b, rate * (b - a), Fraction(0))] if b > a else []
    # The first job over the interval's whole life, not just the period, so time after a job that ran
    # before the period counts as idle, not boot.
    life_end = None if iv.end is None else _exact(iv.end)
    mine = [r for r in runs if _overlaps(r, _exact(iv.start), life_end)]
    first = min((_exact(r.start) for r in mine), default=None)
    spans = [(r, _clip(r.start, r.end, a, b)) for r in mine]
    cuts = sorted({a, b} | {t for _, span in spans for t in span if a < t < b})
    out: list[Charge] = []
    for s, e in pairwise(cuts):
        present = [r for r, span in spans if _covers(span, s, e)]
        cost = rate * (e - s)
        if not present:
            kind = "boot" if first is None or s < first else "idle"
            out.append(charge(overhead_to, kind, s, e, cost, Fraction(0)))
            continue
        for r, share in zip(present, _shares(present, weight)):
            out.append(charge(r.job_id, "run", s, e, cost * share, Fraction(gpus_of(r.tres), len(_nodes(r)))))
    return out


def _overlaps(run: JobRun, start: Fraction, end: Fraction | None) -> bool:
    """True when RUN spent time on the node within [START, END); a zero-length run never does."""
    run_start, run_end = _exact(run.start), None if run.end is None else _exact(run.end)
    if run_end is not None and run_end <= run_start:
        return False
    return (end is None or run_start < end) and (run_end is None or run_end > start)


def _covers(span: tuple[Fraction, Fraction], s: Fraction, e: Fraction) -> bool:
    return span[0] <= s and span[1] >= e and span[1] > span[0]


def _gaps(span: tuple[Fraction, Fraction], covers: list[tuple[Fraction, Fraction]]) -> list[tuple[Fraction, Fraction]]:
    """The parts of SPAN that no cover reaches."""
    gaps, at = [], span[0]
    for s, e in [*sorted(covers), (span[1], span[1])]:
        gaps.append((at, min(s, span[1])))
        at = max(at, e)
    return [(s, e) for s, e in gaps if e > s]


_WHERE = ("pool", "provider", "region", "instance_type")   # what a job's cost report says it ran on


@dataclass
class _JobTally:
    """Exact running totals of one job while charges are collected."""

    meta: JobRun | None
    run: Fraction = Fraction(0)
    overhead: Fraction = Fraction(0)
    gpu_seconds: Fraction = Fraction(0)
    cloud_gpu_seconds: Fraction = Fraction(0)
    cloud_node_seconds: Fraction = Fraction(0)
    onprem_gpu_seconds: Fraction = Fraction(0)
    unmatched_seconds: Fraction = Fraction(0)
    where: dict[str, set[str]] = field(default_factory=lambda: {k: set() for k in _WHERE})
    seen: bool = False


def attribute(intervals: Iterable[Interval], runs: Iterable[JobRun], since: float, until: float,
              weight: str = "gpu", *, onprem_usd_per_gpu_hour: float | None = None,
              cloud_nodes: Collection[str] | None = None) -> Attribution:
    """Share the cost of every interval in [SINCE, UNTIL) among the jobs that ran on it.

    WEIGHT is "gpu" (allocated GPUs) or "billing" (Slurm's billing TRES). CLOUD_NODES names the cloud
    nodes (default: every node of an interval); a run on any other node is on-prem and priced at
    ONPREM_USD_PER_GPU_HOUR, outside the ledger. Pass the runs of every job named by an interval's
    started_by_job, even if they fall outside the period: they give that job its user and account.
    """
    if weight not in WEIGHTS:
        raise ValueError(f"weight must be one of {', '.join(WEIGHTS)}, not {weight!r}")
    if not since < until:
        raise ValueError(f"the period must not be empty: since {since} is not before until {until}")
    intervals, runs = list(intervals), list(runs)
    for iv in intervals:
        if iv.usd_per_hour < 0:
            raise ValueError(f"interval {iv.key}: negative price {iv.usd_per_hour}")
    lo, hi = _exact(since), _exact(until)
    kept = [iv for iv in intervals if _in_period(iv, lo, hi)]
    by_node: dict[str, list[JobRun]] = defaultdict(list)
    for r in runs:
        for n in _nodes(r):
            by_node[n].append(r)

    charges = [c for iv in kept for c in _split(iv, by_node[iv.node], lo, hi, weight)]
    tallies: dict[str, _JobTally] = {}
    for r in runs:
        tallies.setdefault(r.job_id, _JobTally(r))
    cloud = set(cloud_nodes) if cloud_nodes is not None else {iv.node for iv in intervals}
    unmatched = _tally_runs(runs, kept, cloud, lo, hi, tallies)
    _tally_charges(charges, tallies)

    live = {j: t for j, t in tallies.items() if t.seen}
    rate = None if onprem_usd_per_gpu_hour is None else _exact(onprem_usd_per_gpu_hour)
    onprem_exact = {} if rate is None else {j: t.onprem_gpu_seconds / 3600 * rate for j, t in live.items()}
    jobs, pools = _jobs_and_pools(live, charges, onprem_exact, rate is not None)
    onprem_total = None if rate is None else _dollars(_half_up_cents(sum(onprem_exact.values(), Fraction(0))))
    return Attribution(since=since, until=until, weight=weight, ledger_total=_dollars(_ledger_cents(charges)),
                       jobs=jobs, intervals=_interval_costs(kept, charges, lo, hi), pool_overhead=pools,
                       unmatched=tuple(unmatched), onprem_total=onprem_total, charges=tuple(charges),
                       onprem_exact=onprem_exact)


def _in_period(iv: Interval, lo: Fraction, hi: Fraction) -> bool:
    start = _exact(iv.start)
    end = None if iv.end is None else _exact(iv.end)
    if end is not None and end <= start:       # zero-length: kept (at no cost) when it lies in the period
        return lo <= start < hi
    return start < hi and (end is None or end > lo)


def _tally_runs(runs: list[JobRun], kept: list[Interval], cloud: set[str], lo: Fraction, hi: Fraction,
                tallies: dict[str, _JobTally]) -> list[Unmatched]:
    """GPU time, on-prem time and uncovered cloud time of every run."""
    covers: dict[str, list[tuple[Fraction, Fraction]]] = defaultdict(list)
    for iv in kept:
        if not iv.failed:
            covers[iv.node].append(_clip(iv.start, iv.end, lo, hi))
    unmatched = []
    for r in runs:
        span = _clip(r.start, r.end, lo, hi)
        length = span[1] - span[0]
        if length == 0:
            continue
        t = tallies[r.job_id]
        t.seen = True
        t.gpu_seconds += gpus_of(r.tres) * length
        per_node = Fraction(gpus_of(r.tres), len(_nodes(r)))
        for n in _nodes(r):
            if n not in cloud:
                t.onprem_gpu_seconds += per_node * length
                continue
            for s, e in _gaps(span, covers[n]):
                t.unmatched_seconds += e - s
                unmatched.append(Unmatched(r.job_id, n, float(s), float(e)))
    return unmatched


def _tally_charges(charges: list[Charge], tallies: dict[str, _JobTally]) -> None:
    for c in charges:
        if c.job_id is None:
            continue
        t = tallies.setdefault(c.job_id, _JobTally(None))
        t.seen = True
        if c.kind != "run":
            t.overhead += c.usd
            continue
        t.run += c.usd
        t.cloud_gpu_seconds += c.gpus * c.seconds
        t.cloud_node_seconds += c.seconds
        for k in _WHERE:
            t.where[k].add(getattr(c, k))


def _ledger_cents(charges: Iterable[Charge]) -> int:
    return _half_up_cents(sum((c.usd for c in charges), Fraction(0)))


def natural_key(text: str) -> tuple:
    """Sort "7_3" after "7_2" and "10" after "9": digit runs compare as numbers."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))


def _jobs_and_pools(live: dict[str, _JobTally], charges: list[Charge], onprem_exact: dict[str, Fraction],
                    priced: bool) -> tuple[tuple[JobCost, ...], dict[str, Decimal]]:
    # Jobs and pool overhead are rounded together: together they are the whole ledger.
    order = sorted(live, key=natural_key)
    pools: dict[str, Fraction] = defaultdict(Fraction)
    for c in charges:
        if c.job_id is None:
            pools[c.pool] += c.usd
    pool_names = sorted(pools)
    lines = [x for j in order for x in (live[j].run, live[j].overhead)] + [pools[p] for p in pool_names]
    cents = round_cents(lines, _ledger_cents(charges))
    onprem = round_cents([onprem_exact.get(j, Fraction(0)) for j in order])
    jobs = []
    for i, j in enumerate(order):
        t = live[j]
        who = {k: getattr(t.meta, k) if t.meta else UNKNOWN for k in ("user", "account", "partition")}
        seconds = {k: float(getattr(t, k)) for k in ("gpu_seconds", "cloud_gpu_seconds", "cloud_node_seconds",
                                                     "onprem_gpu_seconds", "unmatched_seconds")}
        where = {k + "s": tuple(sorted(t.where[k])) for k in _WHERE}
        jobs.append(JobCost(job_id=j, **who, run_cost=_dollars(cents[2 * i]), overhead=_dollars(cents[2 * i + 1]),
                            onprem_cost=_dollars(onprem[i]) if priced else None, **seconds, **where))
    pool_cents = cents[2 * len(order):]
    return tuple(jobs), {p: _dollars(c) for p, c in zip(pool_names, pool_cents)}


def _interval_costs(kept: list[Interval], charges: list[Charge], lo: Fraction,
                    hi: Fraction) -> tuple[IntervalCost, ...]:
    parts: dict[str, dict[str, Fraction]] = {iv.key: dict.fromkeys(("run", *OVERHEAD_KINDS), Fraction(0))
                                             for iv in kept}
    jobs: dict[str, set[str]] = defaultdict(set)
    for c in charges:
        parts[c.interval][c.kind] += c.usd
        if c.kind == "run":
            jobs[c.interval].add(c.job_id)
    # Intervals are rounded against the ledger, then each one's parts against its own rounded total.
    totals = round_cents([sum(parts[iv.key].values(), Fraction(0)) for iv in kept], _ledger_cents(charges))
    out = []
    for iv, total in zip(kept, totals):
        run, boot, idle, failed = round_cents(list(parts[iv.key].values()), total)
        a, b = _clip(iv.start, iv.end, lo, hi)
        out.append(IntervalCost(
            key=iv.key, node=iv.node, pool=iv.pool, provider=iv.provider, region=iv.region,
            instance_type=iv.instance_type, spot=iv.spot, usd_per_hour=iv.usd_per_hour,
            start=float(a), end=float(b), running=iv.end is None, failed=iv.failed,
            started_by_job=iv.started_by_job, jobs=tuple(sorted(jobs[iv.key], key=natural_key)),
            total=_dollars(total), job_cost=_dollars(run), boot_cost=_dollars(boot), idle_cost=_dollars(idle),
            failed_cost=_dollars(failed),
        ))
    return tuple(out)


def group(attribution: Attribution, by: str) -> list[GroupRow]:
    """Aggregate by "account", "user", "partition", "pool", "region", "job" or "array" (a job array's
    tasks, "7_0", "7_1", ..., sum into one row "7"; other jobs are rows of their own), biggest spend first.

    Spend adds up to the ledger total over the rows. Overhead charged to a pool has no job, so under
    account/user/partition/job it is its own row, UNATTRIBUTED; under pool/region on-prem use is the row
    ONPREM.
    """
    if by not in GROUPS:
        raise ValueError(f"group by one of {', '.join(GROUPS)}, not {by!r}")
    meta = {j.job_id: j for j in attribution.jobs}
    per_job = by not in ("pool", "region")

    def key_of(job_id: str | None, charge: Charge | None) -> str:
        if not per_job:
            return getattr(charge, by) if charge else ONPREM
        if job_id is None:
            return UNATTRIBUTED
        if by == "job":
            return job_id
        if by == "array":
            return job_id.partition("_")[0]
        return getattr(meta[job_id], by)

    acc: dict[str, _RowTally] = defaultdict(_RowTally)
    for c in attribution.charges:
        row = acc[key_of(c.job_id, c)]
        if c.kind == "run":
            row.run += c.usd
            row.gpu_seconds += c.gpus * c.seconds
        else:
            row.overhead += c.usd
        if c.job_id is not None:
            row.jobs.add(c.job_id)
    for j in attribution.jobs:
        if per_job or j.onprem_gpu_seconds:
            row = acc[key_of(j.job_id, None)]
            row.onprem_gpu_seconds += _exact(j.onprem_gpu_seconds)
            row.onprem += attribution.onprem_exact.get(j.job_id, Fraction(0))
            row.jobs.add(j.job_id)
    return _rows(acc, attribution)


@dataclass
class _RowTally:
    run: Fraction = Fraction(0)
    overhead: Fraction = Fraction(0)
    gpu_seconds: Fraction = Fraction(0)
    onprem_gpu_seconds: Fraction = Fraction(0)
    onprem: Fraction = Fraction(0)
    jobs: set[str] = field(default_factory=set)


def _rows(acc: dict[str, _RowTally], attribution: Attribution) -> list[GroupRow]:
    keys = sorted(acc, key=natural_key)
    cents = round_cents([x for k in keys for x in (acc[k].run, acc[k].overhead)],
                        _ledger_cents(attribution.charges))
    onprem = round_cents([acc[k].onprem for k in keys])
    priced = attribution.onprem_total is not None
    rows = []
    for i, k in enumerate(keys):
        t = acc[k]
        spend = t.run + t.overhead
        rows.append(GroupRow(
            key=k, spend=_dollars(cents[2 * i] + cents[2 * i + 1]), run_cost=_dollars(cents[2 * i]),
            overhead=_dollars(cents[2 * i + 1]), overhead_share=float(t.overhead / spend) if spend else None,
            gpu_hours=float(t.gpu_seconds / 3600), onprem_gpu_hours=float(t.onprem_gpu_seconds / 3600),
            onprem_cost=_dollars(onprem[i]) if priced else None, jobs=len(t.jobs),
        ))
    return sorted(rows, key=lambda r: -r.spend)
