"""Cost reports on the real lab: cloud jobs, a failed launch, idle time before suspend, sacct, slurmdbd down.

Local prices are known (lab-de 16 USD/h, lab-nl 12 USD/h, which has no capacity here, so its launch
fails and the node comes up in lab-de). The test computes each job's share by hand from the
instance's interval in the state DB and the jobs' start and end in sacct, and compares with
`slurm-bridge cost report --format json`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

from conftest import LAB_DIR, bridge_config_text, finished, sbatch, wait_until
from conftest import state_db as db
from screenshots import read_png, screenshot
from slurm_bridge.lab import procs
from slurm_bridge.lab.cluster import LabState

CLI = str(Path(sys.executable).parent / "slurm-bridge")


def cli(config: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([CLI, *args, "--config", str(config)], capture_output=True, text=True, timeout=120,
                          check=False)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def sacct(lab, *jobs: int, fields: str = "JobID,Start,End,AdminComment") -> dict[str, list[str]]:
    out = subprocess.run(["sacct", "-X", "-P", "-n", "-j", ",".join(map(str, jobs)), "-o", fields],
                         env=lab.env(), capture_output=True, text=True, check=True).stdout
    return {line.split("|", 1)[0]: line.split("|") for line in out.splitlines() if line}


def epoch(text: str) -> int:
    # sacct prints the controller's local time; the lab and this test share the machine's zone.
    return int(time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S")))


def test_job_costs_match_a_hand_computation_and_add_up_to_the_ledger(lab, slurm, cloud, bridge_config, tmp_path):
    bridge_config.write_text(bridge_config_text(LAB_DIR, lab_nl=0))   # the NL launch fails, DE takes it
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 5))
    first = sbatch(lab, "-p", "burst-a100-eu", "--gres=gpu:a100:1", "--wrap", "sleep 12")
    def running_on() -> str | None:
        rec = sacct(lab, first, fields="JobID,NodeList,State").get(str(first))
        return rec[1] if rec and rec[2] == "RUNNING" else None
    node = wait_until(f"job {first} running", running_on, timeout=90, lab=lab)
    # A second job shares the node while the first runs: 3 GPUs against 1.
    second = sbatch(lab, "-p", "burst-a100-eu", "-w", node, "--gres=gpu:a100:3", "--wrap", "sleep 4")
    for job in (first, second):
        wait_until(f"job {job} done", lambda job=job: finished(lab, job), timeout=90, lab=lab)

    def closed():
        with db(bridge_config) as state:
            rows = [r for r in state.instances() if first in r.job_ids and r.state == "terminated"]
            return rows[0] if rows else None
    row = wait_until("the instance terminated after SuspendTime", closed, timeout=120, interval=1, lab=lab)
    assert (row.region, row.price_per_hour, row.node) == ("lab-de", 16.0, node)
    with db(bridge_config) as state:
        failed = [r for r in state.instances() if first in r.job_ids and r.state == "failed"]
    assert failed and failed[0].region == "lab-nl"

    # The Slurm-native trail: where each cloud job ran, in sacct.
    def trail():
        recs = sacct(lab, first, second)
        return recs if all(len(recs.get(str(j), [])) > 3 and recs[str(j)][3] for j in (first, second)) else None
    recs = wait_until("AdminComment and end times in sacct", trail, timeout=60, lab=lab)
    for job in (first, second):
        comment = json.loads(recs[str(job)][3])
        assert (comment["provider"], comment["region"], comment["type"], comment["usd_h"]) == \
            ("local", "lab-de", "lab-a100x4", 16.0)

    assert "new or changed" in cli(bridge_config, "cost", "ingest").stdout
    report = json.loads(cli(bridge_config, "cost", "report", "--since", since, "--by", "job",
                            "--format", "json").stdout)
    jobs = {j["job"]: j for j in report["jobs"]}

    # By hand: the instance costs 16 USD/h from launch to termination. While both jobs run they
    # share it 1:3 by GPUs; each alone pays all of it; the rest (boot, idle until suspend) is
    # overhead, charged to the first job, whose resume started the instance.
    s1, e1 = (epoch(x) for x in recs[str(first)][1:3])
    s2, e2 = (epoch(x) for x in recs[str(second)][1:3])
    rate = Fraction(16, 3600)
    both = max(0, min(e1, e2) - max(s1, s2))
    own1 = rate * ((e1 - s1 - both) + Fraction(both, 4))
    own2 = rate * ((e2 - s2 - both) + Fraction(3 * both, 4))
    total = rate * (Fraction(repr(row.terminated_at)) - Fraction(repr(row.launched_at)))
    overhead1 = total - own1 - own2
    got = {k: Decimal(str(jobs[str(job)][k])) for job in (first,) for k in ("run_usd", "overhead_usd")}
    assert abs(got["run_usd"] - Decimal(float(own1))) <= Decimal("0.01"), (got, float(own1))
    assert abs(got["overhead_usd"] - Decimal(float(overhead1))) <= Decimal("0.01"), (got, float(overhead1))
    assert abs(Decimal(str(jobs[str(second)]["run_usd"])) - Decimal(float(own2))) <= Decimal("0.01")
    assert Decimal(str(jobs[str(second)]["overhead_usd"])) == 0
    both_jobs = sum(Decimal(str(jobs[str(j)]["total_usd"])) for j in (first, second))
    assert abs(both_jobs - Decimal(float(total))) <= Decimal("0.02")
    # To the cent: job costs and overhead add up to the ledger total of the period.
    ledger = Decimal(str(report["totals"]["cloud_usd"]))
    assert sum(Decimal(str(j["total_usd"])) for j in report["jobs"]) + \
        sum(Decimal(str(v)) for v in report["pool_overhead_usd"].values()) == ledger
    assert report["unmatched"] == []

    # Ingesting again stores nothing twice.
    assert "0 run(s) new or changed" in cli(bridge_config, "cost", "ingest").stdout

    # The HTML report opens in a real browser and shows its charts.
    page = tmp_path / "cost.html"
    cli(bridge_config, "cost", "report", "--since", since, "--format", "html", "--output", str(page))
    width, height, rows, bpp = read_png(screenshot(page, tmp_path))
    pixels = [row[i:i + 3] for row in rows[::3] for i in range(0, len(row), 3 * bpp)]
    assert len(set(pixels)) > 20 and sum(1 for p in pixels if p == b"\xff\xff\xff") < 0.97 * len(pixels)


def test_slurmdbd_down_during_ingest_loses_nothing(lab, slurm, bridge_config):
    cli(bridge_config, "cost", "ingest")
    dbd = LabState.load(lab.state_file).procs["slurmdbd"]
    os.kill(dbd.pid, signal.SIGTERM)
    wait_until("slurmdbd stopped", lambda: not procs.alive(dbd), timeout=30)
    try:
        # A job that ends while slurmdbd is down: slurmctld keeps its record until slurmdbd is back.
        job = sbatch(lab, "-p", "gpu", "--gres=gpu:a100:1", "--wrap", "true")
        wait_until(f"job {job} done", lambda: finished(lab, job), timeout=60, lab=lab)
        down = cli(bridge_config, "cost", "ingest", check=False)
        assert down.returncode == 1 and "nothing stored" in down.stderr
    finally:
        lab.up(progress=lambda m: None)                 # starts only what is not running: slurmdbd
    with db(bridge_config) as state:
        from slurm_bridge import job_runs

        mark = job_runs.get_mark(state)
    wait_until(f"job {job} in sacct", lambda: sacct(lab, job, fields="JobID,End").get(str(job), ["", ""])[1]
               not in ("", "Unknown"), timeout=90, lab=lab)
    cli(bridge_config, "cost", "ingest")
    with db(bridge_config) as state:
        from slurm_bridge import job_runs

        stored = [r for r in job_runs.between(state, 0, time.time() + 60) if r.job_id == job]
        assert stored and stored[0].end is not None and stored[0].partition == "gpu"
        assert job_runs.get_mark(state) > mark
