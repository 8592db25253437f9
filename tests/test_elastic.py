"""The elastic loop on the real lab: resume -> instance -> slurmd -> job -> suspend -> gone.

Slurm calls the rendered wrappers, which run slurm-bridge-resume/-suspend with
the session's bridge config; the local provider's instances are real slurmds
in their own namespaces. Tests change region capacities by rewriting the
config file, which the programs read on every call.
"""

from __future__ import annotations

import subprocess

from conftest import LAB_DIR, bridge_config_text, finished, job_record, sbatch, wait_until
from conftest import state_db as db


def test_burst_job_runs_in_its_region_and_the_instance_is_gone_after_suspend(lab, slurm, cloud, bridge_config):
    job = sbatch(lab, "-p", "burst-a100-de", "--gres=gpu:a100:1", "--wrap", "hostname; echo $CUDA_VISIBLE_DEVICES")
    wait_until(f"job {job} done", lambda: finished(lab, job), timeout=90, lab=lab)
    out = (lab.dir / f"slurm-{job}.out").read_text().split()
    node = out[0]
    assert node in ("a100-de-0", "a100-de-1") and out[1] == "0"
    with db(bridge_config) as state:
        [row] = [r for r in state.instances() if job in r.job_ids]
        assert (row.node, row.provider, row.region, row.price_per_hour) == (node, "local", "lab-de", 16.0)
    # While up, Slurm knows where the node runs: its address, the instance in its comment,
    # and only the zones of its region's country.
    [n] = slurm.node_details([node])
    assert n.comment == f"local/lab-de/{row.instance_id}"
    assert n.address.startswith("10.199.0.") and n.address != node
    assert {f for f in n.active_features if f.startswith("res_")} == {"res_de", "res_eu", "res_any"}
    # After SuspendTime idle the node powers down and the suspend program terminates the instance.
    def suspended():
        [n] = slurm.node_details([node])
        return n.powered_down and n.state == "IDLE" and "POWERING_DOWN" not in n.flags
    wait_until(f"{node} idle~", suspended, timeout=90, interval=1)
    # Slurm counts the node powered down after SuspendTimeout whether or not the program is done.
    def closed():
        with db(bridge_config) as state:
            return state.get_instance(row.id).state == "terminated"
    wait_until(f"instance row {row.id} terminated", closed, timeout=30, interval=0.5)
    with db(bridge_config) as state:
        row = state.get_instance(row.id)
        assert row.launched_at < row.running_at < row.terminated_at
    assert not [i for i in cloud().list_instances("sbtest") if i.node == node]
    [n] = slurm.node_details([node])
    assert n.address == node and n.comment == ""
    assert set(n.active_features) >= {"res_de", "res_eu", "res_any"}   # widened again


def test_two_node_job_gets_both_nodes_from_one_region(lab, slurm, cloud, bridge_config):
    job = sbatch(lab, "-p", "burst-a100-eu", "-N", "2", "--gres=gpu:a100:1", "--wrap", "srun hostname")
    wait_until(f"job {job} done", lambda: finished(lab, job), timeout=90, lab=lab)
    assert sorted((lab.dir / f"slurm-{job}.out").read_text().split()) == ["a100-eu-0", "a100-eu-1"]
    with db(bridge_config) as state:
        rows = [r for r in state.instances() if job in r.job_ids and r.state != "failed"]
    assert sorted(r.node for r in rows) == ["a100-eu-0", "a100-eu-1"]
    assert {r.region for r in rows} == {"lab-nl"}          # the cheaper region, both nodes


def test_region_at_capacity_zero_moves_the_launch_to_the_next_region(lab, slurm, cloud, bridge_config):
    bridge_config.write_text(bridge_config_text(LAB_DIR, lab_nl=0))
    job = sbatch(lab, "-p", "burst-a100-eu", "--gres=gpu:a100:1", "--wrap", "hostname")
    wait_until(f"job {job} done", lambda: finished(lab, job), timeout=90, lab=lab)

    def rows():
        with db(bridge_config) as state:
            return sorted((r for r in state.instances() if job in r.job_ids), key=lambda r: r.id)
    # The worker marks the row running on its next poll (1 s); a job as short as `hostname` may end first.
    wait_until("the lab-de row past launching", lambda: rows()[-1].state != "launching", timeout=15, lab=lab)
    got = rows()
    assert [(r.region, r.state) for r in got][0] == ("lab-nl", "failed")
    assert "capacity" in got[0].error
    assert got[-1].region == "lab-de" and got[-1].state in ("running", "terminating", "terminated")


