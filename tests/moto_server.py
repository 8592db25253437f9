"""A real local EC2 (moto's server) for the AWS provider tests, and the one mocked thing: injected errors.

`moto_cloud` starts `moto.server.ThreadedMotoServer` on a free port of 127.0.0.1
once per session, with fake credentials only (the environment is scrubbed so
no real profile or key can be picked up), and builds in each of two regions a
VPC, a subnet in each of two AZs, an AMI and the launch template
"slurm-bridge" (and in a third region for the thousand-node test). Tests keep
apart by using their own cluster name.

moto cannot run out of capacity, hit a quota, throttle or refuse credentials,
so `inject` and `fleet_errors` answer chosen calls at the transport boundary
(botocore's `before-send` event) with the HTTP status and XML body EC2 would
send. Everything else is real boto3 talking HTTP to the moto server.
"""

from __future__ import annotations

import logging
import urllib.request
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import parse_qsl, urlencode
from xml.sax.saxutils import escape

import boto3
import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.httpsession import URLLib3Session

from slurm_bridge.cloud_config import AwsConfig
from slurm_bridge.providers.aws import AwsProvider
from slurm_bridge.providers.base import LaunchRequest, NodeSpec

REGIONS = ("eu-central-1", "eu-west-1")
# moto's EC2 is quadratic in tags (each instance's tags come from a scan of every tag in the region),
# so the thousand-instance test gets a region of its own and leaves the others quick.
BIG_REGION = "eu-north-1"
TEMPLATE = "slurm-bridge"
GPU_TYPE = "g5.xlarge"   # offered in all three regions by moto's data

# The status EC2 sends each code with: capacity and internal errors are server errors (5xx), which is
# what makes botocore's standard mode retry them unless told otherwise.
STATUS = {"InsufficientInstanceCapacity": 500, "InsufficientCapacity": 500, "InsufficientHostCapacity": 500,
          "InternalError": 500, "Unavailable": 503, "RequestLimitExceeded": 503, "AuthFailure": 401,
          "UnauthorizedOperation": 403}


@dataclass(frozen=True)
class MotoCloud:
    url: str
    session: boto3.Session
    subnets: dict[str, tuple[str, ...]]
    images: dict[str, str]

    def ec2(self, region: str):
        """A plain client, for checking what the provider did."""
        return self.session.client("ec2", region_name=region, endpoint_url=self.url)

    def config(self, **changes) -> AwsConfig:
        values = {"regions": REGIONS, "launch_template": TEMPLATE, "subnets": MappingProxyType(dict(self.subnets)),
                  "endpoint_url": self.url, "max_attempts": 3, "fleet_batch": 500}
        values.update(changes)
        return AwsConfig(**values)

    def provider(self, **changes) -> AwsProvider:
        # No sleeping between the provider's own retries; botocore's backoff stays real.
        return AwsProvider(self.config(**changes), session=self.session, sleep=lambda s: None)


def _aws_env(mp: pytest.MonkeyPatch) -> None:
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        mp.delenv(var, raising=False)
    mp.setenv("AWS_ACCESS_KEY_ID", "testing")
    mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    mp.setenv("AWS_CONFIG_FILE", "/dev/null")
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # moto's ~1,300 stock AMIs make every launched instance scan them all (0.6 s per 100
    # instances); one registered AMI per region is all the launch template needs.
    mp.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")


def _prepare(url: str) -> MotoCloud:
    """Images, subnets and the launch template in every test region of a fresh moto."""
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
    subnets, images = {}, {}
    for region in REGIONS + (BIG_REGION,):
        ec2 = session.client("ec2", region_name=region, endpoint_url=url)
        images[region] = ec2.register_image(Name="slurm-bridge-node", Architecture="x86_64",
                                            RootDeviceName="/dev/xvda", VirtualizationType="hvm")["ImageId"]
        vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
        subnets[region] = tuple(
            ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=f"{region}{az}")["Subnet"]["SubnetId"]
            for cidr, az in (("10.20.0.0/18", "a"), ("10.20.64.0/18", "b")))
        ec2.create_launch_template(LaunchTemplateName=TEMPLATE,
                                   LaunchTemplateData={"ImageId": images[region], "InstanceType": "m5.large"})
    return MotoCloud(url, session, subnets, images)


@contextmanager
def running_moto() -> Iterator[MotoCloud]:
    """The server and its regions, outside pytest too (bench/aws_launch_calls.py). Its state is this
    process's moto state: there is one per process, which the session's `moto_cloud` holds."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as mp:
        _aws_env(mp)
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        # moto's state lives in this process, not in the server: start from nothing.
        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10).close()
        try:
            yield _prepare(url)
        finally:
            server.stop()


@contextmanager
def separate_moto() -> Iterator[MotoCloud]:
    """A moto server in a process of its own, with a state of its own: for the long seeded tests,
    which need a fresh moto now and then (moto's EC2 slows with every instance it has held) and
    must not reset the session's."""
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.MonkeyPatch.context() as mp:
        _aws_env(mp)
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "MOTO_EC2_LOAD_DEFAULT_AMIS": "false"})
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise RuntimeError("moto server did not start") from None
                    time.sleep(0.1)
            yield _prepare(url)
        finally:
            proc.terminate()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def moto_cloud():
    with running_moto() as cloud:
        yield cloud


