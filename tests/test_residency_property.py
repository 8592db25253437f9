"""Residency on the launch path, as a property: whatever the regions, prices, zones and provider
failures, `Launcher.launch_group` never asks for a node outside the pool's and the job's zone,
tries the cheapest allowed region first, and fails loudly and cleanly when nothing is left.

The state DB is real SQLite (one fresh file per example); the cloud and Slurm are the recording
doubles of tests/fakes.py.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

from configs import build, pool, region
from fakes import Answer, RecordingSlurm, ScriptedProvider
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slurm_bridge.launch import SAME_PLACE_RETRIES, Group, Launcher
from slurm_bridge.models import Zone
from slurm_bridge.providers.base import FailureKind
from slurm_bridge.state import StateDB

COUNTRIES = ["DE", "NL", "FR", "CH", "PL", "US"]
KINDS = [FailureKind.CAPACITY, FailureKind.QUOTA, FailureKind.THROTTLED, FailureKind.TRANSIENT,
         FailureKind.CREDENTIALS]
# Few distinct prices, so equal prices (ties broken by region name) are common.
PRICES = [1.0, 2.0, 2.5, 3.0, 10.0]
NOW = 1_700_000_000.0
JOB = 4242

answers = st.one_of(
    st.just(Answer()),
    st.builds(Answer, st.sampled_from(KINDS), st.booleans()),
)


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 8))
    regions = [(f"r{i}", draw(st.sampled_from(COUNTRIES)), draw(st.sampled_from(PRICES))) for i in range(n)]
    subsets = draw(st.lists(st.frozensets(st.sampled_from(COUNTRIES), min_size=1), min_size=1, max_size=4))
    zones: dict = {f"z{i}": sorted(s) for i, s in enumerate(subsets)}
    zones["any"] = "*"
    pool_zone = draw(st.sampled_from(sorted(zones)))
    job_zone = draw(st.one_of(
        st.none(),                                                   # a manual power-up: the pool's zone
        st.just(Zone("job", None)),
        st.builds(Zone, st.just("job"), st.frozensets(st.sampled_from(COUNTRIES))),   # possibly empty
    ))
    size = draw(st.integers(1, 3))
    script = draw(st.lists(answers, max_size=20))
    then = draw(answers)
    return regions, zones, pool_zone, job_zone, size, script, then


def allowed_regions(regions, pool_zone: Zone, job_zone: Zone | None) -> list[tuple[str, str, float]]:
    return [r for r in regions if pool_zone.contains(r[1]) and (job_zone is None or job_zone.contains(r[1]))]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_launch_group_keeps_residency_and_fails_cleanly(scenario):
    regions, zones, pool_zone_name, job_zone, size, script, then = scenario
    cfg = build(zones=zones, pools=[pool("p", zone=pool_zone_name, itype="t1", size=3)],
                regions=[region(name, country, {"t1": price}) for name, country, price in regions])
    pool_cfg = cfg.pools[0]
    country_of = {name: country for name, country, _ in regions}
    nodes = pool_cfg.node_names[:size]
    provider = ScriptedProvider(script, then)
    slurm = RecordingSlurm()
    with tempfile.TemporaryDirectory() as tmp, StateDB.open(Path(tmp) / "state") as db:
        request_id = db.add_request("resume", ",".join(nodes), list(nodes), None, now=NOW)
        launcher = Launcher(cfg, db, slurm, {"local": provider}, clock=lambda: NOW, sleep=lambda s: None)
        outcome = launcher.launch_group(Group(pool_cfg, nodes, JOB), request_id, job_zone)
        active = db.active_instances()
        all_rows = db.instances()
        failed_events = db.events(kind="launch_failed")
        launched_events = db.events(kind="launched")

    allowed = allowed_regions(regions, pool_cfg.zone, job_zone)
    calls = provider.calls
    tried = [request.region for request, _ in calls]

    # Every request is the whole group, in one region (all or nothing).
    for request, _ in calls:
        assert tuple(spec.node for spec in request.nodes) == nodes
        assert request.cluster == cfg.cluster.name

    # (a) Residency: no request ever targets a region outside the pool zone or the job zone.
    for name in tried:
        assert pool_cfg.zone.contains(country_of[name]), f"{name} ({country_of[name]}) outside pool zone"
        assert job_zone is None or job_zone.contains(country_of[name]), \
            f"{name} ({country_of[name]}) outside job zone {job_zone}"
    if not allowed:
        assert calls == [] and not outcome.ok

    # (b) The cheapest allowed region (ties by name) is tried first; when it succeeds, it wins.
    if allowed:
        cheapest = min(allowed, key=lambda r: (r[2], r[0]))[0]
        assert tried[0] == cheapest
        if calls[0][1].failure is None:
            assert outcome.ok and (outcome.provider, outcome.region) == ("local", cheapest)
            assert len(calls) == 1

    # The group succeeds exactly when some launch call brought every node up, and that was the last call.
    successes = [i for i, (_, answer) in enumerate(calls) if answer.failure is None]
    assert outcome.ok == bool(successes)
    if outcome.ok:
        assert successes == [len(calls) - 1]
        assert outcome.region == tried[-1]

    # (c) Total failure: nodes set DOWN with a reason, then POWER_DOWN_FORCE; a launch_failed event.
    if not outcome.ok:
        assert len(slurm.updates) == 2, slurm.updates
        (down_nodes, down), (off_nodes, off) = slurm.updates
        assert down_nodes == nodes and down["state"] == "DOWN"
        assert down["reason"].startswith("slurm-bridge: no region") and set(down) == {"state", "reason"}
        assert off_nodes == nodes and off == {"state": "POWER_DOWN_FORCE"}
        assert len(failed_events) == 1
        event = failed_events[0]
        assert (event["job_id"], event["request_id"]) == (JOB, request_id)
        assert event["data"]["nodes"] == list(nodes)
        assert event["data"]["reason"] == outcome.reason
        assert launched_events == []
    else:
        # Success: Slurm is told each node's address and narrowed features, nothing is set down.
        assert failed_events == []
        assert [u[0] for u in slurm.updates] == [(n,) for n in nodes]
        assert all("state" not in u[1] and u[1]["comment"].startswith(f"local/{outcome.region}/i-")
                   for u in slurm.updates)
        assert [e["node"] for e in launched_events] == list(nodes)

    # (d) A failed group leaves no instance row launching or running (nor terminating), and no
    #     instance alive at the provider; a successful one leaves exactly one row per node, there.
    if not outcome.ok:
        assert active == [], [(r.node, r.region, r.state) for r in active]
        assert provider.live_ids() == set()
    else:
        assert sorted((r.node, r.region, r.state) for r in active) == \
            [(n, outcome.region, "launching") for n in nodes]
        assert {r.instance_id for r in active} == provider.live_ids()
    # Every row the worker wrote is for an allowed region.
    assert {r.region for r in all_rows} <= {r[0] for r in allowed}

    # (e) A region that failed with CAPACITY (or QUOTA: also region-wide) is not tried again in this group.
    for i, (request, answer) in enumerate(calls):
        if answer.failure in (FailureKind.CAPACITY, FailureKind.QUOTA):
            assert request.region not in tried[i + 1:], f"{request.region} retried after {answer}: {tried}"
        # A credentials failure blocks the whole provider: nothing more is asked of it.
        if answer.failure is FailureKind.CREDENTIALS:
            assert i == len(calls) - 1, f"launched after a credentials failure: {tried}"

    # Throttling and transient errors are retried in place, but only a bounded number of times,
    # and each region is tried in one run of attempts.
    for name, count in Counter(tried).items():
        assert count <= SAME_PLACE_RETRIES + 1
        first = tried.index(name)
        assert tried[first:first + count] == [name] * count
