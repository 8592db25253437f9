"""The cloud part of the simulated cluster: pool nodes launched in regions, reused, stopped when idle.

Simplifications, on purpose:
- A job's nodes come up together in one region (as the launch worker does), either all launched
  for it or all reused from nodes already up; never a mix.
- A cloud node is shared by jobs of its pool like an on-prem node (cons_tres), but only by jobs
  whose residency zone contains the node's country (strategies that ignore residency excepted).
- Capacity: each region is out of capacity during whole windows (`Capacity.window_s`), each with
  the seeded probability, so every strategy meets the same weather. A local region's `capacity`
  (instances at once) is enforced the same way. A failed launch blocks the region for
  `policy.block_seconds` and costs `failed_launch_s` of the instance price (default 0: the cloud
  refuses at once).
- Booting takes the local region's `boot_seconds`, or `Capacity.boot_s` in AWS and GCP; stopping
  takes no time. Spot instances are never reclaimed.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Mapping

from ..config import Config, PoolConfig
from ..costs import Interval
from ..selector import Offer


@dataclass(frozen=True)
class Capacity:
    """How launches fail, deterministically from the run's seed."""

    fail_probability: float = 0.0          # chance a region is out of capacity in a window
    window_s: float = 3600.0
    by_region: Mapping[str, float] = field(default_factory=dict)   # "region" or "provider/region" -> chance
    failed_launch_s: float = 0.0           # what a failed launch is billed for
    boot_s: float = 120.0                  # boot time of AWS and GCP instances

    def chance(self, provider: str, region: str) -> float:
        return self.by_region.get(f"{provider}/{region}", self.by_region.get(region, self.fail_probability))


@dataclass(eq=False, slots=True)
class CloudNode:
    """One instance's life; `runs` are (job id, GPUs, start, end) of the jobs it ran."""

    name: str
    key: str
    pool: PoolConfig
    offer: Offer
    launched: float
    ready: float
    started_by: str
    account: str
    free: int
    jobs: int = 0
    idle_since: float | None = None
    stopped: float | None = None
    runs: list[tuple[str, int, float, float]] = field(default_factory=list)


