"""The simulator's strategies: the daemon's own policy decides, residency holds, runs repeat exactly."""

from __future__ import annotations

import random
import tomllib

import pytest

from slurm_bridge import simulate
from slurm_bridge.config import Config, parse_config
from slurm_bridge.policy import Policy
from slurm_bridge.simulate.strategies import PolicyStrategy, make
from slurm_bridge.traces import TraceJob

# Three regions: the US one is cheapest, then NL, then DE. "medical" may only use DE, "eu-lab" the EU.
MIX = """
[cluster]
name = "sim"
state_dir = "/var/lib/slurm-bridge"
[slurm]
watch_partitions = ["gpu"]
suspend_time = 300
[policy]
burst_after = 600
poll_interval = 60
max_cloud_nodes = 3
block_seconds = 600
[zones]
de = ["DE"]
eu = "EU"
any = "*"
[accounts.default]
zone = "any"
[accounts.medical]
zone = "de"
budget_usd_month = 40
[accounts.eu-lab]
zone = "eu"
[[pools]]
name = "a100"
size = 4
zone = "any"
cpus = 96
memory_mb = 1000000
gpus = "a100:8"
spot = true
instance_types = { local = "x8" }
[providers.local]
[[providers.local.regions]]
name = "r-de"
country = "DE"
capacity = 3
boot_seconds = 90
prices = { "x8" = 20.0 }
[[providers.local.regions]]
name = "r-nl"
country = "NL"
boot_seconds = 60
prices = { "x8" = 15.0 }
spot_prices = { "x8" = 6.0 }
[[providers.local.regions]]
name = "r-us"
country = "US"
boot_seconds = 30
prices = { "x8" = 10.0 }
"""
DAY = 86400.0


def config(text: str = MIX) -> Config:
    return parse_config(tomllib.loads(text))


def mixed_trace(n: int = 150, *, start: float = 0.0, seed: int = 3) -> list[TraceJob]:
    """N jobs over about two days from START, a third of them per account, 1 to 8 GPUs."""
    rng = random.Random(seed)
    jobs, t = [], start
    for i in range(n):
        t += rng.choice((0, 30, 300, 900, 1800))
        gpus = rng.choice((1, 1, 2, 4, 8))
        jobs.append(TraceJob(str(i), t, float(rng.randrange(300, 20000)), None, gpus, 1, gpus,
                             account=("", "medical", "eu-lab")[i % 3]))
    return jobs


def comparable(result: simulate.SimResult) -> dict:
    out = result.as_dict(series=True)
    del out["wall_s"]
    return out | {"ledger": result.ledger, "runs": result.runs}


class EveryCycle(PolicyStrategy):
    """The daemon taken literally: every poll interval, every pending job through Policy.decide."""

    def ripe_at(self, submit: float) -> float | None:
        return submit

    def cycle(self, sim, new):
        jobs = sim.pending_jobs()
        if jobs:
            for d in self.policy.decide(jobs, sim.facts(self._blocked(sim))):
                if d.burst:
                    sim.burst(d.job_id - 1, d.pools, d.partitions)
            sim.watch_at(sim.now + sim.cfg.policy.poll_interval)


# Across a month's end (budgets start again), with the node limit, a budget and failing launches.
ACROSS_MONTHS = mixed_trace(start=30 * DAY)
FAILING = simulate.Capacity(fail_probability=0.3, window_s=1800)


@pytest.mark.parametrize("home", [False, True])
def test_skipping_quiet_cycles_decides_exactly_as_a_cycle_every_poll_interval(home):
    cfg = config()
    name = "policy-home" if home else "policy"
    fast = simulate.run(ACROSS_MONTHS, cfg, name, onprem_gpus=8, seed=5, capacity=FAILING)
    slow = simulate.run(ACROSS_MONTHS, cfg, EveryCycle(name, cfg, None, home=home), onprem_gpus=8, seed=5,
                        capacity=FAILING)
    assert comparable(fast) == comparable(slow)
    assert fast.cloud_jobs > 10 and fast.failed_launches > 0


