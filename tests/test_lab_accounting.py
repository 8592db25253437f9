"""A real job through the real lab: sbatch -> slurmctld -> slurmd -> slurmdbd -> sacct -> adapter."""

from __future__ import annotations

import subprocess
from datetime import datetime, timedelta, timezone

from conftest import sbatch, wait_until


def test_gpu_job_reaches_accounting_with_its_gpu(lab, slurm):
    submitted = datetime.now(timezone.utc) - timedelta(minutes=1)
    job_id = sbatch(lab, "-p", "gpu", "--gres=gpu:a100:1", "--wrap", "echo gpus=$CUDA_VISIBLE_DEVICES")

    def finished():
        # slurmdbd may store the completion of a one-second job before its start record
        # (which carries partition and nodes): wait for the whole record.
        recs = slurm.accounting(since=submitted, job_ids=[job_id])
        done = recs and recs[0].state == "COMPLETED" and recs[0].end and recs[0].partition
        return recs if done else None

    rec = wait_until(f"job {job_id} completed in sacct", finished, timeout=90)[0]
    assert rec.job_id == job_id
    assert rec.partition == "gpu"
    assert rec.account == "lab"
    assert rec.alloc_tres["gres/gpu"] == 1
    assert rec.gpus == 1
    assert rec.nodes in {n.name for n in lab.layout.nodes}
    assert rec.start is not None and rec.end >= rec.start
    out = (lab.dir / f"slurm-{job_id}.out").read_text()
    assert out.strip() == "gpus=0"


def test_nodes_are_separate_hosts(lab, slurm):
    nodes = {n.name: n for n in slurm.nodes()}
    assert set(nodes) >= {"gpu-0", "gpu-1"}
    assert nodes["gpu-0"].address != nodes["gpu-1"].address
    assert nodes["gpu-0"].gres == "gpu:a100:4"
    # Each slurmd sees its own hostname (UTS namespace), as a real host would.
    job_id = sbatch(lab, "-p", "gpu", "-w", "gpu-1", "--wrap", "hostname")
    wait_until("hostname job", lambda: (lab.dir / f"slurm-{job_id}.out").exists()
               and (lab.dir / f"slurm-{job_id}.out").read_text().strip(), timeout=60)
    assert (lab.dir / f"slurm-{job_id}.out").read_text().strip() == "gpu-1"


def test_pending_job_is_read_with_reason_and_gres(lab, slurm):
    job_id = sbatch(lab, "-p", "gpu", "-H", "--gres=gpu:a100:2", "-C", "onprem", "--wrap", "true")
    try:
        job = wait_until("held job visible", lambda: slurm.job(job_id), timeout=30)
        assert job.state == "PENDING"
        assert job.reason == "JobHeldUser"
        assert job.partitions == ("gpu",)
        assert job.gres.gpus_per_node == 2 and job.gres.gpu_type == "a100"
        assert job.features == "(onprem)&res_eu"        # job_submit.lua appended the account's zone
        assert job_id in {j.job_id for j in slurm.pending_jobs(["gpu"])}
        assert job_id not in {j.job_id for j in slurm.pending_jobs(["other"])}
    finally:
        subprocess.run(["scancel", str(job_id)], env=lab.env(), check=True)


def test_failed_command_names_itself(lab, slurm):
    import pytest

    from slurm_bridge.errors import SlurmError

    with pytest.raises(SlurmError, match=r"^scontrol update nodename=no-such-node: exit 1"):
        slurm.update_nodes(["no-such-node"], comment="x")
