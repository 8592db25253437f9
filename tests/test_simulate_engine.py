"""The simulator's engine: on-prem scheduling, cloud node lives and their cost, by hand and on Philly."""

from __future__ import annotations

import math
import tomllib
from dataclasses import replace
from decimal import Decimal
from fractions import Fraction

import pytest

from conftest import SHARED_DATA
from slurm_bridge import prices, simulate, traces
from slurm_bridge.config import Config, parse_config
from slurm_bridge.costs import attribute
from slurm_bridge.traces import TraceJob

# One on-prem node of 8 GPUs (onprem_gpus=8), one pool of 8-GPU nodes, one region at $36/h (one cent a
# second), boot 60 s, suspend_time 300 s, burst_after 600 s, a watch every 60 s.
SMALL = """
[cluster]
name = "sim"
state_dir = "/var/lib/slurm-bridge"
[slurm]
watch_partitions = ["gpu"]
suspend_time = 300
[policy]
burst_after = 600
poll_interval = 60
[zones]
any = "*"
[[pools]]
name = "a100"
size = 4
zone = "any"
cpus = 96
memory_mb = 1000000
gpus = "a100:8"
instance_types = { local = "x8" }
[providers.local]
[[providers.local.regions]]
name = "r1"
country = "DE"
boot_seconds = 60
prices = { "x8" = 36.0 }
"""


def config(text: str = SMALL) -> Config:
    return parse_config(tomllib.loads(text))


def job(name: str, submit: float, gpus: int, duration: float, *, limit: float | None = None, nodes: int = 1,
        account: str = "") -> TraceJob:
    return TraceJob(name, float(submit), float(duration), limit, gpus * nodes, nodes, gpus, account=account)


def starts(result: simulate.SimResult) -> dict[str, float]:
    return {r.job_id: r.start for r in result.runs}


JOBS = [job("j1", 0, 8, 3600), job("j2", 10, 8, 1800), job("j3", 100, 4, 600), job("j4", 2000, 4, 600),
        job("j5", 3000, 8, 100)]


def test_a_small_trace_worked_by_hand():
    # j1 (8 GPUs, 0-3600) fills the on-prem node. Watches run at multiples of 60 s.
    # j2 (submit 10) has waited 600 s at 610: the watch at 660 bursts it; a node launches at 660, boots
    #   60 s, j2 runs 720-2520. Wait 710.
    # j3 (submit 100, 4 GPUs) reaches 600 s at 700: the watch at 720 bursts it. j2's node is full, so a
    #   second node launches at 720, j3 runs 780-1380, the node idles 300 s and stops at 1680. Wait 680.
    # j4 (submit 2000) is burst by the watch at 2640 and reuses j2's node, idle since 2520: it runs at
    #   once, 2640-3240, and the node stops at 3540. Wait 640.
    # j5 (submit 3000) starts on-prem when j1 ends at 3600, before the watch at that tick. Wait 600.
    # Cost at one cent a second: node 1 660-3540 = 2880 s = $28.80, node 2 720-1680 = 960 s = $9.60.
    # Overhead: boot 60 + 60 s, idle 120 + 300 + 300 s = 840 s = $8.40, a share of 8.40 / 38.40.
    r = simulate.run(JOBS, config(), "policy", onprem_gpus=8)
    assert starts(r) == {"1": 0, "2": 720, "3": 780, "4": 2640, "5": 3600}
    assert sorted(r.wait_cdf) == [0, 600, 640, 680, 710]
    assert r.wait_mean_s == 526
    assert r.wait_p50_s == 640
    assert r.wait_p95_s == pytest.approx(704)          # 680 + 0.8 * (710 - 680)
    assert r.cloud_spend_usd == Decimal("38.40")
    assert r.overhead_usd == Decimal("8.40")
    assert r.overhead_share == pytest.approx(8.4 / 38.4)
    assert [(iv.node, iv.start, iv.end, iv.started_by_job) for iv in r.ledger] == [
        ("a100-0", 660, 3540, "2"), ("a100-1", 720, 1680, "3")]
    assert r.cloud_node_hours == pytest.approx(3840 / 3600)
    assert r.cloud_gpu_hours == pytest.approx((8 * 1800 + 4 * 600 + 4 * 600) / 3600)
    assert r.onprem_gpu_hours == pytest.approx((8 * 3600 + 8 * 100) / 3600)
    assert r.jobs_per_region == {"local/r1": 3, "onprem": 2}
    assert (r.finished, r.cloud_jobs, r.launches, r.failed_launches, r.residency_violations) == (5, 3, 2, 0, 0)
    assert r.spend_per_day == pytest.approx((38.4,))


