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

from slurm_bridge.lab import netns, procs
from slurm_bridge.lab.cluster import Lab, LabOptions, LabState
from slurm_bridge.slurm import CliSlurm

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED_DATA = REPO.parent / "shared" / "data"
LAB_DIR = Path(os.environ.get("SLURM_BRIDGE_TEST_LAB", "/var/tmp/slurm-bridge-test-lab"))


def bridge_config_text(lab_dir: Path, *, lab_de: int = 4, lab_nl: int = 4, ssh: str = "",
                       de_image: str = "slurmd", extra: str = "") -> str:
    """The bridge config the lab tests run with; capacities are what tests change.

    SSH is a `[providers.ssh]` section (tests/test_ssh_lab.py); with it, pool a100-de may also run
    on that provider's `lab-ws-a100x4` hosts. DE_IMAGE "ssh" makes lab-de a cloud whose instances
    [bootstrap] (in EXTRA) must bring up."""
    ssh_type = ', ssh = "lab-ws-a100x4"' if ssh else ""
    return f"""
[cluster]
name = "sbtest"
state_dir = "{lab_dir}/bridge"
[slurm]
watch_partitions = ["gpu"]
suspend_time = 10
resume_timeout = 60
suspend_timeout = 5
slurm_conf = "{lab_dir}/etc/slurm.conf"
bin_dir = "{lab_dir}/bin"
slurm_user = "root"
[policy]
block_seconds = 2
[zones]
de = ["DE"]
ch = ["CH"]
eu = "EU"
any = "*"
[accounts.default]
zone = "eu"
[accounts.medical]
zone = "de"
[accounts.swiss]
zone = "ch"
[[pools]]
name = "a100-de"
size = 2
zone = "de"
cpus = 16
memory_mb = 64000
gpus = "a100:4"
instance_types = {{ local = "lab-a100x4"{ssh_type} }}
[[pools]]
name = "a100-eu"
size = 4
zone = "eu"
cpus = 16
memory_mb = 64000
gpus = "a100:4"
instance_types = {{ local = "lab-a100x4" }}
[providers.local]
lab_dir = "{lab_dir}"
[[providers.local.regions]]
name = "lab-de"
country = "DE"
capacity = {lab_de}
boot_seconds = 1
image = "{de_image}"
prices = {{ "lab-a100x4" = 16.0 }}
[[providers.local.regions]]
name = "lab-nl"
country = "NL"
capacity = {lab_nl}
boot_seconds = 1
prices = {{ "lab-a100x4" = 12.0 }}
{ssh}{extra}"""


@pytest.fixture(scope="session")
def bridge_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bridge") / "bridge.toml"
    path.write_text(bridge_config_text(LAB_DIR))
    return path


@pytest.fixture(scope="session")
def lab(bridge_config):
    lab = Lab(LabOptions(dir=LAB_DIR, cluster="sbtest", onprem_nodes=2, gpus_per_node=4,
                         bridge_config=bridge_config, ssh_hosts=1))
    # Every session starts from an empty cluster: no jobs or accounting left from a previous run.
    lab.down(progress=lambda m: print(f"lab: {m}"), purge=True)
    lab.up(progress=lambda m: print(f"lab: {m}"))
    started = dict(LabState.load(lab.state_file).procs)
    yield lab
    if not os.environ.get("SLURM_BRIDGE_KEEP_LAB"):
        lab.down(progress=lambda m: print(f"lab: {m}"), purge=True)
        # `down` must leave nothing behind: no process it started, no namespace, no bridge.
        left = [name for name, proc in started.items() if procs.alive(proc)]
        hosts = [h for h in os.listdir("/run/netns") if h.startswith(("sb-sbtest-", "sbi-"))] \
            if os.path.isdir("/run/netns") else []
        assert not left and not hosts and not netns.link_exists(lab.bridge), \
            f"lab down left behind: processes {left}, namespaces {hosts}, bridge {lab.bridge}"


@pytest.fixture(scope="session")
def slurm(lab) -> CliSlurm:
    return CliSlurm(lab.layout.slurm_conf)


