"""Cost attribution on plain intervals and job runs: every cent of the ledger lands on a job or a pool."""

from __future__ import annotations

import json
from collections import defaultdict
from decimal import Decimal
from fractions import Fraction
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slurm_bridge.costs import (
    GROUPS,
    ONPREM,
    UNATTRIBUTED,
    UNKNOWN,
    Attribution,
    Interval,
    JobRun,
    attribute,
    group,
    natural_key,
    round_cents,
)

H = 3600


def iv(key="i1", node="c1", *, price=3.6, start=0.0, end=2 * H, by=None, failed=False, pool="a100-de",
       region="europe-west4", provider="gcp", itype="a2-highgpu-1g", spot=False) -> Interval:
    return Interval(key=key, node=node, pool=pool, provider=provider, region=region, instance_type=itype,
                    spot=spot, usd_per_hour=price, start=start, end=end, started_by_job=by, failed=failed)


def run(job_id="1", nodes=("c1",), *, gpus=1, start=0.0, end=H, account="lab", user="ann", billing=None,
        cpu=4, partition="burst-a100-de") -> JobRun:
    tres = {"cpu": cpu, "gres/gpu": gpus, "node": len(nodes)}
    if billing is not None:
        tres["billing"] = billing
    return JobRun(job_id=job_id, user=user, account=account, partition=partition, nodes=tuple(nodes),
                  tres=tres, start=start, end=end)


def job(a: Attribution, job_id: str):
    [j] = [j for j in a.jobs if j.job_id == job_id]
    return j


def interval(a: Attribution, key: str):
    [i] = [i for i in a.intervals if i.key == key]
    return i


def d(text: str) -> Decimal:
    return Decimal(text)


def assert_adds_up(a: Attribution) -> None:
    jobs = sum((j.run_cost + j.overhead for j in a.jobs), Decimal("0.00"))
    assert jobs + sum(a.pool_overhead.values(), Decimal("0.00")) == a.ledger_total
    assert sum((i.total for i in a.intervals), Decimal("0.00")) == a.ledger_total
    for i in a.intervals:
        assert i.job_cost + i.overhead == i.total
    for by in GROUPS:
        rows = group(a, by)
        assert sum((r.spend for r in rows), Decimal("0.00")) == a.ledger_total, by
        assert all(r.spend == r.run_cost + r.overhead for r in rows)


