"""Issue 8 on the real lab: a pool backed by an SSH host group runs a job on a host the bridge
bootstrapped over SSH.

The host is a lab namespace (`lab up --ssh-hosts 1`, lab/sshhost.py) with a real SSH server in it and
its own /etc/munge, /etc/slurm and munge socket directory: until the bridge installs them over SSH it
has no munge key and no Slurm config, so the job can only run if the bootstrap delivered both. Slurm's
power saving calls the real resume and suspend programs; nothing here calls the provider directly.
"""

from __future__ import annotations

import re
import stat
import subprocess
import sys

from conftest import LAB_DIR, bridge_config_text, diagnose, finished, sbatch, wait_until
from conftest import state_db as db
from secrets_scan import leaks

GROUP, PRICE = "ws-de", 2.0     # cheaper than lab-de (16 USD/h): the selector's first choice for a100-de


def ssh_section(lab) -> str:
    [(_, address)] = lab.ssh_hosts()
    helper = f'"{sys.executable}", "-m", "slurm_bridge.lab.sshhost"'
    return f"""
[providers.ssh]
known_hosts = "{lab.ssh_dir}/known_hosts"
client_keys = ["{lab.ssh_dir}/id_ed25519"]
username = "root"
connect_timeout = 5
command_timeout = 30
munge_key = "{lab.layout.munge_socket.parent}/munge.key"
slurm_conf_dir = "{lab.layout.etc}"
munge_restart = [{helper}, "restart-munge", "--socket", "{lab.layout.munge_socket}"]
[[providers.ssh.groups]]
name = "{GROUP}"
country = "DE"
instance_type = "lab-ws-a100x4"
price_per_hour = {PRICE}
hosts = ["{address}"]
health = ["slurmd", "-V"]
start = [{helper}, "start-slurmd", "{{node}}"]
stop = [{helper}, "stop-slurmd", "{{node}}"]
"""


def host_daemons(lab, program: str) -> list[int]:
    """PIDs of PROGRAM inside the SSH host, found the way the host itself finds them."""
    [(name, _)] = lab.ssh_hosts()
    done = subprocess.run(
        [sys.executable, "-m", "slurm_bridge.lab.nsexec", "--netns", lab.host_netns(name), "--",
         sys.executable, "-c", f"from slurm_bridge.lab import sshhost; print(*sshhost.daemons({program!r}))"],
        capture_output=True, text=True, check=True)
    return [int(p) for p in done.stdout.split()]


def test_a_job_runs_on_an_ssh_host_the_bridge_bootstrapped_with_the_munge_key(lab, slurm, cloud, bridge_config):
    [(host_name, address)] = lab.ssh_hosts()
    private = lab.ssh_host_dir(host_name)
    lab_key = (lab.layout.munge_socket.parent / "munge.key").read_bytes()
    # Before: the host has neither key nor config; what it will get can only come over SSH.
    assert not (private / "etc-munge" / "munge.key").exists() and not (private / "etc-slurm" / "slurm.conf").exists()
    bridge_config.write_text(bridge_config_text(LAB_DIR, ssh=ssh_section(lab)))
    try:
        job = sbatch(lab, "-p", "burst-a100-de", "--gres=gpu:a100:1",
                     "--wrap", "echo $(hostname) $SLURMD_NODENAME $CUDA_VISIBLE_DEVICES")
        wait_until(f"job {job} done", lambda: finished(lab, job), timeout=120, lab=lab)
        host, node, gpu = (lab.dir / f"slurm-{job}.out").read_text().split()
        assert host == host_name and node.startswith("a100-de-") and gpu == "0"
        def row_launched():
            with db(bridge_config) as state:
                rows = [r for r in state.instances() if job in r.job_ids]
            # A job this short can end before launch() has returned and the row has its instance id.
            return rows[0] if len(rows) == 1 and rows[0].instance_id else None
        row = wait_until("the instance id recorded", row_launched, timeout=30, lab=lab)
        assert (row.provider, row.region, row.price_per_hour) == ("ssh", GROUP, PRICE)
        # <group>/<host>/<life>: each launch on a host is an instance of its own.
        assert re.fullmatch(re.escape(f"{GROUP}/{address}/") + "[0-9a-f]{12}", row.instance_id), row.instance_id

        # What the bridge installed: the controller's key, 0600, over SFTP; the config beside it.
        installed = private / "etc-munge" / "munge.key"
        assert installed.read_bytes() == lab_key and stat.S_IMODE(installed.stat().st_mode) == 0o600
        assert (private / "etc-slurm" / "slurm.conf").read_bytes() == lab.layout.slurm_conf.read_bytes()
        # The host's own munged, started by the bootstrap, is the one slurmd there talks to.
        [munged] = host_daemons(lab, "munged")
        argv = open(f"/proc/{munged}/cmdline", "rb").read().split(b"\0")
        assert b"--key-file=/etc/munge/munge.key" in argv
        # The host's state file names the node: the host's own record, as a cloud's tags are.
        state_file = private / "home" / ".slurm-bridge" / "sbtest.json"
        assert node in state_file.read_text()

        # After SuspendTime the suspend program stops slurmd over SSH and releases the host.
        def released():
            with db(bridge_config) as state:
                done = state.get_instance(row.id).state == "terminated"
            [n] = slurm.node_details([node])
            return done and n.powered_down and not state_file.exists() and not host_daemons(lab, "slurmd")
        wait_until(f"{node} suspended and {host_name} released", released, timeout=90, interval=1, lab=lab)
    except BaseException:
        # The fixture's clean-up knows the local provider only: power the node down while the
        # config still names the SSH provider, so nothing is left running on the host.
        print(diagnose(lab))
        up = [n.name for n in slurm.node_details(["a100-de-0", "a100-de-1"]) if not n.powered_down]
        if up:
            slurm.update_nodes(up, state="POWER_DOWN_FORCE")
            try:
                wait_until("ssh nodes powered down", lambda: not host_daemons(lab, "slurmd"), timeout=60)
            except AssertionError as exc:
                print(exc)
        raise

    # The key went nowhere else: not the bridge's logs, its state DB, nor the lab's Slurm logs.
    scanned = {}
    for root in (lab.dir / "bridge", lab.dir / "log", private / "home"):
        for path in root.rglob("*"):
            if path.is_file():
                scanned[str(path)] = path.read_bytes()
    assert any(p.endswith("state.db") or ".db" in p for p in scanned), sorted(scanned)
    assert any(f"bootstrap of {node} on {address}".encode() in blob for blob in scanned.values())
    assert leaks(lab_key, lab_key)   # the scan can find what it looks for
    found = {p: leaks(lab_key, blob) for p, blob in scanned.items()}
    assert not any(found.values()), [p for p, hits in found.items() if hits]



