"""The GCP provider calls no API method that slurm_conf/gcp-custom-role.yaml does not grant (issue 9).

Every verb runs against the Compute stand-in (gcp_server.py), which records each request; each method
is mapped to the permissions Google documents for it. The stand-in does not enforce IAM: the check is
the recorded set.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from gcp_server import ComputeServer

ROLE = Path(__file__).resolve().parent.parent / "slurm_conf" / "gcp-custom-role.yaml"
# API method -> permissions it needs (Compute Engine API reference, "IAM Permissions" of each method).
NEEDS = {
    "instances.bulkInsert": {"compute.instances.create", "compute.instances.setLabels", "compute.instances.setMetadata",
                             "compute.instances.setServiceAccount", "compute.disks.create", "compute.subnetworks.use",
                             "compute.instanceTemplates.useReadOnly"},
    "instances.get": {"compute.instances.get"},
    "instances.list": {"compute.instances.list"},
    "instances.aggregatedList": {"compute.instances.list"},
    "instances.delete": {"compute.instances.delete"},
    "instances.getGuestAttributes": {"compute.instances.getGuestAttributes"},
    "zoneOperations.get": {"compute.zoneOperations.get"},
    "zoneOperations.wait": {"compute.zoneOperations.get"},
    "zoneOperations.list": {"compute.zoneOperations.list"},
    "instanceTemplates.get": {"compute.instanceTemplates.get"},
}
ROUTES = [
    ("POST", r".*/zones/[^/]+/instances/bulkInsert", "instances.bulkInsert"),
    ("GET", r".*/zones/[^/]+/instances/[^/]+/getGuestAttributes", "instances.getGuestAttributes"),
    ("GET", r".*/zones/[^/]+/instances/[^/]+", "instances.get"),
    ("GET", r".*/zones/[^/]+/instances", "instances.list"),
    ("DELETE", r".*/zones/[^/]+/instances/[^/]+", "instances.delete"),
    ("GET", r".*/aggregated/instances", "instances.aggregatedList"),
    ("POST", r".*/zones/[^/]+/operations/[^/]+/wait", "zoneOperations.wait"),
    ("GET", r".*/zones/[^/]+/operations/[^/]+", "zoneOperations.get"),
    ("GET", r".*/zones/[^/]+/operations", "zoneOperations.list"),
    ("GET", r".*/global/instanceTemplates/[^/]+", "instanceTemplates.get"),
]


def method_of(verb: str, path: str) -> str:
    for v, pattern, name in ROUTES:
        if v == verb and re.fullmatch(pattern, path):
            return name
    raise AssertionError(f"no API method known for {verb} {path}")


def test_every_verb_needs_only_what_the_role_grants_and_the_role_grants_nothing_unused():
    from test_provider_gcp import PROJECT, TEMPLATE, make_provider, request

    granted = set(yaml.safe_load(ROLE.read_text())["includedPermissions"])
    server = ComputeServer(PROJECT)
    server.start()
    try:
        server.add_template("gpu-node", TEMPLATE)
        provider = make_provider(server)
        # A stockout reported only as a summary makes the provider list the zone's operations for the cause.
        server.exhaust("europe-west3-a", "summary")
        result = provider.launch(request(2))
        assert result.complete and {i.zone for i in result.launched} != {"europe-west3-a"}
        ids = [i.instance_id for i in result.launched]
        provider.describe(result.launched[0].region, ids)
        provider.list_instances("sbtest")
        provider.host_keys(result.launched[0].region, ids[0])
        provider.terminate(result.launched[0].region, ids)
        methods = {method_of(r.method, r.path) for r in server.requests}
    finally:
        server.stop()
    needed = set().union(*(NEEDS[m] for m in methods))
    assert needed <= granted, f"permissions missing from the role: {sorted(needed - granted)}"
    assert granted - needed == set(), f"the role grants what no call needs: {sorted(granted - needed)}"