def test_a_hand_computed_period():
    # Period [0, 2 h). All prices are chosen so every share is a whole number of cents.
    #
    # c1 at $3.60/h = $0.001/s, started by job 1's resume, runs the whole period:
    #   0-600      nobody          600 s  $0.60  boot  -> job 1's overhead
    #   600-1800   job 1 alone    1200 s  $1.20        -> job 1
    #   1800-3600  jobs 1 and 2   1800 s  $1.80  split by GPUs 1:3 -> job 1 $0.45, job 2 $1.35
    #   3600-5400  job 2 alone    1800 s  $1.80        -> job 2
    #   5400-7200  nobody         1800 s  $1.80  idle  -> job 1's overhead
    #   job 1: run 1.20 + 0.45 = $1.65, overhead 0.60 + 1.80 = $2.40; job 2: run 1.35 + 1.80 = $3.15
    # c2 and c3 at $1.00/h from 3600, job 3 on both (4 GPUs, 2 per node) 3600-7200: 2 x $1.00 = $2.00
    #   (c2 runs on past the period end: only its first hour counts)
    # c4 at $0.50/h, no job, no resume job: 2 h = $1.00 boot overhead of pool a100-de
    # Ledger: 7.20 + 1.00 + 1.00 + 1.00 = $10.20
    intervals = [iv("i1", "c1", price=3.6, by="1"),
                 iv("i2", "c2", price=1.0, start=H, end=3 * H, spot=True), iv("i3", "c3", price=1.0, start=H),
                 iv("i4", "c4", price=0.5)]
    runs = [run("1", gpus=1, start=600, end=H), run("2", gpus=3, start=1800, end=5400, account="bio", user="bob"),
            run("3", ("c2", "c3"), gpus=4, start=H, end=2 * H)]
    a = attribute(intervals, runs, 0, 2 * H)

    assert a.ledger_total == d("10.20")
    assert (job(a, "1").run_cost, job(a, "1").overhead) == (d("1.65"), d("2.40"))
    assert (job(a, "2").run_cost, job(a, "2").overhead) == (d("3.15"), d("0.00"))
    assert (job(a, "3").run_cost, job(a, "3").overhead) == (d("2.00"), d("0.00"))
    assert a.pool_overhead == {"a100-de": d("1.00")}
    i1 = interval(a, "i1")
    assert (i1.total, i1.job_cost, i1.boot_cost, i1.idle_cost, i1.failed_cost) == (
        d("7.20"), d("4.80"), d("0.60"), d("1.80"), d("0.00"))
    assert i1.jobs == ("1", "2") and i1.started_by_job == "1"
    assert interval(a, "i2").end == 2 * H and interval(a, "i4").boot_cost == d("1.00")
    j3 = job(a, "3")
    assert j3.gpu_seconds == j3.cloud_gpu_seconds == 4 * H and j3.cloud_node_seconds == 2 * H
    assert job(a, "1").gpu_seconds == 3000 and job(a, "2").cloud_gpu_seconds == 3 * 3600
    assert j3.providers == ("gcp",) and j3.regions == ("europe-west4",) and j3.instance_types == ("a2-highgpu-1g",)
    assert not a.unmatched
    assert_adds_up(a)

    by_account = {r.key: r for r in group(a, "account")}
    assert by_account["lab"].spend == d("6.05") and by_account["lab"].overhead == d("2.40")
    assert by_account["bio"].spend == d("3.15") and by_account[UNATTRIBUTED].spend == d("1.00")
    assert by_account["lab"].gpu_hours == pytest.approx(3000 / H + 4)
    assert by_account["lab"].overhead_share == pytest.approx(2.40 / 6.05)
    assert [r.key for r in group(a, "pool")] == ["a100-de"]


def test_a_job_spanning_both_ends_of_the_period_pays_only_for_the_part_inside():
    a = attribute([iv(start=0, end=10 * H, price=3.6)], [run(start=0, end=10 * H)], 2 * H, 3 * H)
    assert a.ledger_total == job(a, "1").run_cost == d("3.60")
    assert job(a, "1").gpu_seconds == H and interval(a, "i1").start == 2 * H
    assert interval(a, "i1").boot_cost == 0


def test_time_after_a_job_that_ended_before_the_period_is_idle_not_boot():
    a = attribute([iv(start=0, end=4 * H, price=1.0, by="1")], [run(start=0, end=H)], 2 * H, 4 * H)
    assert interval(a, "i1").idle_cost == d("2.00") and interval(a, "i1").boot_cost == 0
    assert job(a, "1").overhead == d("2.00") and job(a, "1").run_cost == 0


def test_two_jobs_on_one_node_share_by_gpus_then_billing():
    runs = [run("1", gpus=1, billing=10, end=H), run("2", gpus=3, billing=30, end=H)]
    for weight in ("gpu", "billing"):
        a = attribute([iv(price=4.0, end=H)], runs, 0, H, weight=weight)
        assert (job(a, "1").run_cost, job(a, "2").run_cost) == (d("1.00"), d("3.00"))
    a = attribute([iv(price=4.0, end=H)], [run("1", billing=1, end=H), run("2", billing=3, gpus=1, end=H)],
                  0, H, weight="billing")
    assert (job(a, "1").run_cost, job(a, "2").run_cost) == (d("1.00"), d("3.00"))


