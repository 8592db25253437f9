"""When a pending on-prem job may leave for the cloud, and to which pools.

Pure: the daemon and the simulator feed it the same facts and get the same
decisions. A job is made eligible (its burst partitions are added, its own
partition stays first) only when every condition holds; otherwise the
decision carries the first reason it is kept on-prem, so `status` and the
decision log can say why.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain, islice
from operator import attrgetter
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

from . import residency, selector
from .config import Config, PoolConfig
from .models import Job
from .prices import PriceBook

# Slurm's reasons for a job that waits only for room; anything else (held, dependency, QOS or
# association limits, begin time, reservation) would not start in the cloud either.
WAITING_FOR_ROOM = frozenset({"Resources", "Priority"})
OPT_OUT_FEATURE = "onprem"
_MAX_FITS = 10_000
_NEVER = 1 << 96          # the order of a job with no submit time: last
SIBLING_STALE_S = 60.0    # backfill refreshes its estimates every 30 s by default


class Decision(NamedTuple):
    """One job's decision. A named tuple, not a dataclass: a cycle makes tens of thousands."""

    job_id: int
    burst: bool
    reason: str                          # for people: says exactly why
    partitions: tuple[str, ...] = ()     # the job's new partition list, when burst
    pools: tuple[str, ...] = ()
    code: str = ""                       # for machines (metrics labels): one of a few words
    tasks: str = ""                      # some tasks of a job array: scontrol's job reference ("7_[3-6]")


@dataclass(frozen=True)
class Facts:
    now: float
    active_cloud_nodes: int                       # instances launching or up
    spend_month: Mapping[str, float]              # account -> USD this month
    blocked: Callable[[str, str], str | None]     # (provider, region) -> why in backoff, or None
    book: PriceBook | None = None
    # Slurm's expected start of the given jobs (unix seconds), asked once per cycle for the jobs about
    # to burst; None when unknown (the simulator, or no Slurm to ask).
    expected_start: Callable[[Sequence[int]], Mapping[int, float]] | None = None
    # Cloud nodes up, idle and holding no job: (pool name, active features) each. Slurm puts an eligible
    # job on such a node before it powers another one up, so the work it takes launches nothing.
    idle_cloud_nodes: Sequence[tuple[str, frozenset[str]]] = ()
    # In a Slurm federation: (cluster, expected start) of each job's earliest sibling elsewhere.
    sibling_start: Callable[[Sequence[int]], Mapping[int, tuple[str, float]]] | None = None


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


def _task_ranges(spec: str) -> list[range] | None:
    """The task ranges of "0-99:2,200%8" (the % throttle left aside); None if unreadable."""
    out = []
    try:
        for part in spec.partition("%")[0].split(","):
            bounds, _, step = part.partition(":")
            first, _, last = bounds.partition("-")
            lo, hi, by = int(first), int(last or first), int(step or 1)
            if by < 1:
                return None
            out.append(range(lo, hi + 1, by))
    except ValueError:
        return None
    return out


def array_tasks_at_once(spec: str) -> int:
    """Tasks of "0-99:2,200%8" that may run at once (the % throttle, else all of them); 1 if unreadable."""
    ranges, throttle = _task_ranges(spec), spec.partition("%")[2]
    if ranges is None:
        return 1
    count = sum(len(r) for r in ranges)
    try:
        limit = int(throttle) if throttle else count
    except ValueError:
        return 1
    return max(1, min(count, limit) if limit > 0 else count)


def array_task_ids(spec: str, limit: int) -> list[int]:
    """The first LIMIT task ids of "0-99:2,200%8", in order; [] if unreadable."""
    ranges = _task_ranges(spec)
    return [] if ranges is None else list(islice(chain.from_iterable(ranges), max(limit, 0)))


