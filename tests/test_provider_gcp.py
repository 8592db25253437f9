"""The GCP provider, through the real google-cloud-compute client, against a local Compute server.

`gcp_server.ComputeServer` stands in for the Compute REST API (the real one cannot be reached
here). Every test runs with a socket guard: a connection to anything but loopback (and a DNS
lookup of anything but a loopback name) is refused and recorded, and the test fails if one was
attempted. That is how "operations are polled through the test server, never googleapis.com" is
checked, next to the server's own record of the operation polls.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import time
import tomllib
import uuid

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from fakes_reconcile import NodeSlurm
from fakes_reconcile import node as node_state
from gcp_server import ComputeServer
from slurm_bridge.cloud_config import GcpConfig
from slurm_bridge.config import parse_config
from slurm_bridge.providers.base import (FailureKind, LaunchRequest, NodeSpec, Provider, ProviderError, Scope)
from slurm_bridge.providers.gcp import LABEL_CLUSTER, LABEL_NODE, META_CLUSTER, META_NODES, GcpProvider
from slurm_bridge.reconcile import reconcile
from slurm_bridge.state import StateDB

PROJECT = "sb-test-project"
REGION, OTHER_REGION = "europe-west3", "europe-west4"
ZONES = ("europe-west3-a", "europe-west3-b", "europe-west3-c")
RFC1035 = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
TEMPLATE = {
    "machineType": "n1-standard-4",
    "labels": {"team": "hpc"},
    "metadata": {"items": [{"key": "startup-script", "value": "#!/bin/sh\nexec /opt/slurm-bridge/boot"}]},
    "disks": [{"boot": True, "autoDelete": True,
               "initializeParams": {"sourceImage": "projects/debian-cloud/global/images/family/debian-12"}}],
    "networkInterfaces": [{"network": "global/networks/default"}],
    "serviceAccounts": [{"email": "default", "scopes": ["https://www.googleapis.com/auth/cloud-platform"]}],
}


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    refused: list = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(self, address):
        inet = self.family in (socket.AF_INET, socket.AF_INET6)
        if inet and not ipaddress.ip_address(address[0].split("%")[0]).is_loopback:
            refused.append(address)
            raise ConnectionRefusedError(f"test guard: {address} is not loopback")
        return real_connect(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in (None, "localhost", "127.0.0.1", "::1"):
            refused.append(host)
            raise socket.gaierror(socket.EAI_NONAME, f"test guard: no lookups of {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)   # the local server must be reached directly
    yield refused
    assert refused == [], f"something tried to leave the machine: {refused}"


@pytest.fixture
def server():
    srv = ComputeServer(PROJECT)
    srv.start()
    srv.add_template("gpu-node", TEMPLATE)
    yield srv
    srv.stop()
    assert srv.unknown == [], f"calls the stand-in does not know: {srv.unknown}"


def make_provider(server: ComputeServer, **overrides) -> GcpProvider:
    settings = {"project": PROJECT, "regions": (REGION, OTHER_REGION), "instance_template": "gpu-node",
                "endpoint": server.endpoint, "anonymous": True, "operation_timeout_s": 20}
    settings.update(overrides)
    return GcpProvider(GcpConfig(**settings))


@pytest.fixture
def provider(server):
    return make_provider(server)


def request(n: int = 3, *, spot: bool = True, attempt: int = 0, zone: str | None = None, region: str = REGION,
            pool: str = "a100-de", cluster: str = "sbtest") -> LaunchRequest:
    return LaunchRequest(cluster, region, tuple(
        NodeSpec(f"{pool}-{i}", pool, "a2-highgpu-1g", spot, (42,), f"sb-7-{pool}-{i}-gcp-{region}-{attempt}")
        for i in range(n)), zone=zone)


def bulk_inserts(server: ComputeServer) -> list:
    return server.calls("POST", "/instances/bulkInsert")


def only_failure(result):
    assert result.launched == ()
    kinds = {(f.kind, f.effective_scope, f.zone) for f in result.failed.values()}
    assert len(kinds) == 1
    return next(iter(result.failed.values()))


# --- launch ----------------------------------------------------------------------------------

def test_is_a_provider(provider):
    assert isinstance(provider, Provider) and provider.name == "gcp"


def test_three_spot_nodes_start_in_the_first_zone(server, provider):
    result = provider.launch(request(3))
    assert result.complete and len(result.launched) == 3
    made = server.all_instances()
    assert {i.instance_id for i in result.launched} == set(made)
    for inst in result.launched:
        raw = made[inst.instance_id]
        zone, name = inst.instance_id.split("/")
        assert zone == "europe-west3-a" == inst.zone and inst.region == REGION
        assert RFC1035.fullmatch(name) and name.startswith(f"sbtest-{inst.node}-")
        assert inst.address == raw["networkInterfaces"][0]["networkIP"] and inst.address
        assert (inst.state, inst.instance_type, inst.cluster) == ("pending", "a2-highgpu-1g", "sbtest")
        assert inst.launched_at and abs(inst.launched_at - time.time()) < 60
        assert raw["machineType"].endswith("/zones/europe-west3-a/machineTypes/a2-highgpu-1g")
        assert raw["labels"] == {"team": "hpc", "slurm-bridge-cluster": "sbtest", "slurm-bridge-pool": "a100-de",
                                 "slurm-bridge-token": raw["labels"]["slurm-bridge-token"]}
        assert re.fullmatch(r"[0-9a-f]{16}", raw["labels"]["slurm-bridge-token"])
        meta = {i["key"]: i["value"] for i in raw["metadata"]["items"]}
        # The template's startup script survives: metadata.items is replaced, not merged, by bulkInsert.
        assert meta["startup-script"] == TEMPLATE["metadata"]["items"][0]["value"]
        assert meta[META_CLUSTER] == "sbtest" and json.loads(meta[META_NODES])[name] == inst.node
        assert raw["scheduling"] == {"provisioningModel": "SPOT", "instanceTerminationAction": "DELETE",
                                     "automaticRestart": False, "onHostMaintenance": "TERMINATE"}
        assert raw["disks"] == TEMPLATE["disks"] and raw["serviceAccounts"] == TEMPLATE["serviceAccounts"]
    assert sorted(i.node for i in result.launched) == ["a100-de-0", "a100-de-1", "a100-de-2"]

    (call,) = bulk_inserts(server)
    assert call.path == f"/compute/v1/projects/{PROJECT}/zones/europe-west3-a/instances/bulkInsert"
    assert uuid.UUID(call.query["requestId"])
    body = call.body
    assert (int(body["count"]), int(body["minCount"])) == (3, 3)
    assert body["sourceInstanceTemplate"] == f"projects/{PROJECT}/global/instanceTemplates/gpu-node"
    assert sorted(body["perInstanceProperties"]) == sorted(i.instance_id.split("/")[1] for i in result.launched)
    # Only what we override travels: an empty list here would wipe the template's disks.
    assert set(body["instanceProperties"]) == {"machineType", "labels", "metadata", "scheduling"}
    # Polled through our endpoint: the operation was RUNNING at first, so there were several waits.
    assert len(server.calls("POST", "/zones/europe-west3-a/operations/")) >= 2


def test_on_demand_nodes_are_standard(server, provider):
    result = provider.launch(request(1, spot=False))
    assert result.complete
    raw = server.all_instances()[result.launched[0].instance_id]
    assert raw["scheduling"] == {"provisioningModel": "STANDARD"}


def test_a_repeated_launch_is_answered_by_the_same_operation(server, provider):
    first = provider.launch(request(3))
    again = provider.launch(request(3))
    assert first.complete and again.complete
    assert {i.instance_id for i in again.launched} == {i.instance_id for i in first.launched}
    assert len(server.all_instances()) == 3
    ids = {c.query["requestId"] for c in bulk_inserts(server)}
    assert len(bulk_inserts(server)) == 2 and len(ids) == 1
    # A new attempt (new client tokens) is a new request and new instances.
    third = provider.launch(request(3, attempt=1))
    assert third.complete and len(server.all_instances()) == 6
    assert len({c.query["requestId"] for c in bulk_inserts(server)}) == 2


def test_a_replay_after_the_request_id_is_forgotten_adopts_its_own_instances(server, provider):
    first = provider.launch(request(2))
    server.request_ids.clear()   # GCP keeps request ids for a limited time only
    again = provider.launch(request(2))
    assert again.complete
    assert {i.instance_id for i in again.launched} == {i.instance_id for i in first.launched}
    assert len(server.all_instances()) == 2


@pytest.mark.parametrize("style", ["operation", "summary", "http"])
def test_a_stockout_moves_the_launch_to_the_next_zone(server, provider, style):
    server.exhaust("europe-west3-a", style)
    result = provider.launch(request(3))
    assert result.complete
    assert {i.zone for i in result.launched} == {"europe-west3-b"}
    calls = bulk_inserts(server)
    assert [c.path.split("/")[6] for c in calls] == ["europe-west3-a", "europe-west3-b"]
    assert calls[0].query["requestId"] != calls[1].query["requestId"]
    assert all(k.startswith("europe-west3-b/") for k in server.all_instances())
    if style == "summary":   # the cause was read from the per-instance insert operations
        (ops,) = server.calls("GET", "/zones/europe-west3-a/operations")
        assert ops.query["filter"].startswith('operationGroupId = "')


def test_every_zone_out_of_capacity_is_a_region_capacity_failure(server, provider):
    for zone in ZONES:
        server.exhaust(zone)
    failure = only_failure(provider.launch(request(2)))
    assert (failure.kind, failure.effective_scope, failure.zone) == (FailureKind.CAPACITY, Scope.REGION, None)
    assert all(z in failure.message for z in ZONES)
    assert [c.path.split("/")[6] for c in bulk_inserts(server)] == list(ZONES)
    assert server.all_instances() == {}


def test_a_stockout_in_a_requested_zone_blocks_that_zone(server, provider):
    server.exhaust("europe-west3-b")
    failure = only_failure(provider.launch(request(2, zone="europe-west3-b")))
    assert (failure.kind, failure.effective_scope, failure.zone) == (FailureKind.CAPACITY, Scope.ZONE,
                                                                     "europe-west3-b")
    assert len(bulk_inserts(server)) == 1


def test_configured_zones_are_tried_in_their_order(server):
    provider = make_provider(server, zones={REGION: ("europe-west3-c", "europe-west3-a")})
    server.exhaust("europe-west3-c")
    result = provider.launch(request(1))
    assert result.complete and result.launched[0].zone == "europe-west3-a"


@pytest.mark.parametrize("style", ["operation", "http"])
def test_quota_is_a_region_failure_and_no_other_zone_is_tried(server, provider, style):
    server.quota(REGION, style)
    failure = only_failure(provider.launch(request(2)))
    assert (failure.kind, failure.effective_scope) == (FailureKind.QUOTA, Scope.REGION)
    assert "Quota 'NVIDIA_A100_GPUS' exceeded" in failure.message
    assert len(bulk_inserts(server)) == 1


def test_forbidden_is_a_credentials_failure_of_the_whole_provider(server, provider):
    server.forbid()
    failure = only_failure(provider.launch(request(1)))
    assert (failure.kind, failure.effective_scope, failure.temporary) == (FailureKind.CREDENTIALS, Scope.PROVIDER,
                                                                          False)


@pytest.mark.parametrize("status", [429, 403])
def test_a_rate_limit_is_throttling_not_a_credentials_problem(server, provider, status):
    server.throttle(1, status, "bulkInsert")
    failure = only_failure(provider.launch(request(1)))
    assert (failure.kind, failure.effective_scope) == (FailureKind.THROTTLED, Scope.NONE)
    assert provider.launch(request(1)).complete   # same place, a moment later


def test_a_few_5xx_are_retried_with_the_same_request_id(server, provider):
    server.fail_5xx(2, "bulkInsert")
    assert provider.launch(request(2)).complete
    calls = bulk_inserts(server)
    assert len(calls) == 3 and len({c.query["requestId"] for c in calls}) == 1
    assert len(server.all_instances()) == 2


def test_persistent_5xx_is_transient(server, provider):
    server.fail_5xx(10, "bulkInsert")
    failure = only_failure(provider.launch(request(2)))
    assert (failure.kind, failure.effective_scope) == (FailureKind.TRANSIENT, Scope.REGION)


def test_5xx_while_polling_is_retried(server, provider):
    server.fail_5xx(2, "/operations/")
    assert provider.launch(request(1)).complete


def test_an_operation_that_never_ends_is_transient_within_the_timeout(server):
    server.polls = 10_000
    provider = make_provider(server, operation_timeout_s=1)
    started = time.monotonic()
    failure = only_failure(provider.launch(request(2)))
    assert time.monotonic() - started < 5
    assert failure.kind is FailureKind.TRANSIENT and "not done after 1 s" in failure.message


def test_a_stalled_bulk_insert_times_out_and_reconcile_reaps_its_late_instances(server, tmp_path):
    """The operation outlives operation_timeout_s: the launch fails TRANSIENT with nothing to report;
    GCP then makes the instances anyway, and they must not be left running unrecorded."""
    cfg = parse_config(tomllib.loads(f"""