def test_jobs_without_gpus_share_by_cpus_then_equally():
    a = attribute([iv(price=4.0, end=H)], [run("1", gpus=0, cpu=1, end=H), run("2", gpus=0, cpu=3, end=H)], 0, H)
    assert (job(a, "1").run_cost, job(a, "2").run_cost) == (d("1.00"), d("3.00"))
    a = attribute([iv(price=4.0, end=H)], [run("1", gpus=0, cpu=0, end=H), run("2", gpus=0, cpu=0, end=H)], 0, H)
    assert (job(a, "1").run_cost, job(a, "2").run_cost) == (d("2.00"), d("2.00"))


def test_a_two_node_job_pays_both_nodes_and_shares_each_with_its_neighbours():
    # On c1 job 1 has 2 of its 4 GPUs, beside job 2 with 2: half each of c1's $2; c2 is all job 1's.
    intervals = [iv("i1", "c1", price=2.0, end=H), iv("i2", "c2", price=2.0, end=H)]
    a = attribute(intervals, [run("1", ("c1", "c2"), gpus=4, end=H), run("2", ("c1",), gpus=2, end=H)], 0, H)
    assert (job(a, "1").run_cost, job(a, "2").run_cost) == (d("3.00"), d("1.00"))
    assert job(a, "1").cloud_node_seconds == 2 * H


def test_an_arrays_tasks_are_rows_by_job_and_one_summed_row_by_array():
    # Tasks 7_0 and 7_1 share c1 (2 GPUs each) for an hour; 7_2 has c2 to itself; job 8 is no array.
    intervals = [iv("i1", "c1", price=2.0, end=H), iv("i2", "c2", price=1.0, end=H), iv("i3", "c3", price=0.5, end=H)]
    runs = [run("7_0", ("c1",), gpus=2), run("7_1", ("c1",), gpus=2), run("7_2", ("c2",)), run("8", ("c3",))]
    a = attribute(intervals, runs, 0, H)
    tasks = {r.key: r.spend for r in group(a, "job")}
    assert tasks == {"7_0": d("1.00"), "7_1": d("1.00"), "7_2": d("1.00"), "8": d("0.50")}
    arrays = {r.key: (r.spend, r.jobs) for r in group(a, "array")}
    assert arrays == {"7": (d("3.00"), 3), "8": (d("0.50"), 1)}
    assert_adds_up(a)


def test_an_interval_no_job_used_is_overhead_of_its_pool_or_of_the_job_that_started_it():
    a = attribute([iv(price=1.0, end=H, pool="h100-fi")], [], 0, H)
    assert a.jobs == () and a.pool_overhead == {"h100-fi": d("1.00")}
    assert interval(a, "i1").jobs == () and interval(a, "i1").boot_cost == d("1.00")
    rows = group(a, "account")
    assert [(r.key, r.spend, r.overhead_share) for r in rows] == [(UNATTRIBUTED, d("1.00"), 1.0)]
    # The job that asked for the node pays, even when it ran elsewhere; its runs give its account.
    a = attribute([iv(price=1.0, end=H, by="9")], [run("9", ("gpu-0",), start=-H, end=0)], 0, H)
    assert job(a, "9").overhead == d("1.00") and job(a, "9").account == "lab" and a.pool_overhead == {}


def test_overhead_of_a_job_never_seen_in_sacct_is_still_charged_to_it():
    a = attribute([iv(price=1.0, end=H, by="77")], [], 0, H)
    assert job(a, "77").overhead == d("1.00") and job(a, "77").account == UNKNOWN


def test_a_failed_launch_is_all_overhead_even_if_sacct_says_a_job_was_there():
    a = attribute([iv(price=1.8, end=1200, by="5", failed=True)], [run("5", start=0, end=600)], 0, H)
    i = interval(a, "i1")
    assert (i.total, i.failed_cost, i.job_cost) == (d("0.60"), d("0.60"), d("0.00")) and i.failed
    assert job(a, "5").overhead == d("0.60") and job(a, "5").run_cost == 0
    # The run had no interval that could carry it: it is shown, not free.
    assert [(u.job_id, u.node, u.seconds) for u in a.unmatched] == [("5", "c1", 600)]


