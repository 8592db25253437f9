"""Shared fixtures. The `lab` fixture starts one real Slurm cluster for the whole session.

It is never skipped: a machine that cannot run the lab fails these tests with
the lab's own message (not root, a missing Debian package, a port taken).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from slurm_bridge.lab.cluster import Lab, LabOptions
from slurm_bridge.slurm import CliSlurm

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED_DATA = REPO.parent / "shared" / "data"
LAB_DIR = Path(os.environ.get("SLURM_BRIDGE_TEST_LAB", "/var/tmp/slurm-bridge-test-lab"))


@pytest.fixture(scope="session")
def lab():
    lab = Lab(LabOptions(dir=LAB_DIR, cluster="sbtest", onprem_nodes=2, gpus_per_node=4))
    # Every session starts from an empty cluster: no jobs or accounting left from a previous run.
    lab.down(progress=lambda m: print(f"lab: {m}"), purge=True)
    lab.up(progress=lambda m: print(f"lab: {m}"))
    yield lab
    if not os.environ.get("SLURM_BRIDGE_KEEP_LAB"):
        lab.down(progress=lambda m: print(f"lab: {m}"), purge=True)


@pytest.fixture(scope="session")
def slurm(lab) -> CliSlurm:
    return CliSlurm(lab.layout.slurm_conf)


def sbatch(lab, *args: str) -> int:
    """Submit as a researcher would; returns the job id."""
    done = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True,
                          env=lab.env(), cwd=lab.dir, check=True)
    return int(done.stdout.strip().split(";")[0])


def wait_until(what: str, predicate, timeout: float = 60, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
