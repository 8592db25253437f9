"""`slurm-bridge demo`: the lab, one real GPU job, and what Slurm recorded of it."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

from .lab.cluster import Lab, LabOptions
from .slurm import CliSlurm


def say(msg: str) -> None:
    print(f"demo: {msg}", flush=True)


def submit(lab: Lab, *args: str) -> int:
    done = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True,
                          env=lab.env(), cwd=lab.dir, check=True)
    return int(done.stdout.strip().split(";")[0])


def wait_accounted(slurm: CliSlurm, job_ids: list[int], since: datetime, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recs = {r.job_id: r for r in slurm.accounting(since=since, job_ids=job_ids)}
        if all(j in recs and recs[j].end and recs[j].partition for j in job_ids):
            return [recs[j] for j in job_ids]
        time.sleep(1)
    raise TimeoutError(f"jobs {job_ids} did not finish within {timeout:.0f} s")


def run(opts: LabOptions) -> int:
    lab = Lab(opts)
    lab.up(progress=lambda m: say(f"lab: {m}"))
    slurm = CliSlurm(lab.layout.slurm_conf)
    since = datetime.now(timezone.utc) - timedelta(minutes=1)
    say("submitting `sbatch -p gpu --gres=gpu:a100:1 --wrap hostname` as a researcher would")
    job = submit(lab, "-p", "gpu", "--gres=gpu:a100:1", "--wrap", "hostname; echo GPU=$CUDA_VISIBLE_DEVICES")
    [rec] = wait_accounted(slurm, [job], since)
    print()
    print(f"{'job':>6} {'partition':10} {'account':8} {'node':8} {'gpus':>4} {'state':10} elapsed")
    print(f"{rec.job_id:>6} {rec.partition:10} {rec.account:8} {rec.nodes:8} {rec.gpus:>4} "
          f"{rec.state:10} {rec.elapsed_s}s")
    print()
    say(f"output of job {job}: " + (lab.dir / f"slurm-{job}.out").read_text().strip().replace("\n", " | "))
    say(f"the lab stays up: SLURM_CONF={lab.layout.slurm_conf}; stop it with `slurm-bridge lab down`")
    return 0


if __name__ == "__main__":
    sys.exit(run(LabOptions()))