def task_ranges(ids: Sequence[int]) -> str:
    """[3, 4, 5, 9] -> "3-5,9": Slurm's array task syntax, for `scontrol update jobid=7_[...]`."""
    runs: list[list[int]] = []
    for t in ids:
        if runs and t == runs[-1][1] + 1:
            runs[-1][1] = t
        else:
            runs.append([t, t])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def residency_features(features: str) -> frozenset[str]:
    """The res_<zone> names a job's constraint asks for: an up node must carry them all to take it."""
    return frozenset(f for f in residency.feature_names(features) if f.startswith("res_"))


class _Capacity:
    """Cloud nodes against `policy.max_cloud_nodes`: instances launching or up, plus what eligible
    pending jobs will launch. An idle up node absorbs one single-node job of its pool whose residency
    features it carries (Slurm prefers a powered-up node; seen on the lab), so that job launches nothing.
    Multi-node jobs get no idle credit: their nodes must share a region, which an idle node may not."""

    def __init__(self, limit: int, active: int, idle: Sequence[tuple[str, frozenset[str]]]):
        self.limit, self.committed = limit, active
        self._idle = [(pool, feats) for pool, feats in idle]

    def _usable(self, pools: Iterable[str], required: frozenset[str]) -> list[int]:
        pools = set(pools)
        return [i for i, (pool, feats) in enumerate(self._idle) if pool in pools and required <= feats]

    def fit(self, pools: Iterable[str], required: frozenset[str], nodes_per_task: int, tasks: int) -> int:
        """How many of TASKS (each on NODES_PER_TASK nodes) fit under the limit now."""
        idle = len(self._usable(pools, required)) if nodes_per_task == 1 else 0
        committed, fits = self.committed, 0
        for _ in range(tasks):
            if idle:
                idle -= 1
            elif committed + nodes_per_task <= self.limit:
                committed += nodes_per_task
            else:
                break
            fits += 1
        return fits

    def take(self, pools: Iterable[str], required: frozenset[str], nodes_per_task: int, tasks: int) -> None:
        """Count TASKS as placed, limit or not (jobs already eligible are placed whatever we say)."""
        usable = self._usable(pools, required) if nodes_per_task == 1 else []
        from_idle = min(len(usable), tasks)
        for i in sorted(usable[:from_idle], reverse=True):
            del self._idle[i]
        self.committed += (tasks - from_idle) * nodes_per_task


def _opted_out(job: Job) -> bool:
    return OPT_OUT_FEATURE in residency.feature_names(job.features)


@dataclass(frozen=True, slots=True)
class _Static:
    """What a decision needs that depends only on the job and the config, not on the clock or spend."""

    job: Job
    refused: Decision | None          # kept home whatever the facts say
    order: int                        # first come, first burst: submit second << 32 | job id
    budget: float | None
    fit: int = -1                     # index into Policy._fits: its pools whose shape and zone fit


