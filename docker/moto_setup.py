"""The demo's EC2: moto's server, with what an admin creates once per region before slurm-bridge runs.

Started by `entrypoint moto` in the "moto" service. For every region of [providers.aws] in the demo's
bridge.toml: an AMI, a subnet of its own address range inside 172.31.0.0/16 (compose.yaml's network,
so an instance's private address is reachable from slurmctld) and the launch template the config
names. moto's ids are random, so moto is seeded first and the ids come out the same every time; they
must be the ones bridge.toml lists under `subnets`, and this program stops with the right ones if they
are not (for instance after a moto upgrade). Any other request would draw from the same random
numbers (the cloud containers poll at once), so the setup talks to a server on 127.0.0.1 and the one
the cluster reaches starts only afterwards; both serve the one moto state of this process.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
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
    os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"   # read by moto at import
    from moto.server import ThreadedMotoServer

    aws = tomllib.loads(BRIDGE_TOML.read_text())["providers"]["aws"]
    private = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    private.start()
    host, port = private.get_host_and_port()
    made = prepare(f"http://{host}:{port}", aws)
    private.stop()
    wanted = {r: list(v) for r, v in aws.get("subnets", {}).items()}
    if wanted != {r: [s] for r, s in made.items()}:
        lines = ", ".join(f'"{r}" = ["{s}"]' for r, s in made.items())
        sys.exit(f"moto_setup: {BRIDGE_TOML} [providers.aws] subnets must be {{ {lines} }}")
    server = ThreadedMotoServer(ip_address=HOST, port=PORT, verbose=True)
    server.start()
    print(f"moto_setup: ready on {HOST}:{PORT}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