def test_a_still_running_interval_and_job_are_clipped_to_the_period_end():
    a = attribute([iv(start=0, end=None, price=3.6)], [run(start=1800, end=None)], 0, H)
    i = interval(a, "i1")
    assert i.running and i.end == H and i.total == d("3.60")
    assert (i.boot_cost, job(a, "1").run_cost, job(a, "1").gpu_seconds) == (d("1.80"), d("1.80"), 1800)


def test_cloud_job_time_without_an_interval_is_reported_unmatched():
    # c1's interval ends at 1800; the job stays on c1 until 3600, and c9 is a cloud node with no interval.
    a = attribute([iv(end=1800, price=3.6)], [run(nodes=("c1", "c9"), gpus=2, end=H)], 0, H, cloud_nodes={"c1", "c9"})
    got = sorted((u.node, u.start, u.end) for u in a.unmatched)
    assert got == [("c1", 1800, H), ("c9", 0, H)]
    assert job(a, "1").unmatched_seconds == 1800 + H and job(a, "1").run_cost == d("1.80")
    assert job(a, "1").onprem_gpu_seconds == 0


def test_a_zero_length_interval_costs_nothing_and_breaks_nothing():
    a = attribute([iv(start=600, end=600), iv("i2", start=900, end=800)], [run(start=600, end=600)], 0, H)
    assert a.ledger_total == 0 and [i.total for i in a.intervals] == [0, 0] and a.jobs == ()
    assert_adds_up(a)


def test_on_prem_jobs_are_priced_by_the_model_outside_the_ledger():
    runs = [run("1", ("gpu-0",), gpus=2, end=H), run("2", ("c1",), gpus=1, end=H)]
    a = attribute([iv(price=3.0, end=H)], runs, 0, H, onprem_usd_per_gpu_hour=1.25)
    assert a.ledger_total == d("3.00") and a.onprem_total == d("2.50")
    assert (job(a, "1").onprem_cost, job(a, "1").total, job(a, "1").onprem_gpu_seconds) == (d("2.50"), 0, 2 * H)
    assert job(a, "2").onprem_cost == 0 and job(a, "2").run_cost == d("3.00")
    pools = {r.key: r for r in group(a, "pool")}
    assert pools[ONPREM].onprem_cost == d("2.50") and pools[ONPREM].spend == 0 and pools[ONPREM].onprem_gpu_hours == 2
    assert attribute([], runs[:1], 0, H).jobs[0].onprem_cost is None   # no rate: not priced, not zero
    assert_adds_up(a)


def test_rounding_gives_the_odd_cent_to_the_largest_remainder_and_adds_up():
    # $0.10 over three equal jobs: 3.33... cents each; one of them gets the fourth cent.
    runs = [run(str(n), gpus=1, end=H) for n in (1, 2, 3)]
    a = attribute([iv(price=0.1, end=H)], runs, 0, H)
    assert sorted(j.run_cost for j in a.jobs) == [d("0.03"), d("0.03"), d("0.04")]
    assert_adds_up(a)
    assert round_cents([Fraction(1, 300), Fraction(2, 300), Fraction(3, 300)]) == [0, 1, 1]
    assert round_cents([Fraction(1, 200)] * 2) == [1, 0]   # half a cent each: the total rounds up to 1


def test_rows_and_costs_convert_to_plain_dicts():
    a = attribute([iv(price=1.0, end=H)], [run(end=H)], 0, H)
    for thing in (a.jobs[0], a.intervals[0], group(a, "job")[0]):
        text = json.dumps(thing.as_dict(), default=str)
        assert '"1.00"' in text


def test_cloud_usage_spreads_overhead_so_it_adds_up_to_the_ledger():
    a = attribute([iv(price=2.0, end=H, by="1")], [run(gpus=2, start=1800, end=H)], 0, H)
    assert a.cloud_usage() == [(1800.0, 3600.0, 2.0, 2.0)]


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="weight must be one of gpu, billing"):
        attribute([], [], 0, H, weight="cpu")
    with pytest.raises(ValueError, match="must not be empty"):
        attribute([], [], H, H)
    with pytest.raises(ValueError, match="group by one of"):
        group(attribute([], [], 0, H), "country")


