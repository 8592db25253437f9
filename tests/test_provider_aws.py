"""The AWS provider's launch path, against a real local EC2 API (moto's server) through real boto3.

The one thing mocked is the answer to some calls: moto cannot run out of
capacity, hit a quota, throttle or refuse credentials, so tests/moto_server.py
injects EC2's own error responses (HTTP status and XML body) at the transport
boundary, botocore's `before-send` event. botocore then parses, retries and
raises exactly as it would against AWS; the provider sees nothing different.
"""

from __future__ import annotations

import time

import pytest

pytest.register_assert_rewrite("moto_server")
from moto_server import BIG_REGION, GPU_TYPE, REGIONS, count_calls, fleet_errors, inject, launch_request

from slurm_bridge.providers import aws
from slurm_bridge.providers.base import FailureKind, LaunchRequest, NodeSpec, Provider, Scope

pytest_plugins = ["moto_server"]

REGION = REGIONS[0]


def live(cloud, cluster, region=REGION) -> dict[str, dict]:
    """The cluster's live instances in REGION as moto has them, by node tag ('' if none)."""
    out = {}
    pages = cloud.ec2(region).get_paginator("describe_instances").paginate(Filters=[
        {"Name": "tag:slurm-bridge:cluster", "Values": [cluster]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])
    for page in pages:
        for r in page["Reservations"]:
            for d in r["Instances"]:
                tags = {t["Key"]: t["Value"] for t in d.get("Tags", [])}
                out.setdefault(tags.get("slurm-bridge:node", ""), []).append(d | {"tags": tags})
    return out


def record_params(provider, operation, region=REGION) -> list[dict]:
    seen = []
    provider.client(region).meta.events.register(f"before-parameter-build.ec2.{operation}",
                                                 lambda params, **_: seen.append(params))
    return seen


def test_the_provider_keeps_the_contract_and_configures_botocore(moto_cloud):
    provider = moto_cloud.provider(max_attempts=4)
    assert isinstance(provider, Provider) and provider.name == "aws"
    client = provider.client(REGION)
    assert provider.client(REGION) is client
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 4}
    assert (client.meta.config.connect_timeout, client.meta.config.read_timeout) == (5, 30)
    assert client.meta.endpoint_url == moto_cloud.url and client.meta.region_name == REGION


def test_a_thousand_nodes_go_out_in_two_fleet_calls_each_with_its_own_node_tag(moto_cloud, cluster, monkeypatch):
    provider = moto_cloud.provider(regions=(BIG_REGION,))
    calls = count_calls(provider, regions=(BIG_REGION,))
    req = launch_request(cluster, 1000, region=BIG_REGION)
    t0 = time.time()
    result = provider.launch(req)
    assert result.complete and len(result.launched) == 1000
    assert calls["CreateFleet"] == 2
    assert calls["CreateTags"] == 1000
    assert {i.node for i in result.launched} == {s.node for s in req.nodes}
    assert len({i.instance_id for i in result.launched}) == 1000
    assert all(i.address and i.zone.startswith(BIG_REGION) and i.state in ("pending", "running")
               and i.instance_type == GPU_TYPE and i.launched_at >= t0 - 5 for i in result.launched)
    # What EC2 holds, read with DescribeTags (one pass; DescribeInstances of 1,000 is slow in moto).
    tags: dict[str, dict[str, str]] = {}
    for page in moto_cloud.ec2(BIG_REGION).get_paginator("describe_tags").paginate(
            Filters=[{"Name": "resource-type", "Values": ["instance"]}]):
        for t in page["Tags"]:
            tags.setdefault(t["ResourceId"], {})[t["Key"]] = t["Value"]
    mine = {iid: t for iid, t in tags.items() if t.get("slurm-bridge:cluster") == cluster}
    assert {iid: t["slurm-bridge:node"] for iid, t in mine.items()} == {i.instance_id: i.node for i in result.launched}
    token = {s.node: s.client_token for s in req.nodes}
    assert all(t["slurm-bridge:token"] == token[t["slurm-bridge:node"]] for t in mine.values())
    assert {(t["slurm-bridge:pool"], t["slurm-bridge:jobs"]) for t in mine.values()} == {("a100", "7")}
    assert len({t["slurm-bridge:request"] for t in mine.values()}) == 2   # one per fleet call
    # Termination goes out in batches (1,000 ids at most per call; 400 here to see the split).
    monkeypatch.setattr(aws, "TERMINATE_BATCH", 400)
    ids = [i.instance_id for i in result.launched]
    provider.terminate(BIG_REGION, ids)
    assert calls["TerminateInstances"] == 3
    sample = moto_cloud.ec2(BIG_REGION).describe_instances(InstanceIds=ids[::100])["Reservations"]
    assert {d["State"]["Name"] for r in sample for d in r["Instances"]} == {"terminated"}


