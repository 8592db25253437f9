"""The AWS provider's other verbs (terminate, list, describe, Spot prices), its IAM footprint and its
error table, against moto's server through real boto3. As in test_provider_aws.py, only injected
error responses (tests/moto_server.py) are mocked."""

from __future__ import annotations

import time

import pytest

pytest.register_assert_rewrite("moto_server")
from moto_server import GPU_TYPE, REGIONS, count_calls, inject, launch_request

from slurm_bridge.providers import aws
from slurm_bridge.providers.base import FailureKind, ProviderError, Scope

pytest_plugins = ["moto_server"]

REGION = REGIONS[0]
UNKNOWN_ID = "i-0123456789abcdef0"


def states(moto_cloud, region, ids) -> dict[str, str]:
    pages = moto_cloud.ec2(region).get_paginator("describe_instances").paginate(
        Filters=[{"Name": "instance-id", "Values": list(ids)}])
    return {d["InstanceId"]: d["State"]["Name"] for p in pages for r in p["Reservations"] for d in r["Instances"]}


def test_terminate_skips_unknown_and_malformed_ids_and_terminates_the_rest(moto_cloud, cluster):
    provider = moto_cloud.provider()
    ids = [i.instance_id for i in provider.launch(launch_request(cluster, 2)).launched]
    calls = count_calls(provider)
    provider.terminate(REGION, [ids[0], UNKNOWN_ID, "not-an-id", ids[1], ids[0]])
    assert set(states(moto_cloud, REGION, ids).values()) == {"terminated"}
    assert calls["TerminateInstances"] == 3   # the mix, once more after a moment, then the known ids
    provider.terminate(REGION, ids)           # already gone: not an error
    provider.terminate(REGION, [UNKNOWN_ID])
    provider.terminate(REGION, [])


def test_terminate_raises_a_classified_error_for_anything_else(moto_cloud, cluster):
    provider = moto_cloud.provider()
    ids = [i.instance_id for i in provider.launch(launch_request(cluster, 1)).launched]
    inject(provider, REGION, "TerminateInstances", "UnauthorizedOperation")
    with pytest.raises(ProviderError) as err:
        provider.terminate(REGION, ids)
    assert err.value.failure.kind is FailureKind.CREDENTIALS
    assert states(moto_cloud, REGION, ids) == {ids[0]: "running"}
    provider.terminate(REGION, ids)


def test_list_instances_finds_exactly_the_clusters_instances_in_every_region(moto_cloud, cluster):
    provider = moto_cloud.provider()
    t0 = time.time()
    a = provider.launch(launch_request(cluster, 2, job=11))
    b = provider.launch(launch_request(cluster, 1, region=REGIONS[1], pool="h100", job=12))
    provider.launch(launch_request(cluster + "-other", 2))
    # An instance with the cluster tag but no node tag (say, from a crash) is listed with node "".
    bare = moto_cloud.ec2(REGIONS[1]).run_instances(
        ImageId=moto_cloud.images[REGIONS[1]], MinCount=1, MaxCount=1, InstanceType="m5.large",
        SubnetId=moto_cloud.subnets[REGIONS[1]][0],
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "slurm-bridge:cluster", "Value": cluster}]}],
    )["Instances"][0]["InstanceId"]
    gone = provider.launch(launch_request(cluster, 1, pool="gone")).launched[0].instance_id
    provider.terminate(REGION, [gone])

    found = {i.instance_id: i for i in provider.list_instances(cluster)}
    launched = {i.instance_id: i for i in a.launched + b.launched}
    assert set(found) == set(launched) | {bare}
    for iid, inst in launched.items():
        got = found[iid]
        assert (got.node, got.region, got.cluster, got.instance_type) == (inst.node, inst.region, cluster, GPU_TYPE)
        assert got.state == "running" and got.address == inst.address and got.address.startswith("10.20.")
        assert got.zone in (f"{got.region}a", f"{got.region}b")
        assert isinstance(got.launched_at, float) and t0 - 5 <= got.launched_at <= time.time() + 5
        assert got.tags["slurm-bridge:node"] == got.node and got.tags["slurm-bridge:cluster"] == cluster
    assert found[b.launched[0].instance_id].tags["slurm-bridge:jobs"] == "12"
    assert found[b.launched[0].instance_id].tags["slurm-bridge:pool"] == "h100"
    assert (found[bare].node, found[bare].region) == ("", REGIONS[1])


