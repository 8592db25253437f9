"""Failover across regions and providers through the real launch path and the real cloud clients.

The Launcher (slurm_bridge/launch.py) drives the real AWS provider (boto3 against a local moto
server) and the real GCP provider (google-cloud-compute against the local Compute REST stand-in);
errors moto cannot produce are injected at botocore's transport boundary (tests/moto_server.py).
Slurm is a recording double here: the launch path only tells it node addresses and failures, and
the lab tests cover that part against a real slurmctld.
"""

from __future__ import annotations

import tomllib

import pytest

from fakes import RecordingSlurm
from gcp_server import ComputeServer
from moto_server import GPU_TYPE, inject
from slurm_bridge.config import parse_config
from slurm_bridge.launch import Group, Launcher
from slurm_bridge.models import Zone
from slurm_bridge.providers.gcp import GcpProvider
from slurm_bridge.state import StateDB
from test_provider_gcp import PROJECT, TEMPLATE, loopback_only  # noqa: F401 - autouse fixture

pytest_plugins = ["moto_server"]    # the session's moto server (moto_cloud)
GCP_TYPE = "g2-standard-4"


@pytest.fixture
def gcp_server():
    srv = ComputeServer(PROJECT)
    srv.start()
    srv.add_template("gpu-node", TEMPLATE)
    yield srv
    srv.stop()


def config(moto_cloud, gcp_server, tmp_path):
    subnets = ", ".join(f'"{r}" = [{", ".join(repr(s).replace(chr(39), chr(34)) for s in ids)}]'
                        for r, ids in moto_cloud.subnets.items() if r in ("eu-central-1", "eu-west-1"))
    text = f"""
[cluster]
name = "failover"
state_dir = "{tmp_path}/state"
[slurm]
watch_partitions = ["gpu"]
[zones]
de = ["DE"]
eu = "EU"
[accounts.default]
zone = "eu"
[[pools]]
name = "g"
size = 4
zone = "eu"
cpus = 4
memory_mb = 16000
gpus = "a10g:1"
instance_types = {{ aws = "{GPU_TYPE}", gcp = "{GCP_TYPE}" }}
[providers.aws]
regions = ["eu-central-1", "eu-west-1"]
launch_template = "slurm-bridge"
endpoint_url = "{moto_cloud.url}"
subnets = {{ {subnets} }}
[providers.gcp]
project = "{PROJECT}"
regions = ["europe-west3", "europe-west4"]
instance_template = "gpu-node"
endpoint = "{gcp_server.endpoint}"
anonymous = true
operation_timeout_s = 20
# Cheapest first: AWS Ireland, AWS Frankfurt, GCP Netherlands, GCP Frankfurt.
[[prices.overrides]]
provider = "aws"
region = "eu-west-1"
instance_type = "{GPU_TYPE}"
ondemand = 1.0
[[prices.overrides]]
provider = "aws"
region = "eu-central-1"
instance_type = "{GPU_TYPE}"
ondemand = 2.0
[[prices.overrides]]
provider = "gcp"
region = "europe-west4"
instance_type = "{GCP_TYPE}"
ondemand = 3.0
[[prices.overrides]]
provider = "gcp"
region = "europe-west3"
instance_type = "{GCP_TYPE}"
ondemand = 4.0
"""
    return parse_config(tomllib.loads(text))


@pytest.fixture
def world(moto_cloud, gcp_server, tmp_path):
    cfg = config(moto_cloud, gcp_server, tmp_path)
    aws = moto_cloud.provider(**{k: getattr(cfg.aws, k) for k in ("regions", "subnets")})
    gcp = GcpProvider(cfg.gcp)
    db = StateDB.open(cfg.cluster.state_dir)
    slurm = RecordingSlurm()
    launcher = Launcher(cfg, db, slurm, {"aws": aws, "gcp": gcp}, sleep=lambda s: None)
    yield cfg, db, slurm, launcher, aws
    db.close()


def request(db) -> int:
    return db.add_request("resume", "g-[0-3]", ["g-0", "g-1", "g-2", "g-3"], None)


def launched_rows(db, job):
    return [(r.provider, r.region, r.state) for r in db.instances() if job in r.job_ids]


def test_nothing_fails_the_cheapest_region_wins(world):
    cfg, db, slurm, launcher, _ = world
    outcome = launcher.launch_group(Group(cfg.pool("g"), ("g-0", "g-1"), 11), request_id=request(db))
    assert (outcome.ok, outcome.provider, outcome.region) == (True, "aws", "eu-west-1")
    assert launched_rows(db, 11) == [("aws", "eu-west-1", "launching")] * 2


def test_capacity_error_in_the_first_region_moves_the_launch_to_the_next(world):
    cfg, db, slurm, launcher, aws = world
    inject(aws, "eu-west-1", "CreateFleet", "InsufficientInstanceCapacity")
    outcome = launcher.launch_group(Group(cfg.pool("g"), ("g-0", "g-1"), 12), request_id=request(db))
    assert (outcome.ok, outcome.provider, outcome.region) == (True, "aws", "eu-central-1")
    rows = launched_rows(db, 12)
    assert rows[:2] == [("aws", "eu-west-1", "failed")] * 2 and rows[2:] == [("aws", "eu-central-1", "launching")] * 2
    [block] = db.active_blocks()
    assert (block.provider, block.region, block.kind, block.scope) == ("aws", "eu-west-1", "capacity", "region")


def test_credential_error_blocks_aws_and_the_launch_goes_to_gcp(world, gcp_server):
    cfg, db, slurm, launcher, aws = world
    inject(aws, "eu-west-1", "CreateFleet", "AuthFailure")
    outcome = launcher.launch_group(Group(cfg.pool("g"), ("g-0",), 13), request_id=request(db))
    assert (outcome.ok, outcome.provider, outcome.region) == (True, "gcp", "europe-west4")
    [block] = db.active_blocks()
    assert (block.provider, block.scope, block.kind) == ("aws", "provider", "credentials")
    # Frankfurt on AWS was never tried: the whole provider is blocked.
    assert [r[1] for r in launched_rows(db, 13)] == ["eu-west-1", "europe-west4"]


def test_job_zone_keeps_the_failover_inside_germany(world):
    cfg, db, slurm, launcher, aws = world
    inject(aws, "eu-central-1", "CreateFleet", "AuthFailure")
    germany = Zone("de", frozenset({"DE"}))
    outcome = launcher.launch_group(Group(cfg.pool("g"), ("g-2",), 14), request_id=request(db), job_zone=germany)
    # Ireland and the Netherlands are cheaper but outside the job's zone; AWS Frankfurt fails loudly.
    assert (outcome.ok, outcome.provider, outcome.region) == (True, "gcp", "europe-west3")
    assert {r[1] for r in launched_rows(db, 14)} == {"eu-central-1", "europe-west3"}


def test_everything_failing_sets_the_nodes_down_then_powers_them_down(world, gcp_server):
    cfg, db, slurm, launcher, aws = world
    inject(aws, "eu-west-1", "CreateFleet", "AuthFailure")
    gcp_server.forbid()
    outcome = launcher.launch_group(Group(cfg.pool("g"), ("g-3",), 15), request_id=request(db))
    assert not outcome.ok and "no region could launch" in outcome.reason
    states = [changes.get("state") for names, changes in slurm.updates if names == ("g-3",)]
    assert states == ["DOWN", "POWER_DOWN_FORCE"]
    assert all(r[2] == "failed" for r in launched_rows(db, 15))
