"""ResumeFailProgram: a node that never registered is released, its place blocked, the node returned.

A real state DB; the provider and Slurm are the doubles of fakes_reconcile.py (the lab's
test_elastic.py runs the real program after a real ResumeTimeout).
"""

from __future__ import annotations

from configs import build, pool, region
from fakes_reconcile import ListedProvider, NodeSlurm, node

from slurm_bridge import power
from slurm_bridge.providers.base import Instance
from slurm_bridge.state import StateDB


def test_a_node_that_never_registered_blocks_its_region_and_goes_back_to_the_pool(tmp_path):
    cfg = build(zones={"de": ["DE"]}, pools=[pool("p", zone="de")],
                regions=[region("lab-de", "DE", {"t1": 1.0}), region("lab-de2", "DE", {"t1": 2.0})])
    provider = ListedProvider([Instance("i-1", "p-0", "lab-de", "running", "10.0.0.7", cluster=cfg.cluster.name)])
    slurm = NodeSlurm([node("p-0", "DOWN", "POWERED_DOWN", reason="ResumeTimeout reached")])
    with StateDB.open(tmp_path / "state") as db:
        row = db.begin_launch(node="p-0", pool="p", provider="local", region="lab-de", zone=None, instance_type="t1",
                              price_per_hour=1.0, spot=False, job_ids=[7], request_id=None, client_token="t-1")
        db.launched(row, "i-1", "10.0.0.7")
        assert power.resume_fail(cfg, db, slurm, {"local": provider}, ["p-0"])
        [block] = db.active_blocks()
        assert (block.provider, block.region, block.scope) == ("local", "lab-de", "region")
        assert "did not register within ResumeTimeout" in block.reason
        assert db.is_blocked("local", "lab-de2") is None            # only where it failed
        assert db.get_instance(row).state == "terminated"
    assert provider.live_ids() == set()
    assert slurm.states("RESUME") == [("p-0",)]                      # back in the pool
