"""SIGKILL at every crash point of the resume worker, the suspend and resume-fail programs and
reconcile, then what Slurm would do next and one reconcile: nothing lost (issue 9).

For each phase, the phase is first run once with SLURM_BRIDGE_CRASH_LOG to list the points it
passes (crashpoints.py: state DB writes, provider calls, Slurm updates); then, for each point N, a
fresh world is set up, the phase runs in a child process (tests/crash_child.py) with
SLURM_BRIDGE_CRASH_AT=N and dies there. The test then plays Slurm (ResumeTimeout: the node goes
down~ and ResumeFailProgram runs; SuspendTimeout: the node counts as powered down) and runs
reconcile twice. Whatever the point:

- no instance is alive for a powered-down node, and every row is closed;
- every instance the cloud ever started for the cluster has a row with its id (the ledger);
- no node got two instances from one resume;
- no node is left powering up or down.

AWS is real boto3 against a moto server of this test's own; Slurm's node table is a file-backed
double (crash_child.py says why).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from moto_server import GPU_TYPE, separate_moto
from slurm_bridge import power, reconcile
from slurm_bridge.config import load_config
from slurm_bridge.providers.registry import build
from slurm_bridge.state import StateDB

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from crash_child import LATER, NODES, FileSlurm  # noqa: E402

PHASES = ("resume", "resume-failover", "suspend", "resume-fail", "reconcile")
# CI kills at every EVERY-th point of each phase (and always the last); `make soak` at every one.
EVERY = int(os.environ.get("SLURM_BRIDGE_CRASH_EVERY", "4"))
_PROVIDERS: dict = {}     # one set of clients per AWS config: building boto3 clients is the slow part


DAEMON_POOL = """
[[pools]]
name = "h"
size = 1
zone = "ch"
cpus = 4
memory_mb = 16000
gpus = "a10g:1"
instance_types = {{ aws = "{GPU_TYPE}" }}
"""


def config_text(moto_cloud, work: Path, cluster: str, failover: bool, daemon: bool = False) -> str:
    subnets = ", ".join(f'"{r}" = [{", ".join(chr(34) + s + chr(34) for s in ids)}]'
                        for r, ids in moto_cloud.subnets.items() if r == "eu-central-1")
    # eu-west-2 has no launch template in the test's moto: a CONFIG failure, blocked, then the next region.
    regions = '["eu-west-2", "eu-central-1"]' if failover else '["eu-central-1"]'
    return f"""
