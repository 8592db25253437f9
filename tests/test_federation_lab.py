"""A Slurm federation on the lab (issue 11): a job whose sibling will start on the other cluster
sooner than a cloud node boots is not burst.

The lab starts a second cluster, sbsib (its own slurmctld and one on-prem node, the same munged and
slurmdbd), and joins it with sbtest in the federation sbfed. sbtest's on-prem nodes are full for
minutes; sbsib's node is busy with a job whose time limit is one minute. A job submitted to sbtest is
then federated: its sibling on sbsib is expected to start within that minute, which backfill on
sbsib says. One daemon cycle, with cloud boots of 100 s, must leave it home and say why; then Slurm
runs it on sbsib, as the bridge counted on.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from conftest import LAB_DIR, bridge_config_text, job_record, sbatch, wait_until
from slurm_bridge.lab import sibling

BIN = Path(sys.executable).parent
SIB, FED = "sbsib", "sbfed"


def accounting(lab, job: int) -> dict[str, str]:
    out = subprocess.run(["sacct", "-X", "-P", "-n", "-M", f"sbtest,{SIB}", "-j", str(job),
                          "-o", "Cluster,State,NodeList"], env=lab.env(), capture_output=True, text=True,
                         check=True).stdout
    rows = [line.split("|") for line in out.splitlines() if line]
    done = [r for r in rows if r[1] == "COMPLETED"]
    return {"cluster": done[0][0], "nodes": done[0][2]} if done else {}


def test_a_federated_job_whose_sibling_starts_on_the_other_cluster_first_is_not_burst(lab, slurm, cloud, tmp_path):
    sib = sibling.start(lab, SIB, 1, progress=lambda m: print(f"lab: {m}"))
    sib_env = sibling.env(sib, lab)
    config = tmp_path / "daemon.toml"
    config.write_text(bridge_config_text(LAB_DIR).replace("boot_seconds = 1", "boot_seconds = 100")
                      .replace("resume_timeout = 60", "resume_timeout = 200")
                      .replace("[policy]\n", "[policy]\nburst_after = 0\n"))
    # Before the federation: these stay on the cluster they were submitted to.
    fillers = [sbatch(lab, "-p", "gpu", "-w", node, "--gres=gpu:a100:4", "--wrap", "sleep 300")
               for node in ("gpu-0", "gpu-1")]
    blocker = int(subprocess.run(["sbatch", "--parsable", "-p", "gpu", "--gres=gpu:a100:4", "-t", "1",
                                  "--wrap", "sleep 45"], env=sib_env, cwd=lab.dir, capture_output=True,
                                 text=True, check=True).stdout.strip().split(";")[0])
    try:
        wait_until("both clusters full", lambda: all(job_record(lab, j)["JobState"] == "RUNNING" for j in fillers)
                   and "RUNNING" in subprocess.run(["squeue", "-h", "-j", str(blocker), "-o", "%T"], env=sib_env,
                                                   capture_output=True, text=True).stdout, timeout=60, lab=lab)
        sibling.federate(lab, FED, ["sbtest", SIB])
        job = sbatch(lab, "-p", "gpu", "--gres=gpu:a100:4", "-t", "5", "--wrap", "hostname")
        assert job >= 1 << 26, "a federated job id carries its origin cluster's id"

        def estimate():
            return slurm.sibling_starts([job]).get(job)
        cluster, at = wait_until("sbsib's backfill estimate for the sibling", estimate, timeout=120, interval=2,
                                 lab=lab)
        assert cluster == SIB and at - time.time() <= 60
        assert job_record(lab, job)["JobState"] == "PENDING"

        done = subprocess.run([str(BIN / "slurm-bridge"), "daemon", "--once", "--config", str(config)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        [line] = [ln for ln in done.stderr.splitlines() if f"job={job}" in ln and "event=decision" in ln]
        assert "burst=no" in line and f"federation sibling on cluster {SIB} is expected to start" in line, line
        assert "sooner than a cloud node boots (100s)" in line
        assert job_record(lab, job)["Partition"] == "gpu"        # not made eligible for a burst partition

        ran = wait_until(f"job {job} ran", lambda: accounting(lab, job), timeout=120, interval=2, lab=lab)
        assert ran == {"cluster": SIB, "nodes": f"{SIB}-gpu-0"}
    finally:
        subprocess.run(["scancel", *map(str, fillers)], env=lab.env(), check=False)
        subprocess.run(["scancel", str(blocker)], env=sib_env, check=False)
        sibling.unfederate(lab, FED)