def test_the_strategy_decides_what_policy_decide_decides_on_the_same_jobs_and_facts():
    # Each cycle, a fresh Policy on every pending job and the same facts must agree with the simulator:
    # the same decision for each job the simulator passed, and a refusal for each job it left out.
    cfg = config()
    checked = {"cycles": 0, "bursts": 0, "left_out": 0}

    def observe(sim, jobs, facts, decisions):
        passed = {d.job_id: d for d in decisions}
        for d in Policy(cfg).decide(sim.pending_jobs(), facts):
            if d.job_id in passed:
                assert d == passed[d.job_id]
            else:
                assert not d.burst, f"job {d.job_id} would burst but was not looked at"
                checked["left_out"] += 1
            checked["bursts"] += d.burst
        checked["cycles"] += 1

    strategy = make("policy", cfg, observe=observe)
    r = simulate.run(ACROSS_MONTHS, cfg, strategy, onprem_gpus=8, seed=5, capacity=FAILING)
    assert checked["bursts"] >= r.cloud_jobs > 10      # an eligible job may still find room on-prem first
    assert checked["cycles"] > 50 and checked["left_out"] > 100


def test_residency_holds_for_the_policy_and_thresholds_and_naive_breaks_it():
    cfg = config()
    trace = mixed_trace(90)
    results = {s: simulate.run(trace, cfg, s, onprem_gpus=8, seed=1)
               for s in ("naive", "threshold:0", "threshold:3600", "policy-home", "policy")}
    assert results["naive"].residency_violations > 0
    assert results["naive"].jobs_per_region.keys() == {"local/r-us", "onprem"}   # all to the cheapest
    for name in ("threshold:0", "threshold:3600", "policy", "policy-home"):
        assert results[name].residency_violations == 0, name
        assert results[name].cloud_jobs > 0, name
    # policy-home launches only in the first region of the pool's zone: r-de.
    assert set(results["policy-home"].jobs_per_region) <= {"local/r-de", "onprem"}
    # policy takes spot in NL for EU jobs; the thresholds know on-demand only.
    assert any(iv.region == "r-nl" and iv.spot for iv in results["policy"].ledger)
    assert not any(iv.spot for iv in results["threshold:0"].ledger)


def test_a_spent_budget_keeps_the_account_home():
    cfg = config()
    trace = [TraceJob(str(i), 10.0 * i, 7200.0, None, 8, 1, 8, account="medical") for i in range(6)]
    r = simulate.run(trace, cfg, "policy", onprem_gpus=8)
    # Medical may only use DE, at $20/h. The watch at 660 bursts three jobs (the node limit); their three
    # nodes spend the $40 budget in 40 minutes, so when they stop the two left stay on-prem. The policy
    # counts spend as the daemon does: by the account whose job launched each node.
    cloud = [run for run in r.runs if not run.nodes[0].startswith("onprem")]
    assert len(cloud) == r.cloud_jobs == 3
    unlimited = simulate.run(trace, config(MIX.replace("budget_usd_month = 40\n", "")), "policy", onprem_gpus=8)
    assert unlimited.cloud_jobs > r.cloud_jobs


def test_a_failed_launch_blocks_the_region_and_the_next_one_is_tried():
    cfg = config()
    trace = [TraceJob("0", 0.0, 3600.0, None, 8, 1, 8), TraceJob("1", 0.0, 600.0, None, 8, 1, 8)]
    always = simulate.Capacity(by_region={"r-us": 1.0})
    r = simulate.run(trace, cfg, "threshold:0", onprem_gpus=8, capacity=always)
    assert [(iv.region, iv.failed, iv.end - iv.start) for iv in r.ledger] == [
        ("r-us", True, 0.0), ("r-nl", False, 60 + 600 + 300)]
    assert r.jobs_per_region == {"local/r-nl": 1, "onprem": 1} and r.failed_launches == 1


def test_same_seed_same_result_and_failures_follow_the_seed():
    cfg = config()
    trace = mixed_trace(120)
    capacity = simulate.Capacity(fail_probability=0.4, window_s=900)
    for name in ("policy", "threshold:600", "naive"):
        a = simulate.run(trace, cfg, name, onprem_gpus=8, seed=11, capacity=capacity)
        b = simulate.run(trace, cfg, name, onprem_gpus=8, seed=11, capacity=capacity)
        assert comparable(a) == comparable(b), name
    others = [comparable(simulate.run(trace, cfg, "policy", onprem_gpus=8, seed=s, capacity=capacity))
              for s in (12, 13, 14)]
    assert any(o != comparable(a) for o in others)


def test_onprem_never_bursts_and_unknown_strategies_are_refused():
    r = simulate.run(mixed_trace(30), config(), "onprem", onprem_gpus=8)
    assert r.cloud_jobs == 0 and r.cloud_spend_usd == 0 and r.finished == 30
    assert "policy" in simulate.STRATEGIES and "threshold:43200" in simulate.STRATEGIES
    with pytest.raises(ValueError, match="unknown strategy"):
        make("greedy", config())
    with pytest.raises(ValueError, match="seconds"):
        make("threshold:soon", config())
