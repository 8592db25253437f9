"""Seeded cloud-fault scenarios through the real launch path (issue 9).

Each scenario draws a job (1-3 nodes) with a random residency zone, random prices, and random faults
in every region: on AWS (real boto3 against moto) capacity, quota, throttling, 5xx, credential errors,
read timeouts and short fleets, injected at botocore's transport boundary; on GCP (the real client against the Compute
stand-in) stockouts in three report styles, quota, throttling, 5xx and a forbidden project; in two
local regions, the scripted double of tests/fakes.py (the local provider itself needs the lab, where
test_elastic.py covers it). Then it checks what must hold whatever happened:

- no row, hence no launch request, for a region outside the job's zone (rows are written before
  every provider call);
- the job either got all its nodes in one region, with exactly those instances alive in the clouds,
  or its nodes were set DOWN with a reason (Slurm requeues the job) and nothing of it is alive;
- no create/fail loop: at most (SAME_PLACE_RETRIES + 1) launch attempts per allowed region.

CI runs SLURM_BRIDGE_FAULT_SCENARIOS (default 100); `make soak` runs 1,000 (results in bench/README.md).
Sleeps between retries (botocore's backoff, the providers' own) are skipped: they only cost time.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
import tomllib
from pathlib import Path


from fakes import Answer, RecordingSlurm, ScriptedProvider
from gcp_server import ComputeServer
from moto_server import GPU_TYPE, fleet_errors, inject, separate_moto
from slurm_bridge.config import parse_config
from slurm_bridge.launch import SAME_PLACE_RETRIES, Group, Launcher
from slurm_bridge.models import Zone
from slurm_bridge.providers.base import FailureKind
from slurm_bridge.providers.gcp import GcpProvider
from slurm_bridge.state import StateDB
from test_provider_gcp import PROJECT, TEMPLATE, loopback_only  # noqa: F401 - autouse fixture

SCENARIOS = int(os.environ.get("SLURM_BRIDGE_FAULT_SCENARIOS", "100"))
GCP_TYPE = "g2-standard-4"
COUNTRY = {"eu-central-1": "DE", "eu-west-1": "IE", "europe-west3": "DE", "europe-west4": "NL",
           "lab-ch": "CH", "lab-de": "DE"}
PROVIDER = {"eu-central-1": "aws", "eu-west-1": "aws", "europe-west3": "gcp", "europe-west4": "gcp",
            "lab-ch": "local", "lab-de": "local"}
ITYPE = {"aws": GPU_TYPE, "gcp": GCP_TYPE, "local": "t1"}
AWS_FAULTS = ["InsufficientInstanceCapacity", "VcpuLimitExceeded", "RequestLimitExceeded", "InternalError",
              "Unavailable", "AuthFailure", "UnauthorizedOperation", "short-fleet", "timeout"]
GCP_FAULTS = ["exhaust-operation", "exhaust-summary", "exhaust-http", "quota-operation", "quota-http", "throttle",
              "5xx", "forbid"]
LOCAL_FAULTS = [FailureKind.CAPACITY, FailureKind.QUOTA, FailureKind.THROTTLED, FailureKind.TRANSIENT,
                FailureKind.CREDENTIALS]


def config(moto_cloud, gcp_endpoint: str, state_dir: str, cluster: str, prices: dict[str, float]) -> str:
    subnets = ", ".join(f'"{r}" = [{", ".join(f"{chr(34)}{s}{chr(34)}" for s in ids)}]'
                        for r, ids in moto_cloud.subnets.items() if r in ("eu-central-1", "eu-west-1"))
    overrides = "".join(f'[[prices.overrides]]\nprovider = "{PROVIDER[r]}"\nregion = "{r}"\n'
                        f'instance_type = "{ITYPE[PROVIDER[r]]}"\nondemand = {p}\n'
                        for r, p in prices.items() if PROVIDER[r] != "local")
    return f"""