def test_onprem_only_runs_everything_on_the_one_node_in_turn():
    r = simulate.run(JOBS, config(), "onprem", onprem_gpus=8)
    # j2 after j1, then j3 (4 GPUs) beside nothing until j2 ends, j4 beside j3, j5 last.
    assert starts(r) == {"1": 0, "2": 3600, "3": 5400, "4": 5400, "5": 6000}
    assert r.cloud_spend_usd == 0 and r.ledger == () and r.overhead_share is None


def test_backfill_starts_a_short_job_that_ends_before_the_head_can():
    # j1 holds 4 of 8 GPUs until 1000; j2 needs all 8 and waits for it (its reservation: 1000).
    # j3 (4 GPUs, 2000 s) fits now but would still run at 1000: it waits for j2 (1000-1500).
    # j4 (4 GPUs, 900 s) is behind j3 but ends at 930, before 1000: it starts at once.
    trace = [job("j1", 0, 4, 1000), job("j2", 10, 8, 500), job("j3", 20, 4, 2000), job("j4", 30, 4, 900)]
    r = simulate.run(trace, config(), "onprem", onprem_gpus=8)
    assert starts(r) == {"1": 0, "2": 1000, "3": 1500, "4": 30}


def test_backfill_goes_by_the_time_limit_not_the_real_duration():
    # j4 would end at 930, but its time limit (1200 s) says it could run until 1230: past j2's start.
    trace = [job("j1", 0, 4, 1000), job("j2", 10, 8, 500), job("j4", 30, 4, 900, limit=1200)]
    r = simulate.run(trace, config(), "onprem", onprem_gpus=8)
    assert starts(r) == {"1": 0, "2": 1000, "3": 1500}


def test_backfill_uses_room_the_head_does_not_need():
    # Two nodes: j1 holds one until 1000, j2 wants both. The long 4-GPU j3 fits on the free node now but
    # would still hold it at 1000, so it waits for j2.
    trace = [job("j1", 0, 8, 1000), job("j2", 10, 8, 500, nodes=2), job("j3", 20, 4, 5000)]
    assert starts(simulate.run(trace, config(), "onprem", onprem_gpus=16)) == {"1": 0, "2": 1000, "3": 1500}
    # Three nodes: j1 holds two until 1000, j2 wants two. j3 on the third leaves j2 both of j1's at 1000.
    trace = [job("j1", 0, 8, 1000, nodes=2), job("j2", 10, 8, 500, nodes=2), job("j3", 20, 4, 5000)]
    assert starts(simulate.run(trace, config(), "onprem", onprem_gpus=24)) == {"1": 0, "2": 1000, "3": 20}


def test_multi_node_jobs_need_free_gpus_on_each_node():
    # Two nodes; c wants 4 GPUs on each of two nodes.
    for first, c_starts in ((4, 0), (6, 100), (8, 100)):
        # 4 GPUs left beside `first` on one node, 8 on the other: c fits only if both have 4.
        trace = [job("a", 0, first, 100), job("c", 0, 4, 50, nodes=2)]
        assert starts(simulate.run(trace, config(), "onprem", onprem_gpus=16)) == {"1": 0, "2": c_starts}


def test_a_job_too_big_for_onprem_waits_for_the_cloud_or_never_runs():
    trace = [job("big", 0, 8, 100, nodes=2)]
    r = simulate.run(trace, config(), "onprem", onprem_gpus=8)
    assert (r.finished, r.runs) == (0, ())
    r = simulate.run(trace, config(), "policy", onprem_gpus=8)
    assert r.finished == 1 and starts(r) == {"1": 660}          # burst at 600, boots 60 s


