"""The discrete-event engine: one trace through one strategy, on-prem nodes and cloud pools.

Time is seconds after the trace's first submit; the policy sees it as `EPOCH + t`, so months
(and budgets) start on the calendar. Within one instant the engine handles every event (ends,
arrivals, idle timeouts, backoff ends), runs the on-prem scheduler, then the strategy's watch
cycle when one is due, then places eligible jobs in the cloud.

Watch cycles run on the daemon's grid (multiples of `policy.poll_interval`), but only when one
can change something: when a waiting job reaches the strategy's threshold, or when the cloud
frees room (a node stops, an eligible job leaves the queue, a backoff ends, a month begins).
A cycle in which none of that happened would refuse exactly what the previous one refused.
"""

from __future__ import annotations

import bisect
import heapq
import math
from dataclasses import replace
from datetime import UTC, datetime
from typing import Callable, Protocol, Sequence

from .. import policy, residency
from ..config import Config, PoolConfig
from ..models import GresRequest, Job, Zone
from ..prices import PriceBook
from ..selector import Offer
from ..traces import TraceJob
from .cloud import Capacity, CloudNode, Fleet
from .onprem import INF, Nodes, OnPrem

EPOCH = datetime(2025, 1, 1, tzinfo=UTC).timestamp()    # what submit 0 is, for the policy's clock
NEW, WAITING, RUNNING, DONE = range(4)
_END, _IDLE, _UNBLOCK, _MONTH, _WATCH = range(5)

Progress = Callable[[int, int], None]


class Rules(Protocol):
    """What the engine asks of a strategy (strategies.Strategy and its kinds)."""

    name: str
    every_pass: bool          # decides at every scheduling pass (no daemon) rather than on the watch grid
    watches_relief: bool      # re-decides refused jobs when cloud room frees up

    def ripe_at(self, submit: float) -> float | None: ...
    def cycle(self, sim: "Engine", new: list[int]) -> None: ...
    def regions(self, pool: PoolConfig, zone: Zone, sim: "Engine") -> Sequence[Offer]: ...
    def allows(self, zone: Zone, country: str) -> bool: ...
    def started(self, idx: int) -> None: ...
    def waits_for_month(self) -> bool: ...


class Relief:
    """What may have lifted a refusal since the last watch cycle."""

    def __init__(self) -> None:
        self.committed = False      # fewer nodes launched or promised (node limit)
        self.blocks = False         # a backoff ended (no pool fits)
        self.month = False          # a month began (budget)