[cluster]
name = "{cluster}"
state_dir = "{state_dir}"
[slurm]
watch_partitions = ["gpu"]
[policy]
block_seconds = 600
[zones]
any = "*"
[[pools]]
name = "g"
size = 4
zone = "any"
cpus = 4
memory_mb = 16000
gpus = "a10g:1"
instance_types = {{ aws = "{GPU_TYPE}", gcp = "{GCP_TYPE}", local = "t1" }}
[providers.aws]
regions = ["eu-central-1", "eu-west-1"]
launch_template = "slurm-bridge"
endpoint_url = "{moto_cloud.url}"
subnets = {{ {subnets} }}
[providers.gcp]
project = "{PROJECT}"
regions = ["europe-west3", "europe-west4"]
instance_template = "gpu-node"
endpoint = "{gcp_endpoint}"
anonymous = true
operation_timeout_s = 20
[[providers.local.regions]]
name = "lab-ch"
country = "CH"
prices = {{ t1 = {prices["lab-ch"]} }}
[[providers.local.regions]]
name = "lab-de"
country = "DE"
prices = {{ t1 = {prices["lab-de"]} }}
{overrides}"""


def aws_fault(rng: random.Random, aws, region: str) -> str:
    fault = rng.choice(AWS_FAULTS)
    if fault == "short-fleet":
        fleet_errors(aws, region, [("InsufficientInstanceCapacity", "short", None)], launch=1, times=rng.randint(1, 3))
    elif fault == "timeout":
        read_timeouts(aws, region, rng.randint(1, 4))
    else:
        inject(aws, region, "CreateFleet", fault, times=rng.randint(1, 4))
    return fault


def read_timeouts(aws, region: str, times: int) -> None:
    """The next TIMES CreateFleet attempts time out reading the answer, as a slow endpoint does."""
    from botocore.exceptions import ReadTimeoutError

    left = [times]

    def send(request, **_):
        if left[0] <= 0:
            return None
        left[0] -= 1
        raise ReadTimeoutError(endpoint_url=request.url)

    aws.client(region).meta.events.register("before-send.ec2.CreateFleet", send)


def gcp_fault(rng: random.Random, server: ComputeServer, region: str) -> str:
    fault = rng.choice(GCP_FAULTS)
    if fault.startswith("exhaust"):
        for zone in rng.sample([f"{region}-a", f"{region}-b", f"{region}-c"], rng.randint(1, 3)):
            server.exhaust(zone, fault.split("-")[1])
    elif fault.startswith("quota"):
        server.quota(region, fault.split("-")[1])
    elif fault == "throttle":
        server.throttle(times=rng.randint(1, 4), path_contains=f"/zones/{region}")
    elif fault == "5xx":
        server.fail_5xx(times=rng.randint(1, 6), path_contains=f"/zones/{region}")
    else:
        server.forbid()
    return fault


def run_scenario(seed: int, moto_cloud, tmp: Path) -> str:
    rng = random.Random(seed)
    cluster = f"cf{seed}"
    prices = {r: rng.choice([1.0, 2.0, 3.0, 5.0]) for r in COUNTRY}
    zone = frozenset(rng.sample(["DE", "IE", "NL", "CH", "FR"], rng.randint(1, 3)))
    nodes = tuple(f"g-{i}" for i in range(rng.randint(1, 3)))
    server = ComputeServer(PROJECT)
    server.start()
    try:
        server.add_template("gpu-node", TEMPLATE)
        cfg = parse_config(tomllib.loads(config(moto_cloud, server.endpoint, str(tmp / cluster), cluster, prices)))
        aws = moto_cloud.provider(regions=cfg.aws.regions, subnets=cfg.aws.subnets)
        gcp = GcpProvider(cfg.gcp)
        faults = {}
        for region in COUNTRY:
            if rng.random() < 0.6:
                p = PROVIDER[region]
                faults[region] = (aws_fault(rng, aws, region) if p == "aws" else
                                  gcp_fault(rng, server, region) if p == "gcp" else None)
        script = [Answer(rng.choice(LOCAL_FAULTS), rng.random() < 0.3) if rng.random() < 0.6 else Answer()
                  for _ in range(rng.randint(0, 4))]
        local = ScriptedProvider(script, Answer(rng.choice(LOCAL_FAULTS)) if rng.random() < 0.5 else Answer())
        slurm = RecordingSlurm()
        with StateDB.open(cfg.cluster.state_dir) as db:
            launcher = Launcher(cfg, db, slurm, {"aws": aws, "gcp": gcp, "local": local}, sleep=lambda s: None)
            request_id = db.add_request("resume", ",".join(nodes), list(nodes), None)
            outcome = launcher.launch_group(Group(cfg.pool("g"), nodes, 100 + seed), request_id, Zone("job", zone))
            rows = db.instances()
        # The faults end; what is left alive is read from the clouds themselves.
        server.forbidden = None
        server.throttles.clear()
        server.failures.clear()
        live = {("aws", i.instance_id) for i in aws.list_instances(cluster) if i.state != "terminated"}
        live |= {("gcp", i.instance_id) for i in gcp.list_instances(cluster) if i.state != "terminated"}
        live |= {("local", i.instance_id) for i in local.list_instances(cluster)}
    finally:
        server.stop()

    where = f"seed {seed}: zone {sorted(zone)}, faults {faults}, outcome {outcome}"
    outside = [(r.provider, r.region) for r in rows if COUNTRY[r.region] not in zone]
    assert not outside, f"{where}: launched outside the zone: {outside}"
    allowed = [r for r in COUNTRY if COUNTRY[r] in zone]
    attempts = {(r.region, r.client_token.rsplit("-", 1)[1]) for r in rows}
    assert len(attempts) <= len(allowed) * (SAME_PLACE_RETRIES + 1), f"{where}: {len(attempts)} attempts"
    if outcome.ok:
        active = [r for r in rows if r.state == "launching"]
        assert sorted(r.node for r in active) == sorted(nodes) and {r.region for r in active} == {outcome.region}
        assert live == {(r.provider, r.instance_id) for r in active}, f"{where}: alive {live}"
    else:
        assert live == set(), f"{where}: left alive {live}"
        downs = [(names, ch) for names, ch in slurm.updates if ch.get("state") == "DOWN"]
        assert downs and set(downs[0][0]) == set(nodes) and downs[0][1]["reason"], f"{where}: {slurm.updates}"
    assert all(r.error for r in rows if r.state == "failed"), where
    return f"ran on {outcome.provider}" if outcome.ok else "requeued"


BLOCK = 50    # scenarios per moto server: moto's EC2 slows with every instance it has ever held


def test_seeded_cloud_faults_never_break_residency_leak_instances_or_loop(monkeypatch):
    from collections import Counter

    monkeypatch.setattr(time, "sleep", lambda s: None)
    start, outcomes = time.monotonic(), Counter()
    with tempfile.TemporaryDirectory() as tmp:
        for first in range(0, SCENARIOS, BLOCK):
            with separate_moto() as moto_cloud:
                for seed in range(first, min(first + BLOCK, SCENARIOS)):
                    outcomes[run_scenario(seed, moto_cloud, Path(tmp))] += 1
    # The draws must reach every end: runs on each cloud and requeues, or the checks above prove little.
    assert sum(outcomes.values()) == SCENARIOS
    assert {"ran on aws", "ran on gcp", "ran on local", "requeued"} <= set(outcomes), outcomes
    print(f"{SCENARIOS} fault scenarios in {time.monotonic() - start:.1f} s: {dict(sorted(outcomes.items()))}")