class Policy:
    """The burst policy for one config.

    A job's static checks (partition, reason, account, opt-out, shape, zone) are
    remembered per `Job` object, so a pending job that the Slurm adapter hands
    back unchanged costs a dictionary lookup per cycle, not a re-evaluation.
    Keyed by identity (and checked) because two equal jobs are still two jobs.
    """

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self._watched = frozenset(cfg.slurm.watch_partitions)
        self._burst_parts = frozenset(p.partition for p in cfg.pools)
        self._static: dict[int, _Static] = {}
        self._limit_text: tuple[int, str] = (-1, "")
        self._reasons: dict[str, str] = {}
        self._boot_s = {p.name: _boot_estimate(cfg, p) for p in cfg.pools}
        self._pool_of_partition = {p.partition: p.name for p in cfg.pools}
        self._fit_ids: dict[tuple, int] = {}
        self._fits: list[tuple[Any, tuple[PoolConfig, ...], tuple[str, ...]]] = []

    def _static_of(self, job: Job) -> _Static:
        cfg, jid = self.cfg, job.job_id
        # Slurm's submit times are whole seconds, and job ids stay below 2**26: one int orders both.
        order = (int(job.submit_time.timestamp()) << 32 | jid) if job.submit_time else _NEVER
        account = cfg.account(job.account)

        def refuse(reason: str, code: str) -> _Static:
            reason = self._reasons.setdefault(reason, reason)    # thousands of jobs share a reason
            return _Static(job, Decision(jid, False, reason, code=code), order, account.budget_usd_month)

        if not self._watched.intersection(job.partitions):
            return refuse("not pending in a watched partition", "not_watched")
        if self._burst_parts.intersection(job.partitions):
            return refuse("already eligible for the cloud", "already_eligible")
        if job.reason not in WAITING_FOR_ROOM:
            return refuse(f"waits for {job.reason or 'scheduling'}, not for room", "not_waiting_for_room")
        if not account.burst:
            return refuse(f"account {job.account} does not burst", "account_stays")
        if _opted_out(job):
            return refuse(f"opted out (--constraint={OPT_OUT_FEATURE})", "opted_out")
        if not job.batch and not cfg.policy.burst_interactive:
            return refuse("interactive allocation (policy.burst_interactive is off)", "interactive")
        zone = residency.job_zone(cfg, job.account, [p for p in job.partitions if p in self._watched],
                                  job.features)
        fitting, why_not = [], []
        for pool in cfg.pools:
            if (problem := shape_problem(pool, job)) is not None:
                why_not.append(f"{pool.name}: {problem}")
            elif pool.spot and not job.requeue:
                # A reclaimed spot node kills the job, and Slurm may not run it again.
                why_not.append(f"{pool.name}: spot pool, and the job was submitted with --no-requeue")
            elif pool.zone.countries is not None and zone.countries is not None \
                    and not pool.zone.countries & zone.countries:
                why_not.append(f"{pool.name}: zone {pool.zone.name} shares no country with the job's")
            else:
                fitting.append(pool)
        if fitting and job.time_limit_min is not None:
            boot = min(self._boot_s[p.name] for p in fitting)
            if job.time_limit_min * 60 < cfg.policy.worth_boots * boot:
                # A node would spend much of the job's life booting; it is likely done on-prem sooner.
                return refuse(f"time limit {job.time_limit_min} min is under {cfg.policy.worth_boots} x the "
                              f"cloud boot time ({boot:.0f} s)", "too_short")
        # Thousands of jobs share a few (zone, pools) combinations: number each, so a cycle checks
        # launchability once per combination rather than once per job.
        key = (zone.countries, tuple(p.name for p in fitting), tuple(why_not))
        fit = self._fit_ids.get(key)
        if fit is None:
            fit = self._fit_ids[key] = len(self._fits)
            self._fits.append((zone, tuple(fitting), tuple(why_not)))
        return _Static(job, None, order, account.budget_usd_month, fit)

    def decide(self, jobs: Iterable[Job], facts: Facts) -> list[Decision]:
        """One decision per pending job, oldest first (first come, first burst)."""
        if len(self._fits) > _MAX_FITS:      # distinct job shapes pile up over months: start afresh
            self._static, self._fits, self._fit_ids, self._reasons = {}, [], {}, {}
        cache, fresh = self._static, {}
        statics = []
        for job in jobs:
            if job.state != "PENDING":
                continue
            st = cache.get(id(job))
            if st is None or st.job is not job:
                st = self._static_of(job)
            fresh[id(job)] = st
            statics.append(st)
        self._static = fresh              # jobs no longer pending leave the cache
        statics.sort(key=attrgetter("order"))
        # Jobs already eligible but not yet running hold cloud nodes too: count them against the limit.
        cap = _Capacity(self.cfg.policy.max_cloud_nodes, facts.active_cloud_nodes, facts.idle_cloud_nodes)
        eligible_tasks: dict[int, int] = {}      # array job id -> its tasks already eligible and pending
        for st in statics:
            if st.refused is None or st.refused.code != "already_eligible":
                continue
            job = st.job
            tasks = array_tasks_at_once(job.array_task) if job.array_task else 1
            if job.array_job_id is not None:
                eligible_tasks[job.array_job_id] = eligible_tasks.get(job.array_job_id, 0) + tasks
            if job.reason == "JobArrayTaskLimit":      # waits for its own array's throttle, not for a node
                continue
            pools = [self._pool_of_partition[p] for p in job.partitions if p in self._pool_of_partition]
            cap.take(pools, residency_features(job.features), job.node_count, tasks)
        out, fits = [], {}
        self._limit_text = (-1, "")
        for st in statics:
            out.append(st.refused or self._decide_dynamic(st, facts, cap, fits, eligible_tasks))
        if facts.expected_start is not None:
            self._starting_soon(out, facts)
        if facts.sibling_start is not None:
            self._sibling_soon(out, facts)
        return out

    def _starting_soon(self, out: list[Decision], facts: Facts) -> None:
        """A job Slurm expects to start on-prem sooner than a cloud node boots stays home (issue 11).
        An estimate in the past says nothing about when it starts, and is ignored."""
        idx = [i for i, d in enumerate(out) if d.burst]
        if not idx:
            return
        starts = facts.expected_start([out[i].job_id for i in idx]) if facts.expected_start else {}
        for i in idx:
            d, t = out[i], starts.get(out[i].job_id)
            if t is None or t <= facts.now:
                continue
            boot = min(self._boot_s[p] for p in d.pools)
            if t - facts.now < boot:
                out[i] = Decision(d.job_id, False, f"Slurm expects it to start on-prem in {t - facts.now:.0f}s, "
                                  f"sooner than a cloud node boots ({boot:.0f}s)", code="starts_soon")

    def _sibling_soon(self, out: list[Decision], facts: Facts) -> None:
        """A federated job whose sibling on another cluster is expected to start sooner than a cloud
        node boots stays home: that cluster runs it and Slurm revokes this copy (issue 11). A sibling
        estimate more than SIBLING_STALE_S old says nothing and is ignored."""
        idx = [i for i, d in enumerate(out) if d.burst]
        if not idx:
            return
        starts = facts.sibling_start([out[i].job_id for i in idx]) if facts.sibling_start else {}
        for i in idx:
            d, found = out[i], starts.get(out[i].job_id)
            if found is None:
                continue
            cluster, t = found
            boot = min(self._boot_s[p] for p in d.pools)
            if facts.now - SIBLING_STALE_S <= t < facts.now + boot:
                when = "now" if t <= facts.now else f"in {t - facts.now:.0f}s"
                out[i] = Decision(d.job_id, False, f"its federation sibling on cluster {cluster} is expected to "
                                  f"start {when}, sooner than a cloud node boots ({boot:.0f}s)", code="sibling_starts")

    def _decide_dynamic(self, st: _Static, facts: Facts, cap: _Capacity, fits: dict,
                         eligible_tasks: dict[int, int]) -> Decision:
        cfg, job = self.cfg, st.job
        waited = facts.now - (st.order >> 32) if st.order != _NEVER else 0.0
        if waited < cfg.policy.burst_after:
            return Decision(job.job_id, False, f"waited {waited:.0f}s of {cfg.policy.burst_after}s", code="too_early")
        if st.budget is not None:
            spent = facts.spend_month.get(job.account, 0.0)
            if spent >= st.budget:
                return Decision(job.job_id, False,
                                f"account {job.account} spent {spent:.2f} of {st.budget:.2f} USD this month",
                                code="over_budget")
        fit = fits.get(st.fit)
        if fit is None:
            fit = fits[st.fit] = self._launchable(st.fit, facts)
        parts_tail, pools, no_fit = fit
        if no_fit is not None:
            return Decision(job.job_id, False, no_fit, code="no_pool_fits")
        required = residency_features(job.features)
        partitions = tuple(job.partitions) + parts_tail
        if job.array_task is not None and job.array_job_id is not None:
            return self._decide_tasks(job, cap, pools, required, partitions, eligible_tasks)
        if not cap.fit(pools, required, job.node_count, 1):
            return self._at_limit(job, cap)
        cap.take(pools, required, job.node_count, 1)
        return Decision(job.job_id, True, "waited for room past burst_after", partitions, pools, code="burst")

    def _decide_tasks(self, job: Job, cap: _Capacity, pools: tuple[str, ...], required: frozenset[str],
                      partitions: tuple[str, ...], eligible_tasks: dict[int, int]) -> Decision:
        """A job array's pending record: burst as many of its tasks as the node limit and the array's
        own throttle (%N) leave room for, first ids first; the rest wait for a later cycle (issue 11)."""
        assert job.array_task is not None and job.array_job_id is not None
        at_once = array_tasks_at_once(job.array_task)
        room = at_once - eligible_tasks.get(job.array_job_id, 0)
        if room <= 0:
            return Decision(job.job_id, False, f"array throttle: {at_once} task(s) at once, all already eligible",
                            code="array_throttle")
        k = cap.fit(pools, required, job.node_count, room)
        if not k:
            return self._at_limit(job, cap)
        ids = array_task_ids(job.array_task, k)
        if not ids:
            return Decision(job.job_id, False, f"array task list {job.array_task!r} unreadable", code="bad_array")
        cap.take(pools, required, job.node_count, len(ids))
        eligible_tasks[job.array_job_id] = eligible_tasks.get(job.array_job_id, 0) + len(ids)
        ref = f"{job.array_job_id}_[{task_ranges(ids)}]"
        note = "" if len(ids) == at_once else f" ({len(ids)} of {at_once} at once: cloud node limit)"
        return Decision(job.job_id, True, f"waited for room past burst_after: tasks {ref}{note}", partitions,
                        pools, code="burst", tasks=ref)

    def _at_limit(self, job: Job, cap: _Capacity) -> Decision:
        if self._limit_text[0] != cap.committed:     # once the limit is hit, every later job says the same
            self._limit_text = (cap.committed, f"cloud node limit: {cap.committed} of {cap.limit} in use or promised")
        return Decision(job.job_id, False, self._limit_text[1], code="node_limit")

    def _launchable(self, fit: int, facts: Facts) -> tuple[tuple[str, ...], tuple[str, ...], str | None]:
        """(burst partitions to add, pool names, or why no pool fits) for one fit combination, this cycle."""
        zone, candidates, why_not = self._fits[fit]
        fitting, why = [], list(why_not)
        for pool in candidates:
            if selector.rank(self.cfg, pool, zone, facts.blocked, facts.book)[0]:
                fitting.append(pool)
            else:
                why.append(f"{pool.name}: no launchable region inside the job's zone right now")
        if not fitting:
            return (), (), "no pool fits: " + "; ".join(why) if why else "no pools"
        return tuple(p.partition for p in fitting), tuple(p.name for p in fitting), None


def _boot_estimate(cfg: Config, pool: PoolConfig) -> float:
    """The quickest a node of POOL comes up: its local regions say so; clouds are assumed to take
    `policy.cloud_boot_seconds`."""
    itype = pool.instance_types.get("local")
    boots = [float(r.boot_seconds) for r in cfg.local_regions if itype is not None and itype in r.prices]
    if any(k != "local" for k in pool.instance_types):
        boots.append(float(cfg.policy.cloud_boot_seconds))
    return min(boots) if boots else float(cfg.policy.cloud_boot_seconds)


def decide(cfg: Config, jobs: Iterable[Job], facts: Facts) -> list[Decision]:
    """One decision per pending job in a watched partition, oldest first (first come, first burst).

    Stateless form of `Policy(cfg).decide`, for callers that decide once."""
    return Policy(cfg).decide(jobs, facts)
