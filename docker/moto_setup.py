"""The demo's EC2: moto's server, with what an admin creates once per region before slurm-bridge runs.

Started by `entrypoint moto` in the "moto" service. For every region of [providers.aws] in the demo's
bridge.toml: an AMI, a subnet of its own address range inside 172.31.0.0/16 (compose.yaml's network,
so an instance's private address is reachable from slurmctld) and the launch template the config
names. moto's ids are random, so the server is seeded first and the ids come out the same every
time; they must be the ones bridge.toml lists under `subnets`, and this program stops with the right
ones if they are not (for instance after a moto upgrade).

No shell: moto's server runs as a child process; SIGTERM stops it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import boto3

BRIDGE_TOML = Path(os.environ.get("DEMO_BRIDGE_TOML", "/demo/bridge.toml"))
HOST = os.environ.get("MOTO_HOST", "0.0.0.0")
PORT = int(os.environ.get("MOTO_PORT", "5000"))
SEED = 20261130
VPC_CIDR = "172.31.0.0/16"
# One /24 per region, in the order of [providers.aws] regions: 172.31.64.0/24, 172.31.65.0/24, ...
SUBNET_BASE = 64


def subnet_cidr(index: int) -> str:
    return f"172.31.{SUBNET_BASE + index}.0/24"


def wait_up(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=2).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"moto_setup: moto's server did not start (exit {proc.poll()})")
            time.sleep(0.2)


def prepare(url: str, aws: dict) -> dict[str, str]:
    """Region -> the subnet made there. The calls and their order are fixed: the ids depend on them."""
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/seed?a={SEED}", method="POST"),
                           timeout=10).close()
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
    made = {}
    for i, region in enumerate(aws["regions"]):
        ec2 = session.client("ec2", region_name=region, endpoint_url=url)
        image = ec2.register_image(Name="slurm-bridge-demo-node", Architecture="x86_64",
                                   RootDeviceName="/dev/xvda", VirtualizationType="hvm")["ImageId"]
        vpc = ec2.create_vpc(CidrBlock=VPC_CIDR)["Vpc"]["VpcId"]
        made[region] = ec2.create_subnet(VpcId=vpc, CidrBlock=subnet_cidr(i),
                                         AvailabilityZone=f"{region}a")["Subnet"]["SubnetId"]
        ec2.create_launch_template(LaunchTemplateName=aws["launch_template"],
                                   LaunchTemplateData={"ImageId": image, "InstanceType": "m5.large"})
        print(f"moto_setup: {region}: image {image}, subnet {made[region]} {subnet_cidr(i)}, "
              f"launch template {aws['launch_template']}", flush=True)
    return made


def main() -> int:
    aws = tomllib.loads(BRIDGE_TOML.read_text())["providers"]["aws"]
    env = {**os.environ, "MOTO_EC2_LOAD_DEFAULT_AMIS": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(PORT)], env=env)
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    url = f"http://127.0.0.1:{PORT}"
    wait_up(url, proc)
    made = prepare(url, aws)
    wanted = {r: list(v) for r, v in aws.get("subnets", {}).items()}
    if wanted != {r: [s] for r, s in made.items()}:
        proc.terminate()
        proc.wait()
        lines = ", ".join(f'"{r}" = ["{s}"]' for r, s in made.items())
        sys.exit(f"moto_setup: {BRIDGE_TOML} [providers.aws] subnets must be {{ {lines} }}")
    print("moto_setup: ready", flush=True)
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
