"""The AWS provider calls nothing outside slurm_conf/aws-iam-policy.json, the least-privilege policy the
README tells admins to attach (issue 9). Every verb runs against moto and each API call it makes is
recorded by botocore's event hook; moto does not enforce IAM, so the check is the recorded set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.register_assert_rewrite("moto_server")
from moto_server import REGIONS, count_calls, launch_request  # noqa: E402


pytest_plugins = ["moto_server"]    # the session's moto server (moto_cloud, cluster)
POLICY = Path(__file__).resolve().parent.parent / "slurm_conf" / "aws-iam-policy.json"
# Allowed because a call above needs it, though the provider never makes it itself: CreateFleet runs
# RunInstances on the caller's permissions, and passes the launch template's instance profile role.
IMPLIED = {"ec2:RunInstances", "iam:PassRole"}


def allowed() -> set[str]:
    out: set[str] = set()
    for st in json.loads(POLICY.read_text())["Statement"]:
        assert st["Effect"] == "Allow"
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        assert all("*" not in a for a in actions), f"a wildcard action in {st['Sid']}"
        out.update(actions)
    return out


def test_every_verb_calls_only_what_the_policy_allows_and_the_policy_allows_nothing_unused(moto_cloud, cluster):
    provider = moto_cloud.provider()
    calls = count_calls(provider, regions=REGIONS)
    result = provider.launch(launch_request(cluster, 2, spot=True))
    assert result.complete
    ids = [i.instance_id for i in result.launched]
    region = result.launched[0].region
    provider.describe(region, ids)
    provider.list_instances(cluster)
    provider.host_keys(region, ids[0])
    provider.spot_prices(region, [result.launched[0].instance_type])
    provider.terminate(region, ids)
    used = {f"ec2:{name}" for name in calls}
    policy = allowed()
    assert used <= policy, f"calls outside the policy: {sorted(used - policy)}"
    assert policy - used == IMPLIED, f"the policy allows what the provider never calls: {sorted(policy - used - IMPLIED)}"


def test_terminate_and_console_are_limited_to_instances_tagged_with_the_cluster():
    statements = json.loads(POLICY.read_text())["Statement"]
    own = [s for s in statements if "ec2:TerminateInstances" in s["Action"]]
    assert len(own) == 1 and "ec2:GetConsoleOutput" in own[0]["Action"]
    assert own[0]["Condition"] == {"StringEquals": {"aws:ResourceTag/slurm-bridge:cluster": "CLUSTER_NAME"}}
    from slurm_bridge.providers.aws import TAG_CLUSTER
    assert own[0]["Condition"]["StringEquals"] == {f"aws:ResourceTag/{TAG_CLUSTER}": "CLUSTER_NAME"}