def test_the_fleet_request_asks_for_the_template_every_subnet_and_the_shared_tags(moto_cloud, cluster):
    provider = moto_cloud.provider()
    sent = record_params(provider, "CreateFleet")
    req = launch_request(cluster, 3, job=42)
    assert provider.launch(req).complete
    [p] = sent
    assert p["Type"] == "instant" and 0 < len(p["ClientToken"]) <= 64
    [conf] = p["LaunchTemplateConfigs"]
    assert conf["LaunchTemplateSpecification"] == {"LaunchTemplateName": "slurm-bridge", "Version": "$Default"}
    assert conf["Overrides"] == [{"InstanceType": GPU_TYPE, "SubnetId": s} for s in moto_cloud.subnets[REGION]]
    assert p["TargetCapacitySpecification"] == {"TotalTargetCapacity": 3, "DefaultTargetCapacityType": "on-demand"}
    assert p["OnDemandOptions"]["MinTargetCapacity"] == 3 and p["OnDemandOptions"]["SingleAvailabilityZone"]
    [spec] = p["TagSpecifications"]
    assert spec["ResourceType"] == "instance"
    assert {t["Key"]: t["Value"] for t in spec["Tags"]} == {
        "slurm-bridge:cluster": cluster, "slurm-bridge:pool": "a100", "slurm-bridge:jobs": "42",
        "slurm-bridge:request": p["ClientToken"]}


def test_a_spot_pool_launches_spot_instances(moto_cloud, cluster):
    provider = moto_cloud.provider()
    sent = record_params(provider, "CreateFleet", region=REGIONS[1])
    result = provider.launch(launch_request(cluster, 2, region=REGIONS[1], spot=True, pool="spot"))
    assert result.complete and len(result.launched) == 2
    assert sent[0]["TargetCapacitySpecification"]["DefaultTargetCapacityType"] == "spot"
    assert sent[0]["SpotOptions"]["AllocationStrategy"] == "price-capacity-optimized"
    found = live(moto_cloud, cluster, REGIONS[1])
    assert {d["InstanceLifecycle"] for v in found.values() for d in v} == {"spot"}


def test_nodes_of_different_shapes_go_out_in_separate_fleet_calls(moto_cloud, cluster):
    provider = moto_cloud.provider()
    sent = record_params(provider, "CreateFleet")
    nodes = (NodeSpec("a-0", "a", GPU_TYPE, False, (1,), "sb-x-a-0"),
             NodeSpec("b-0", "b", "m5.large", True, (1,), "sb-x-b-0"))
    result = provider.launch(LaunchRequest(cluster, REGION, nodes))
    assert result.complete
    assert {i.node: i.instance_type for i in result.launched} == {"a-0": GPU_TYPE, "b-0": "m5.large"}
    assert sorted(p["TargetCapacitySpecification"]["DefaultTargetCapacityType"] for p in sent) == ["on-demand", "spot"]


def test_launching_again_with_the_same_tokens_launches_nothing(moto_cloud, cluster):
    provider = moto_cloud.provider()
    calls = count_calls(provider)
    first = provider.launch(launch_request(cluster, 3))
    again = provider.launch(launch_request(cluster, 3))
    assert calls["CreateFleet"] == 1
    assert {(i.node, i.instance_id) for i in again.launched} == {(i.node, i.instance_id) for i in first.launched}
    assert again.complete and all(i.address for i in again.launched)
    # New tokens (a new attempt) are a new launch.
    assert len(provider.launch(launch_request(cluster, 3, tag="r2")).launched) == 3
    assert calls["CreateFleet"] == 2


class Crash(Exception):
    pass