def sbatch(lab, *args: str) -> int:
    """Submit as a researcher would; returns the job id."""
    done = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True,
                          env=lab.env(), cwd=lab.dir, check=True)
    return int(done.stdout.strip().split(";")[0])


def wait_until(what: str, predicate, timeout: float = 60, interval: float = 0.5, lab=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    detail = f"\n{diagnose(lab)}" if lab is not None else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{detail}")


CLOUD_NODES = ["a100-de-0", "a100-de-1", "a100-eu-0", "a100-eu-1", "a100-eu-2", "a100-eu-3"]


@pytest.fixture
def cloud(lab, slurm, bridge_config):
    """Each test starts and ends with every cloud node powered down and no instance alive.

    Yields a function returning the local provider, to look at the instances the way a cloud API would.
    """
    from slurm_bridge.config import load_config
    from slurm_bridge.providers.local import LocalProvider

    def provider():
        return LocalProvider(load_config(bridge_config).local_regions, LAB_DIR)

    def quiet():
        nodes = {n.name: n for n in slurm.node_details(CLOUD_NODES)}
        idle = all(nodes[n].powered_down and not {"POWERING_DOWN", "POWERING_UP"} & nodes[n].flags
                   and nodes[n].state == "IDLE" for n in CLOUD_NODES)
        return idle and not [i for i in provider().list_instances("sbtest") if i.state == "running"]

    yield provider
    # scancel -p takes one partition; a requeued job left behind would run again in the next test.
    for partition in ("burst-a100-de", "burst-a100-eu"):
        subprocess.run(["scancel", "-p", partition], env=lab.env(), check=True)
    wait_until("burst jobs gone", lambda: not subprocess.run(
        ["squeue", "-h", "-p", "burst-a100-de,burst-a100-eu", "-t", "PD,CF,R,CG"], env=lab.env(),
        capture_output=True, text=True).stdout.strip(), timeout=60, lab=lab)
    bridge_config.write_text(bridge_config_text(LAB_DIR))
    up = [n.name for n in slurm.node_details(CLOUD_NODES) if not n.powered_down]
    if up:
        slurm.update_nodes(up, state="POWER_DOWN_FORCE")
    wait_until("cloud nodes powered down and instances gone", quiet, timeout=90, interval=1, lab=lab)


def state_db(bridge_config):
    from slurm_bridge.config import load_config
    from slurm_bridge.state import StateDB

    return StateDB.open(load_config(bridge_config).cluster.state_dir)


TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL")


def finished(lab, job_id: int) -> bool:
    """True once the job ended; a job that ended in anything but COMPLETED fails the test, with why."""
    done = subprocess.run(["scontrol", "-o", "show", "job", str(job_id)], env=lab.env(),
                          capture_output=True, text=True)
    if done.returncode != 0:
        return True
    state = next((w.split("=", 1)[1] for w in done.stdout.split() if w.startswith("JobState=")), "")
    if state in TERMINAL and state != "COMPLETED":
        raise AssertionError(f"job {job_id} ended {state}\n{diagnose(lab)}\n{done.stdout}")
    return state == "COMPLETED"


def diagnose(lab) -> str:
    """What a person would look at when a lab test times out: queue, nodes, the bridge's logs."""
    out = [f"local instances: {[(p.name, p.parent.name) for p in (lab.dir / 'cloud').glob('*/*.json')]}"]
    for argv in (["squeue", "-o", "%i %T %r %N %P %f"], ["sinfo", "-N", "-o", "%N %T %E %f"]):
        out.append(subprocess.run(argv, env=lab.env(), capture_output=True, text=True).stdout)
    for log in sorted((lab.dir / "bridge" / "log").glob("*.log")):
        out.append(f"--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-15:]))
    ctld = lab.dir / "log" / "slurmctld.log"
    if ctld.exists():
        out.append("--- slurmctld.log\n" + "\n".join(ctld.read_text().splitlines()[-25:]))
    return "\n".join(out)


def job_record(lab, job_id: int) -> dict:
    from slurm_bridge.slurm.parse import parse_scontrol_record

    out = subprocess.run(["scontrol", "-o", "show", "job", str(job_id)], env=lab.env(),
                         capture_output=True, text=True, check=True).stdout
    return parse_scontrol_record(out.splitlines()[0])
