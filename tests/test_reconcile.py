"""Reconcile on a real state DB (SQLite in tmp_path), with a cloud and a Slurm whose views the test sets.

Each rule is checked with what it must do and with the case where it must do nothing; then the
rebuild of a lost DB; then a property over random views: reconcile never launches, never
terminates the instance a running node is recorded on, and a second pass finds nothing more to
terminate or adopt.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from configs import config_dict, pool, region
from fakes_reconcile import ListedProvider, NodeSlurm, node
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slurm_bridge import nodestate, power
from slurm_bridge.config import parse_config
from slurm_bridge.errors import SlurmError
from slurm_bridge.providers.base import Failure, FailureKind, Instance, ProviderError
from slurm_bridge.reconcile import (
    ACTION_TYPES,
    STUCK_MARGIN_S,
    Adopt,
    FixFeatures,
    LaunchLost,
    Orphan,
    RecordLaunch,
    StuckPoweringUp,
    StuckTerminating,
    Vanished,
    gather,
    plan,
    reconcile,
)
from slurm_bridge.state import StateDB

NOW = 1_700_000_000.0
GRACE, RT, ST = 300, 600, 120      # orphan_grace_s, resume_timeout, suspend_timeout
NODES = [f"a100-{i}" for i in range(4)]
VANISH_TEXT = "slurm-bridge: instance vanished (spot preemption or deleted)"


def make_cfg():
    data = config_dict(zones={"de": ["DE"], "eu": "EU", "any": "*"},
                       pools=[pool("a100", zone="eu", itype="t1", size=4)],
                       # lab-nl has no price for t1: an instance adopted there has an unknown price.
                       regions=[region("lab-de", "DE", {"t1": 2.0}), region("lab-nl", "NL", {"t9": 1.0})])
    data["slurm"].update(resume_timeout=RT, suspend_timeout=ST)
    data["policy"] = {"orphan_grace_s": GRACE}
    return parse_config(data)


CFG = make_cfg()


def feats(name: str, country: str | None = None) -> list[str]:
    return nodestate.running_features(CFG, name, country) if country else nodestate.pool_wide_features(CFG, name)


def up(name: str, country: str = "DE", state: str = "ALLOCATED", **kw):
    return node(name, state, features=feats(name, country), **kw)


def idle_down(name: str):
    return node(name, "IDLE", "POWERED_DOWN", features=feats(name))


def inst(iid: str, node_name: str, *, region: str = "lab-de", state: str = "running", age: float | None = 1000,
         tags: dict | None = None) -> Instance:
    return Instance(iid, node_name, region, state, address="10.1.0.9", instance_type="t1", cluster="hpc1",
                    launched_at=None if age is None else NOW - age, tags=tags or {})


class Env:
    def __init__(self, tmp_path: Path):
        self.path = tmp_path / "state"
        self.db = StateDB.open(self.path)
        self.cloud = ListedProvider()
        self.slurm = NodeSlurm([idle_down(n) for n in NODES])
        self._tokens = 0

    @property
    def providers(self):
        return {"local": self.cloud}

    def row(self, node_name: str, *, iid: str | None = None, state: str = "running", region: str = "lab-de",
            age: float = 1000, updated_age: float | None = None, token: str | None = None,
            request_id: int | None = None) -> int:
        self._tokens += 1
        rid = self.db.begin_launch(node=node_name, pool="a100", provider="local", region=region, zone=None,
                                   instance_type="t1", price_per_hour=2.0, spot=False, job_ids=[7],
                                   request_id=request_id, client_token=token or f"tok-{self._tokens}",
                                   now=NOW - age)
        if iid:
            self.db.launched(rid, iid, now=NOW - age)
        if state != "launching":
            self.db.db["instances"].update(rid, {"state": state, "updated_at": NOW - (updated_age or age),
                                                 "running_at": NOW - age})
        return rid

    def plan(self, now: float = NOW):
        return plan(CFG, gather(CFG, self.db, self.slurm, self.providers, now), now)

    def run(self, now: float = NOW):
        return reconcile(CFG, self.db, self.slurm, self.providers, now=now)


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    yield e
    e.db.close()


def kinds(actions) -> list[str]:
    return [a.kind for a in actions]


# --- 1. adopt -----------------------------------------------------------------------------

def test_adopts_an_unknown_live_instance_with_the_offer_price(env):
    env.slurm.set(up("a100-1"))
    env.cloud.add(inst("i-1", "a100-1", age=50))
    report = env.run()
    assert report.counts["adopt"] == 1 and report.ok
    row = env.db.active_for_node("a100-1")
    assert (row.instance_id, row.provider, row.region, row.state, row.pool) == ("i-1", "local", "lab-de", "running", "a100")
    assert (row.price_per_hour, row.instance_type, row.launched_at, row.address) == (2.0, "t1", NOW - 50, "10.1.0.9")
    [ev] = env.db.events("adopted")
    assert ev["node"] == "a100-1" and ev["data"]["instance_id"] == "i-1" and ev["data"]["price_per_hour"] == 2.0
    assert env.db.events("price_unknown") == []
    assert env.cloud.calls == [] and env.cloud.terminated == []


def test_adopt_with_unknown_price_records_zero_and_says_so(env):
    env.slurm.set(up("a100-2", "NL"))
    env.cloud.add(inst("i-nl", "a100-2", region="lab-nl"))
    env.run()
    row = env.db.active_for_node("a100-2")
    assert row.price_per_hour == 0.0 and row.region == "lab-nl"
    [ev] = env.db.events("price_unknown")
    assert ev["node"] == "a100-2" and ev["data"]["region"] == "lab-nl" and ev["data"]["instance_type"] == "t1"


def test_a_recorded_instance_is_not_adopted_again(env):
    env.slurm.set(up("a100-0"))
    env.row("a100-0", iid="i-0")
    env.cloud.add(inst("i-0", "a100-0"))
    assert env.plan() == []


def test_adopts_the_instance_slurm_was_told_about_and_orphans_the_old_duplicate(env):
    env.slurm.set(up("a100-0", comment="local/lab-de/i-a"))
    env.cloud.add(inst("i-a", "a100-0", age=5000), inst("i-b", "a100-0", age=400))
    actions = env.plan()
    assert [(type(a), a.instance_id) for a in actions] == [(Adopt, "i-a"), (Orphan, "i-b")]
    assert actions[1].reason == "node has another instance"


# --- 2. orphans ---------------------------------------------------------------------------

def test_old_instance_of_a_powered_down_node_is_terminated_and_closed(env):
    rid = env.row("a100-3", iid="i-3", age=GRACE + 1)
    env.cloud.add(inst("i-3", "a100-3", age=GRACE + 1))
    report = env.run()
    assert report.counts["orphan"] == 1 and report.errors == []
    assert env.cloud.terminated == [("lab-de", ("i-3",))]
    assert env.db.get_instance(rid).state == "terminated" and env.db.get_instance(rid).terminated_at == NOW
    [ev] = env.db.events("orphan_terminated")
    assert ev["node"] == "a100-3" and ev["data"] == {
        "row_id": rid, "provider": "local", "region": "lab-de", "instance_id": "i-3",
        "reason": "node is powered down", "age_s": GRACE + 1.0, "record": None}


def test_rowless_orphan_of_a_pool_node_goes_in_the_ledger_and_stray_node_is_terminated(env):
    env.cloud.add(inst("i-pd", "a100-1", age=4000), inst("i-x", "gpu-7", age=GRACE + 5), inst("i-untagged", "", age=9000))
    env.run()
    assert sorted(ids for _, ids in env.cloud.terminated) == [("i-pd",), ("i-untagged",), ("i-x",)]
    ledger = env.db.find_by_instance_id("local", "i-pd")
    assert (ledger.state, ledger.launched_at, ledger.terminated_at, ledger.node) == ("terminated", NOW - 4000, NOW, "a100-1")
    assert env.db.find_by_instance_id("local", "i-x") is None      # no pool: nothing to put in a row
    reasons = sorted(e["data"]["reason"] for e in env.db.events("orphan_terminated"))
    assert reasons == ["node is in no pool", "node is in no pool", "node is powered down"]


@pytest.mark.parametrize("state,flags,reason,why", [
    ("DOWN", ("POWERING_DOWN",), "slurm-bridge: no region could launch", "node is being powered down"),
    ("IDLE", ("POWERING_DOWN",), "", "node is being powered down"),
    ("DOWN", (), "slurm-bridge: no region could launch", "node is down after a failed launch"),
    ("DOWN", (), "ResumeTimeout reached", "node is down after a failed launch"),
])
def test_a_late_instance_of_a_node_slurm_is_giving_up_is_an_orphan_not_adopted(env, state, flags, reason, why):
    """A launch that timed out can still make its instance later (a stalled GCP operation). If the
    node is then down after that failure, or powering down, the instance is not adopted (nobody
    would suspend it: a node kept DOWN is never powered down); after the grace it is terminated."""
    env.slurm.set(node("a100-0", state, *flags, reason=reason, features=feats("a100-0")))
    env.cloud.add(inst("i-late", "a100-0", age=GRACE - 1))
    assert env.plan() == [], "young: a resume may still be racing the view"
    env.cloud.listed.clear()
    env.cloud.add(inst("i-late", "a100-0", age=GRACE + 1))
    [orphan] = env.plan()
    assert isinstance(orphan, Orphan) and orphan.instance_id == "i-late" and orphan.reason == why


def test_an_instance_of_a_node_an_admin_set_down_is_still_adopted(env):
    env.slurm.set(node("a100-0", "DOWN", reason="bad GPU, ticket 42", features=feats("a100-0")))
    env.cloud.add(inst("i-0", "a100-0", age=GRACE + 1))
    assert [type(a) for a in env.plan()] == [Adopt]


def test_young_orphans_are_left_alone(env):
    env.row("a100-0", iid="i-0", age=GRACE - 1)
    env.cloud.add(inst("i-0", "a100-0", age=GRACE - 1), inst("i-1", "a100-1", age=GRACE),
                  inst("i-x", "gpu-7", age=10), inst("i-undated", "a100-2", age=None))
    assert env.plan() == []
    env.run()
    assert env.cloud.terminated == [] and env.db.events() == []


def test_instance_of_a_powering_up_node_is_no_orphan(env):
    env.slurm.set(node("a100-0", "IDLE", "POWERED_DOWN", "POWERING_UP"))
    env.row("a100-0", iid="i-0", state="launching", age=GRACE * 2)
    env.cloud.add(inst("i-0", "a100-0", age=GRACE * 2))
    assert not any(isinstance(a, Orphan) for a in env.plan())


def test_instance_the_db_records_as_terminated_is_terminated_again(env):
    rid = env.row("a100-0", iid="i-0")
    env.db.terminated(rid, now=NOW - 900)
    env.slurm.set(up("a100-0"))
    env.cloud.add(inst("i-0", "a100-0"))
    [orphan] = env.plan()
    assert (orphan.instance_id, orphan.reason, orphan.record) == ("i-0", "the DB records it as gone", None)


# --- provider and Slurm outages -------------------------------------------------------------

def test_provider_outage_concludes_nothing_and_other_providers_go_on(env):
    env.cloud.outage = ProviderError(Failure(FailureKind.TRANSIENT, "503 from the API"))
    rid = env.row("a100-0", iid="i-0")                 # running, node up: would look vanished
    env.row("a100-3", iid="i-3", state="terminating", updated_age=ST * 5)
    env.slurm.set(up("a100-0"), up("a100-1"))
    spare = ListedProvider([inst("s-1", "a100-1", region="r1")], name="spare")
    report = reconcile(CFG, env.db, env.slurm, {"local": env.cloud, "spare": spare}, now=NOW)
    assert report.provider_errors == {"local": "ProviderError: transient: 503 from the API"}
    # The spare cloud's instance is adopted; its region has no known country, so the node loses
    # every res_* feature (no zone-bound job may land there). Nothing touches the local rows.
    assert report.counts == {**dict.fromkeys(report.counts, 0), "adopt": 1, "fix_features": 1}
    assert env.db.get_instance(rid).state == "running"
    shape = nodestate.base_features(CFG, "a100-1")
    assert env.slurm.updates == [(("a100-1",), {"available_features": shape, "active_features": shape})]
    assert shape == ["cloud", "a100"]          # pool a100's name and its GPU type: one feature, listed once
    assert env.db.find_by_instance_id("spare", "s-1").price_per_hour == 0.0


def test_slurm_outage_leaves_node_repairs_but_still_adopts(env):
    env.slurm.outage = SlurmError("sinfo --json: connection refused")
    env.row("a100-0", iid="i-gone")
    env.cloud.add(inst("i-1", "a100-1"))
    report = env.run()
    assert report.slurm_error == "SlurmError: sinfo --json: connection refused"
    assert report.counts["adopt"] == 1 and report.counts["vanished"] == 0
    assert env.db.active_for_node("a100-0").state == "running"


# --- 3. vanished --------------------------------------------------------------------------

def test_vanished_instance_closes_row_and_fails_the_up_node(env):
    env.slurm.set(up("a100-0"))
    rid = env.row("a100-0", iid="i-0")
    report = env.run()
    assert report.counts["vanished"] == 1
    assert env.slurm.updates == [(("a100-0",), {"state": "DOWN", "reason": VANISH_TEXT}),
                                 (("a100-0",), {"state": "POWER_DOWN_FORCE"})]
    row = env.db.get_instance(rid)
    assert (row.state, row.terminated_at) == ("terminated", NOW)
    [ev] = env.db.events("vanished")
    assert ev["data"]["instance_id"] == "i-0" and ev["data"]["fail_node"] is True


def test_listed_as_terminated_on_a_powered_down_node_only_closes_the_row(env):
    rid = env.row("a100-1", iid="i-1")
    env.cloud.add(inst("i-1", "a100-1", state="terminated"))
    env.run()
    assert env.db.get_instance(rid).state == "terminated" and env.slurm.updates == []


def test_a_row_on_a_machine_the_provider_could_not_read_is_not_vanished(env):
    """An SSH host that does not answer is listed "unknown" under its host id ("grp/h1"), which
    covers every launch on it ("grp/h1/<life>"): that row's instance cannot be seen, so it is not
    concluded gone. A row on another host, not listed, is."""
    env.slurm.set(up("a100-0"), up("a100-1"))
    covered = env.row("a100-0", iid="grp/h1/0123456789ab")
    other = env.row("a100-1", iid="grp/h2/0123456789ab")
    env.cloud.add(inst("grp/h1", "", state="unknown"), inst("grp/h10", "", state="unknown"))
    assert [(type(a), a.row_id) for a in env.plan()] == [(Vanished, other)]
    env.run()
    assert env.db.get_instance(covered).state == "running"


def test_young_launching_row_is_not_vanished_but_an_old_one_is(env):
    young = env.row("a100-0", iid="i-0", state="launching", age=RT - 1)
    old = env.row("a100-1", iid="i-1", state="launching", age=RT + 1)
    assert [(type(a), a.row_id) for a in env.plan()] == [(Vanished, old)]
    env.run()
    assert [env.db.get_instance(r).state for r in (young, old)] == ["launching", "terminated"]


def test_failed_slurm_update_keeps_the_row_for_the_next_cycle(env):
    env.slurm.set(up("a100-0"))
    rid = env.row("a100-0", iid="i-0")
    env.slurm.fail_updates = SlurmError("scontrol update: timed out")
    report = env.run()
    assert report.errors == [{"kind": "vanished", "node": "a100-0", "error": "SlurmError: scontrol update: timed out"}]
    assert env.db.get_instance(rid).state == "running"


def test_node_failed_for_a_vanished_instance_loses_its_other_old_instances(env):
    env.slurm.set(up("a100-0"))
    vanished = env.row("a100-0", iid="i-gone")
    working = env.db.add_request("resume", "a100-0", ["a100-0"], None, now=NOW - 30)
    env.row("a100-0", state="launching", request_id=working, age=30)
    env.cloud.add(inst("i-stray", "a100-0", region="lab-nl", age=GRACE + 1))
    actions = env.plan()
    assert [(type(a), a.node) for a in actions] == [(Vanished, "a100-0"), (Orphan, "a100-0")]
    assert actions[0].row_id == vanished and actions[0].fail_node
    assert (actions[1].instance_id, actions[1].reason) == ("i-stray", "node is being powered down")


# --- 4. return to pool --------------------------------------------------------------------

def test_down_powered_down_nodes_return_to_the_pool(env):
    env.slurm.set(node("a100-0", "DOWN", "POWERED_DOWN", reason="ResumeTimeout reached"),
                  node("a100-1", "DOWN", "POWERED_DOWN", "DRAIN", reason="slurm-bridge: no region could launch"),
                  node("a100-2", "DOWN", "POWERED_DOWN", "DRAIN", reason="bad GPU, ticket 4411"),
                  node("a100-3", "DOWN", "POWERED_DOWN", reason="ResumeTimeout reached"))
    env.cloud.add(inst("i-3", "a100-3", age=10))       # still has an instance: not yet
    report = env.run()
    assert env.slurm.states("RESUME") == [("a100-0",), ("a100-1",)]
    assert report.counts["return_to_pool"] == 2
    assert env.slurm.table["a100-0"].state == "IDLE" and env.slurm.table["a100-2"].state == "DOWN"
    assert [e["node"] for e in env.db.events("returned_to_pool")] == ["a100-0", "a100-1"]


# --- 5. stuck powering up -----------------------------------------------------------------

def test_stuck_powering_up_is_powered_down_only_with_an_old_request(env):
    for n in NODES[:3]:
        env.slurm.set(node(n, "IDLE", "POWERING_UP"))
    env.db.add_request("resume", "a100-[0-1]", ["a100-0", "a100-1"], None, now=NOW - RT - STUCK_MARGIN_S - 1)
    env.db.add_request("power_up", "a100-1", ["a100-1"], None, now=NOW - 60)      # a100-1 was resumed again
    # a100-2 has no request at all: we do not know since when, so nothing is done.
    actions = env.plan()
    assert actions == [StuckPoweringUp("a100-0", NOW - RT - STUCK_MARGIN_S - 1, RT + STUCK_MARGIN_S + 1)]
    env.run()
    assert env.slurm.states("POWER_DOWN_FORCE") == [("a100-0",)]


# --- 6. stuck terminating -----------------------------------------------------------------

def test_stuck_terminating_rows_are_terminated_again_and_closed(env):
    env.slurm.set(up("a100-1"))
    with_id = env.row("a100-0", iid="i-0", state="terminating", updated_age=ST + 1)
    by_tag = env.row("a100-1", state="terminating", updated_age=ST + 1)
    young = env.row("a100-3", iid="i-3", state="terminating", updated_age=ST - 1)
    claimed = env.row("a100-1", iid="i-2", age=100)     # a100-1 was resumed again since: spare it
    env.cloud.add(inst("i-0", "a100-0"), inst("i-1", "a100-1"), inst("i-3", "a100-3"), inst("i-2", "a100-1", age=100))
    actions = env.plan()
    assert actions == [StuckTerminating("a100-0", with_id, "local", "lab-de", ("i-0",), False),
                       StuckTerminating("a100-1", by_tag, "local", "lab-de", ("i-1",), True)]
    env.run()
    assert sorted(env.cloud.terminated) == [("lab-de", ("i-0",)), ("lab-de", ("i-1",))]
    assert [env.db.get_instance(r).state for r in (with_id, by_tag, young, claimed)] == [
        "terminated", "terminated", "terminating", "running"]


def test_stuck_terminating_by_tag_spares_an_instance_of_another_launch(env):
    rid = env.row("a100-0", state="terminating", updated_age=ST + 1, token="sb-1-a100-0")
    env.cloud.add(inst("i-new", "a100-0", tags={"slurm-bridge:token": "sb-9-a100-0"}, age=10))
    assert env.plan() == [StuckTerminating("a100-0", rid, "local", "lab-de", (), True)]


# --- 7. features --------------------------------------------------------------------------

def test_features_reset_by_reconfigure_are_narrowed_back(env, caplog):
    env.slurm.set(node("a100-0", "ALLOCATED", features=feats("a100-0")),      # pool-wide: res_de too
                  up("a100-1", "NL"))
    env.row("a100-0", iid="i-0", region="lab-nl")
    env.row("a100-1", iid="i-1", region="lab-nl")
    env.cloud.add(inst("i-0", "a100-0", region="lab-nl"), inst("i-1", "a100-1", region="lab-nl"))
    want = tuple(feats("a100-0", "NL"))
    assert "res_de" not in want and "res_eu" in want
    assert env.plan() == [FixFeatures("a100-0", "local", "lab-nl", "NL", want, tuple(feats("a100-0")))]
    with caplog.at_level("WARNING", logger="slurm_bridge.reconcile"):
        env.run()
    assert env.slurm.updates == [(("a100-0",), {"available_features": list(want), "active_features": list(want)})]
    assert "a100-0: features" in caplog.text
    assert env.db.events("features_repaired")[0]["data"]["country"] == "NL"


# --- 8. launches that lost their worker -----------------------------------------------------

def test_lost_launch_is_recorded_from_its_token_tag(env):
    req = env.db.add_request("resume", "a100-0", ["a100-0"], None, now=NOW - 50)
    env.db.finish_request(req, "worker killed", now=NOW - 40)
    rid = env.row("a100-0", state="launching", token="sb-5-a100-0", request_id=req, age=50)
    env.slurm.set(node("a100-0", "IDLE", "POWERING_UP", features=feats("a100-0")))
    env.cloud.add(inst("i-found", "a100-0", tags={"slurm-bridge:token": "sb-5-a100-0"}, age=45))
    assert env.plan() == [RecordLaunch("a100-0", rid, "local", "i-found", "10.1.0.9", None)]
    env.run()
    row = env.db.get_instance(rid)
    assert (row.instance_id, row.state, row.address) == ("i-found", "launching", "10.1.0.9")
    assert env.db.events("adopted") == []


def test_recovered_launch_of_a_node_powered_down_since_is_also_an_orphan(env):
    rid = env.row("a100-1", state="launching", token="sb-6-a100-1", age=RT * 3)
    env.cloud.add(inst("i-late", "a100-1", tags={"slurm-bridge:token": "sb-6-a100-1"}, age=RT * 3))
    actions = env.plan()
    assert [(type(a), a.row_id) for a in actions] == [(RecordLaunch, rid), (Orphan, rid)]
    env.run()
    assert env.cloud.terminated == [("lab-de", ("i-late",))]
    row = env.db.get_instance(rid)
    assert (row.instance_id, row.state) == ("i-late", "terminated")


def test_gcp_instance_is_matched_by_the_token_digest_it_shows(env):
    # GCP labels a bulkInsert batch alike, so its provider shows each instance's token digest instead.
    from slurm_bridge.providers.base import TOKEN_DIGEST_TAG, token_digest
    token = "sb-3-a100-0-gcp-europe-west3-0"
    env.db.finish_request(env.db.add_request("resume", "a100-0", ["a100-0"], None, now=NOW - 50), now=NOW - 1)
    gcp = ListedProvider([inst(f"europe-west3-a/hpc1-a100-0-{token_digest(token)}", "a100-0", region="europe-west3",
                               tags={TOKEN_DIGEST_TAG: token_digest(token)}),
                          inst("europe-west3-b/hpc1-a100-0-0badf00d", "a100-0", region="europe-west3", age=10,
                               tags={TOKEN_DIGEST_TAG: "0badf00d"})],
                         name="gcp")
    rid = env.db.begin_launch(node="a100-0", pool="a100", provider="gcp", region="europe-west3", zone=None,
                              instance_type="a2", price_per_hour=3.0, spot=False, job_ids=[], request_id=1,
                              client_token=token, now=NOW - 50)
    env.slurm.set(node("a100-0", "IDLE", "POWERING_UP", features=feats("a100-0")))
    actions = plan(CFG, gather(CFG, env.db, env.slurm, {"gcp": gcp}, NOW), NOW)
    # The other instance's name carries another token: not this row's, and too young to be an orphan.
    assert [type(a) for a in actions] == [RecordLaunch]
    assert actions[0].row_id == rid and actions[0].instance_id.endswith(token_digest(token))


def test_launch_in_progress_is_left_alone_and_an_old_lost_one_fails(env):
    working = env.db.add_request("resume", "a100-0", ["a100-0"], None, now=NOW - 30)
    busy = env.row("a100-0", state="launching", request_id=working, age=30)
    env.cloud.add(inst("i-0", "a100-0", age=5))      # maybe its instance: token not readable here
    young = env.row("a100-1", state="launching", age=RT - 1)
    lost = env.row("a100-2", state="launching", age=RT + 1)
    assert env.plan() == [LaunchLost("a100-2", lost, "local", RT + 1.0)]
    env.run()
    assert [env.db.get_instance(r).state for r in (busy, young, lost)] == ["launching", "launching", "failed"]
    assert env.db.get_instance(lost).error == "launch worker lost: no instance carries its client token"


# --- apply: independence and the report -----------------------------------------------------

def test_one_failing_action_does_not_stop_the_others(env):
    class Flaky(ListedProvider):
        def terminate(self, region, instance_ids):
            if "i-bad" in instance_ids:
                raise ProviderError(Failure(FailureKind.TRANSIENT, "timeout"))
            super().terminate(region, instance_ids)

    env.cloud = Flaky([inst("i-bad", "a100-0"), inst("i-ok", "a100-1")])
    env.slurm.set(node("a100-3", "DOWN", "POWERED_DOWN", reason="ResumeTimeout reached"))
    report = env.run()
    assert report.errors == [{"kind": "orphan", "node": "a100-0", "error": "ProviderError: transient: timeout"}]
    assert report.counts["orphan"] == 1 and report.counts["return_to_pool"] == 1
    assert env.cloud.live_ids() == {"i-bad"}
    assert json.loads(report.to_json())["counts"]["orphan"] == 1
    assert report.duration_s >= 0 and report.started_at == NOW and not report.ok


# --- the lost DB ----------------------------------------------------------------------------

def test_lost_db_is_rebuilt_from_tags_exactly_once(env):
    for i, n in enumerate(NODES[:3]):
        env.slurm.set(up(n, "NL" if i == 2 else "DE"))
        env.cloud.add(inst(f"i-{i}", n, region="lab-nl" if i == 2 else "lab-de", age=100 * (i + 1)))
    env.cloud.add(inst("i-old", "a100-3", state="terminated"))
    env.db.close()
    for f in env.path.glob("state.db*"):
        f.unlink()
    env.db = StateDB.open(env.path)
    assert env.db.active_instances() == []
    first = env.run()
    assert first.counts == {**dict.fromkeys(first.counts, 0), "adopt": 3}
    rows = {r.node: r for r in env.db.active_instances()}
    assert {n: (r.instance_id, r.region, r.price_per_hour) for n, r in rows.items()} == {
        "a100-0": ("i-0", "lab-de", 2.0), "a100-1": ("i-1", "lab-de", 2.0), "a100-2": ("i-2", "lab-nl", 0.0)}
    second = env.run()
    assert second.counts == dict.fromkeys(second.counts, 0) and second.ok
    assert len(env.db.active_instances()) == 3 and env.cloud.terminated == [] and env.cloud.calls == []


# --- the property ---------------------------------------------------------------------------

SLURM_STATES = {
    "idle~": lambda n: idle_down(n),
    "down~": lambda n: node(n, "DOWN", "POWERED_DOWN", reason="ResumeTimeout reached"),
    "drained~": lambda n: node(n, "DOWN", "POWERED_DOWN", "DRAIN", reason="admin"),
    "powering": lambda n: node(n, "IDLE", "POWERING_UP"),
    "up": lambda n: up(n),
    "up-nl": lambda n: up(n, "NL"),
    "reset": lambda n: node(n, "MIXED", features=feats(n)),
}
AGES = [5.0, GRACE - 1.0, GRACE + 1.0, RT + STUCK_MARGIN_S + 5.0, 20_000.0]


@st.composite
def worlds(draw):
    slurm = {n: draw(st.sampled_from(sorted(SLURM_STATES) + ["missing"])) for n in NODES}
    owners = st.sampled_from(NODES + ["gpu-9", ""])
    instances = draw(st.lists(st.tuples(owners, st.sampled_from(["lab-de", "lab-nl"]),
                                        st.sampled_from(["pending", "running", "running", "stopping", "terminated"]),
                                        st.sampled_from(AGES + [None]), st.booleans()), max_size=6))
    rows = draw(st.lists(st.tuples(st.sampled_from(NODES), st.sampled_from(["launching", "running", "terminating", "terminated"]),
                                   st.one_of(st.none(), st.integers(0, 7)),      # index into instances, or gone
                                   st.sampled_from(AGES), st.sampled_from(["none", "working", "done"])),
                         max_size=5))
    requests = {n: draw(st.sampled_from([None] + AGES)) for n in NODES}
    outage = st.sampled_from([False, False, False, False, True])     # an outage in about 1 of 5
    return slurm, instances, rows, requests, draw(outage), draw(outage)


def build(tmp: Path, world):
    slurm_states, instances, rows, requests, cloud_down, slurm_down = world
    e = Env(tmp)
    e.slurm = NodeSlurm([SLURM_STATES[s](n) for n, s in slurm_states.items() if s != "missing"])
    listed = [inst(f"i-{k}", n, region=r, state=s, age=a, tags={"slurm-bridge:token": f"tok-{k}"} if tagged else None)
              for k, (n, r, s, a, tagged) in enumerate(instances)]
    e.cloud.add(*listed)
    for n, age in requests.items():
        if age is not None:
            e.db.add_request("resume", n, [n], None, now=NOW - age)
    used: set[int] = set()
    for j, (n, state, ref, age, req) in enumerate(rows):
        ref_inst = listed[ref] if ref is not None and ref < len(listed) and ref not in used else None
        if ref_inst is not None:
            used.add(ref)
        # A row knows its instance id, unless its launch never recorded one (then only the token
        # ties them); a running row always has one. i-gone-J: an instance the cloud no longer has.
        no_id = state not in ("running", "terminated") and j % 2 == 0
        iid = None if no_id else ref_inst.instance_id if ref_inst else f"i-gone-{j}"
        request_id = None
        if req != "none":
            request_id = e.db.add_request("resume", n, [n], None, now=NOW - age)
            if req == "done":
                e.db.finish_request(request_id, now=NOW - age + 1)
        owner = ref_inst.node if ref_inst is not None and ref_inst.node in NODES else n
        rid = e.row(owner, iid=iid, state="running" if state == "terminated" else state, age=age,
                    region=ref_inst.region if ref_inst else "lab-de",
                    token=f"tok-{ref}" if no_id and ref_inst is not None else None, request_id=request_id)
        if state == "terminated":          # closed by an earlier pass, whatever the cloud lists now
            e.db.terminated(rid, now=NOW - age / 2)
    # Slurm runs the SuspendProgram on the nodes it powers down: model it with the real code.
    e.slurm.on_power_down = lambda names: power.terminate_nodes(CFG, e.db, e.providers, names, clock=lambda: NOW)
    e.cloud.outage = ProviderError(Failure(FailureKind.TRANSIENT, "down")) if cloud_down else None
    e.slurm.outage = SlurmError("down") if slurm_down else None
    return e


TERMINATING = (Orphan, StuckTerminating)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(worlds())
def test_reconcile_never_launches_spares_running_nodes_and_converges(world):
    with tempfile.TemporaryDirectory() as tmp:
        e = build(Path(tmp), world)
        try:
            views = gather(CFG, e.db, e.slurm, e.providers, NOW)
            first = plan(CFG, views, NOW)
            assert all(isinstance(a, ACTION_TYPES) for a in first)
            running = {(r.node, r.instance_id) for r in views.rows if r.state == "running"}
            for a in first:
                ids = a.instance_ids if isinstance(a, StuckTerminating) else (a.instance_id,) if isinstance(a, Orphan) else ()
                for iid in ids:
                    n = views.nodes.get(a.node)
                    node_up = n is not None and not n.powered_down
                    assert not (node_up and (a.node, iid) in running), f"{a} kills a running node's instance"
            e.run()
            again = plan(CFG, gather(CFG, e.db, e.slurm, e.providers, NOW), NOW)
            assert not [a for a in again if isinstance(a, (Adopt, *TERMINATING))], (first, again)
            assert e.cloud.calls == []       # the double's launch raises too: nothing ever launched
        finally:
            e.db.close()
