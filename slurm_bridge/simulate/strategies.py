"""Who leaves for the cloud, and where it may run: the strategies `slurm-bridge simulate` compares.

`policy` and `policy-home` decide with `policy.Policy.decide`, the daemon's own code, on the same
kind of facts; nothing here re-implements a burst rule. The others are baselines, what a site
could run without slurm-bridge:

- `onprem`: never burst.
- `naive`: Slurm's plain power saving with cloud nodes: a job that cannot start at once goes to
  the cheapest region of any pool whose nodes can hold it, whatever its residency zone says.
  Violations are counted, not prevented: this is the baseline that shows what goes wrong.
- `threshold:<s>`: burst after waiting <s> seconds, to the cheapest region inside the job's zone;
  no budget, no node limit (pool sizes still bound it), on-demand prices.
- `policy-home`: our policy, but each pool launches only in one home region (the first region of
  the pool's zone in config order), on demand.
- `policy`: our policy, with price-aware, residency-respecting selection (`selector.rank`, the
  resume program's function), spot where the pool allows.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING, Callable, Sequence

from .. import selector
from ..config import Config, PoolConfig
from ..models import Job, Zone
from ..policy import Decision, Facts, Policy, shape_problem
from ..prices import PriceBook
from ..selector import Offer

if TYPE_CHECKING:
    from .engine import Engine

THRESHOLDS = (0, 600, 1800, 3600, 14400, 43200)
STRATEGIES = ("onprem", "naive", *(f"threshold:{s}" for s in THRESHOLDS), "policy-home", "policy")
# Refusals that can turn into a burst later; any other refusal is fixed for the job's life.
_CHANGEABLE = ("node_limit", "over_budget", "no_pool_fits", "starts_soon")
_FIRST_CHUNK, _LAST_CHUNK = 32, 4096

Observer = Callable[["Engine", list[Job], Facts, list[Decision]], None]


def on_demand(cfg: Config) -> Config:
    """CFG with every pool on demand: the baselines do not know about spot."""
    return replace(cfg, pools=tuple(replace(p, spot=False) for p in cfg.pools))


class Strategy:
    """The base: never bursts. Subclasses say when a job is looked at and what it may use."""

    every_pass = False
    watches_relief = False

    def __init__(self, name: str, cfg: Config, book: PriceBook | None):
        self.name, self.cfg, self.book = name, cfg, book
        self._ranked: dict[tuple, list[Offer]] = {}
        self._version = -1

    def ripe_at(self, submit: float) -> float | None:
        """When a job submitted at SUBMIT first needs a look, if it still waits; None: never."""
        return None

    def cycle(self, sim: Engine, new: list[int]) -> None:
        """One watch cycle: NEW are the jobs that reached `ripe_at` since the last one."""

    def allows(self, zone: Zone, country: str) -> bool:
        return zone.contains(country)

    def started(self, idx: int) -> None:
        """IDX left the queue."""

    def waits_for_month(self) -> bool:
        """True while a job waits for next month's budget."""
        return False

    def regions(self, pool: PoolConfig, zone: Zone, sim: Engine) -> Sequence[Offer]:
        """Where to launch POOL's nodes for a job of ZONE, best first (cached until backoff changes)."""
        if self._version != sim.fleet.block_version:
            self._ranked, self._version = {}, sim.fleet.block_version
        key = (pool.name, zone.countries)
        ranked = self._ranked.get(key)
        if ranked is None:
            # This strategy's own pool: its spot setting may differ from the config's.
            ranked = self._ranked[key] = self._rank(self.cfg.pool(pool.name), zone, sim.fleet.blocked)
        return ranked

    def _rank(self, pool: PoolConfig, zone: Zone, blocked: Callable[[str, str], str | None]) -> list[Offer]:
        return selector.rank(self.cfg, pool, zone, blocked, self.book)[0]