@pytest.fixture
def cluster() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def launch_request(cluster: str, n: int, *, region: str = REGIONS[0], pool: str = "a100", spot: bool = False,
            itype: str = GPU_TYPE, job: int = 7, tag: str = "r1") -> LaunchRequest:
    return LaunchRequest(cluster, region, tuple(
        NodeSpec(f"{pool}-{i}", pool, itype, spot, (job,), f"sb-{tag}-{pool}-{i}") for i in range(n)))


# -- counting what the provider calls -------------------------------------------------------

def count_calls(provider: AwsProvider, regions=REGIONS) -> Counter:
    """Counts API calls (not HTTP attempts) by operation name, across the given regions."""
    calls: Counter = Counter()

    def seen(model, **_):
        calls[model.name] += 1

    for region in regions:
        provider.client(region).meta.events.register("before-call.ec2", seen)
    return calls


# -- fault injection at the transport boundary ------------------------------------------------

class _Body:
    def __init__(self, data: bytes):
        self.data = data

    def stream(self, **_):
        yield self.data


def _reply(url: str, status: int, xml: str) -> AWSResponse:
    return AWSResponse(url, status, {"Content-Type": "text/xml;charset=UTF-8"}, _Body(xml.encode()))


def error_xml(code: str, message: str) -> str:
    return ('<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error>'
            f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error></Errors>"
            f"<RequestID>{uuid.uuid4()}</RequestID></Response>")


@dataclass
class Injection:
    left: int
    attempts: int = 0    # HTTP attempts of the operation seen, answered or passed on
    answered: int = 0


def inject(provider: AwsProvider, region: str, operation: str, code: str, *, times: int = 1,
           status: int | None = None, message: str | None = None) -> Injection:
    """Answer the next TIMES attempts of OPERATION in REGION with EC2's error CODE."""
    state = Injection(times)
    status = status or STATUS.get(code, 400)
    message = message or f"injected {code}"

    def send(request, **_):
        state.attempts += 1
        if state.left <= 0:
            return None
        state.left -= 1
        state.answered += 1
        return _reply(request.url, status, error_xml(code, message))

    provider.client(region).meta.events.register(f"before-send.ec2.{operation}", send)
    return state


def fleet_errors(provider: AwsProvider, region: str, errors: list[tuple[str, str, str | None]], *,
                 launch: int = 0, times: int = 1) -> Injection:
    """Make CreateFleet start only LAUNCH instances and report ERRORS (code, message, AZ) for the rest.

    With LAUNCH > 0 the call goes to moto with its capacity cut to LAUNCH, so the instances that
    come back are real; the error set is added to moto's answer, as EC2 reports a short fleet.
    """
    state = Injection(times)
    items = "".join(
        "<item><launchTemplateAndOverrides><launchTemplateSpecification>"
        f"<launchTemplateName>{TEMPLATE}</launchTemplateName><version>1</version></launchTemplateSpecification>"
        f"<overrides><instanceType>{GPU_TYPE}</instanceType>"
        + (f"<availabilityZone>{az}</availabilityZone>" if az else "")
        + f"</overrides></launchTemplateAndOverrides><lifecycle>on-demand</lifecycle>"
        f"<errorCode>{escape(code)}</errorCode><errorMessage>{escape(msg)}</errorMessage></item>"
        for code, msg, az in errors)
    error_set = f"<errorSet>{items}</errorSet>"

    def send(request, **_):
        state.attempts += 1
        if state.left <= 0:
            return None
        state.left -= 1
        state.answered += 1
        if not launch:
            return _reply(request.url, 200, '<?xml version="1.0" encoding="UTF-8"?><CreateFleetResponse '
                          'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId>'
                          f"<fleetId>fleet-{uuid.uuid4()}</fleetId>{error_set}<fleetInstanceSet/>"
                          "</CreateFleetResponse>")
        body = request.body.decode() if isinstance(request.body, bytes) else request.body
        params = [(k, str(launch) if k.endswith(("TotalTargetCapacity", "MinTargetCapacity")) else v)
                  for k, v in parse_qsl(body, keep_blank_values=True)]
        data = urlencode(params).encode()
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        headers["Content-Length"] = str(len(data))
        real = URLLib3Session().send(AWSPreparedRequest(request.method, request.url, headers, data, False))
        xml = real.content.decode()
        at = xml.rindex("</CreateFleetResponse>")
        return _reply(request.url, real.status_code, xml[:at] + error_set + xml[at:])

    provider.client(region).meta.events.register("before-send.ec2.CreateFleet", send)
    return state
