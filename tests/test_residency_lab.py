"""Residency on the real lab: pool a100-eu spans lab-de (DE, dearer) and lab-nl (NL, cheaper).

job_submit.lua adds each job's zone to its constraint, so Slurm itself keeps
a `de` job off nodes running in NL, also off one that is already up with
free GPUs; the resume worker launches only inside the job's zone; an account
whose zone shares no region with a pool is refused at submit.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import finished, job_record, sbatch, wait_until
from conftest import state_db as db

CLI = str(Path(sys.executable).parent / "slurm-bridge")


def region_of(bridge_config, job: int) -> str:
    with db(bridge_config) as state:
        regions = {r.region for r in state.instances() if job in r.job_ids and r.state != "failed"}
    assert len(regions) == 1, regions
    return regions.pop()


def test_de_job_runs_in_de_although_nl_is_cheaper_and_an_nl_node_has_room(lab, slurm, cloud, bridge_config):
    from datetime import datetime

    # Earlier tests may have deleted the state DB on purpose; audit only what this test ran.
    since = datetime.now().replace(microsecond=0).isoformat()
    eu_job = sbatch(lab, "-p", "burst-a100-eu", "--gres=gpu:a100:1", "--wrap", "hostname; sleep 20")
    def running():
        return job_record(lab, eu_job)["JobState"] == "RUNNING"
    wait_until(f"job {eu_job} running", running, timeout=90, lab=lab)
    eu_node = job_record(lab, eu_job)["NodeList"]
    assert region_of(bridge_config, eu_job) == "lab-nl"
    [node] = slurm.node_details([eu_node])
    assert {f for f in node.active_features if f.startswith("res_")} == {"res_eu", "res_any"}

    # The NL node has 3 free GPUs, but a `de` job must not land there.
    de_job = sbatch(lab, "-A", "medical", "-p", "burst-a100-eu", "--gres=gpu:a100:1", "--wrap", "hostname")
    assert job_record(lab, de_job)["Features"].endswith("res_de")
    wait_until(f"job {de_job} done", lambda: finished(lab, de_job), timeout=120, lab=lab)
    de_node = (lab.dir / f"slurm-{de_job}.out").read_text().strip()
    assert de_node != eu_node
    assert region_of(bridge_config, de_job) == "lab-de"
    wait_until(f"job {eu_job} done", lambda: finished(lab, eu_job), timeout=60, lab=lab)

    # The audit agrees, from sacct and the state DB alone.
    done = subprocess.run([CLI, "audit", "residency", "--config", str(bridge_config), "--since", since, "--json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    placed = {p["job"]: (p["region"], p["ok"]) for p in report["placements"]}
    assert placed[str(eu_job)] == ("lab-nl", True) and placed[str(de_job)] == ("lab-de", True)
    assert report["breaches"] == []


def test_account_outside_every_pool_zone_is_refused_by_slurm(lab):
    refused = subprocess.run(["sbatch", "-A", "swiss", "-p", "burst-a100-eu", "--wrap", "true"],
                             capture_output=True, text=True, env=lab.env(), cwd=lab.dir)
    assert refused.returncode != 0
    assert "sbatch: error" in refused.stderr
    # The same account still runs on-prem (the site counts as inside every zone).
    job = sbatch(lab, "-A", "swiss", "-p", "gpu", "-H", "--wrap", "true")
    assert job_record(lab, job)["Features"] == "res_ch"
    subprocess.run(["scancel", str(job)], env=lab.env(), check=True)


def test_owner_cannot_drop_the_zone_with_scontrol_update(lab):
    job = sbatch(lab, "-A", "medical", "-p", "gpu", "-H", "--wrap", "true")
    subprocess.run(["scontrol", "update", f"jobid={job}", "features=onprem"], env=lab.env(), check=True)
    assert job_record(lab, job)["Features"] == "(onprem)&res_de"
    subprocess.run(["scancel", str(job)], env=lab.env(), check=True)


def test_regions_command_explains_the_ranking(lab, bridge_config):
    done = subprocess.run([CLI, "regions", "--config", str(bridge_config), "--pool", "a100-eu", "--account",
                           "medical", "--json"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert [(c["region"], c["price_per_hour"]) for c in out["candidates"]] == [("lab-de", 16.0)]
    assert [(e["region"], e["reason"]) for e in out["excluded"]] == [("lab-nl", "NL is outside job zone de")]


def test_gate_requeues_a_job_placed_where_lost_features_lied(lab, slurm, cloud, bridge_config):
    """`scontrol reconfigure` resets hand-set features to slurm.conf's (DESIGN B): an NL node then
    claims res_de. The PrologSlurmctld gate must catch the job Slurm places there."""
    eu_job = sbatch(lab, "-p", "burst-a100-eu", "--gres=gpu:a100:1", "--wrap", "sleep 60")
    wait_until(f"job {eu_job} running", lambda: job_record(lab, eu_job)["JobState"] == "RUNNING", timeout=90, lab=lab)
    node = job_record(lab, eu_job)["NodeList"]
    assert region_of(bridge_config, eu_job) == "lab-nl"
    subprocess.run(["scontrol", "reconfigure"], env=lab.env(), check=True)
    wait_until("features widened by reconfigure",
               lambda: "res_de" in slurm.node_details([node])[0].active_features, timeout=30)

    de_job = sbatch(lab, "-A", "medical", "-p", "burst-a100-eu", "-w", node, "--gres=gpu:a100:1", "--wrap", "hostname")
    wait_until(f"job {de_job} requeued by the gate",
               lambda: job_record(lab, de_job).get("Restarts", "0") != "0", timeout=60)
    assert job_record(lab, de_job)["JobState"] == "PENDING"
    assert not (lab.dir / f"slurm-{de_job}.out").exists()          # it never ran there
    assert "res_de" not in slurm.node_details([node])[0].active_features   # the truth is back
    with db(bridge_config) as state:
        [event] = [e for e in state.events("residency_gate") if e["job_id"] == de_job]
        assert event["node"] == node and event["data"]["country"] == "NL"