def test_job_ids_sort_like_numbers():
    assert sorted(["10", "9", "7_3", "7_12"], key=natural_key) == ["7_3", "7_12", "9", "10"]


# --- property: the ledger is divided exactly -------------------------------------------------------

PRICES = [0.0, 0.01, 0.333, 1.1, 2.4, 32.77]
times = st.integers(0, 100).map(float)


@st.composite
def scenario(draw):
    nodes = [f"c{n}" for n in range(3)]
    intervals = []
    for k in range(draw(st.integers(0, 5))):
        start = draw(times)
        end = draw(st.one_of(st.none(), times.map(lambda t, s=start: s + t - 20)))
        intervals.append(iv(f"i{k}", draw(st.sampled_from(nodes)), price=draw(st.sampled_from(PRICES)),
                            start=start, end=end, by=draw(st.sampled_from([None, "0", "1", "9"])),
                            failed=draw(st.booleans()), pool=draw(st.sampled_from(["p", "q"]))))
    runs = []
    for n in range(draw(st.integers(0, 5))):
        start = draw(times)
        used = draw(st.lists(st.sampled_from(nodes + ["gpu-0"]), min_size=1, max_size=3, unique=True))
        runs.append(run(str(n), tuple(used), gpus=draw(st.integers(0, 4)), cpu=draw(st.integers(0, 2)),
                        billing=draw(st.integers(0, 3)), start=start,
                        end=draw(st.one_of(st.none(), times.map(lambda t, s=start: s + t)))))
    since = draw(times)
    until = since + draw(st.integers(1, 100))
    return intervals, runs, float(since), float(until), draw(st.sampled_from(["gpu", "billing"]))


def _exact(x: float) -> Fraction:
    return Fraction(repr(x))


@settings(max_examples=300, deadline=None)
@given(scenario())
def test_every_cent_and_every_second_is_accounted_for_once(case):
    intervals, runs, since, until, weight = case
    a = attribute(intervals, runs, since, until, weight, onprem_usd_per_gpu_hour=2.0)

    # The ledger, computed independently: price x clipped seconds, rounded half-up to the cent.
    exact = Fraction(0)
    for i in intervals:
        s = max(_exact(i.start), _exact(since))
        e = _exact(until) if i.end is None else min(_exact(i.end), _exact(until))
        exact += max(e - s, 0) * _exact(i.usd_per_hour) / 3600
    assert a.ledger_total == Decimal(int(exact * 100 + Fraction(1, 2))).scaleb(-2)
    assert_adds_up(a)

    money = [x for j in a.jobs for x in (j.run_cost, j.overhead, j.onprem_cost)]
    money += list(a.pool_overhead.values()) + [i.total for i in a.intervals]
    assert all(m >= 0 for m in money)

    # Every second of an interval is in exactly one bucket: its segments tile it, and a segment is
    # either shared among jobs or overhead, never both.
    spans = defaultdict(dict)
    for c in a.charges:
        assert c.seconds > 0 and c.usd >= 0
        spans[c.interval].setdefault((c.start, c.end), set()).add(c.kind == "run")
    for i in a.intervals:
        pieces = sorted(spans[i.key])
        assert all(len(kinds) == 1 for kinds in spans[i.key].values())
        if i.end > i.start:
            assert pieces[0][0] == _exact(i.start) and pieces[-1][1] == _exact(i.end)
            assert all(p[1] == q[0] for p, q in pairwise(pieces))
        else:
            assert pieces == []

    # Each job's rounded cost is within a cent of its exact share.
    exact_run = defaultdict(Fraction)
    for c in a.charges:
        if c.kind == "run":
            exact_run[c.job_id] += c.usd
    for j in a.jobs:
        assert abs(Fraction(str(j.run_cost)) - exact_run[j.job_id]) < Fraction(1, 100)