[cluster]
name = "sbtest"
state_dir = "{tmp_path}"
[slurm]
watch_partitions = ["gpu"]
[zones]
any = "*"
[[pools]]
name = "a100-de"
size = 3
zone = "any"
cpus = 12
memory_mb = 85000
gpus = "a100:1"
instance_types = {{ gcp = "a2-highgpu-1g" }}
[providers.gcp]
project = "{PROJECT}"
regions = ["{REGION}", "{OTHER_REGION}"]
instance_template = "gpu-node"
endpoint = "{server.endpoint}"
anonymous = true
operation_timeout_s = 1
"""))
    provider = GcpProvider(cfg.gcp)
    server.stall(REGION)
    req = request(2)
    with StateDB.open(cfg.cluster.state_dir) as db:
        # As the launcher does: a row per node before the call, marked failed after it.
        rows = {n.node: db.begin_launch(node=n.node, pool=n.pool, provider="gcp", region=REGION, zone=None,
                                        instance_type=n.instance_type, price_per_hour=1.0, spot=n.spot,
                                        job_ids=n.job_ids, request_id=None, client_token=n.client_token)
                for n in req.nodes}
        started = time.monotonic()
        result = provider.launch(req)
        assert time.monotonic() - started < 5
        failure = only_failure(result)
        assert (failure.kind, failure.effective_scope) == (FailureKind.TRANSIENT, Scope.REGION)
        assert re.fullmatch(r"europe-west3-a: bulkInsert operation-\S+ not done after 1 s", failure.message)
        assert len(bulk_inserts(server)) == 1 and server.all_instances() == {}   # no other zone was tried
        for node, row in rows.items():
            db.launch_failed(row, f"{failure.kind.value}: {failure.message}")

        late = server.release()   # GCP finishes the work after the provider gave up
        assert len(late) == 2
        found = {i.instance_id: i for i in provider.list_instances("sbtest")}
        assert set(found) == set(late)
        assert sorted(i.node for i in found.values()) == ["a100-de-0", "a100-de-1"]
        assert all(i.cluster == "sbtest" and i.state == "pending" for i in found.values())
        assert {server.all_instances()[k]["labels"][LABEL_CLUSTER] for k in late} == {"sbtest"}

        # The job was requeued: its nodes are down and powered down. Past the orphan grace, one
        # reconcile terminates the late arrivals and records them in the ledger.
        slurm = NodeSlurm([node_state(n, "DOWN", "POWERED_DOWN", reason="slurm-bridge: no region could launch")
                           for n in cfg.pool("a100-de").node_names])
        report = reconcile(cfg, db, slurm, {"gcp": provider}, now=time.time() + cfg.policy.orphan_grace_s + 60)
        assert report.ok and report.counts["orphan"] == 2, report
        assert server.all_instances() == {} and provider.list_instances("sbtest") == []
        ledger = {r.instance_id: r for r in db.instances() if r.instance_id}
        assert set(ledger) == set(late) and all(r.state == "terminated" for r in ledger.values())
        assert {ledger[k].node for k in late} == {"a100-de-0", "a100-de-1"}


def test_a_slow_bulk_insert_that_ends_within_the_timeout_is_a_launch(server, provider):
    server.stall(REGION, polls=2)
    result = provider.launch(request(2))
    assert result.complete and len(result.launched) == 2
    assert len(server.calls("POST", "/zones/europe-west3-a/operations/")) == 3


def test_a_missing_template_is_a_config_failure(server):
    failure = only_failure(make_provider(server, instance_template="no-such-template").launch(request(1)))
    assert (failure.kind, failure.effective_scope) == (FailureKind.CONFIG, Scope.PROVIDER)
    assert bulk_inserts(server) == []


def test_a_full_template_path_is_accepted(server):
    provider = make_provider(server, instance_template=f"projects/{PROJECT}/global/instanceTemplates/gpu-node")
    assert provider.launch(request(1)).complete


@pytest.mark.parametrize("region, zone", [("us-central1", None), (REGION, "europe-west4-a")])
def test_a_place_outside_the_configured_regions_is_refused(server, provider, region, zone):
    failure = only_failure(provider.launch(request(1, region=region, zone=zone)))
    assert (failure.kind, failure.effective_scope) == (FailureKind.CONFIG, Scope.REGION)
    assert server.requests == []


def test_unloadable_credentials_are_a_credentials_failure(server, tmp_path):
    bad = tmp_path / "sa.json"
    bad.write_text('{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----secret"}')
    for path in (bad, tmp_path / "missing.json"):
        failure = only_failure(make_provider(server, anonymous=False, credentials_file=path).launch(request(1)))
        assert (failure.kind, failure.effective_scope) == (FailureKind.CREDENTIALS, Scope.PROVIDER)
        assert str(path) in failure.message and "secret" not in failure.message
    assert server.requests == []


def test_explicit_credentials_are_used(server):
    provider = GcpProvider(GcpConfig(PROJECT, (REGION,), "gpu-node", endpoint=server.endpoint),
                           credentials=AnonymousCredentials())
    assert provider.launch(request(1)).complete


def test_mixed_shapes_in_one_launch_are_a_caller_bug(provider):
    req = request(2)
    mixed = LaunchRequest(req.cluster, req.region, (req.nodes[0], NodeSpec("x-1", "x", "g2-standard-4", False)))
    with pytest.raises(ValueError, match="one instance type"):
        provider.launch(mixed)


# --- terminate, list, describe -----------------------------------------------------------------

def test_terminate_deletes_and_tolerates_what_is_gone(server, provider):
    ids = [i.instance_id for i in provider.launch(request(3)).launched]
    provider.terminate(REGION, ids[:2] + ["europe-west3-a/never-existed", "not-an-id"])
    assert set(server.all_instances()) == {ids[2]}
    deletes = server.calls("DELETE", "/instances/")
    assert len(deletes) == 3 and all(uuid.UUID(d.query["requestId"]) for d in deletes)
    provider.terminate(REGION, ids)   # again: the two already gone are fine
    assert server.all_instances() == {}


def test_terminate_raises_what_it_cannot_do(server, provider):
    ids = [i.instance_id for i in provider.launch(request(1)).launched]
    server.forbid()
    with pytest.raises(ProviderError) as err:
        provider.terminate(REGION, ids)
    assert err.value.failure.kind is FailureKind.CREDENTIALS


def test_list_instances_filters_by_cluster_label_across_zones_and_pages(server, provider):
    server.page_size = 2
    ours = provider.launch(request(3)).launched
    server.exhaust("europe-west3-a")
    ours += provider.launch(request(1, pool="a100-eu", zone="europe-west3-b")).launched
    nodes = json.dumps({"sbtest-h100-nl-0-aaaa": "h100-nl-0"})
    server.add_instance("europe-west4-b", "sbtest-h100-nl-0-aaaa", labels={LABEL_CLUSTER: "sbtest"},
                        metadata={META_NODES: nodes, META_CLUSTER: "sbtest"})
    server.add_instance("europe-west4-a", "hand-made", labels={LABEL_CLUSTER: "sbtest", LABEL_NODE: "h100-nl-1"})
    server.add_instance("europe-west3-c", "other-cluster", labels={LABEL_CLUSTER: "other"})
    server.add_instance("us-central1-a", "sbtest-elsewhere", labels={LABEL_CLUSTER: "sbtest"},
                        metadata={META_CLUSTER: "sbtest"})
    server.add_instance("europe-west3-c", "same-label-other-name", labels={LABEL_CLUSTER: "sbtest"},
                        metadata={META_CLUSTER: "SBTEST"})
    server.set_status("europe-west4-a", "hand-made", "TERMINATED")
    server.set_status("europe-west4-b", "sbtest-h100-nl-0-aaaa", "STOPPING")

    found = {i.instance_id: i for i in provider.list_instances("sbtest")}
    assert set(found) == {i.instance_id for i in ours} | {"europe-west4-b/sbtest-h100-nl-0-aaaa",
                                                           "europe-west4-a/hand-made"}
    assert {i.node for i in found.values()} == {"a100-de-0", "a100-de-1", "a100-de-2", "a100-eu-0",
                                                "h100-nl-0", "h100-nl-1"}
    assert found["europe-west4-a/hand-made"].state == "terminated"
    assert found["europe-west4-b/sbtest-h100-nl-0-aaaa"].state == "stopping"
    assert {i.zone for i in ours} == {"europe-west3-a", "europe-west3-b"}
    pages = server.calls("GET", "/aggregated/instances")
    assert len(pages) == 4 and all(p.query["filter"] == 'labels.slurm-bridge-cluster = "sbtest"' for p in pages)
    assert "pageToken" not in pages[0].query and all("pageToken" in p.query for p in pages[1:])
    assert provider.list_instances("nobody") == []


def test_describe_returns_the_current_view_and_leaves_out_the_missing(server, provider):
    launched = provider.launch(request(2)).launched
    zone, name = launched[0].instance_id.split("/")
    server.set_status(zone, name, "RUNNING")
    seen = {i.instance_id: i for i in provider.describe(REGION, [i.instance_id for i in launched]
                                                         + ["europe-west3-b/gone", "bogus"])}
    assert set(seen) == {i.instance_id for i in launched}
    assert seen[launched[0].instance_id].state == "running" and seen[launched[1].instance_id].state == "pending"
    assert seen[launched[0].instance_id].node == launched[0].node
    assert seen[launched[0].instance_id].address == launched[0].address


# --- why the provider polls operations itself ------------------------------------------------------

def test_the_librarys_own_operation_polling_ignores_the_endpoint(server, loopback_only):
    """ExtendedOperation.result() polls through a ZoneOperationsClient made without client_options."""
    client = compute_v1.InstancesClient(transport="rest", credentials=AnonymousCredentials(),
                                        client_options={"api_endpoint": server.endpoint})
    resource = compute_v1.BulkInsertInstanceResource(
        count=1, min_count=1, source_instance_template=f"projects/{PROJECT}/global/instanceTemplates/gpu-node",
        per_instance_properties={"probe-0": compute_v1.BulkInsertInstanceResourcePerInstanceProperties()},
        instance_properties=compute_v1.InstanceProperties(machine_type="n1-standard-1"))
    op = client.bulk_insert(project=PROJECT, zone="europe-west3-a", bulk_insert_instance_resource_resource=resource)
    with pytest.raises(Exception):   # noqa: B017 - whatever the transport makes of the refusal
        op.result(timeout=10)
    assert any("googleapis.com" in str(host) for host in loopback_only)
    loopback_only.clear()
    assert server.calls("POST", "/operations/") == [] and server.calls("GET", "/operations/") == []
