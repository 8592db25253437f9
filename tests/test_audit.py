"""`audit residency`: every cloud job re-checked from accounting records and the state DB.

The instance rows are real rows of a real state DB, written through the same calls the launch
worker and the suspend program use, with fixed times.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from configs import build, pool, region

from slurm_bridge.audit import Placement, audit
from slurm_bridge.catalog import EU_MEMBERS
from slurm_bridge.models import AccountingRecord
from slurm_bridge.state import StateDB

T0 = 1_700_000_000.0          # a fixed "now" for every row


def config():
    return build(
        zones={"de": ["DE"], "eu": "EU", "any": "*"},
        accounts={"default": {"zone": "eu"}, "medical": {"zone": "de"}},
        pools=[pool("a100-eu", zone="eu", itype="lab-a100x4", size=4)],
        regions=[region("lab-de", "DE", {"lab-a100x4": 16.0}), region("lab-nl", "NL", {"lab-a100x4": 12.0})],
    )


@pytest.fixture
def db(tmp_path):
    with StateDB.open(tmp_path / "state") as sdb:
        yield sdb


_tokens = iter(range(1, 1_000_000))


def instance(db: StateDB, node: str, region_name: str, up: float, down: float | None = None,
             job_ids: tuple[int, ...] = ()) -> int:
    """One instance's life as the programs record it: launch at UP, terminated at DOWN (None: still up)."""
    row = db.begin_launch(node=node, pool="a100-eu", provider="local", region=region_name, zone=None,
                          instance_type="lab-a100x4", price_per_hour=16.0, spot=False, job_ids=list(job_ids),
                          request_id=None, client_token=f"tok-{next(_tokens)}", now=up - 3)
    db.launched(row, f"i-{node}-{up:.0f}", address="10.0.0.9", now=up)
    assert db.mark_running(node, now=up + 20) is not None
    if down is not None:
        assert [r.id for r in db.begin_terminate(node, now=down - 1)] == [row]
        db.terminated(row, now=down)
    return row


def failed_launch(db: StateDB, node: str, region_name: str, at: float) -> None:
    row = db.begin_launch(node=node, pool="a100-eu", provider="local", region=region_name, zone=None,
                          instance_type="lab-a100x4", price_per_hour=16.0, spot=False, job_ids=[],
                          request_id=None, client_token=f"tok-{next(_tokens)}", now=at)
    db.launch_failed(row, "capacity: none left", now=at + 1)


