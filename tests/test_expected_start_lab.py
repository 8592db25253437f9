"""A job Slurm expects to start on-prem sooner than a cloud node boots is not burst (issue 11), on the lab.

Both on-prem nodes are filled by jobs with a one-minute time limit, so backfill expects the waiting
job to start within a minute. The daemon's config here says the cloud regions take 100 s to boot: one
daemon cycle must leave the job home, saying why, and must not touch its partitions.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from conftest import LAB_DIR, bridge_config_text, job_record, sbatch, wait_until

BIN = Path(sys.executable).parent


def test_a_job_expected_to_start_on_prem_within_the_boot_time_stays_home(lab, slurm, cloud, tmp_path):
    config = tmp_path / "daemon.toml"
    config.write_text(bridge_config_text(LAB_DIR).replace("boot_seconds = 1", "boot_seconds = 100")
                      .replace("resume_timeout = 60", "resume_timeout = 200")
                      .replace("[policy]\n", "[policy]\nburst_after = 0\n"))
    blockers = [sbatch(lab, "-p", "gpu", "--gres=gpu:a100:4", "-t", "1", "--wrap", "sleep 55") for _ in range(2)]
    try:
        wait_until("on-prem full", lambda: all(job_record(lab, j)["JobState"] == "RUNNING" for j in blockers),
                   timeout=30, lab=lab)
        waiting = sbatch(lab, "-p", "gpu", "--gres=gpu:a100:1", "-t", "10", "--wrap", "true")

        def estimated():
            starts = slurm.expected_starts([waiting])
            return starts.get(waiting)
        start = wait_until("backfill's estimate", estimated, timeout=60, interval=1, lab=lab)
        assert start - time.time() <= 90          # within the blockers' one-minute limit
        # Backfill may estimate a job before the main scheduler has given it a reason (it shows None);
        # the daemon looks only at jobs that wait for room, as it would on its next cycle.
        wait_until("Slurm's reason", lambda: job_record(lab, waiting)["Reason"] in ("Resources", "Priority"),
                   timeout=60, interval=1, lab=lab)
        done = subprocess.run([str(BIN / "slurm-bridge"), "daemon", "--once", "--config", str(config)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        [line] = [ln for ln in done.stderr.splitlines() if f"job={waiting}" in ln and "event=decision" in ln]
        assert "burst=no" in line and "Slurm expects it to start on-prem in" in line, line
        assert "sooner than a cloud node boots (100s)" in line
        record = job_record(lab, waiting)
        assert record["Partition"] == "gpu", record          # not made eligible for a burst partition
    finally:
        subprocess.run(["scancel", *map(str, blockers)], env=lab.env(), check=False)
        subprocess.run(["scancel", "-p", "gpu"], env=lab.env(), check=False)