[cluster]
name = "{cluster}"
state_dir = "{work}/state"
[slurm]
watch_partitions = ["gpu"]
resume_timeout = 300
[policy]
orphan_grace_s = 60
burst_after = 60
max_cloud_nodes = 2
[zones]
any = "*"
ch = ["CH"]
[[pools]]
name = "g"
size = 2
zone = "any"
cpus = 4
memory_mb = 16000
gpus = "a10g:1"
instance_types = {{ aws = "{GPU_TYPE}" }}
[providers.aws]
regions = {regions}
launch_template = "slurm-bridge"
endpoint_url = "{moto_cloud.url}"
subnets = {{ {subnets} }}
max_attempts = 1
[[prices.overrides]]
provider = "aws"
region = "eu-central-1"
instance_type = "{GPU_TYPE}"
ondemand = 2.0
[[prices.overrides]]
provider = "aws"
region = "eu-west-2"
instance_type = "{GPU_TYPE}"
ondemand = 1.0
""" + (DAEMON_POOL.format(GPU_TYPE=GPU_TYPE) if daemon else "")


def slurm_table(work: Path, flags: tuple[str, ...]) -> None:
    (work / "slurm.json").write_text(json.dumps([
        {"name": n, "state": "IDLE", "flags": ["CLOUD", *flags], "features": [], "address": n, "comment": "",
         "reason": ""} for n in NODES]))


def child(phase: str, work: Path, env: dict | None = None) -> int:
    done = subprocess.run([sys.executable, str(HERE / "crash_child.py"), phase, str(work)],
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120)
    if done.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"{phase} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.returncode


class World:
    def __init__(self, moto_cloud, root: Path, name: str, failover: bool, daemon: bool = False):
        self.moto, self.work, self.cluster = moto_cloud, root / name, name
        self.work.mkdir(parents=True)
        (self.work / "bridge.toml").write_text(config_text(moto_cloud, self.work, name, failover, daemon))
        self.cfg = load_config(self.work / "bridge.toml")
        key = (self.cfg.aws.regions, failover)
        if key not in _PROVIDERS:
            _PROVIDERS[key] = build(self.cfg)
        self.providers = _PROVIDERS[key]

    def slurm(self) -> FileSlurm:
        return FileSlurm(self.work / "slurm.json")

    def in_process(self, what) -> None:
        with StateDB.open(self.cfg.cluster.state_dir) as db:
            what(db, self.slurm(), self.providers)

    def reconcile(self) -> None:
        self.in_process(lambda db, slurm, providers: reconcile.reconcile(self.cfg, db, slurm, providers,
                                                                         now=time.time() + LATER))

    def ever(self) -> dict[str, str]:
        """Every instance the cloud ever started for this cluster (terminated ones too): id -> node."""
        out = {}
        for region in self.cfg.aws.regions:
            pages = self.moto.ec2(region).get_paginator("describe_instances").paginate(
                Filters=[{"Name": "tag:slurm-bridge:cluster", "Values": [self.cluster]}])
            for page in pages:
                for res in page["Reservations"]:
                    for inst in res["Instances"]:
                        tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
                        out[inst["InstanceId"]] = tags.get("slurm-bridge:node", "")
        return out


def setup(world: World, phase: str) -> str:
    """Bring the world to where PHASE starts; returns the phase the child runs."""
    if phase in ("resume", "resume-failover"):
        slurm_table(world.work, ("POWERING_UP",))           # Slurm asked for the nodes
        return "resume"
    slurm_table(world.work, ("POWERING_UP",))
    assert child("resume", world.work) == 0
    s = world.slurm()
    if phase == "suspend":
        s.set_flags(NODES, remove=("POWERING_UP",))           # registered and ran; now idle past SuspendTime
        s.set_flags(NODES, add=("POWERING_DOWN",))
    elif phase == "resume-fail":
        s.set_flags(NODES, add=("POWERED_DOWN",), remove=("POWERING_UP",), state="DOWN")   # ResumeTimeout
    else:
        s.set_flags(NODES, add=("POWERED_DOWN",), remove=("POWERING_UP",))   # powered down behind our back
    return phase


def after_crash(world: World, phase: str) -> None:
    """What Slurm does next, then reconcile."""
    s = world.slurm()
    if phase == "resume":
        # No slurmd registers (the worker died): ResumeTimeout, down~, and ResumeFailProgram runs.
        s.set_flags(NODES, add=("POWERED_DOWN",), remove=("POWERING_UP",), state="DOWN")
        world.in_process(lambda db, slurm, providers: power.resume_fail(world.cfg, db, slurm, providers, NODES))
    elif phase == "suspend":
        s.set_flags(NODES, add=("POWERED_DOWN",), remove=("POWERING_DOWN",))   # SuspendTimeout passed
    world.reconcile()
    world.reconcile()


def check(world: World, label: str) -> None:
    ever = world.ever()
    live = {i.instance_id: i.node for i in world.providers["aws"].list_instances(world.cluster)
            if i.state in ("pending", "running")}
    with StateDB.open(world.cfg.cluster.state_dir) as db:
        rows = db.instances()
    nodes = world.slurm().nodes()
    assert live == {}, f"{label}: instances alive for powered-down nodes: {live}"
    assert not [r.id for r in rows if r.state in ("launching", "running", "terminating")], \
        f"{label}: rows left open: {[(r.node, r.state, r.instance_id) for r in rows]}"
    recorded = {r.instance_id for r in rows if r.instance_id}
    assert set(ever) <= recorded, f"{label}: instances with no row in the ledger: {set(ever) - recorded}"
    per_node = {n: sum(1 for v in ever.values() if v == n) for n in NODES}
    assert all(c <= 1 for c in per_node.values()), f"{label}: a node got two instances: {per_node}"
    assert not [n.name for n in nodes if {"POWERING_UP", "POWERING_DOWN"} & n.flags], \
        f"{label}: a node stuck powering up or down: {[(n.name, sorted(n.flags)) for n in nodes]}"
    assert all(n.powered_down for n in nodes), label


@pytest.fixture(scope="module")
def moto_cloud():
    with separate_moto() as cloud:
        yield cloud


def points_of(moto_cloud, root: Path, phase: str) -> list[str]:
    world = World(moto_cloud, root, f"probe-{phase}", phase == "resume-failover")
    run = setup(world, phase)
    log = world.work / "points.log"
    assert child(run, world.work, {"SLURM_BRIDGE_CRASH_LOG": str(log)}) == 0
    after_crash(world, run)
    check(world, f"{phase} without a crash")
    return [line.split(" ", 2)[2] for line in log.read_text().splitlines()]


@pytest.mark.parametrize("phase", PHASES)
def test_a_kill_at_any_point_leaves_nothing_lost(moto_cloud, tmp_path, phase):
    points = points_of(moto_cloud, tmp_path, phase)
    assert len(points) >= 10, points
    chosen = [(n, name) for n, name in enumerate(points, start=1) if n % EVERY == 0 or n == len(points)]
    for n, name in chosen:
        world = World(moto_cloud, tmp_path, f"{phase}-{n}", phase == "resume-failover")
        run = setup(world, phase)
        assert child(run, world.work, {"SLURM_BRIDGE_CRASH_AT": str(n)}) == -signal.SIGKILL, f"{phase} point {n}"
        after_crash(world, run)
        check(world, f"{phase}: killed at point {n} ({name})")
    print(f"{phase}: {len(points)} crash points, killed at {len(chosen)}")


# -- the daemon: one watch cycle (burst decisions, the pool guard) and one sacct ingest ------------

JOBS = (1, 2, 3)          # pending in gpu for an hour; room (max_cloud_nodes) for two
SACCT = ({"id": 90, "node": "g-0"}, {"id": 91, "node": "g-1"})


def daemon_world(moto_cloud, root: Path, name: str) -> World:
    world = World(moto_cloud, root, name, failover=False, daemon=True)
    slurm_table(world.work, ("POWERED_DOWN",))
    now = time.time()
    (world.work / "queue.json").write_text(json.dumps({
        "jobs": [{"id": j, "partitions": ["gpu"], "submit": now - 3600} for j in JOBS],
        "partitions": {"burst-g": "UP", "burst-h": "UP"},
        "sacct": [{**r, "start": now - 7200} for r in SACCT]}))
    return world


def check_daemon(world: World, label: str) -> dict:
    queue = json.loads((world.work / "queue.json").read_text())
    eligible = [j["id"] for j in queue["jobs"] if "burst-g" in j["partitions"]]
    assert len(eligible) == 2, f"{label}: room for two, eligible {eligible}"
    assert all(j.get("updates", 0) <= 1 for j in queue["jobs"]), f"{label}: a job updated twice: {queue['jobs']}"
    # Pool h's zone (CH) has no region: its partition is closed, and the record of it says so.
    assert queue["partitions"] == {"burst-g": "UP", "burst-h": "DOWN"}, f"{label}: {queue['partitions']}"
    with StateDB.open(world.cfg.cluster.state_dir) as db:
        runs = db.read("SELECT job_id, COUNT(*) AS n FROM job_runs GROUP BY job_id ORDER BY job_id")
        closed = db.read("SELECT value FROM meta WHERE key = 'closed_partitions'")
        mark = db.read("SELECT value FROM meta WHERE key = 'sacct_ingested_until'")
    assert runs == [{"job_id": 90, "n": 1}, {"job_id": 91, "n": 1}], f"{label}: sacct runs stored {runs}"
    assert json.loads(closed[0]["value"]) == ["burst-h"], f"{label}: {closed}"
    assert mark, f"{label}: the ingest mark never moved"
    assert world.ever() == {}, f"{label}: the daemon launched something"
    return queue


def test_a_killed_daemon_loses_no_burst_closure_or_sacct_record(moto_cloud, tmp_path):
    probe = daemon_world(moto_cloud, tmp_path, "probe-daemon")
    log = probe.work / "points.log"
    assert child("daemon", probe.work, {"SLURM_BRIDGE_CRASH_LOG": str(log)}) == 0
    check_daemon(probe, "daemon without a crash")
    points = [line.split(" ", 2)[2] for line in log.read_text().splitlines()]
    assert len(points) >= 8, points
    chosen = [(n, name) for n, name in enumerate(points, start=1) if n % max(1, EVERY // 2) == 0 or n == len(points)]
    for n, name in chosen:
        world = daemon_world(moto_cloud, tmp_path, f"daemon-{n}")
        assert child("daemon", world.work, {"SLURM_BRIDGE_CRASH_AT": str(n)}) == -signal.SIGKILL, f"point {n}"
        assert child("daemon", world.work) == 0             # systemd restarts it
        queue = check_daemon(world, f"daemon: killed at point {n} ({name})")
        assert child("daemon", world.work) == 0             # and one more cycle changes no job
        assert json.loads((world.work / "queue.json").read_text())["jobs"] == queue["jobs"], f"point {n}"
    print(f"daemon: {len(points)} crash points, killed at {len(chosen)}")