def ts(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def record(job_id: int, nodes: str, start: float, end: float | None, *, account: str = "default",
           partition: str = "gpu,burst-a100-eu", constraints: str = "", user: str = "alice") -> AccountingRecord:
    return AccountingRecord(job_id=job_id, job_id_str=str(job_id), array_job_id=None, array_task_id=None,
                            name="train", user=user, account=account, partition=partition, cluster="hpc1",
                            state="COMPLETED" if end is not None else "RUNNING", nodes=nodes,
                            alloc_tres={"cpu": 16, "gres/gpu": 4}, submit=ts(start - 600), start=ts(start),
                            end=None if end is None else ts(end), constraints=constraints)


def one(placements: list[Placement]) -> Placement:
    assert len(placements) == 1, placements
    return placements[0]


def test_medical_job_in_lab_de_is_ok(db):
    instance(db, "a100-eu-0", "lab-de", T0, T0 + 3600)
    p = one(audit(config(), [record(11, "a100-eu-0", T0 + 60, T0 + 1800, account="medical")], db.instances()))
    assert p == Placement(job="11", account="medical", partition="gpu,burst-a100-eu", node="a100-eu-0",
                          provider="local", region="lab-de", country="DE", zone="DE", ok=True, why="")


def test_medical_job_in_lab_nl_is_a_breach(db):
    instance(db, "a100-eu-1", "lab-nl", T0, T0 + 3600)
    p = one(audit(config(), [record(12, "a100-eu-1", T0 + 60, T0 + 1800, account="medical")], db.instances()))
    assert not p.ok
    assert (p.provider, p.region, p.country, p.zone) == ("local", "lab-nl", "NL", "DE")
    assert p.why == "NL is outside the job's zone"
    assert p.to_json()["ok"] is False and p.to_json()["country"] == "NL"


def test_default_account_job_in_lab_nl_is_ok(db):
    instance(db, "a100-eu-1", "lab-nl", T0, T0 + 3600)
    p = one(audit(config(), [record(13, "a100-eu-1", T0 + 60, T0 + 1800)], db.instances()))
    assert p.ok and p.country == "NL"
    assert p.zone == ",".join(sorted(EU_MEMBERS))


def test_res_constraint_of_a_default_account_job_is_enforced(db):
    instance(db, "a100-eu-1", "lab-nl", T0, T0 + 3600)
    rec = record(14, "a100-eu-1", T0 + 60, T0 + 1800, constraints="(cloud)&res_de", user="bob")
    p = one(audit(config(), [rec], db.instances()))
    assert not p.ok
    assert (p.account, p.country, p.zone, p.why) == ("default", "NL", "DE", "NL is outside the job's zone")


def test_unknown_account_falls_back_to_the_default_zone(db):
    instance(db, "a100-eu-1", "lab-nl", T0, T0 + 3600)
    p = one(audit(config(), [record(15, "a100-eu-1", T0 + 60, T0 + 1800, account="physics")], db.instances()))
    assert p.ok and p.account == "physics"


def test_onprem_nodes_are_not_checked(db):
    instance(db, "a100-eu-0", "lab-de", T0, T0 + 3600)
    recs = [record(16, "gpu-0", T0 + 60, T0 + 1800, account="medical"),
            record(17, "gpu-[0-1],a100-eu-0", T0 + 60, T0 + 1800, account="medical")]
    placements = audit(config(), recs, db.instances())
    assert [(p.job, p.node, p.ok) for p in placements] == [("17", "a100-eu-0", True)]


def test_node_beyond_the_pool_size_is_not_a_cloud_node(db):
    # a100-eu has 4 nodes: a100-eu-4 is not one of them.
    assert audit(config(), [record(18, "a100-eu-4", T0 + 60, T0 + 1800, account="medical")], db.instances()) == []


def test_cloud_node_without_an_instance_at_that_time_is_a_breach(db):
    instance(db, "a100-eu-2", "lab-de", T0, T0 + 600)
    # ran after that instance was gone
    p = one(audit(config(), [record(19, "a100-eu-2", T0 + 1200, T0 + 1800, account="medical")], db.instances()))
    assert not p.ok
    assert (p.provider, p.region, p.country) == ("?", "?", "?")
    assert p.why == "no instance recorded for this node at that time"
    # never had any instance at all
    p = one(audit(config(), [record(20, "a100-eu-3", T0 + 60, T0 + 120, account="medical")], db.instances()))
    assert not p.ok and p.why == "no instance recorded for this node at that time"


def test_failed_launch_does_not_cover_a_job(db):
    failed_launch(db, "a100-eu-0", "lab-de", T0)
    p = one(audit(config(), [record(21, "a100-eu-0", T0, T0 + 1, account="medical")], db.instances()))
    assert not p.ok and p.why == "no instance recorded for this node at that time"


def test_consecutive_instances_of_one_node_are_told_apart_by_time(db):
    instance(db, "a100-eu-0", "lab-de", T0, T0 + 1000)
    instance(db, "a100-eu-0", "lab-nl", T0 + 1100, T0 + 2000)
    assert len(db.instances()) == 2
    recs = [record(22, "a100-eu-0", T0 + 100, T0 + 900, account="medical"),
            record(23, "a100-eu-0", T0 + 1200, T0 + 1900, account="medical")]
    placements = audit(config(), recs, db.instances())
    assert [(p.job, p.region, p.ok) for p in placements] == [("22", "lab-de", True), ("23", "lab-nl", False)]
    # Same rows, the other order of jobs: still each job with its own instance.
    placements = audit(config(), list(reversed(recs)), db.instances())
    assert [(p.job, p.region, p.ok) for p in placements] == [("23", "lab-nl", False), ("22", "lab-de", True)]


def test_second_instance_still_running_covers_a_running_job(db):
    instance(db, "a100-eu-0", "lab-nl", T0, T0 + 1000)
    instance(db, "a100-eu-0", "lab-de", T0 + 1100)          # still up
    rec = record(24, "a100-eu-0", T0 + 1200, None, account="medical")   # still running
    p = one(audit(config(), [rec], db.instances()))
    assert p.ok and p.region == "lab-de"


def test_multi_node_hostlist_is_expanded(db):
    instance(db, "a100-eu-0", "lab-de", T0, T0 + 3600)
    instance(db, "a100-eu-1", "lab-nl", T0, T0 + 3600)
    instance(db, "a100-eu-2", "lab-de", T0, T0 + 3600)
    rec = record(25, "a100-eu-[0-2]", T0 + 60, T0 + 1800, account="medical")
    placements = audit(config(), [rec], db.instances())
    assert [(p.node, p.region, p.country, p.ok) for p in placements] == [
        ("a100-eu-0", "lab-de", "DE", True), ("a100-eu-1", "lab-nl", "NL", False), ("a100-eu-2", "lab-de", "DE", True)]
    assert {p.job for p in placements} == {"25"}


def test_jobs_that_never_started_are_skipped(db):
    instance(db, "a100-eu-0", "lab-nl", T0, T0 + 3600)
    never = AccountingRecord(job_id=26, job_id_str="26", array_job_id=None, array_task_id=None, name="x",
                             user="alice", account="medical", partition="gpu", cluster="hpc1", state="CANCELLED",
                             nodes="", start=None, end=None)
    assert audit(config(), [never], db.instances()) == []