def test_a_crash_between_fleet_and_node_tags_leaves_instances_a_retry_adopts(moto_cloud, cluster):
    crashing = moto_cloud.provider()

    def crash(**_):
        raise Crash("worker died")

    crashing.client(REGION).meta.events.register("before-call.ec2.CreateTags", crash)
    with pytest.raises(Crash):
        crashing.launch(launch_request(cluster, 4))
    orphans = live(moto_cloud, cluster)
    assert list(orphans) == [""] and len(orphans[""]) == 4   # tagged with cluster and request only
    assert len({d["tags"]["slurm-bridge:request"] for d in orphans[""]}) == 1

    provider = moto_cloud.provider()
    calls = count_calls(provider)
    result = provider.launch(launch_request(cluster, 4))
    assert result.complete and calls["CreateFleet"] == 0
    assert {i.instance_id for i in result.launched} == {d["InstanceId"] for d in orphans[""]}
    assert sorted(live(moto_cloud, cluster)) == ["a100-0", "a100-1", "a100-2", "a100-3"]


# -- failures -------------------------------------------------------------------------------

def test_capacity_raised_by_create_fleet_is_capacity_in_that_zone_and_not_retried(moto_cloud, cluster):
    provider = moto_cloud.provider(max_attempts=3)
    shot = inject(provider, REGION, "CreateFleet", "InsufficientInstanceCapacity", times=3,
                  message=f"We currently do not have sufficient {GPU_TYPE} capacity in the Availability Zone "
                          f"you requested ({REGION}a).")
    result = provider.launch(launch_request(cluster, 2))
    assert result.launched == () and set(result.failed) == {"a100-0", "a100-1"}
    f = result.failed["a100-0"]
    assert (f.kind, f.effective_scope, f.zone) == (FailureKind.CAPACITY, Scope.ZONE, f"{REGION}a")
    assert shot.attempts == 1   # botocore would retry this 500 twice more without the veto
    assert live(moto_cloud, cluster) == {}


def test_capacity_without_a_zone_is_the_region(moto_cloud, cluster):
    provider = moto_cloud.provider()
    inject(provider, REGION, "CreateFleet", "InsufficientCapacity", message="Insufficient capacity.")
    f = provider.launch(launch_request(cluster, 1)).failed["a100-0"]
    assert (f.kind, f.effective_scope, f.zone) == (FailureKind.CAPACITY, Scope.REGION, None)


def test_other_server_errors_are_still_retried_by_botocore(moto_cloud, cluster):
    provider = moto_cloud.provider(max_attempts=3)
    shot = inject(provider, REGION, "CreateFleet", "InternalError", times=1)
    assert provider.launch(launch_request(cluster, 1)).complete
    assert shot.attempts == 2


@pytest.mark.parametrize("errors, scope, zone", [
    ([("InsufficientInstanceCapacity", "no capacity", f"{REGION}a")], Scope.ZONE, f"{REGION}a"),
    ([("InsufficientInstanceCapacity", f"no capacity in ({REGION}a)", None)], Scope.ZONE, f"{REGION}a"),
    ([("InsufficientInstanceCapacity", "no capacity", f"{REGION}a"),
      ("InsufficientInstanceCapacity", "no capacity", f"{REGION}b")], Scope.REGION, None),
    ([("UnfulfillableCapacity", "Unable to fulfill capacity due to your request configuration.", None)],
     Scope.REGION, None),
])
def test_capacity_reported_in_fleet_errors_with_no_instances(moto_cloud, cluster, errors, scope, zone):
    provider = moto_cloud.provider()
    fleet_errors(provider, REGION, errors)
    result = provider.launch(launch_request(cluster, 3))
    assert result.launched == () and len(result.failed) == 3
    f = result.failed["a100-2"]
    assert (f.kind, f.effective_scope, f.zone) == (FailureKind.CAPACITY, scope, zone)


def test_a_partial_fleet_returns_what_came_up_and_fails_the_rest(moto_cloud, cluster):
    provider = moto_cloud.provider()
    fleet_errors(provider, REGION, [("InsufficientInstanceCapacity", "not enough", f"{REGION}b")], launch=3)
    result = provider.launch(launch_request(cluster, 5))
    assert sorted(i.node for i in result.launched) == ["a100-0", "a100-1", "a100-2"]
    assert all(i.address for i in result.launched)
    assert set(result.failed) == {"a100-3", "a100-4"}
    assert result.failed["a100-4"].kind is FailureKind.CAPACITY
    assert sorted(live(moto_cloud, cluster)) == ["a100-0", "a100-1", "a100-2"]   # node-tagged, for release