class Engine:
    """One run. Jobs are indices into the trace sorted by submit time (their priority order); the job
    id the policy and the ledger see is the index + 1. Strategies read and act through `job`,
    `pending_jobs`, `eligible_jobs`, `zone`, `facts`, `headroom`, `waiting`, `burst` and `watch_at`."""

    def __init__(self, jobs: Sequence[TraceJob], cfg: Config, strategy: Rules, *, onprem_gpus: int,
                 gpus_per_node: int = 8, seed: int = 0, capacity: Capacity | None = None,
                 book: PriceBook | None = None, partition: str | None = None, gpu_type: str | None = None,
                 progress: Progress | None = None):
        self.cfg, self.strategy, self.book = cfg, strategy, book
        self.trace = sorted(jobs, key=lambda j: j.submit)       # stable: the trace's order breaks ties
        self.submit = [j.submit for j in self.trace]
        self.dur = [max(0.0, j.duration_s) for j in self.trace]
        # Slurm ends a job at its time limit, so a trace that ran longer had a wrong limit: trust the run.
        self.est = [max(j.time_limit_s or 0.0, d) for j, d in zip(self.trace, self.dur, strict=True)]
        self.gpn = [j.gpus_per_node for j in self.trace]
        self.nnodes = [max(1, j.nodes) for j in self.trace]
        n = len(self.trace)
        self.state = [NEW] * n
        self.start: list[float | None] = [None] * n
        self.ran_on: list[list[int] | list[CloudNode] | None] = [None] * n
        self.on_cloud = [False] * n
        self.onprem = OnPrem(Nodes(onprem_gpus // gpus_per_node, gpus_per_node), self.gpn, self.nnodes, self.est)
        self.fleet = Fleet(cfg, capacity or Capacity(), seed)
        self.eligible: dict[int, tuple[PoolConfig, ...]] = {}
        self.eligible_nodes = 0
        self._classes: dict[tuple, list[int]] = {}     # eligible jobs by (pools, GPUs per node, nodes, zone)
        self._class_of: dict[int, tuple] = {}
        self.relief = Relief()
        self.now = 0.0
        self.done = 0
        self._partition, self._gpu_type = partition, gpu_type
        self._watched = cfg.slurm.watch_partitions[0]
        self._jobs: dict[int, Job] = {}
        self._zones: dict[tuple[str, str, str], Zone] = {}
        self._heap: list[tuple[float, int, int, object]] = []
        self._seq = 0
        self._ripe: list[tuple[float, int]] = []
        self._ticks: set[float] = set()
        self._committed_after = 0
        self._cloud_dirty = False
        self._month_lo = policy.month_start(EPOCH) - EPOCH
        self._more_months = True
        self._pending = 0                   # ends, idle timeouts and backoff ends still to come
        self._progress = progress
        self._report_every = max(1, n // 100)
        self._next_report = self._report_every

    # -- the loop -----------------------------------------------------------------------------------

    def run(self) -> None:
        heap, n, ai = self._heap, len(self.trace), 0
        handlers = {_END: self._on_end, _IDLE: self._on_idle, _UNBLOCK: self._on_unblock, _MONTH: self._on_month}
        if n:
            self._push(self._next_month(0.0), _MONTH, None)
        while True:
            t = min(self.submit[ai] if ai < n else INF, heap[0][0] if heap else INF)
            if t == INF:
                break
            self.now, watch, arrived = t, False, []
            while ai < n and self.submit[ai] <= t:
                self._arrive(ai)
                arrived.append(ai)
                ai += 1
            while heap and heap[0][0] <= t:
                _, kind, _, payload = heapq.heappop(heap)
                if kind == _WATCH:
                    self._ticks.discard(t)
                    watch = True
                else:
                    self._pending -= kind != _MONTH
                    handlers[kind](payload)
            self.onprem.schedule(t, self._start_onprem)
            for idx in arrived:
                if self.state[idx] == WAITING:
                    self._ripen(idx)
            if watch or self.strategy.every_pass:
                self._watch()
            head = self.onprem.head()
            self._place_cloud()
            if self.onprem.head() != head:          # the head left for the cloud: its reservation with it
                self.onprem.schedule(t, self._start_onprem)
            self._more_months = ai < n
        if self._progress:
            self._progress(self.done, n)

    def _push(self, t: float, kind: int, payload: object) -> None:
        self._seq += 1
        self._pending += kind in (_END, _IDLE, _UNBLOCK)
        heapq.heappush(self._heap, (t, kind, self._seq, payload))

    def watch_at(self, t: float) -> None:
        """Run a watch cycle at the first tick of the daemon's grid at or after T."""
        poll = self.cfg.policy.poll_interval
        tick = float(math.ceil(t / poll) * poll)
        if tick not in self._ticks:
            self._ticks.add(tick)
            self._push(tick, _WATCH, None)

    # -- events -------------------------------------------------------------------------------------

    def _arrive(self, idx: int) -> None:
        self.state[idx] = WAITING
        if self.onprem.can_ever_fit(idx):
            self.onprem.push(idx)

    def _ripen(self, idx: int) -> None:
        at = self.strategy.ripe_at(self.submit[idx])
        if at is None:
            return
        heapq.heappush(self._ripe, (at, idx))
        if not self.strategy.every_pass:
            self.watch_at(at)

    def _on_end(self, idx: int) -> None:
        self.state[idx] = DONE
        self.done += 1
        if self.on_cloud[idx]:
            for node in self.fleet.finish(self.ran_on[idx], self.gpn[idx], self.now):
                self._push(self.now + self.cfg.slurm.suspend_time, _IDLE, (node, self.now))
            self._cloud_dirty = True
        else:
            self.onprem.release(idx, self.now)
        if self._progress and self.done >= self._next_report:
            self._next_report += self._report_every
            self._progress(self.done, len(self.trace))

    def _on_idle(self, payload: tuple[CloudNode, float]) -> None:
        node, since = payload
        if node.stopped is None and node.jobs == 0 and node.idle_since == since:
            self.fleet.stop(node, self.now, self._month_lo)
            self._cloud_dirty = True
            self._relieve()

    def _on_unblock(self, payload: tuple[str, str, float]) -> None:
        if self.fleet.unblock(*payload):
            self._cloud_dirty = True
            self.relief.blocks = True
            if self.strategy.watches_relief:
                self.watch_at(self.now)

    def _on_month(self, _: object) -> None:
        self._month_lo = self.now
        self.relief.month = True
        if self.strategy.watches_relief:
            self.watch_at(self.now)
        # Only while something can still happen: watch ticks alone would keep months coming forever.
        if self._more_months or self._pending or self.strategy.waits_for_month():
            self._push(self._next_month(self.now), _MONTH, None)

    @staticmethod
    def _next_month(t: float) -> float:
        d = datetime.fromtimestamp(EPOCH + t, tz=UTC)
        first = datetime(d.year + d.month // 12, d.month % 12 + 1, 1, tzinfo=UTC)
        return first.timestamp() - EPOCH

    def _relieve(self) -> None:
        if self.strategy.watches_relief:
            self.watch_at(self.now)

    # -- watch cycles (what strategies see) -------------------------------------------------------------

    def _watch(self) -> None:
        new = []
        while self._ripe and self._ripe[0][0] <= self.now:
            idx = heapq.heappop(self._ripe)[1]
            if self.waiting(idx):
                new.append(idx)
        self.relief.committed = self.fleet.active + self.eligible_nodes < self._committed_after
        self.strategy.cycle(self, sorted(new))
        self._committed_after = self.fleet.active + self.eligible_nodes
        self.relief = Relief()

    def waiting(self, idx: int) -> bool:
        """Still waiting and not yet eligible for the cloud."""
        return self.state[idx] == WAITING and idx not in self.eligible

    def headroom(self) -> int:
        return self.cfg.policy.max_cloud_nodes - self.fleet.active - self.eligible_nodes

    def facts(self, blocked: Callable[[str, str], str | None] | None = None) -> policy.Facts:
        return policy.Facts(now=EPOCH + self.now, active_cloud_nodes=self.fleet.active,
                            spend_month=self.fleet.spend_month(self.now, self._month_lo),
                            blocked=blocked or self.fleet.blocked, book=self.book,
                            expected_start=self.expected_starts)

    def expected_starts(self, job_ids: Sequence[int]) -> dict[int, float]:
        """Slurm's expected start, as far as the simulated scheduler knows one: the reservation of the
        job first in line (backfill plans around it from the running jobs' estimates). Slurm's own
        backfill estimates more jobs than that; here the others have none, and the rule passes them."""
        found = self.onprem.expected_start(self.now)
        if found is None or found[0] + 1 not in set(job_ids):
            return {}
        return {found[0] + 1: EPOCH + found[1]}

    def job(self, idx: int) -> Job:
        """The job as squeue would show it; the same object every cycle until it changes."""
        job = self._jobs.get(idx)
        if job is None:
            t = self.trace[idx]
            limit = math.ceil(t.time_limit_s / 60) if t.time_limit_s else None
            # Slurm says Resources for the job first in line and Priority for those behind it.
            reason = "Resources" if self.onprem.head() == idx else "Priority"
            job = self._jobs[idx] = Job(
                job_id=idx + 1, name=t.job_id, user=t.user, account=t.account, partitions=(self.partition_of(idx),),
                state="PENDING", reason=reason, submit_time=datetime.fromtimestamp(EPOCH + t.submit, tz=UTC),
                start_time=None, time_limit_min=limit, node_count=self.nnodes[idx], cpus=t.cpus or self.nnodes[idx],
                memory_per_cpu_mb=None, memory_per_node_mb=None,
                gres=GresRequest(t.gpus_per_node, t.gpus, self._gpu_type if t.gpus else None),
                features=t.constraints, requeue=True, batch=True)
        return job

    def pending_jobs(self) -> list[Job]:
        """Every waiting job as the daemon would read it from squeue (for checks; cycles pass fewer)."""
        return [self.job(i) for i, state in enumerate(self.state) if state == WAITING]

    def eligible_jobs(self) -> list[Job]:
        return [self.job(i) for i in self.eligible]

    def partition_of(self, idx: int) -> str:
        return self._partition or self.trace[idx].partition or self._watched

    def zone(self, idx: int) -> Zone:
        t = self.trace[idx]
        key = (t.account, self.partition_of(idx), t.constraints)
        zone = self._zones.get(key)
        if zone is None:
            watched = [p for p in (key[1],) if p in self.cfg.slurm.watch_partitions]
            zone = self._zones[key] = residency.job_zone(self.cfg, t.account, watched, t.constraints)
        return zone

    def burst(self, idx: int, pools: Sequence[str], partitions: Sequence[str] | None = None) -> None:
        """IDX becomes eligible for POOLS; with PARTITIONS, squeue shows it in those from now on."""
        self.eligible[idx] = tuple(self.cfg.pool(name) for name in pools)
        self.eligible_nodes += self.nnodes[idx]
        key = (tuple(pools), self.gpn[idx], self.nnodes[idx], self.zone(idx))
        self._class_of[idx] = key
        bisect.insort(self._classes.setdefault(key, []), idx)
        if partitions is not None:
            self._jobs[idx] = replace(self.job(idx), partitions=tuple(partitions))
        self._cloud_dirty = True

    def _not_eligible(self, idx: int) -> None:
        del self.eligible[idx]
        self.eligible_nodes -= self.nnodes[idx]
        key = self._class_of.pop(idx)
        members = self._classes[key]
        del members[bisect.bisect_left(members, idx)]
        if not members:
            del self._classes[key]

    # -- starting jobs ------------------------------------------------------------------------------

    def _start_onprem(self, idx: int, nodes: list[int]) -> None:
        self._begin(idx, self.now, nodes, False)

    def _begin(self, idx: int, start: float, where: list, cloud: bool) -> None:
        self.state[idx], self.start[idx], self.ran_on[idx], self.on_cloud[idx] = RUNNING, start, where, cloud
        self._push(start + self.dur[idx], _END, idx)
        if idx in self.eligible:
            self._not_eligible(idx)
            self._relieve()
        self._jobs.pop(idx, None)
        self.strategy.started(idx)

    def _place_cloud(self) -> None:
        """Start eligible jobs in the cloud, in priority order, where there is room."""
        if not self._classes or not self._cloud_dirty:
            return
        self._cloud_dirty = False
        room = {p.name: self._room(p) for p in self.cfg.pools}
        # Jobs of one class (pools, shape, zone) have the same options: once the first cannot start,
        # none of the others can, so a pass tries each class once plus once per job it starts.
        heap = [(members[0], key) for key, members in self._classes.items()]
        heapq.heapify(heap)
        while heap:
            idx, key = heapq.heappop(heap)
            names, gpn, n, zone = key
            if not any(room[name][1] >= gpn or room[name][0] >= n for name in names):
                continue                      # no node with room to reuse, no slot to launch
            pool = self._try_cloud(idx, gpn, n, zone, room)
            if pool is None:
                continue
            room[pool.name] = self._room(pool)
            if members := self._classes.get(key):
                heapq.heappush(heap, (members[0], key))

    def _room(self, pool: PoolConfig) -> tuple[int, int]:
        """(free node slots, most free GPUs on one live node) of POOL."""
        return self.fleet.free_slots(pool), max((node.free for node in self.fleet.live[pool.name]), default=0)

    def _try_cloud(self, idx: int, gpn: int, n: int, zone: Zone, room: dict[str, tuple[int, int]]) -> PoolConfig | None:
        pools = self.eligible[idx]
        allowed = self._allowed(zone)
        for pool in pools:
            if room[pool.name][1] >= gpn and (nodes := self.fleet.reusable(pool, gpn, n, allowed)):
                self._run_cloud(idx, nodes)
                return pool
        for pool in pools:
            if room[pool.name][0] >= n and self._launch(idx, pool, zone):
                return pool
        return None

    def _allowed(self, zone: Zone) -> Callable[[str], bool]:
        return lambda country: self.strategy.allows(zone, country)

    def _launch(self, idx: int, pool: PoolConfig, zone: Zone) -> bool:
        n, job_id, account = self.nnodes[idx], str(idx + 1), self.trace[idx].account
        for offer in self.strategy.regions(pool, zone, self):
            if self.fleet.blocked(offer.provider, offer.region) is not None:
                continue                      # blocked by an earlier candidate of this same pass
            if self.fleet.out_of_capacity(offer, n, self.now):
                self.fleet.launch_failed(pool, offer, n, self.now, job_id, account, self._month_lo)
                until = self.now + self.cfg.policy.block_seconds
                self.fleet.block(offer.provider, offer.region, until)
                self._push(until, _UNBLOCK, (offer.provider, offer.region, until))
                continue
            self._run_cloud(idx, self.fleet.launch(pool, offer, n, self.now, job_id, account))
            return True
        return False

    def _run_cloud(self, idx: int, nodes: list[CloudNode]) -> None:
        start = max(self.now, max(node.ready for node in nodes))
        self.fleet.place(nodes, str(idx + 1), self.gpn[idx], start, start + self.dur[idx])
        if idx in self.onprem.where:
            self.onprem.remove(idx)
        self._begin(idx, start, nodes, True)