def test_describe_returns_the_known_ids_with_their_current_state(moto_cloud, cluster):
    provider = moto_cloud.provider()
    a, b = provider.launch(launch_request(cluster, 2)).launched
    provider.terminate(REGION, [b.instance_id])
    got = {i.instance_id: i for i in provider.describe(REGION, [a.instance_id, b.instance_id, UNKNOWN_ID])}
    assert set(got) == {a.instance_id, b.instance_id}
    assert (got[a.instance_id].state, got[a.instance_id].node) == ("running", a.node)
    assert got[b.instance_id].state == "terminated"
    assert provider.describe(REGION, []) == []


def test_spot_prices_are_the_cheapest_current_price_per_type(moto_cloud):
    provider = moto_cloud.provider()
    prices = provider.spot_prices(REGION, [GPU_TYPE, "m5.large", "no-such.type"])
    # moto answers a fixed 0.00001 per AZ for every type it offers in the region.
    assert prices == {GPU_TYPE: pytest.approx(1e-05), "m5.large": pytest.approx(1e-05)}
    assert all(type(v) is float for v in prices.values())
    assert provider.spot_prices(REGION, []) == {}


def test_spot_prices_raise_a_classified_error(moto_cloud):
    provider = moto_cloud.provider()
    inject(provider, REGION, "DescribeSpotPriceHistory", "AuthFailure")
    with pytest.raises(ProviderError) as err:
        provider.spot_prices(REGION, [GPU_TYPE])
    assert err.value.failure.effective_scope is Scope.PROVIDER


def test_every_call_of_a_full_cycle_is_in_the_documented_iam_actions(moto_cloud, cluster):
    provider = moto_cloud.provider()
    calls = count_calls(provider)
    for region, spot in ((REGIONS[0], False), (REGIONS[1], True)):
        launched = provider.launch(launch_request(cluster, 3, region=region, spot=spot)).launched
        provider.launch(launch_request(cluster, 3, region=region, spot=spot))   # idempotent path
        provider.describe(region, [i.instance_id for i in launched])
        provider.spot_prices(region, [GPU_TYPE])
        provider.terminate(region, [i.instance_id for i in launched] + [UNKNOWN_ID])
    provider.list_instances(cluster)
    used = {f"ec2:{op}" for op in calls}
    assert used == {"ec2:CreateFleet", "ec2:CreateTags", "ec2:DescribeInstances", "ec2:TerminateInstances",
                    "ec2:DescribeSpotPriceHistory"}
    assert used <= aws.REQUIRED_IAM_ACTIONS
    # Checked by AWS on CreateFleet, never called directly.
    assert {"ec2:RunInstances", "iam:PassRole"} <= aws.REQUIRED_IAM_ACTIONS - used


@pytest.mark.parametrize("code, status, message, kind, scope, zone", [
    ("InsufficientInstanceCapacity", 500, "no p3 in the AZ you requested (eu-west-1c).", "CAPACITY", "ZONE",
     "eu-west-1c"),
    ("InsufficientHostCapacity", 500, "", "CAPACITY", "REGION", None),
    ("SpotMaxPriceTooLow", 400, "", "CAPACITY", "REGION", None),
    ("VcpuLimitExceeded", 400, "", "QUOTA", "REGION", None),
    ("SomeNewLimitExceeded", 400, "", "QUOTA", "REGION", None),
    ("RequestLimitExceeded", 503, "", "THROTTLED", "NONE", None),
    ("ThrottlingException", 400, "", "THROTTLED", "NONE", None),
    ("ExpiredToken", 400, "", "CREDENTIALS", "PROVIDER", None),
    ("SignatureDoesNotMatch", 403, "", "CREDENTIALS", "PROVIDER", None),
    ("OptInRequired", 401, "", "CONFIG", "REGION", None),
    ("InvalidLaunchTemplateId.NotFound", 400, "", "CONFIG", "REGION", None),
    ("InvalidSubnetID.NotFound", 400, "", "CONFIG", "REGION", None),
    ("Unavailable", 503, "", "TRANSIENT", "REGION", None),
    ("SomethingNew", 502, "", "TRANSIENT", "REGION", None),
    ("SomethingNew", 400, "", "UNKNOWN", "REGION", None),
])
def test_the_error_table(code, status, message, kind, scope, zone):
    f = aws.classify(code, message, status)
    assert (f.kind, f.effective_scope, f.zone) == (FailureKind[kind], Scope[scope], zone)
    assert f.message.startswith(code)


def test_combining_fleet_errors_keeps_the_worst():
    cap = aws.classify("InsufficientInstanceCapacity", "in (eu-west-1a)")
    quota = aws.classify("VcpuLimitExceeded", "too many vCPUs")
    assert aws._combine([cap, quota]).kind is FailureKind.QUOTA
    assert aws._combine([cap, cap]).effective_scope is Scope.ZONE
    other = aws.classify("InsufficientInstanceCapacity", "in (eu-west-1b)")
    assert aws._combine([cap, other]).effective_scope is Scope.REGION
