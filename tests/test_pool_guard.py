"""The pool guard: a burst partition is closed while no pool in it can launch, and opened again after,
across daemon restarts (pool_guard.py). Real state DB; Slurm is a double recording partition updates
(the lab test of the daemon drives scontrol for real)."""

from __future__ import annotations

from pathlib import Path

import pytest

from configs import build, pool, region
from slurm_bridge.errors import SlurmError
from slurm_bridge.pool_guard import PoolGuard, closed
from slurm_bridge.state import StateDB


class PartitionSlurm:
    def __init__(self, states: dict[str, str]):
        self.states, self.updates, self.fail = dict(states), [], 0

    def update_partition(self, name: str, *, state: str) -> None:
        self.updates.append((name, state))
        if self.fail:
            self.fail -= 1
            raise SlurmError(f"scontrol update partitionname={name}: slurmctld not responding")
        self.states[name] = state


CFG = build(zones={"any": "*"}, regions=[region("r1", "DE", {"t1": 1.0}), region("r2", "NL", {"t1": 1.0, "t2": 2.0})],
            pools=[pool("a"), pool("b", itype="t2")])


def blocked_all(provider, region):
    return "blocked by capacity until later"


def blocked_none(provider, region):
    return None


@pytest.fixture
def db(tmp_path: Path):
    with StateDB.open(tmp_path / "state") as db:
        yield db


def cycle(db, slurm, blocked, guard=None):
    guard = guard or PoolGuard()
    return guard, guard.check(CFG, db, slurm, blocked, None)


def test_closed_while_nothing_launches_then_opened(db):
    slurm = PartitionSlurm({"burst-a": "UP", "burst-b": "UP"})
    guard, acted = cycle(db, slurm, blocked_all)
    assert acted == {"burst-a": "DOWN", "burst-b": "DOWN"}
    assert closed(db) == {"burst-a", "burst-b"}
    _, again = cycle(db, slurm, blocked_all, guard)
    assert again == {}, "a closed partition is not closed again every cycle by the same process"
    _, opened = cycle(db, slurm, blocked_none, guard)
    assert opened == {"burst-a": "UP", "burst-b": "UP"}
    assert closed(db) == set() and slurm.states == {"burst-a": "UP", "burst-b": "UP"}


def test_a_restarted_daemon_opens_what_an_earlier_one_closed(db):
    slurm = PartitionSlurm({"burst-a": "UP", "burst-b": "UP"})
    cycle(db, slurm, blocked_all)
    assert slurm.states["burst-a"] == "DOWN"
    # The old daemon is gone; a new process knows only the DB. The block has expired.
    _, acted = cycle(db, slurm, blocked_none)
    assert acted == {"burst-a": "UP", "burst-b": "UP"}
    assert slurm.states == {"burst-a": "UP", "burst-b": "UP"}


def test_a_restart_reasserts_a_closure_it_may_not_have_finished(db):
    slurm = PartitionSlurm({"burst-a": "UP", "burst-b": "UP"})
    slurm.fail = 2         # the intent is recorded, scontrol fails: as if killed between the two
    cycle(db, slurm, blocked_all)
    assert closed(db) == {"burst-a", "burst-b"} and slurm.states["burst-a"] == "UP"
    _, acted = cycle(db, slurm, blocked_all)       # a new process
    assert acted == {"burst-a": "DOWN", "burst-b": "DOWN"}
    assert slurm.states == {"burst-a": "DOWN", "burst-b": "DOWN"}


def test_a_failed_update_is_tried_again_by_the_same_process(db):
    slurm = PartitionSlurm({"burst-a": "UP", "burst-b": "UP"})
    slurm.fail = 1
    guard, acted = cycle(db, slurm, blocked_all)
    assert acted == {"burst-b": "DOWN"}
    _, acted = cycle(db, slurm, blocked_all, guard)
    assert acted == {"burst-a": "DOWN"}


def test_a_partition_the_admin_set_down_is_left_down(db):
    slurm = PartitionSlurm({"burst-a": "DOWN", "burst-b": "UP"})
    _, acted = cycle(db, slurm, blocked_none)
    assert acted == {} and slurm.updates == [] and slurm.states["burst-a"] == "DOWN"


def test_a_pool_with_no_price_anywhere_is_closed_and_the_other_left_open(db):
    slurm = PartitionSlurm({"burst-a": "UP", "burst-b": "UP"})
    _, acted = cycle(db, slurm, lambda provider, region: "blocked" if region == "r2" else None)
    assert acted == {"burst-b": "DOWN"}, "b's t2 is priced only in r2, which is blocked; a launches in r1"
    assert slurm.states == {"burst-a": "UP", "burst-b": "DOWN"}
