"""The GCP provider's error table and naming rules, without a server."""

from __future__ import annotations

import re

import pytest

from slurm_bridge.providers.base import FailureKind as K
from slurm_bridge.providers.base import Scope as S
from slurm_bridge.providers.gcp import SUMMARY, classify, instance_name, label_value, split_id

Z = "europe-west3-a"


@pytest.mark.parametrize("status, codes, message, kind, scope", [
    # A stockout arrives as an operation error, or as HTTP 503/429 naming it: the code decides.
    (None, {"ZONE_RESOURCE_POOL_EXHAUSTED"}, "", K.CAPACITY, S.ZONE),
    (503, {"ZONE_RESOURCE_POOL_EXHAUSTED"}, "", K.CAPACITY, S.ZONE),
    (429, {"ZONE_RESOURCE_POOL_EXHAUSTED"}, "", K.CAPACITY, S.ZONE),
    (503, {SUMMARY, "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", "resource_availability"}, "", K.CAPACITY, S.ZONE),
    (None, {"RESOURCE_POOL_EXHAUSTED"}, "", K.CAPACITY, S.ZONE),
    (None, {"REGION_RESOURCE_POOL_EXHAUSTED"}, "", K.CAPACITY, S.REGION),
    (None, {SUMMARY}, "Requested minimum count of 2 VMs could not be created.", K.CAPACITY, S.ZONE),
    # ... but the summary never hides a cause that says more.
    (403, {SUMMARY, "QUOTA_EXCEEDED"}, "", K.QUOTA, S.REGION),
    (400, {"invalid"}, ("Invalid value for field 'resource.machineType': 'zones/europe-west3-c/machineTypes/"
                        "a2-highgpu-1g'. Machine type with name 'a2-highgpu-1g' does not exist in zone "
                        "'europe-west3-c'."), K.CAPACITY, S.ZONE),
    (403, {"QUOTA_EXCEEDED"}, "", K.QUOTA, S.REGION),
    (403, {"quotaExceeded"}, "", K.QUOTA, S.REGION),
    (403, {"rateLimitExceeded"}, "", K.THROTTLED, S.NONE),
    (403, {"userRateLimitExceeded"}, "", K.THROTTLED, S.NONE),
    (429, set(), "", K.THROTTLED, S.NONE),
    (403, {"forbidden", "IAM_PERMISSION_DENIED"}, "", K.CREDENTIALS, S.PROVIDER),
    (403, {"accessNotConfigured", "SERVICE_DISABLED"}, "", K.CREDENTIALS, S.PROVIDER),
    (401, set(), "", K.CREDENTIALS, S.PROVIDER),
    (None, {"auth"}, "", K.CREDENTIALS, S.PROVIDER),
    (404, {"notFound"}, "The resource 'projects/p/global/instanceTemplates/x' was not found", K.CONFIG, S.PROVIDER),
    (400, {"invalid"}, "Invalid value for field 'resource.disks[0]'", K.CONFIG, S.PROVIDER),
    (409, {"RESOURCE_ALREADY_EXISTS"}, "", K.UNKNOWN, S.REGION),
    (409, {"resourceInUseByAnotherResource"}, "", K.TRANSIENT, S.REGION),
    (500, set(), "", K.TRANSIENT, S.REGION),
    (503, {"backendError"}, "", K.TRANSIENT, S.REGION),
    (None, {"RESOURCE_NOT_READY"}, "", K.TRANSIENT, S.REGION),
    (None, {"network"}, "", K.TRANSIENT, S.REGION),
    (418, {"teapot"}, "", K.UNKNOWN, S.REGION),
])
def test_error_table(status, codes, message, kind, scope):
    failure = classify(status, codes, message, Z)
    assert (failure.kind, failure.effective_scope) == (kind, scope)
    assert failure.zone == (Z if scope is S.ZONE else None)


@pytest.mark.parametrize("cluster, node", [
    ("sbtest", "a100-de-0"), ("Lab_1", "GPU.node_07"), ("9lives", "0"), ("x" * 80, "y" * 80), ("--", "--"),
])
def test_instance_names_are_valid_deterministic_and_unique_per_token(cluster, node):
    a, b = instance_name(cluster, node, "tok-1"), instance_name(cluster, node, "tok-2")
    for name in (a, b):
        assert re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name), name
    assert a == instance_name(cluster, node, "tok-1") and a != b


def test_label_values_follow_gcp_rules():
    assert label_value("Lab.One/GPU") == "lab_one_gpu"
    assert len(label_value("a" * 100)) == 63


def test_instance_ids_carry_the_zone():
    assert split_id("europe-west3-a/sbtest-a100-de-0-1f2e3d4c") == ("europe-west3-a", "sbtest-a100-de-0-1f2e3d4c")
    for bad in ("no-zone", "/name", "zone/", "a/b/c"):
        with pytest.raises(ValueError):
            split_id(bad)