def test_shared_cloud_nodes_cost_the_same_as_the_per_job_ledger_says():
    # Naive power saving packs 2-GPU jobs four to a node; the result's spend (busy stretches priced by
    # costs.attribute) must equal costs.attribute over the per-job ledger the result also carries.
    trace = [job(f"j{i}", 7 * i, 2, 300 + 37 * (i % 11)) for i in range(60)]
    r = simulate.run(trace, config(), "naive", onprem_gpus=8)
    assert r.cloud_jobs > 30 and len(r.ledger) < r.cloud_jobs     # nodes were shared and reused
    a = attribute(r.ledger, r.runs, 0.0, max(iv.end for iv in r.ledger) + 1)
    assert a.ledger_total == r.cloud_spend_usd
    overhead = sum((c.usd for c in a.charges if c.kind != "run"), Fraction(0))
    assert Decimal(math.floor(overhead * 100 + Fraction(1, 2))).scaleb(-2) == r.overhead_usd
    assert sum(j.cloud_gpu_seconds for j in a.jobs) / 3600 == pytest.approx(r.cloud_gpu_hours)
    assert a.unmatched == ()


def test_progress_is_reported_about_every_percent():
    trace = [job(f"j{i}", i, 1, 10) for i in range(1000)]
    calls = []
    simulate.run(trace, config(), "onprem", onprem_gpus=8, progress=lambda done, total: calls.append((done, total)))
    assert 100 <= len(calls) <= 101
    assert calls[-1] == (1000, 1000) and all(t == 1000 for _, t in calls)


# -- the real trace, with real prices -----------------------------------------------------------------

PHILLY = SHARED_DATA / "traces" / "rfold_philly_trace.csv"
AWS_PRICES = SHARED_DATA / "prices" / "aws_gpu_prices_by_region.csv"
REAL = """
[cluster]
name = "sim"
state_dir = "/var/lib/slurm-bridge"
[slurm]
watch_partitions = ["gpu"]
suspend_time = 300
[policy]
burst_after = 600
poll_interval = 15
max_cloud_nodes = 32
[zones]
de = ["DE"]
eu = "EU"
any = "*"
[accounts.default]
zone = "any"
[accounts.medical]
zone = "de"
budget_usd_month = 20000
[accounts.eu-lab]
zone = "eu"
[[pools]]
name = "a100"
size = 32
zone = "any"
cpus = 96
memory_mb = 1000000
gpus = "a100:8"
spot = true
instance_types = { aws = "p4d.24xlarge" }
[providers.aws]
regions = ["eu-central-1", "eu-west-1", "us-east-1", "us-west-2"]
launch_template = "slurm-bridge"
"""


@pytest.fixture(scope="module")
def philly() -> list[TraceJob]:
    accounts = ["", "medical", "eu-lab"]
    jobs = traces.read_trace(PHILLY, "philly").jobs[:2000]
    return [replace(j, account=accounts[i % 3]) for i, j in enumerate(jobs)]


@pytest.mark.parametrize("strategy", ["onprem", "naive", "threshold:3600", "policy-home", "policy"])
def test_the_first_2000_philly_jobs(philly, strategy):
    book = prices.PriceBook(prices.read_table(AWS_PRICES).prices)
    cfg = config(REAL)
    r = simulate.run(philly, cfg, strategy, onprem_gpus=512, seed=7, book=book,
                     capacity=simulate.Capacity(fail_probability=0.1))
    assert r.jobs == r.finished == len(r.runs) == 2000
    assert sum(r.jobs_per_region.values()) == 2000
    assert min(r.wait_cdf) >= 0 and r.wait_p50_s <= r.wait_p95_s
    assert r.cloud_spend_usd >= 0
    assert r.onprem_gpu_hours + r.cloud_gpu_hours == pytest.approx(
        sum(j.gpus_per_node * j.nodes * j.duration_s for j in philly) / 3600)
    if strategy == "onprem":
        assert r.cloud_spend_usd == 0 and r.cloud_jobs == 0 and r.jobs_per_region == {"onprem": 2000}
        return
    assert r.cloud_jobs > 0 and r.cloud_spend_usd > 0
    assert 0 <= r.overhead_share < 1
    if strategy == "naive":
        assert r.residency_violations > 0
    else:
        assert r.residency_violations == 0
    if strategy.startswith("policy"):
        # The node limit holds at every instant of the ledger.
        events = sorted([(iv.start, 1) for iv in r.ledger if not iv.failed] +
                        [(iv.end, -1) for iv in r.ledger if not iv.failed])
        live = peak = 0
        for _, step in events:
            live += step
            peak = max(peak, live)
        assert peak <= cfg.policy.max_cloud_nodes