class Fleet:
    """Every pool's live nodes, the regions in backoff, and the ledger of node lives."""

    def __init__(self, cfg: Config, capacity: Capacity, seed: int):
        self.cfg, self.capacity, self.seed = cfg, capacity, seed
        self._slots = {p.name: list(range(p.size)) for p in cfg.pools}    # heaps: lowest index first
        self.live: dict[str, list[CloudNode]] = {p.name: [] for p in cfg.pools}
        self.active = 0
        self.lives: list[CloudNode] = []            # every node ever launched, in launch order
        self.failed: list[Interval] = []
        self.blocks: dict[tuple[str, str], float] = {}
        self.block_version = 0
        self._in_region: Counter[tuple[str, str]] = Counter()
        self._local_cap = {r.name: r.capacity for r in cfg.local_regions}
        self._weather: dict[tuple[str, str, int], bool] = {}
        self._launches = 0
        self._closed_month = float("-inf")
        self._closed: dict[str, float] = {}

    # -- backoff and capacity ---------------------------------------------------------------------

    def blocked(self, provider: str, region: str) -> str | None:
        until = self.blocks.get((provider, region))
        return None if until is None else f"capacity: backoff until t={until:.0f}s"

    def block(self, provider: str, region: str, until: float) -> None:
        self.blocks[(provider, region)] = max(until, self.blocks.get((provider, region), until))
        self.block_version += 1

    def unblock(self, provider: str, region: str, until: float) -> bool:
        """End the backoff that was set to end at UNTIL; False when a later failure extended it."""
        if self.blocks.get((provider, region)) != until:
            return False
        del self.blocks[(provider, region)]
        self.block_version += 1
        return True

    def out_of_capacity(self, offer: Offer, n: int, now: float) -> bool:
        cap = self._local_cap.get(offer.region) if offer.provider == "local" else None
        if cap is not None and self._in_region[(offer.provider, offer.region)] + n > cap:
            return True
        chance = self.capacity.chance(offer.provider, offer.region)
        if chance <= 0:
            return False
        window = int(now // self.capacity.window_s)
        key = (offer.provider, offer.region, window)
        out = self._weather.get(key)
        if out is None:
            # A string seed hashes the same in every process: the weather repeats run after run.
            rng = random.Random(f"{self.seed}/{offer.provider}/{offer.region}/{window}")
            out = self._weather[key] = rng.random() < chance
        return out

    # -- nodes ------------------------------------------------------------------------------------

    def free_slots(self, pool: PoolConfig) -> int:
        return len(self._slots[pool.name])

    def reusable(self, pool: PoolConfig, gpn: int, n: int, allowed: Callable[[str], bool]) -> list[CloudNode] | None:
        """N live nodes of POOL in one allowed region with GPN GPUs free each: the earliest ready,
        then the cheapest region, then the fullest nodes (best fit)."""
        by_region: dict[tuple[str, str], list[CloudNode]] = {}
        for node in self.live[pool.name]:
            if node.free >= gpn and allowed(node.offer.country):
                by_region.setdefault((node.offer.provider, node.offer.region), []).append(node)
        best: tuple | None = None
        for nodes in by_region.values():
            if len(nodes) < n:
                continue
            nodes.sort(key=lambda x: (x.ready, x.free, x.name))
            chosen = nodes[:n]
            o = chosen[0].offer
            rank = (max(x.ready for x in chosen), o.price_per_hour, o.provider, o.region)
            if best is None or rank < best[0]:
                best = (rank, chosen)
        return None if best is None else best[1]

    def launch(self, pool: PoolConfig, offer: Offer, n: int, now: float, job_id: str, account: str) -> list[CloudNode]:
        boot = offer.boot_seconds if offer.provider == "local" else self.capacity.boot_s
        nodes = []
        for _ in range(n):
            slot = heapq.heappop(self._slots[pool.name])
            self._launches += 1
            name = f"{pool.name}-{slot}"
            node = CloudNode(name, f"{name}#{self._launches}", pool, offer, now, now + boot, job_id, account,
                             pool.gpu_count)
            nodes.append(node)
            self.live[pool.name].append(node)
            self.lives.append(node)
        self.active += n
        self._in_region[(offer.provider, offer.region)] += n
        return nodes

    def launch_failed(self, pool: PoolConfig, offer: Offer, n: int, now: float, job_id: str, account: str,
                      month_start: float) -> None:
        """Record a refused launch of N nodes: zero-length (or failed_launch_s) intervals, never a job's."""
        slots = heapq.nsmallest(n, self._slots[pool.name])
        end = now + self.capacity.failed_launch_s
        for slot in slots:
            self._launches += 1
            name = f"{pool.name}-{slot}"
            self.failed.append(Interval(f"{name}#{self._launches}", name, pool.name, offer.provider, offer.region,
                                        offer.instance_type, offer.spot, offer.price_per_hour, now, end,
                                        started_by_job=job_id, failed=True))
            self._add_closed(account, offer.price_per_hour, now, end, month_start)

    def place(self, nodes: list[CloudNode], job_id: str, gpn: int, start: float, end: float) -> None:
        for node in nodes:
            node.free -= gpn
            node.jobs += 1
            node.idle_since = None
            node.runs.append((job_id, gpn, start, end))

    def finish(self, nodes: list[CloudNode], gpn: int, now: float) -> list[CloudNode]:
        """A job on NODES ended; returns the nodes it leaves idle."""
        idle = []
        for node in nodes:
            node.free += gpn
            node.jobs -= 1
            if node.jobs == 0:
                node.idle_since = now
                idle.append(node)
        return idle

    def stop(self, node: CloudNode, now: float, month_start: float) -> None:
        node.stopped = now
        self.live[node.pool.name].remove(node)
        heapq.heappush(self._slots[node.pool.name], int(node.name.rsplit("-", 1)[1]))
        self.active -= 1
        self._in_region[(node.offer.provider, node.offer.region)] -= 1
        self._add_closed(node.account, node.offer.price_per_hour, node.launched, now, month_start)

    # -- the ledger, as the daemon sees it --------------------------------------------------------

    def spend_month(self, now: float, month_start: float) -> dict[str, float]:
        """USD this month by the account whose job launched each instance (as StateDB.spend_by_account)."""
        self._roll(month_start)
        out = dict(self._closed)
        for nodes in self.live.values():
            for node in nodes:
                usd = node.offer.price_per_hour * (now - max(node.launched, month_start)) / 3600
                out[node.account] = out.get(node.account, 0.0) + usd
        return out

    def _roll(self, month_start: float) -> None:
        if month_start != self._closed_month:
            self._closed_month, self._closed = month_start, {}

    def _add_closed(self, account: str, price: float, start: float, end: float, month_start: float) -> None:
        self._roll(month_start)
        if end > month_start:
            usd = price * (end - max(start, month_start)) / 3600
            self._closed[account] = self._closed.get(account, 0.0) + usd

    def intervals(self) -> list[Interval]:
        """Every node's life as the ledger records it, failed launches first."""
        out = list(self.failed)
        for node in self.lives:
            o = node.offer
            out.append(Interval(node.key, node.name, node.pool.name, o.provider, o.region, o.instance_type, o.spot,
                                o.price_per_hour, node.launched, node.stopped, started_by_job=node.started_by))
        return out
