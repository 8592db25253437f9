"""Every way a researcher asks for GPUs, through real Slurm to the pools the bridge would offer (issue 11).

Each form is submitted with `sbatch --hold` to the lab's on-prem partition, so it stays pending; the
daemon's own read (the narrow squeue of slurm/pending.py) turns Slurm's normalised request into a
`Job`, and `policy.shape_problem` decides which pools' nodes could hold it. The pools here are shapes
chosen so that each form tells them apart; they are not the lab's pools, because only the decision is
under test, not a launch.
"""

from __future__ import annotations

import subprocess

import pytest

from configs import build, pool, region
from conftest import sbatch
from slurm_bridge.policy import shape_problem

CFG = build(zones={"any": "*"}, regions=[region("r", "DE", {"t1": 1.0})], pools=[
    pool("x1", gpus="a100:1", cpus=8, memory_mb=32000),
    pool("x2", gpus="a100:2", cpus=8, memory_mb=64000),
    pool("x4", gpus="a100:4", cpus=16, memory_mb=128000),
    pool("h8", gpus="h100:8", cpus=96, memory_mb=1000000),
])

FORMS = [
    (["--gres=gpu:2"], {"x2", "x4", "h8"}),
    (["--gres=gpu:a100:2"], {"x2", "x4"}),
    (["--gpus=2"], {"x2", "x4", "h8"}),
    (["--gpus-per-node=a100:2"], {"x2", "x4"}),
    (["--gpus-per-task=1", "--ntasks=2", "-N", "1"], {"x2", "x4", "h8"}),
    (["--gres=gpu:1", "--mem=48G"], {"x2", "x4", "h8"}),
    (["--gres=gpu:a100:1", "--cpus-per-task=12"], {"x4"}),
    (["-N", "2", "--gres=gpu:a100:4", "--exclusive"], {"x4"}),
    (["-N", "2", "--gpus=8"], {"x4", "h8"}),
    (["--gres=gpu:a100:3"], {"x4"}),
]


@pytest.fixture(scope="module")
def submitted(lab, slurm):
    ids = [sbatch(lab, "--hold", "-p", "gpu", *args, "--wrap", "true") for args, _ in FORMS]
    try:
        yield {j.job_id: j for j in slurm.pending_jobs(["gpu"]) if j.job_id in ids}, ids
    finally:
        subprocess.run(["scancel", *map(str, ids)], env=lab.env(), check=True)


@pytest.mark.parametrize("i", range(len(FORMS)), ids=[" ".join(a) for a, _ in FORMS])
def test_each_gpu_request_form_is_offered_exactly_the_pools_that_fit(submitted, i):
    jobs, ids = submitted
    args, expected = FORMS[i]
    job = jobs[ids[i]]
    offered = {p.name for p in CFG.pools if shape_problem(p, job) is None}
    why = {p.name: shape_problem(p, job) for p in CFG.pools}
    assert offered == expected, f"{args}: read as {job.gres}, {job.node_count} node(s), {job.cpus} CPUs: {why}"
