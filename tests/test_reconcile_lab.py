"""Reconcile on the real lab: instances killed behind Slurm's back, a lost state DB, killed processes.

`slurm-bridge daemon --once` runs one watch and one reconcile cycle, so each test decides exactly
when a cycle happens.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import LAB_DIR, bridge_config_text, job_record, sbatch, wait_until
from conftest import state_db as db

BIN = Path(sys.executable).parent


def cycle(config: Path) -> None:
    done = subprocess.run([str(BIN / "slurm-bridge"), "daemon", "--once", "--config", str(config)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]


def daemon_config(tmp_path: Path) -> Path:
    path = tmp_path / "daemon.toml"
    path.write_text(bridge_config_text(LAB_DIR).replace("[policy]\n", "[policy]\norphan_grace_s = 5\n"))
    return path


def running_on(lab, job: int) -> str:
    wait_until(f"job {job} running", lambda: job_record(lab, job)["JobState"] == "RUNNING", timeout=90, lab=lab)
    return job_record(lab, job)["NodeList"]


def live(cloud, node: str | None = None):
    return [i for i in cloud().list_instances("sbtest") if i.state == "running" and (node is None or i.node == node)]


def test_instance_removed_behind_slurms_back_requeues_the_job_and_returns_the_node(lab, slurm, cloud, tmp_path):
    config = daemon_config(tmp_path)
    job = sbatch(lab, "-p", "burst-a100-de", "--gres=gpu:a100:1", "--wrap", "sleep 120")
    node = running_on(lab, job)
    [inst] = live(cloud, node)
    cloud().terminate(inst.region, [inst.instance_id])          # a spot preemption, or someone's console
    cycle(config)
    wait_until(f"job {job} requeued", lambda: job_record(lab, job).get("Restarts", "0") != "0", timeout=30, lab=lab)
    with db(config) as state:
        [event] = [e for e in state.events("vanished") if e["node"] == node]
        assert not [r for r in state.active_instances() if r.node == node]
    cycle(config)                                                  # the second cycle at most
    def back():
        [n] = slurm.node_details([node])
        return n.powered_down and n.state == "IDLE" and "POWERING_DOWN" not in n.flags
    wait_until(f"{node} back to idle~", back, timeout=30)


def test_deleted_state_db_is_rebuilt_from_tags_without_launching_anything(lab, slurm, cloud, tmp_path, bridge_config):
    config = daemon_config(tmp_path)
    job = sbatch(lab, "-p", "burst-a100-eu", "-N", "2", "--gres=gpu:a100:1", "--wrap", "sleep 60")
    running_on(lab, job)
    before = {i.instance_id: i.node for i in live(cloud)}
    assert len(before) == 2
    state_dir = LAB_DIR / "bridge"
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        (state_dir / name).unlink(missing_ok=True)
    cycle(config)
    with db(config) as state:
        rows = {r.instance_id: r.node for r in state.active_instances()}
        assert rows == before
        assert {r.region for r in state.active_instances()} == {"lab-nl"}
    assert {i.instance_id for i in live(cloud)} == set(before)      # nothing launched, nothing killed
    assert job_record(lab, job)["JobState"] == "RUNNING"
    cycle(config)
    with db(config) as state:
        assert len(state.active_instances()) == 2                     # adopted once


def test_killed_daemon_and_worker_mid_burst_leave_nothing_behind(lab, slurm, cloud, tmp_path, bridge_config):
    config = daemon_config(tmp_path)
    daemon = subprocess.Popen([str(BIN / "slurm-bridge"), "daemon", "--config", str(config)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    job = sbatch(lab, "-p", "burst-a100-eu", "-N", "2", "--gres=gpu:a100:1", "--wrap", "srun hostname")

    def worker():
        with db(config) as state:
            reqs = [r for r in state.unfinished_requests() if r.worker_pid]
            rows = [r for r in state.active_instances() if job in r.job_ids and r.instance_id]
        return reqs[0].worker_pid if reqs and rows else None
    # The worker has launched and now waits for the slurmds to register: kill it there.
    pid = wait_until("resume worker launched", worker, timeout=60, interval=0.1)
    os.kill(pid, signal.SIGKILL)
    daemon.send_signal(signal.SIGKILL)
    daemon.wait(timeout=10)
    cycle(config)
    wait_until(f"job {job} done", lambda: subprocess.run(["scontrol", "-o", "show", "job", str(job)], env=lab.env(),
               capture_output=True, text=True).stdout.count("JobState=COMPLETED") == 1, timeout=120)
    cycle(config)
    with db(config) as state:
        rows = state.instances()
        recorded = {r.instance_id for r in rows if r.instance_id}
        per_node = {}
        for r in rows:
            if job in r.job_ids and r.state != "failed":
                per_node[r.node] = per_node.get(r.node, 0) + 1
    assert all(i.instance_id in recorded for i in live(cloud)), "an instance without a row"
    assert sorted(per_node.values()) == [1, 1], \
        f"expected one row per node: {per_node}\n" + "\n".join(str(r) for r in rows if job in r.job_ids or not r.job_ids)
    nodes = slurm.node_details(["a100-eu-0", "a100-eu-1"])
    assert not [n.name for n in nodes if n.powering_up], "a node stuck powering up"