def test_no_capacity_anywhere_requeues_the_job_and_returns_the_node(lab, slurm, cloud, bridge_config):
    bridge_config.write_text(bridge_config_text(LAB_DIR, lab_de=0, lab_nl=0))
    job = sbatch(lab, "-p", "burst-a100-eu", "--gres=gpu:a100:1", "--wrap", "hostname")
    # Slurm requeues the job as soon as its node is set down: pending again, restarted once.
    wait_until(f"job {job} requeued",
               lambda: job_record(lab, job).get("Restarts", "0") != "0", timeout=60)
    rec = job_record(lab, job)
    assert rec["JobState"] == "PENDING"
    with db(bridge_config) as state:
        events = [e for e in state.events("launch_failed") if e["job_id"] == job]
        assert events and "no region could launch" in events[0]["data"]["reason"]
        assert all(r.state == "failed" for r in state.instances() if job in r.job_ids)
    # Back in the pool, idle~ (not down~), with nothing running, within one power-save cycle.
    def returned():
        nodes = slurm.node_details(["a100-eu-0", "a100-eu-1"])
        return all(n.powered_down and n.state == "IDLE" and "POWERING_DOWN" not in n.flags for n in nodes)
    wait_until("nodes back to idle~", returned, timeout=45, interval=1)
    assert not [i for i in cloud().list_instances("sbtest") if i.state == "running"]


def test_conf_check_passes_on_the_lab_and_names_a_mismatch(lab, bridge_config, tmp_path):
    import sys
    from pathlib import Path

    cli = str(Path(sys.executable).parent / "slurm-bridge")
    ok = subprocess.run([cli, "conf", "check", "--config", str(bridge_config)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "matches the running Slurm (2 pool(s), 6 cloud node(s))" in ok.stdout
    other = tmp_path / "other.toml"
    other.write_text(bridge_config_text(LAB_DIR).replace("suspend_time = 10", "suspend_time = 30"))
    bad = subprocess.run([cli, "conf", "check", "--config", str(other)], capture_output=True, text=True)
    assert bad.returncode == 1
    assert "problem: SuspendTime is 10 sec, the bridge config says 30" in bad.stdout


def test_a_two_node_exclusive_job_goes_where_both_fit_and_no_half_pair_is_left(lab, slurm, cloud, bridge_config):
    """Issue 11: lab-nl, the cheaper region, can hold only one node: the one it starts is released at
    once, and the pair comes up together in lab-de."""
    bridge_config.write_text(bridge_config_text(LAB_DIR, lab_nl=1))
    job = sbatch(lab, "-p", "burst-a100-eu", "-N", "2", "--exclusive", "--gres=gpu:a100:1", "--wrap", "srun hostname")
    wait_until(f"job {job} done", lambda: finished(lab, job), timeout=90, lab=lab)
    assert sorted((lab.dir / f"slurm-{job}.out").read_text().split()) == ["a100-eu-0", "a100-eu-1"]

    def rows():
        with db(bridge_config) as state:
            return [r for r in state.instances() if job in r.job_ids]
    wait_until("the lab-de rows past launching", lambda: all(r.state != "launching" for r in rows()), timeout=15,
               lab=lab)
    nl = [r for r in rows() if r.region == "lab-nl"]
    de = [r for r in rows() if r.region == "lab-de"]
    assert sorted(r.state for r in nl) == ["failed", "terminated"], [(r.node, r.state, r.error) for r in nl]
    assert next(r for r in nl if r.state == "failed").error.startswith("capacity")
    assert sorted(r.node for r in de) == ["a100-eu-0", "a100-eu-1"] and {r.state for r in de} <= {"running",
                                                                                                   "terminating",
                                                                                                   "terminated"}
    assert not [i for i in cloud().list_instances("sbtest") if i.region == "lab-nl" and i.state == "running"]