def test_after_a_failed_batch_no_further_batch_is_launched(moto_cloud, cluster):
    provider = moto_cloud.provider(fleet_batch=2)
    calls = count_calls(provider)
    fleet_errors(provider, REGION, [("VcpuLimitExceeded", "You have requested more vCPU capacity", None)])
    result = provider.launch(launch_request(cluster, 5))
    assert calls["CreateFleet"] == 1 and result.launched == ()
    assert {f.kind for f in result.failed.values()} == {FailureKind.QUOTA} and len(result.failed) == 5


@pytest.mark.parametrize("operation, code, kind, scope", [
    ("CreateFleet", "InstanceLimitExceeded", FailureKind.QUOTA, Scope.REGION),
    ("CreateFleet", "MaxSpotInstanceCountExceeded", FailureKind.QUOTA, Scope.REGION),
    ("CreateFleet", "AuthFailure", FailureKind.CREDENTIALS, Scope.PROVIDER),
    ("DescribeInstances", "UnauthorizedOperation", FailureKind.CREDENTIALS, Scope.PROVIDER),
    ("CreateFleet", "InvalidParameterValue", FailureKind.CONFIG, Scope.REGION),
])
def test_errors_raised_by_ec2_are_classified(moto_cloud, cluster, operation, code, kind, scope):
    provider = moto_cloud.provider()
    shot = inject(provider, REGION, operation, code)
    result = provider.launch(launch_request(cluster, 2))
    assert result.launched == ()
    f = result.failed["a100-1"]
    assert (f.kind, f.effective_scope) == (kind, scope) and code in f.message
    assert shot.attempts == 1


def test_throttling_is_retried_by_botocore_then_classified_throttled(moto_cloud, cluster):
    provider = moto_cloud.provider(max_attempts=2)
    shot = inject(provider, REGION, "CreateFleet", "RequestLimitExceeded", times=1)
    assert provider.launch(launch_request(cluster, 1)).complete and shot.attempts == 2
    shot = inject(provider, REGION, "CreateFleet", "RequestLimitExceeded", times=2)
    f = provider.launch(launch_request(cluster, 1, tag="r2")).failed["a100-0"]
    assert (f.kind, f.effective_scope, f.temporary) == (FailureKind.THROTTLED, Scope.NONE, True)
    assert shot.attempts == 2


def test_a_launch_template_missing_in_the_region_is_a_config_failure_of_that_region(moto_cloud, cluster):
    provider = moto_cloud.provider(launch_template="no-such-template")
    f = provider.launch(launch_request(cluster, 1)).failed["a100-0"]
    assert (f.kind, f.effective_scope, f.temporary) == (FailureKind.CONFIG, Scope.REGION, False)
    assert "InvalidLaunchTemplateName" in f.message


def test_a_region_not_configured_is_refused_without_a_call(moto_cloud, cluster):
    provider = moto_cloud.provider(regions=(REGION,))
    calls = count_calls(provider, regions=(REGION,))
    f = provider.launch(launch_request(cluster, 1, region="eu-west-1")).failed["a100-0"]
    assert (f.kind, f.effective_scope) == (FailureKind.CONFIG, Scope.REGION) and not calls


def test_an_unreachable_endpoint_is_transient_for_the_region(moto_cloud, cluster):
    provider = moto_cloud.provider(endpoint_url="http://127.0.0.1:9", max_attempts=1)
    f = provider.launch(launch_request(cluster, 1)).failed["a100-0"]
    assert (f.kind, f.effective_scope) == (FailureKind.TRANSIENT, Scope.REGION)


def test_node_tags_are_retried_while_a_new_instance_is_not_yet_visible(moto_cloud, cluster):
    provider = moto_cloud.provider()
    shot = inject(provider, REGION, "CreateTags", "InvalidInstanceID.NotFound", times=2)
    result = provider.launch(launch_request(cluster, 3))
    assert result.complete and shot.answered == 2
    assert sorted(live(moto_cloud, cluster)) == ["a100-0", "a100-1", "a100-2"]


def test_an_instance_that_cannot_get_its_node_tag_fails_its_node_and_is_terminated(moto_cloud, cluster):
    provider = moto_cloud.provider()
    inject(provider, REGION, "CreateTags", "UnauthorizedOperation", times=1)
    result = provider.launch(launch_request(cluster, 3))
    assert len(result.launched) == 2 and len(result.failed) == 1
    [f] = result.failed.values()
    assert f.kind is FailureKind.CREDENTIALS
    assert sorted(live(moto_cloud, cluster)) == sorted(i.node for i in result.launched)