def bootstrap_section(lab) -> str:
    helper = f'"{sys.executable}", "-m", "slurm_bridge.lab.sshhost"'
    return f"""
[bootstrap]
providers = ["local"]
client_keys = ["{lab.ssh_dir}/id_ed25519"]
username = "root"
sudo = false
poll_interval = 1
munge_key = "{lab.layout.munge_socket.parent}/munge.key"
slurm_conf_dir = "{lab.layout.etc}"
munge_restart = [{helper}, "restart-munge", "--socket", "{lab.layout.munge_socket}"]
start = [{helper}, "start-slurmd", "{{node}}"]
"""


def test_a_cloud_instance_is_bootstrapped_with_its_host_key_pinned_from_the_provider(lab, slurm, cloud, bridge_config):
    """The AWS/GCP path on the lab: lab-de's instances boot like a cloud image with cloud-init (an SSH
    server, the bridge's public key, no munge key, no slurmd); the launch worker reads the host key the
    instance printed to its console through the provider, connects, installs key and config, starts slurmd."""
    lab_key = (lab.layout.munge_socket.parent / "munge.key").read_bytes()
    bridge_config.write_text(bridge_config_text(LAB_DIR, de_image="ssh", extra=bootstrap_section(lab)))
    job = sbatch(lab, "-p", "burst-a100-de", "--gres=gpu:a100:1",
                 "--wrap", "echo $(hostname) $SLURMD_NODENAME; cat /etc/munge/munge.key | md5sum")
    try:
        wait_until(f"job {job} done", lambda: finished(lab, job), timeout=120, lab=lab)
    except AssertionError:
        print(diagnose(lab))
        raise
    [instance] = [i for i in cloud().list_instances("sbtest") if i.state == "running"]
    host_dir = LAB_DIR / "cloud" / instance.region / instance.instance_id
    # Read now: the instance and its directory go when the node suspends.
    installed = (host_dir / "etc-munge" / "munge.key").read_bytes()
    console = (host_dir / "console").read_text()
    host, node, digest = (lab.dir / f"slurm-{job}.out").read_text().split()[:3]
    assert host == node == instance.node and instance.region == "lab-de"
    assert installed == lab_key
    # The job saw the instance's own /etc/munge: the key the bridge put there.
    assert digest == subprocess.run(["md5sum"], input=lab_key, capture_output=True, check=True).stdout.split()[0].decode()
    assert "-----BEGIN SSH HOST KEY KEYS-----" in console
    # slurmd runs (and so can the short job) before the start command has returned over SSH: the
    # worker's last line may still be on its way.
    log = LAB_DIR / "bridge" / "log" / "slurm-bridge-resume.log"
    wait_until("the worker logs the bootstrap",
               lambda: f"bootstrapped {node} (local {instance.instance_id})" in log.read_text(), timeout=20, lab=lab)
    scanned = {str(p): p.read_bytes() for root in (lab.dir / "bridge", lab.dir / "log")
               for p in root.rglob("*") if p.is_file()}
    hits = [p for p, blob in scanned.items() if leaks(lab_key, blob)]
    assert not hits, hits