class Naive(Strategy):
    every_pass = True

    def ripe_at(self, submit: float) -> float | None:
        return submit

    def cycle(self, sim: Engine, new: list[int]) -> None:
        for idx in new:
            job = sim.job(idx)
            pools = [p.name for p in self.cfg.pools if shape_problem(p, job) is None]
            if pools:
                sim.burst(idx, pools)

    def allows(self, zone: Zone, country: str) -> bool:
        return True

    def _rank(self, pool: PoolConfig, zone: Zone, blocked: Callable[[str, str], str | None]) -> list[Offer]:
        found, _ = selector.offers(self.cfg, pool, self.book)
        found = [o for o in found if blocked(o.provider, o.region) is None]
        return sorted(found, key=lambda o: (o.price_per_hour, o.provider, o.region))


class Threshold(Strategy):
    def __init__(self, name: str, cfg: Config, book: PriceBook | None, seconds: float):
        super().__init__(name, cfg, book)
        self.seconds = seconds

    def ripe_at(self, submit: float) -> float | None:
        return submit + self.seconds

    def cycle(self, sim: Engine, new: list[int]) -> None:
        for idx in new:
            job, zone = sim.job(idx), sim.zone(idx)
            pools = [p.name for p in self.cfg.pools if shape_problem(p, job) is None and _shares(p.zone, zone)]
            if pools:
                sim.burst(idx, pools)


def _shares(a: Zone, b: Zone) -> bool:
    return a.countries is None or b.countries is None or bool(a.countries & b.countries)


class PolicyStrategy(Strategy):
    """The daemon's policy. Each cycle passes `Policy.decide` the jobs whose decision can change.

    A refused job stays refused until something frees what refused it: a later cycle only ever
    sees more spend, the same or more backoff and the same or more committed nodes, unless a node
    stopped or an eligible job left (node limit), a backoff ended (no pool fits) or a month began
    (budget). So a cycle passes the eligible jobs (they count against the node limit), the jobs
    that just reached `burst_after`, and the refused jobs whose kind of refusal may have lifted;
    and it stops once no cloud node is left to promise, where every later job would be refused
    for the node limit. Every job it leaves out would be refused, so it adds nothing to what the
    others are decided against: the decisions are those of a full pass every poll interval
    (tests/test_simulate_strategies.py runs both and compares).
    """

    watches_relief = True

    def __init__(self, name: str, cfg: Config, book: PriceBook | None, *, home: bool = False,
                 observe: Observer | None = None):
        super().__init__(name, on_demand(cfg) if home else cfg, book)
        self.policy = Policy(self.cfg)                # one instance for the run, as in the daemon
        self.observe = observe
        self.refused: dict[str, dict[int, None]] = {code: {} for code in _CHANGEABLE}
        self._label: dict[int, str] = {}
        self.home: dict[str, tuple[str, str]] | None = _homes(self.cfg, book) if home else None

    def ripe_at(self, submit: float) -> float | None:
        # The policy counts whole seconds of waiting, as Slurm's submit times are whole seconds.
        return math.floor(submit) + self.cfg.policy.burst_after

    def started(self, idx: int) -> None:
        code = self._label.pop(idx, None)
        if code is not None:
            del self.refused[code][idx]

    def waits_for_month(self) -> bool:
        return bool(self.refused["over_budget"])

    def cycle(self, sim: Engine, new: list[int]) -> None:
        lifted = self._lifted(sim)
        # Labelled jobs all still wait: `started` drops a job's label when it leaves the queue.
        if not lifted:
            candidates = new
        elif lifted == ["node_limit"]:
            candidates = [*self.refused["node_limit"], *new]     # both in job order, new ones last
        else:
            candidates = sorted({i for code in lifted for i in self.refused[code]}.union(new))
        facts: Facts | None = None
        decided: set[int] = set()
        at, size = 0, _FIRST_CHUNK
        while at < len(candidates) and sim.headroom() > 0:
            chunk = candidates[at:at + size]
            at, size = at + size, min(2 * size, _LAST_CHUNK)
            facts = facts or sim.facts(self._blocked(sim))
            jobs = sim.eligible_jobs() + [sim.job(i) for i in chunk]
            decisions = self.policy.decide(jobs, facts)
            if self.observe:
                self.observe(sim, jobs, facts, decisions)
            for d in decisions:
                if d.code != "already_eligible":
                    decided.add(d.job_id - 1)
                    self._apply(sim, d)
        # Left out because no node was left to promise: refused for the node limit now, whatever refused
        # them before (the end of a backoff or a month may have lifted that), so tried again when one frees.
        moved = any(code != "node_limit" for code in lifted)
        for idx in candidates[at:] if moved else new:
            if idx not in decided:
                self._relabel(idx, "node_limit")
        if moved:       # jobs joined node_limit out of job order; only that label is ever read in order
            self.refused["node_limit"] = dict.fromkeys(sorted(self.refused["node_limit"]))

    def _lifted(self, sim: Engine) -> list[str]:
        """The refusals that may have lifted since the last cycle."""
        relief, out = sim.relief, []
        if relief.committed and sim.headroom() > 0:
            out.append("node_limit")
        if relief.blocks:
            out.append("no_pool_fits")
        if relief.month:
            out.append("over_budget")
        if self.refused["starts_soon"]:      # the estimate moves with every job that ends: look again
            out.append("starts_soon")
        return out

    def _apply(self, sim: Engine, d: Decision) -> None:
        idx = d.job_id - 1
        if d.burst:
            self.started(idx)
            sim.burst(idx, d.pools, d.partitions)
        elif d.code in self.refused:
            self._relabel(idx, d.code)
        elif d.code == "too_early":             # cannot happen with ripe_at as above; looked at again later
            self._relabel(idx, "node_limit")
        else:
            self.started(idx)                   # refused for good (account, opt-out, ...): never passed again

    def _relabel(self, idx: int, code: str) -> None:
        old = self._label.get(idx)
        if old != code:
            if old is not None:
                del self.refused[old][idx]
            self.refused[code][idx] = None
            self._label[idx] = code

    def _blocked(self, sim: Engine) -> Callable[[str, str], str | None]:
        if self.home is None:
            return sim.fleet.blocked
        homes = set(self.home.values())
        return lambda provider, region: (sim.fleet.blocked(provider, region) if (provider, region) in homes
                                         else "not a home region")

    def _rank(self, pool: PoolConfig, zone: Zone, blocked: Callable[[str, str], str | None]) -> list[Offer]:
        ranked = super()._rank(pool, zone, blocked)
        if self.home is None:
            return ranked
        return [o for o in ranked if (o.provider, o.region) == self.home.get(pool.name)]


