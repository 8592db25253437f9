"""The burst policy on plain facts: the same function the daemon and the simulator call."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from configs import EXAMPLE, edit
from slurm_bridge.config import parse_config
from slurm_bridge.models import GresRequest, Job
from slurm_bridge.policy import Facts, decide, month_start, shape_problem

import tomllib

NOW = 1_800_000_000.0
CFG = parse_config(tomllib.loads(edit(EXAMPLE, "burst_after = 600", "burst_after = 600\nmax_cloud_nodes = 3")
                                .replace("max_cloud_nodes = 64\n", "")))


def job(job_id=1, *, waited=900, reason="Resources", partitions=("gpu",), account="lab", gpus=1, gtype="a100",
        nodes=1, cpus=1, features="", batch=True, state="PENDING", mem_cpu=1000) -> Job:
    return Job(job_id=job_id, name="j", user="u", account=account, partitions=tuple(partitions), state=state,
               reason=reason, submit_time=datetime.fromtimestamp(NOW - waited, tz=timezone.utc), start_time=None,
               time_limit_min=60, node_count=nodes, cpus=cpus, memory_per_cpu_mb=mem_cpu, memory_per_node_mb=None,
               gres=GresRequest(gpus, gpus * nodes, gtype), features=features, requeue=True, batch=batch)


def facts(active=0, spend=None, blocked=lambda p, r: None) -> Facts:
    return Facts(now=NOW, active_cloud_nodes=active, spend_month=spend or {}, blocked=blocked)


def one(j: Job, f: Facts | None = None):
    [d] = decide(CFG, [j], f or facts())
    return d


def test_a_job_that_waited_for_room_bursts_with_its_own_partition_first():
    d = one(job())
    assert d.burst and d.code == "burst"
    assert d.partitions == ("gpu", "burst-a100-de") and d.pools == ("a100-de",)


@pytest.mark.parametrize("j,code,text", [
    (job(waited=599), "too_early", "waited 599s of 600s"),
    (job(reason="Dependency"), "not_waiting_for_room", "waits for Dependency"),
    (job(reason="JobHeldUser"), "not_waiting_for_room", "waits for JobHeldUser"),
    (job(reason="QOSMaxGRESPerUser"), "not_waiting_for_room", "not for room"),
    (job(reason="BeginTime"), "not_waiting_for_room", "waits for BeginTime"),
    (job(partitions=("cpu",)), "not_watched", "not pending in a watched partition"),
    (job(partitions=("gpu", "burst-a100-de")), "already_eligible", "already eligible"),
    (job(features="onprem"), "opted_out", "--constraint=onprem"),
    (job(features="(a100|onprem)&res_de"), "opted_out", "opted out"),
    (job(batch=False), "interactive", "interactive"),
    (job(gpus=16), "no_pool_fits", "needs 16 GPUs per node, pool has 8"),
    (job(gtype="h100"), "no_pool_fits", "needs h100 GPUs, pool has a100"),
    (job(nodes=9), "no_pool_fits", "needs 9 nodes, pool has 8"),
    (job(cpus=200), "no_pool_fits", "needs 200 CPUs per node, pool has 96"),
    (job(cpus=96, mem_cpu=20000), "no_pool_fits", "needs 1920000 MB per node"),
])
def test_reasons_to_stay_home(j, code, text):
    d = one(j)
    assert not d.burst and d.code == code and text in d.reason


def test_only_pending_jobs_get_a_decision():
    assert decide(CFG, [job(state="RUNNING"), job(2, state="COMPLETED")], facts()) == []


def test_budget_counts_this_months_spend_of_the_account():
    assert one(job(account="medical"), facts(spend={"medical": 4999.99})).burst
    d = one(job(account="medical"), facts(spend={"medical": 5000.0}))
    assert not d.burst and d.code == "over_budget"
    assert d.reason == "account medical spent 5000.00 of 5000.00 USD this month"
    # Spend of another account does not count.
    assert one(job(account="medical"), facts(spend={"lab": 1e9})).burst


def test_node_limit_counts_instances_promised_jobs_and_this_cycle():
    jobs = [job(1, nodes=2), job(2, nodes=1), job(3, nodes=1, waited=800)]
    ds = {d.job_id: d for d in decide(CFG, jobs, facts(active=0))}
    assert ds[1].burst and ds[2].burst and not ds[3].burst     # oldest first: 1 and 2 fill max 3
    assert ds[3].code == "node_limit" and "3 of 3" in ds[3].reason
    promised = job(9, partitions=("gpu", "burst-a100-de"))       # eligible, not yet running
    d = {d.job_id: d for d in decide(CFG, [promised, job(1, nodes=2)], facts(active=1))}[1]
    assert not d.burst and "2 of 3" in d.reason


def test_zone_and_backoff_decide_which_pools_fit():
    # A job constrained to a zone the pool's regions cannot serve stays home.
    text = edit(EXAMPLE, 'any = "*"', 'any = "*"\nnl = ["NL"]')
    cfg = parse_config(tomllib.loads(text))
    [d] = decide(cfg, [job(features="res_nl")], facts())
    assert not d.burst and "shares no country" in d.reason
    # Every region blocked: no launchable region, so the job is not sent to fail in a loop.
    [d] = decide(CFG, [job()], facts(blocked=lambda p, r: "blocked by capacity"))
    assert not d.burst and "no launchable region" in d.reason


def test_shape_problem_is_none_for_a_fitting_job():
    assert shape_problem(CFG.pool("a100-de"), job(gpus=8, cpus=96, mem_cpu=10000)) is None


def test_month_start_is_the_first_of_the_month_utc():
    assert month_start(datetime(2026, 11, 30, 8, tzinfo=timezone.utc).timestamp()) == \
        datetime(2026, 11, 1, tzinfo=timezone.utc).timestamp()


def test_a_policy_kept_across_cycles_reuses_static_checks_per_job_object(monkeypatch):
    from slurm_bridge import policy as policy_mod

    pol = policy_mod.Policy(CFG)
    a, b = job(1, waited=100), job(2, reason="Dependency")
    first = pol.decide([a, b], facts())
    assert {d.job_id: d.code for d in first} == {1: "too_early", 2: "not_waiting_for_room"}
    calls = []
    real = pol._static_of
    monkeypatch.setattr(pol, "_static_of", lambda j: calls.append(j.job_id) or real(j))
    # The clock moves on: the same job objects are decided again without their static checks.
    later = Facts(now=NOW + 600, active_cloud_nodes=0, spend_month={}, blocked=lambda p, r: None)
    second = pol.decide([a, b], later)
    assert {d.job_id: d.code for d in second} == {1: "burst", 2: "not_waiting_for_room"} and calls == []
    # A job whose squeue line changed is a new object: checked again. Gone jobs leave the cache.
    b2 = job(2, reason="Resources", waited=700)
    third = pol.decide([b2], later)
    assert [d.code for d in third] == ["burst"] and calls == [2]
    assert len(pol._static) == 1


def test_a_job_that_can_never_burst_says_why_at_once_not_after_burst_after():
    assert one(job(waited=5, features="onprem")).code == "opted_out"
    assert one(job(waited=5, batch=False)).code == "interactive"


def test_a_job_that_cannot_be_requeued_is_never_offered_a_spot_pool():
    import dataclasses

    spot_cfg = dataclasses.replace(CFG, pools=tuple(dataclasses.replace(p, spot=True) for p in CFG.pools))
    [d] = decide(spot_cfg, [dataclasses.replace(job(), requeue=False)], facts())
    assert d.code == "no_pool_fits" and "--no-requeue" in d.reason
    [d] = decide(spot_cfg, [job()], facts())
    assert d.burst


def test_interactive_allocations_burst_only_when_the_config_allows_it():
    import dataclasses

    assert one(job(batch=False)).code == "interactive"
    allowed = dataclasses.replace(CFG, policy=dataclasses.replace(CFG.policy, burst_interactive=True))
    [d] = decide(allowed, [job(batch=False)], facts())
    assert d.burst
    cfg = parse_config(tomllib.loads(EXAMPLE.replace("burst_after = 600", "burst_after = 600\nburst_interactive = true")))
    assert cfg.policy.burst_interactive is True


def test_a_job_shorter_than_a_few_boot_times_stays_home():
    import dataclasses

    # The example pool has AWS and GCP types: boot assumed 180 s; its local regions boot in 2 s.
    local_only = dataclasses.replace(CFG, pools=tuple(dataclasses.replace(p, instance_types={"local": "lab-a100x8"})
                                                     for p in CFG.pools))
    slow = dataclasses.replace(local_only, policy=dataclasses.replace(local_only.policy, worth_boots=3,
                                                                         cloud_boot_seconds=600))
    assert one(job()).burst                                          # 60 min against 3 x 2 s
    slow_regions = tuple(dataclasses.replace(r, boot_seconds=1500) for r in local_only.local_regions)
    slow = dataclasses.replace(slow, local_regions=slow_regions)
    [d] = decide(slow, [job()], facts())
    assert d.code == "too_short" and "time limit 60 min is under 3 x the cloud boot time (1500 s)" in d.reason
    [d] = decide(slow, [dataclasses.replace(job(), time_limit_min=None)], facts())
    assert d.burst                                                    # no limit: worth it


@pytest.mark.parametrize("spec,n", [("0-39", 40), ("0-39%4", 4), ("2-3", 2), ("0-9:2", 5), ("1,5,7-9", 5),
                                    ("0-499%8", 8), ("7", 1), ("junk", 1), ("0-9:0", 1), ("0-9%x", 1)])
def test_array_records_count_their_tasks_up_to_the_throttle(spec, n):
    from slurm_bridge.policy import array_tasks_at_once

    assert array_tasks_at_once(spec) == n


def test_a_pending_array_bursts_as_many_tasks_as_the_node_limit_leaves_room_for():
    import dataclasses

    # CFG allows 3 cloud nodes. A 40-task array of 1-node tasks bursts its first three tasks, not all 40.
    sweep = dataclasses.replace(job(1), array_job_id=1, array_task="0-39")
    d = one(sweep)
    assert d.burst and d.tasks == "1_[0-2]" and "(3 of 40 at once: cloud node limit)" in d.reason
    # With one node up and busy, two; with the limit reached, none, and the reason says why.
    assert one(sweep, facts(active=1)).tasks == "1_[0-1]"
    full = one(sweep, facts(active=3))
    assert not full.burst and full.code == "node_limit" and "3 of 3" in full.reason
    # The array's own throttle bounds it too, and so do its tasks already eligible.
    throttled = dataclasses.replace(job(1), array_job_id=1, array_task="4-39:5%2")
    assert one(throttled).tasks == "1_[4,9]"
    split = dataclasses.replace(job(7, partitions=("gpu", "burst-a100-de")), array_job_id=1, array_task="0")
    rest = dataclasses.replace(job(1), array_job_id=1, array_task="1-39%2")
    ds = {x.job_id: x for x in decide(CFG, [split, rest], facts())}
    assert ds[7].code == "already_eligible" and ds[1].tasks == "1_[1]"
    at_throttle = dataclasses.replace(rest, array_task="1-39%1")
    ds = {x.job_id: x for x in decide(CFG, [split, at_throttle], facts())}
    assert ds[1].code == "array_throttle" and not ds[1].burst


def test_tasks_already_eligible_hold_their_nodes_and_later_jobs_wait():
    import dataclasses

    held = dataclasses.replace(job(2, partitions=("gpu", "burst-a100-de")), array_job_id=2, array_task="0-9%3")
    d = {x.job_id: x.code for x in decide(CFG, [held, job(3)], facts())}
    assert d == {2: "already_eligible", 3: "node_limit"}
    # A task held back by its array's throttle takes no node.
    waiting = dataclasses.replace(held, array_task="5", reason="JobArrayTaskLimit")
    d = {x.job_id: x.code for x in decide(CFG, [waiting, job(3)], facts())}
    assert d == {2: "already_eligible", 3: "burst"}


def test_an_idle_up_cloud_node_takes_the_next_task_without_counting_as_a_launch():
    import dataclasses

    sweep = dataclasses.replace(job(1, features="res_de"), array_job_id=1, array_task="10-39")
    idle_de = ("a100-de", frozenset({"a100", "res_de", "res_eu"}))
    # Three nodes up, all idle: the limit is reached in instances, yet three tasks fit on them.
    assert one(sweep, Facts(now=NOW, active_cloud_nodes=3, spend_month={}, blocked=lambda p, r: None,
                            idle_cloud_nodes=(idle_de,) * 3)).tasks == "1_[10-12]"
    # An idle node whose features do not carry the job's zone takes nothing (Slurm would not use it).
    idle_nl = ("a100-de", frozenset({"a100", "res_nl", "res_eu"}))
    d = one(sweep, Facts(now=NOW, active_cloud_nodes=3, spend_month={}, blocked=lambda p, r: None,
                         idle_cloud_nodes=(idle_nl,) * 3))
    assert d.code == "node_limit"
    # Nor does an idle node of another pool, nor one for a multi-node job.
    other = ("a100-eu", frozenset({"a100", "res_de"}))
    assert one(sweep, Facts(now=NOW, active_cloud_nodes=3, spend_month={}, blocked=lambda p, r: None,
                            idle_cloud_nodes=(other,))).code == "node_limit"
    pair = job(4, nodes=2, features="res_de")
    assert one(pair, Facts(now=NOW, active_cloud_nodes=2, spend_month={}, blocked=lambda p, r: None,
                           idle_cloud_nodes=(idle_de,) * 2)).code == "node_limit"


@pytest.mark.parametrize("spec,limit,ids,text", [
    ("0-39", 3, [0, 1, 2], "0-2"),
    ("3,5-7,20", 4, [3, 5, 6, 7], "3,5-7"),
    ("0-99:10%4", 3, [0, 10, 20], "0,10,20"),
    ("7", 5, [7], "7"),
    ("x-3", 2, [], ""),
    ("0-9:0", 2, [], ""),
])
def test_array_task_ids_and_ranges(spec, limit, ids, text):
    from slurm_bridge.policy import array_task_ids, task_ranges

    assert array_task_ids(spec, limit) == ids
    assert task_ranges(ids) == text


def test_a_job_slurm_expects_to_start_on_prem_before_a_cloud_node_boots_stays_home():
    import dataclasses

    slow = dataclasses.replace(CFG, local_regions=tuple(dataclasses.replace(r, boot_seconds=120)
                                                        for r in CFG.local_regions))
    asked = []

    def starts(ids):
        asked.append(sorted(ids))
        return {1: NOW + 60, 2: NOW + 600, 3: NOW - 30}      # 3: a stale estimate says nothing

    ds = {d.job_id: d for d in decide(slow, [job(1), job(2, waited=901), job(3, waited=902)],
                                      Facts(now=NOW, active_cloud_nodes=0, spend_month={},
                                            blocked=lambda p, r: None, expected_start=starts))}
    assert asked == [[1, 2, 3]]                                # one question a cycle, burst candidates only
    assert ds[1].code == "starts_soon" and not ds[1].burst
    assert "start on-prem in 60s, sooner than a cloud node boots (120s)" in ds[1].reason
    assert ds[2].burst and ds[3].burst


def test_a_federated_job_whose_sibling_starts_elsewhere_before_a_node_boots_stays_home():
    import dataclasses

    slow = dataclasses.replace(CFG, local_regions=tuple(dataclasses.replace(r, boot_seconds=120)
                                                        for r in CFG.local_regions),
                               policy=dataclasses.replace(CFG.policy, max_cloud_nodes=10))
    asked = []

    def siblings(ids):
        asked.append(sorted(ids))
        # 1: starts on cluster b in 30 s; 2: only in an hour; 3: could start now; 4: a stale estimate.
        return {1: ("b", NOW + 30), 2: ("b", NOW + 3600), 3: ("c", NOW), 4: ("b", NOW - 600)}

    ds = {d.job_id: d for d in decide(slow, [job(i, waited=900 + i) for i in (1, 2, 3, 4, 5)],
                                      Facts(now=NOW, active_cloud_nodes=0, spend_month={},
                                            blocked=lambda p, r: None, sibling_start=siblings))}
    assert asked == [[1, 2, 3, 4, 5]]
    assert ds[1].code == "sibling_starts" and not ds[1].burst
    assert "sibling on cluster b is expected to start in 30s, sooner than a cloud node boots (120s)" in ds[1].reason
    assert ds[3].code == "sibling_starts" and "start now" in ds[3].reason
    assert ds[2].burst and ds[4].burst and ds[5].burst
