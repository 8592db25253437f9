"""A demo "cloud instance": this container becomes Slurm node NODE while moto says its EC2 instance runs.

moto only keeps records; nothing boots. So each cloud container of docker/compose.yaml runs this
watcher, which polls moto (DescribeInstances, filtered on the tags slurm-bridge puts on every
instance: slurm-bridge:cluster and slurm-bridge:node) in every region of the bridge config, and
  - when an instance of NODE is running: takes the instance's private address as its own (slurm-bridge
    sets that address as the node's NodeAddr, and 172.31.0.0/16 is this container's network, so
    slurmctld reaches it there), waits out a short "boot", and starts `slurmd -D -N NODE` in a new
    time namespace whose boot clock starts now (slurmctld accepts a resumed node only if it booted
    after the resume request: DESIGN.md part B);
  - when that instance is terminated (or gone): stops slurmd and everything it started, drops the
    address, and waits for the next one.
Needs CAP_NET_ADMIN (the address), CAP_SYS_ADMIN and CAP_SYS_TIME (the time namespace and its offset;
slurmd itself runs without CAP_SYS_TIME).

Usage: cloud_node.py NODE        (environment: DEMO_BRIDGE_TOML, default /demo/bridge.toml)
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

TAG_CLUSTER, TAG_NODE = "slurm-bridge:cluster", "slurm-bridge:node"   # slurm_bridge/providers/aws.py
LIVE = ("pending", "running")
POLL_S = 1.0
BOOT_S = 2.0          # at least 1 s after the resume request, in whole seconds (DESIGN.md part B)
DEVICE = os.environ.get("DEMO_NET_DEVICE", "eth0")
SPOOL = Path("/var/lib/slurm/slurmd")


def log(msg: str) -> None:
    print(f"cloud_node[{NODE}]: {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Seen:
    instance_id: str
    region: str
    state: str
    address: str


def find_instance(clients: dict, cluster: str, node: str) -> Seen | None:
    """The live instance of NODE, if any (the newest, should a region hold two)."""
    found: list[tuple[str, Seen]] = []
    for region, ec2 in clients.items():
        pages = ec2.get_paginator("describe_instances").paginate(Filters=[
            {"Name": f"tag:{TAG_CLUSTER}", "Values": [cluster]},
            {"Name": f"tag:{TAG_NODE}", "Values": [node]},
            {"Name": "instance-state-name", "Values": list(LIVE)}])
        for page in pages:
            for res in page.get("Reservations", []):
                for d in res.get("Instances", []):
                    found.append((str(d.get("LaunchTime", "")), Seen(d["InstanceId"], region, d["State"]["Name"],
                                                                     d.get("PrivateIpAddress", ""))))
    return max(found, key=lambda f: f[0])[1] if found else None


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


def network_of_device() -> ipaddress.IPv4Interface:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", DEVICE], check=True,
                         capture_output=True, text=True).stdout.split()
    return ipaddress.IPv4Interface(out[out.index("inet") + 1])


class Node:
    def __init__(self, node: str):
        self.node = node
        self.home = network_of_device()            # this container's own address on the network
        self.slurmd: subprocess.Popen | None = None
        self.instance: Seen | None = None
        self.crashed: set[str] = set()             # instances whose slurmd died: not booted again

    def boot(self, inst: Seen) -> None:
        addr = ipaddress.IPv4Address(inst.address)
        if addr not in self.home.network:
            log(f"{inst.instance_id}: address {addr} is outside this network {self.home.network}: not booting")
            return
        log(f"{inst.instance_id} in {inst.region} is {inst.state}: taking {addr} and booting")
        ip("addr", "add", f"{addr}/{self.home.network.prefixlen}", "dev", DEVICE)
        # Traffic to the cluster leaves from the instance's address, so slurmctld sees the node
        # register from the address slurm-bridge gave it (cloud_reg_addrs keeps what it sees).
        ip("route", "replace", str(self.home.network), "dev", DEVICE, "proto", "kernel", "scope", "link",
           "src", str(addr))
        time.sleep(BOOT_S)
        for old in SPOOL.glob("*"):                # a fresh instance has no spool of an earlier one
            if old.is_file():
                old.unlink()
        SPOOL.mkdir(parents=True, exist_ok=True)
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        # A new time namespace whose CLOCK_BOOTTIME reads ~0 now: slurmd reports a boot time of now.
        # Setting the offset takes CAP_SYS_TIME; slurmd runs without it (it could set the host's clock).
        self.slurmd = subprocess.Popen(["unshare", "--time", "--fork", f"--boottime=-{int(uptime)}",
                                        "setpriv", "--bounding-set=-sys_time", "--",
                                        "slurmd", "-D", "-N", self.node], start_new_session=True)
        self.instance = inst

    def halt(self, why: str) -> None:
        log(f"{why}: stopping slurmd and its jobs")
        if self.slurmd is not None:
            try:
                os.killpg(self.slurmd.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.slurmd.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.slurmd.pid, signal.SIGKILL)
                self.slurmd.wait()
        kill_strays()
        if self.instance is not None:
            ip("route", "replace", str(self.home.network), "dev", DEVICE, "proto", "kernel", "scope", "link",
               "src", str(self.home.ip))
            subprocess.run(["ip", "addr", "del", f"{self.instance.address}/{self.home.network.prefixlen}",
                            "dev", DEVICE], check=False)
        self.slurmd = None
        self.instance = None


def kill_strays() -> None:
    """Job steps (slurmstepd and what it ran) outlive slurmd: a terminated instance keeps nothing."""
    keep = {1, os.getpid()}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in keep:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if cmd.endswith((b"munged",)) or not cmd:
            continue
        try:
            os.kill(int(entry.name), signal.SIGKILL)
        except ProcessLookupError:
            pass


def main(node: str) -> int:
    import boto3

    cfg = tomllib.loads(Path(os.environ.get("DEMO_BRIDGE_TOML", "/demo/bridge.toml")).read_text())
    aws, cluster = cfg["providers"]["aws"], cfg["cluster"]["name"]
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
    clients = {r: session.client("ec2", region_name=r, endpoint_url=aws["endpoint_url"]) for r in aws["regions"]}
    me = Node(node)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    log(f"watching moto at {aws['endpoint_url']} for {cluster}/{node} in {', '.join(aws['regions'])}")
    while not stop:
        try:
            inst = find_instance(clients, cluster, node)
        except (BotoCoreError, ClientError) as exc:   # moto not up yet, or restarting: keep what runs, look again
            log(f"cannot ask moto: {exc}")
            time.sleep(5)
            continue
        if me.instance is not None and (inst is None or inst.instance_id != me.instance.instance_id):
            me.halt(f"{me.instance.instance_id} is terminated")
        elif me.slurmd is not None and me.slurmd.poll() is not None:
            # Like an instance whose slurmd crashed: it stays down; Slurm's ResumeTimeout and the bridge
            # take over (the instance is terminated and the node returns to the pool).
            if me.instance is not None:
                me.crashed.add(me.instance.instance_id)
            me.halt(f"slurmd exited ({me.slurmd.returncode})")
        if me.instance is None and inst is not None and inst.state == "running" and inst.address \
                and inst.instance_id not in me.crashed:
            me.boot(inst)
        time.sleep(POLL_S)
    if me.instance is not None:
        me.halt("container stopping")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    NODE = sys.argv[1]
    sys.exit(main(NODE))
