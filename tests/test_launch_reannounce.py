"""The resume worker tells Slurm a node's address again when slurmctld lost it (a restart between our
update and its next state save): otherwise a job's steps cannot reach the node (issue 9).

A real state DB; Slurm is a double that answers node reads from a script, because a slurmctld that
forgets one update on cue cannot be arranged on the lab (test_restart_lab.py runs the real restart).
"""

from __future__ import annotations

from configs import build, pool, region
from fakes import RecordingSlurm

from slurm_bridge.errors import SlurmError
from slurm_bridge.launch import Launcher
from slurm_bridge.models import Node
from slurm_bridge.state import StateDB


def node(address: str, flags=("CLOUD",)) -> Node:
    return Node("p-0", "IDLE", frozenset(flags), (), (), address, "p-0", ("burst",))


class ForgetfulSlurm(RecordingSlurm):
    def __init__(self, answers):
        super().__init__()
        self.answers = list(answers)

    def node_details(self, names):
        self.detail_calls.append(tuple(names))
        answer = self.answers.pop(0) if self.answers else [node("10.0.0.7")]
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_a_lost_address_is_told_again_and_the_node_marked_running_only_once_it_is_right(tmp_path):
    cfg = build(zones={"de": ["DE"]}, pools=[pool("p", zone="de")], regions=[region("lab-de", "DE", {"t1": 1.0})])
    slurm = ForgetfulSlurm([SlurmError("slurmctld restarting: connection refused"),   # down for a moment
                            [node("p-0")],                                            # back, address lost
                            [node("10.0.0.7")]])
    with StateDB.open(tmp_path / "state") as db:
        row = db.begin_launch(node="p-0", pool="p", provider="local", region="lab-de", zone=None, instance_type="t1",
                              price_per_hour=1.0, spot=False, job_ids=[7], request_id=None, client_token="t-1")
        db.launched(row, "i-1", "10.0.0.7")
        launcher = Launcher(cfg, db, slurm, {}, sleep=lambda s: None)
        assert launcher.wait_registered(["p-0"], timeout=60) == []
        assert db.get_instance(row).state == "running"
    [(names, change)] = [u for u in slurm.updates if "address" in u[1]]
    assert names == ("p-0",) and change["address"] == "10.0.0.7" and change["comment"] == "local/lab-de/i-1"
    assert "res_de" in change["active_features"]          # the region's zones, not the pool's
    assert len(slurm.detail_calls) == 3
