"""SIGKILL inside real resumes, with the real slurmctld doing what comes next (issue 9).

test_crash_points.py kills at every one of 119 points against a file-backed double of Slurm's node
table, which encodes what slurmctld does after a kill. This test checks that model on the lab: the
resume wrapper slurmctld runs gets SLURM_BRIDGE_CRASH_NAMES, so three resumes each die at one point:

- the ResumeProgram itself, after recording the request and before starting its worker;
- the worker, after the provider launched the instance and before the state DB has its id;
- the worker, after the DB has it and before Slurm is told the node's address.

Slurm then does what it does (ResumeTimeout, the node down, ResumeFailProgram, the job requeued),
the daemon's reconcile runs, and: every job runs to completion, every instance ever alive had a row,
no node had two instances, and once the nodes are idle again nothing is alive and no row is open.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LAB_DIR, bridge_config_text, finished, job_record, sbatch, wait_until
from conftest import state_db as db

BIN = Path(sys.executable).parent
POINTS = ("resume: before starting the worker", "launch: after provider.launch",
          "slurm: before pointing a node at its instance")
EU_NODES = [f"a100-eu-{i}" for i in range(4)]


def marker(once: Path, name: str) -> Path:
    return once / hashlib.sha1(name.encode()).hexdigest()[:12]     # as crashpoints._first names it


@pytest.fixture
def crashing_resume(lab, cloud):
    """The lab's ResumeProgram wrapper, with the crash names set; put back afterwards."""
    wrapper = lab.dir / "bin" / "resume"
    original = wrapper.read_text()
    once = lab.dir / "crash-once"
    once.mkdir(exist_ok=True)
    for old in once.iterdir():
        old.unlink()
    exports = (f"export SLURM_BRIDGE_CRASH_NAMES={shlex.quote('|'.join(POINTS))}\n"
               f"export SLURM_BRIDGE_CRASH_ONCE={shlex.quote(str(once))}\n")
    head, _, rest = original.partition("exec ")
    tmp = wrapper.with_suffix(".crash")
    tmp.write_text(head + exports + "exec " + rest)
    os.chmod(tmp, 0o755)
    tmp.replace(wrapper)
    try:
        yield once
    finally:
        tmp = wrapper.with_suffix(".orig")
        tmp.write_text(original)
        os.chmod(tmp, 0o755)
        tmp.replace(wrapper)


def cycle(config: Path) -> None:
    done = subprocess.run([str(BIN / "slurm-bridge"), "daemon", "--once", "--config", str(config)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]


def test_kills_inside_real_resumes_lose_no_job_and_leak_no_instance(lab, slurm, cloud, crashing_resume,
                                                                     tmp_path, bridge_config):
    once = crashing_resume
    config = tmp_path / "daemon.toml"
    config.write_text(bridge_config_text(LAB_DIR).replace("[policy]\n", "[policy]\norphan_grace_s = 5\n"))
    seen: dict[str, set[str]] = {}       # node -> every instance id the cloud was seen running for it
    doubled: list[dict] = []             # samples where one node had two instances at once

    def look() -> None:
        now: dict[str, list[str]] = {}
        for i in cloud().list_instances("sbtest"):
            if i.state == "running":
                seen.setdefault(i.node, set()).add(i.instance_id)
                now.setdefault(i.node, []).append(i.instance_id)
        if any(len(v) > 1 for v in now.values()):
            doubled.append(now)

    jobs = []
    for name in POINTS:
        # One at a time, so each resume is a call of its own and meets the next unused point. Each job
        # holds its node a while: a node left idle by a finished one would take the next job without a
        # resume, and that job's kill would never come (seen in CI under load).
        jobs.append(sbatch(lab, "-p", "burst-a100-eu", "--exclusive", "--gres=gpu:a100:4", "--wrap", "sleep 20"))
        wait_until(f"a process killed at {name!r}", lambda: marker(once, name).exists(), timeout=60, lab=lab)
        look()

    def done_or_requeued(job: int) -> bool:
        look()
        rec = job_record(lab, job)
        if rec["JobState"] == "PENDING" and rec.get("Restarts", "0") != "0":
            # Requeued by Slurm after the failed resume: released at once rather than after the
            # requeue delay (BeginTime), as an admin may; what matters here is that it was kept.
            subprocess.run(["scontrol", "update", f"jobid={job}", "starttime=now"], env=lab.env(), check=False)
        return finished(lab, job)

    for job in jobs:
        wait_until(f"job {job} completed", lambda: done_or_requeued(job), timeout=240, interval=1, lab=lab)
    restarts = {j: int(job_record(lab, j).get("Restarts", "0")) for j in jobs}
    assert any(restarts.values()), f"no job was requeued: the kills changed nothing? {restarts}"

    cycle(config)
    wait_until("cloud nodes idle and powered down again", lambda: all(
        n.powered_down and n.state == "IDLE" and not {"POWERING_UP", "POWERING_DOWN"} & n.flags
        for n in slurm.node_details(EU_NODES)), timeout=120, interval=1, lab=lab)
    cycle(config)
    look()
    with db(bridge_config) as state:
        rows = state.instances()
    recorded = {r.instance_id for r in rows if r.instance_id}
    ever = set().union(*seen.values()) if seen else set()
    assert ever <= recorded, f"instances seen running with no row: {ever - recorded}"
    alive = [i.instance_id for i in cloud().list_instances("sbtest") if i.state == "running"]
    assert alive == [], f"instances alive with every node powered down: {alive}"
    assert doubled == [], f"a node with two instances at once: {doubled[:3]}"
    assert not [(r.node, r.state) for r in rows if r.state in ("launching", "running", "terminating")], \
        "rows left open"
    print(f"kills at {len(POINTS)} points; restarts {restarts}; instances seen {len(ever)}")