def _homes(cfg: Config, book: PriceBook | None) -> dict[str, tuple[str, str]]:
    """Each pool's home: the first region in config order inside the pool's zone that offers it."""
    homes = {}
    for pool in cfg.pools:
        found, _ = selector.offers(cfg, pool, book)
        first = next((o for o in found if pool.zone.contains(o.country)), None)
        if first is not None:
            homes[pool.name] = (first.provider, first.region)
    return homes


def make(name: str, cfg: Config, book: PriceBook | None = None, *, observe: Observer | None = None) -> Strategy:
    """The strategy called NAME (one of STRATEGIES, or threshold:<any seconds>)."""
    if name == "onprem":
        return Strategy(name, cfg, book)
    if name == "naive":
        return Naive(name, on_demand(cfg), book)
    if name in ("policy", "policy-home"):
        return PolicyStrategy(name, cfg, book, home=name == "policy-home", observe=observe)
    kind, _, arg = name.partition(":")
    if kind == "threshold":
        try:
            seconds = float(arg)
        except ValueError:
            seconds = -1.0
        if seconds >= 0 and math.isfinite(seconds):
            return Threshold(name, on_demand(cfg), book, seconds)
        raise ValueError(f"threshold:<seconds> needs a number of seconds, not {arg!r}")
    raise ValueError(f"unknown strategy {name!r} (known: {', '.join(STRATEGIES)}, threshold:<seconds>)")
