"""The SSH provider against real SSH servers (asyncssh, in-process): see ssh_server.py for the hosts."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncssh
import pytest
from configs import build as build_config
from configs import pool as pool_dict
from configs import region as region_dict
from ssh_server import SshLab

from slurm_bridge.providers.base import (TOKEN_TAG, FailureKind, Instance, LaunchRequest, NodeSpec, Provider,
                                         ProviderError, Scope)
from slurm_bridge.providers.ssh import TAG_HOST, BootstrapContext, SshProvider
from slurm_bridge.reconcile import StuckTerminating, Vanished, Views, plan
from slurm_bridge.state import InstanceRow
from slurm_bridge.ssh_config import parse_ssh
from slurm_bridge.tomlcheck import _Checker

CLUSTER = "sbtest"
GROUP = "lab-ssh"


@pytest.fixture
def sshlab(tmp_path):
    ssh = SshLab(tmp_path, 4)
    ssh.start()
    yield ssh
    ssh.close()


def provider(sshlab: SshLab, hosts=None, known_hosts=None, bootstrap=None, **group) -> SshProvider:
    """A provider for one group of LAB's hosts, its config read through the real parser."""
    spec = {"name": GROUP, "country": "DE", "instance_type": "ws-a100", "price_per_hour": 1.5,
            "hosts": [h.label for h in (sshlab.hosts if hosts is None else hosts)],
            "start": ["slurmd", "-N", "{node}"], "stop": ["slurmd-stop", "{node}"],
            "health": ["node-health", "{host}"], **group}
    top = {k: group.pop(k) for k in ("max_concurrency", "client_keys") if k in group}
    spec = {k: v for k, v in spec.items() if k not in top}
    ck = _Checker()
    cfg = parse_ssh(ck, "providers.ssh", {
        "known_hosts": str(known_hosts or sshlab.known_hosts()), "client_keys": [str(sshlab.key_file)],
        "username": "bridge", "connect_timeout": 5, "command_timeout": 20, "boot_timeout": 10,
        "groups": [spec], **top})
    assert ck.problems == [] and cfg is not None
    return SshProvider(cfg, CLUSTER, bootstrap=bootstrap)


def request(*nodes: str, token: str = "", region: str = GROUP, itype: str = "ws-a100") -> LaunchRequest:
    return LaunchRequest(CLUSTER, region, tuple(
        NodeSpec(n, "a100-de", itype, False, (7,), client_token=f"{token or 'tok'}-{n}") for n in nodes))


def current_id(host) -> str:
    """The instance id of the launch HOST holds now, from its state record: `<group>/<host>/<life>`."""
    return f"{GROUP}/{host.label}/{host.state()['life']}"


def closed(sshlab: SshLab, index: int):
    """Host INDEX with nothing listening: connection refused, as from a machine that is off."""
    sshlab.stop(sshlab.hosts[index])
    return sshlab.hosts[index]


def test_launch_starts_slurmd_with_the_node_name_and_records_it_on_the_host(sshlab):
    a, b = sshlab.hosts[:2]
    result = provider(sshlab, hosts=[a, b]).launch(request("a100-de-0"))
    assert result.complete
    (inst,) = result.launched
    assert (inst.instance_id, inst.node, inst.region, inst.state) == (current_id(a), "a100-de-0", GROUP, "running")
    assert inst.instance_id.startswith(f"{GROUP}/{a.label}/") and inst.tags[TAG_HOST] == a.label
    assert inst.tags[TOKEN_TAG] == "tok-a100-de-0" and inst.address == a.name and inst.instance_type == "ws-a100"
    assert a.started() == ["a100-de-0"] and ["slurmd", "-N", "a100-de-0"] in a.calls()
    assert ["node-health", a.name] in a.calls() and b.started() == []
    state = a.state()
    assert (state["node"], state["token"], state["cluster"], state["jobs"]) == ("a100-de-0", "tok-a100-de-0",
                                                                                 CLUSTER, [7])
    assert abs(state["launched_at"] - time.time()) < 30


def test_a_fresh_provider_lists_and_describes_from_the_hosts(sshlab):
    launched = provider(sshlab).launch(request("a100-de-0", "a100-de-1")).launched
    fresh = provider(sshlab)   # as after a lost state DB: nothing but the hosts to go by
    listed = sorted(fresh.list_instances(CLUSTER), key=lambda i: i.node)
    assert listed == sorted(launched, key=lambda i: i.node)
    assert {i.instance_id for i in listed} == {current_id(h) for h in sshlab.hosts[:2]}
    assert fresh.list_instances("other-cluster") == []
    ids = [i.instance_id for i in listed] + [f"{GROUP}/{sshlab.hosts[3].label}", "nogroup/x", f"{GROUP}/nohost"]
    assert sorted(i.node for i in fresh.describe(GROUP, ids)) == ["a100-de-0", "a100-de-1"]
    assert fresh.describe("other-group", ids) == []


def test_terminate_stops_slurmd_and_frees_the_host(sshlab):
    p = provider(sshlab, power_off=sshlab.power_command("off"))
    (inst,) = p.launch(request("a100-de-0")).launched
    host = sshlab.hosts[0]
    p.terminate(GROUP, [inst.instance_id])
    assert ["slurmd-stop", "a100-de-0"] in host.calls() and not (host.home / "running").exists()
    assert host.state() is None and (sshlab.power / f"{host.name}.off").exists()
    assert p.list_instances(CLUSTER) == []
    p.terminate(GROUP, [inst.instance_id, "garbage"])   # already gone: not an error
    (again,) = p.launch(request("a100-de-5")).launched
    assert again.tags[TAG_HOST] == host.label           # the host is free again ...
    assert again.instance_id != inst.instance_id        # ... and this launch is an instance of its own


def slurmd_stops(host) -> list[str]:
    return [c[-1] for c in host.calls() if c[0] == "slurmd-stop"]


def running(host) -> str | None:
    """The node slurmd runs as on HOST, per the fake slurmd; None when it is stopped."""
    path = host.home / "running"
    return path.read_text() if path.exists() else None


def test_a_late_terminate_of_an_earlier_launch_leaves_the_next_launch_on_the_host_running(sshlab, caplog):
    # Issue 8: one host, two lives. A suspend of a100-de-0 that arrives after its host was released
    # and given to a100-de-1 (or a row a crash left 'terminating', retried) must not stop a100-de-1.
    host = sshlab.hosts[0]
    p = provider(sshlab, hosts=[host], power_off=sshlab.power_command("off"))
    (first,) = p.launch(request("a100-de-0")).launched
    p.terminate(GROUP, [first.instance_id])
    (sshlab.power / f"{host.name}.off").unlink()
    (second,) = p.launch(request("a100-de-1")).launched
    assert second.tags[TAG_HOST] == first.tags[TAG_HOST] == host.label
    assert second.instance_id == current_id(host) != first.instance_id
    caplog.set_level("INFO", logger="slurm_bridge.providers.ssh")
    for late in (p, provider(sshlab, hosts=[host], power_off=sshlab.power_command("off"))):   # fresh: no memory
        late.terminate(GROUP, [first.instance_id])                  # already gone: not an error
        assert running(host) == "a100-de-1" and host.state()["node"] == "a100-de-1"
        assert slurmd_stops(host) == ["a100-de-0"] and not (sshlab.power / f"{host.name}.off").exists()
        assert late.describe(GROUP, [first.instance_id]) == []     # gone, for reconcile to close its row
        assert late.describe(GROUP, [first.instance_id, second.instance_id]) == [second]
        assert late.list_instances(CLUSTER) == [second]            # the new life, under its own id
    assert f"{first.instance_id} already gone; {host.label} now holds a100-de-1 as {second.instance_id}" in caplog.text
    p.terminate(GROUP, [first.instance_id, second.instance_id])    # both named: the one there stops, once
    assert running(host) is None and host.state() is None and slurmd_stops(host) == ["a100-de-0", "a100-de-1"]
    assert p.describe(GROUP, [second.instance_id]) == [] and p.list_instances(CLUSTER) == []


def test_ids_without_a_life_from_the_previous_version_name_only_a_record_it_wrote(sshlab):
    host = sshlab.hosts[0]
    legacy = f"{GROUP}/{host.label}"
    p = provider(sshlab, hosts=[host])
    p.launch(request("a100-de-0"))
    # What the previous version wrote: the same record without a life. Its row holds the host's id.
    path = host.home / ".slurm-bridge" / f"{CLUSTER}.json"
    record = host.state()
    del record["life"]
    path.write_text(json.dumps(record))
    (listed,) = p.list_instances(CLUSTER)
    assert (listed.instance_id, listed.node) == (legacy, "a100-de-0")   # so the old row still finds it
    assert p.describe(GROUP, [legacy]) == [listed]
    assert p.describe(GROUP, [f"{legacy}/0123456789ab"]) == []
    p.terminate(GROUP, [legacy])
    assert running(host) is None and host.state() is None and slurmd_stops(host) == ["a100-de-0"]
    # A launch of this version is always newer than every legacy one: the legacy id is not it.
    (new,) = p.launch(request("a100-de-1")).launched
    p.terminate(GROUP, [legacy])
    assert running(host) == "a100-de-1" and slurmd_stops(host) == ["a100-de-0"]
    assert p.describe(GROUP, [legacy]) == [] and p.describe(GROUP, [new.instance_id]) == [new]


def test_ids_that_are_not_ours_are_ignored(sshlab, caplog):
    host = sshlab.hosts[0]
    p = provider(sshlab, hosts=[host])
    (inst,) = p.launch(request("a100-de-0")).launched
    life = inst.instance_id.rsplit("/", 1)[1]
    bad = [f"{GROUP}/{host.label}/", f"{inst.instance_id}/x", f"{GROUP}/{host.label}/{life.upper()}",
           f"{GROUP}/{host.label}/../{life}", f"other/{host.label}/{life}", f"{GROUP}/nohost/{life}"]
    p.terminate(GROUP, bad)
    assert p.describe(GROUP, bad) == [] and running(host) == "a100-de-0" and slurmd_stops(host) == []
    assert caplog.text.count("not an instance of group") >= len(bad)


def test_an_unreadable_host_is_unknown_under_the_ids_a_state_db_may_hold(sshlab):
    host = sshlab.hosts[0]
    p = provider(sshlab, hosts=[host])
    (inst,) = p.launch(request("a100-de-0")).launched
    legacy = f"{GROUP}/{host.label}"
    sshlab.stop(host)
    # Listed once, under the host-level id, which reconcile reads as covering every launch on the
    # host (test_reconcile_tells_the_lives_of_one_host_apart); describe answers for any id asked.
    listed = p.list_instances(CLUSTER)
    assert [(i.instance_id, i.state) for i in listed] == [(legacy, "unknown")]
    asked = [inst.instance_id, legacy, f"{legacy}/0123456789ab"]
    assert [(i.instance_id, i.state) for i in p.describe(GROUP, asked)] == [(i, "unknown") for i in asked]
    fresh = provider(sshlab, hosts=[host])      # a restarted daemon knows no more and no less
    assert fresh.list_instances(CLUSTER) == listed
    sshlab.start(host)
    assert p.list_instances(CLUSTER) == [inst]


def _row(row_id: int, node: str, iid: str, state: str, token: str) -> InstanceRow:
    return InstanceRow(id=row_id, node=node, pool="a100-de", provider="ssh", region=GROUP, zone=None,
                       instance_type="ws-a100", price_per_hour=1.5, spot=False, job_ids=(7,), request_id=None,
                       client_token=token, instance_id=iid, address=None, state=state, launched_at=0.0,
                       running_at=0.0, terminated_at=None, error=None, created_at=0.0, updated_at=0.0)


def test_reconcile_tells_the_lives_of_one_host_apart(sshlab):
    cfg = build_config(zones={"any": "*"}, pools=[pool_dict("a100-de", itype="t1")],
                       regions=[region_dict("lab-de", "DE", {"t1": 1.0})])
    host = sshlab.hosts[0]
    p = provider(sshlab, hosts=[host])
    (first,) = p.launch(request("a100-de-0")).launched
    p.terminate(GROUP, [first.instance_id])
    (second,) = p.launch(request("a100-de-1")).launched
    now = time.time()

    def actions(*rows: InstanceRow):
        return plan(cfg, Views({}, None, {"ssh": tuple(p.list_instances(CLUSTER))}, {}, rows), now)

    b = _row(2, "a100-de-1", second.instance_id, "running", "tok-a100-de-1")
    # a100-de-0's row, left 'terminating' by a crash: closed with nothing to stop, not stopping a100-de-1.
    (stuck,) = actions(_row(1, "a100-de-0", first.instance_id, "terminating", "tok-a100-de-0"), b)
    assert isinstance(stuck, StuckTerminating) and stuck.instance_ids == ()
    # ... or left 'running': its instance is gone; a100-de-1's is not.
    (gone,) = actions(_row(1, "a100-de-0", first.instance_id, "running", "tok-a100-de-0"), b)
    assert isinstance(gone, Vanished) and gone.instance_id == first.instance_id
    # The host unreachable, read by a restarted daemon's provider: neither a100-de-1's row nor a
    # legacy row of the host reads as vanished.
    sshlab.stop(host)
    p = provider(sshlab, hosts=[host])
    assert actions(b, _row(3, "a100-de-0", f"{GROUP}/{host.label}", "running", "old")) == []


def test_a_relaunch_with_the_same_token_does_not_start_twice(sshlab):
    p = provider(sshlab)
    first = p.launch(request("a100-de-0", "a100-de-1"))
    again = provider(sshlab).launch(request("a100-de-0", "a100-de-1"))
    assert again.complete and sorted(again.launched, key=lambda i: i.node) == sorted(first.launched,
                                                                                    key=lambda i: i.node)
    assert sum(len(h.started()) for h in sshlab.hosts) == 2
    other = p.launch(request("a100-de-0", token="new"))   # a new resume of the node: a new instance
    assert other.launched[0].instance_id not in {i.instance_id for i in first.launched}


def test_a_wrong_host_key_is_refused_loudly_and_nothing_starts(sshlab):
    a, b = sshlab.hosts[:2]
    impostor = asyncssh.generate_private_key("ssh-ed25519")
    p = provider(sshlab, hosts=[a, b], known_hosts=sshlab.known_hosts({b.name: impostor}))
    result = p.launch(request("a100-de-0"))
    failure = result.failed["a100-de-0"]
    assert result.launched == () and failure.kind is FailureKind.CREDENTIALS and not failure.temporary
    assert failure.effective_scope is Scope.REGION and failure.message.startswith("SECURITY:")
    assert b.label in failure.message and "no per-host scope" in failure.message
    assert a.started() == [] and b.started() == [] and a.state() is None
    # Listing never trusts the host, and never calls it gone either.
    listed = {i.instance_id: i for i in p.list_instances(CLUSTER)}
    assert listed[f"{GROUP}/{b.label}"].state == "unknown" and listed[f"{GROUP}/{b.label}"].node == ""


def test_an_unknown_host_key_is_refused_too(sshlab):
    a = sshlab.hosts[0]
    (sshlab.root / "empty_known_hosts").write_text("")
    result = provider(sshlab, hosts=[a], known_hosts=sshlab.root / "empty_known_hosts").launch(request("a100-de-0"))
    assert result.failed["a100-de-0"].kind is FailureKind.CREDENTIALS and a.started() == []


def test_an_unreachable_host_moves_the_launch_to_the_next(sshlab):
    down = closed(sshlab, 0)
    result = provider(sshlab, hosts=sshlab.hosts[:2]).launch(request("a100-de-0"))
    assert result.complete and result.launched[0].instance_id == current_id(sshlab.hosts[1])
    assert sshlab.hosts[1].started() == ["a100-de-0"] and down.started() == []


def test_all_hosts_unreachable_is_a_region_capacity_failure(sshlab):
    hosts = [closed(sshlab, 0), closed(sshlab, 1)]
    failure = provider(sshlab, hosts=hosts).launch(request("a100-de-0")).failed["a100-de-0"]
    assert failure.kind is FailureKind.CAPACITY and failure.effective_scope is Scope.REGION and failure.temporary
    assert "unreachable (connection refused)" in failure.message and hosts[0].label in failure.message


def test_every_host_taken_is_capacity(sshlab):
    p = provider(sshlab, hosts=sshlab.hosts[:1])
    p.launch(request("a100-de-0"))
    failure = p.launch(request("a100-de-1")).failed["a100-de-1"]
    assert failure.kind is FailureKind.CAPACITY and "holds node a100-de-0" in failure.message


def test_an_unhealthy_host_is_skipped_and_none_healthy_fails_with_its_stderr(sshlab):
    a, b = sshlab.hosts[:2]
    (a.home / "unhealthy").touch()
    result = provider(sshlab, hosts=[a, b]).launch(request("a100-de-0"))
    assert result.launched[0].tags[TAG_HOST] == b.label and a.started() == [] and a.state() is None
    (b.home / "unhealthy").touch()
    failure = provider(sshlab, hosts=[a]).launch(request("a100-de-1")).failed["a100-de-1"]
    assert failure.kind is FailureKind.CAPACITY and failure.effective_scope is Scope.REGION
    assert "health: exit 1: GPU 0: fell off the bus" in failure.message and "checking GPUs" not in failure.message


def test_a_failed_start_releases_the_host_and_reports_the_last_stderr_line(sshlab):
    a, b = sshlab.hosts[:2]
    for h in (a, b):
        (h.home / "fail-slurmd").write_text("reading config\nslurmd: fatal: Unable to determine this NodeName\n")
    failure = provider(sshlab, hosts=[a, b]).launch(request("a100-de-0")).failed["a100-de-0"]
    assert failure.kind is FailureKind.UNKNOWN and failure.effective_scope is Scope.REGION
    assert "start: exit 1: slurmd: fatal: Unable to determine" in failure.message
    assert "reading config" not in failure.message
    assert a.state() is None and b.state() is None and a.started() == b.started() == ["a100-de-0"]


def test_a_command_missing_on_the_host_is_a_config_failure(sshlab):
    failure = provider(sshlab, start=["no-such-slurmd", "{node}"]).launch(request("a100-de-0")).failed["a100-de-0"]
    assert failure.kind is FailureKind.CONFIG and failure.effective_scope is Scope.REGION
    assert "exit 127" in failure.message


def test_a_refused_client_key_is_a_credentials_failure(sshlab, tmp_path):
    other = tmp_path / "other_key"
    other.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key())
    other.chmod(0o600)     # private, as it must be (test_secret_files.py): the host refuses it, not the bridge
    failure = provider(sshlab, client_keys=[str(other)]).launch(request("a100-de-0")).failed["a100-de-0"]
    assert failure.kind is FailureKind.CREDENTIALS and failure.effective_scope is Scope.REGION
    assert "refused with the configured keys" in failure.message


def test_a_missing_key_file_is_a_provider_config_failure(sshlab, tmp_path):
    p = provider(sshlab, client_keys=[str(tmp_path / "absent")])
    failure = p.launch(request("a100-de-0")).failed["a100-de-0"]
    assert failure.kind is FailureKind.CONFIG and failure.effective_scope is Scope.PROVIDER
    with pytest.raises(ProviderError):
        p.list_instances(CLUSTER)


def test_a_powered_off_host_is_powered_on_then_used(sshlab):
    down = closed(sshlab, 0)
    p = provider(sshlab, hosts=[down], power_on=sshlab.power_command("on"))
    result = p.launch(request("a100-de-0"))
    assert result.complete and (sshlab.power / f"{down.name}.on").exists() and down.started() == ["a100-de-0"]


def test_a_host_that_cannot_be_read_is_listed_as_unknown_never_gone(sshlab, caplog):
    p = provider(sshlab)
    (inst,) = p.launch(request("a100-de-0")).launched
    sshlab.stop(sshlab.hosts[0])
    caplog.set_level("WARNING", logger="slurm_bridge.providers.ssh")
    host_id = inst.instance_id.rpartition("/")[0]       # covers the launch's id in reconcile
    listed = {i.instance_id: i for i in p.list_instances(CLUSTER)}
    assert listed[host_id].state == "unknown" and listed[host_id].node == ""
    assert p.describe(GROUP, [inst.instance_id])[0].state == "unknown"
    assert f"{sshlab.hosts[0].label}: connect: unreachable (connection refused); listed as unknown" in caplog.text
    with pytest.raises(ProviderError) as info:
        p.terminate(GROUP, [inst.instance_id])   # kept for the next try, not forgotten
    assert info.value.failure.kind is FailureKind.TRANSIENT
    sshlab.start(sshlab.hosts[0])
    assert p.list_instances(CLUSTER)[0].node == "a100-de-0"


def test_two_launchers_racing_for_one_host_cannot_both_take_it(sshlab):
    host = sshlab.hosts[0]
    (host.home / "slow").write_text("0.3")
    p = provider(sshlab, hosts=[host])
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda n: p.launch(request(n)), ["a100-de-0", "a100-de-1"]))
    assert sorted(len(r.launched) for r in results) == [0, 1] and len(host.started()) == 1
    (failure,) = [f for r in results for f in r.failed.values()]
    assert failure.kind is FailureKind.CAPACITY
    assert "holds node" in failure.message or "claimed by another launch meanwhile" in failure.message


def test_a_state_file_that_is_not_ours_keeps_the_host_out(sshlab, caplog):
    host = sshlab.hosts[0]
    (host.home / ".slurm-bridge").mkdir()
    (host.home / ".slurm-bridge" / f"{CLUSTER}.json").write_text("{half a record")
    p = provider(sshlab, hosts=sshlab.hosts[:2])
    assert p.launch(request("a100-de-0")).launched[0].tags[TAG_HOST] == sshlab.hosts[1].label
    listed = {i.instance_id: i for i in p.list_instances(CLUSTER)}
    assert listed[f"{GROUP}/{host.label}"].state == "unknown" and host.started() == []
    assert "is not a state record" in caplog.text and "listed as unknown, not as gone" in caplog.text


def test_the_concurrency_limit_holds(sshlab):
    for h in sshlab.hosts:
        (h.home / "slow").write_text("0.3")
    result = provider(sshlab, max_concurrency=2).launch(request(*(f"a100-de-{i}" for i in range(4))))
    assert result.complete and len({i.instance_id for i in result.launched}) == 4
    assert sshlab.peak == 2   # sessions overlapped, never more than the limit


def test_arguments_are_quoted_so_a_node_name_cannot_inject(sshlab):
    node = "a100 de-0; touch pwned $(touch pwned2) `touch pwned3`"
    p = provider(sshlab, hosts=sshlab.hosts[:1])
    (inst,) = p.launch(request(node)).launched
    host = sshlab.hosts[0]
    assert ["slurmd", "-N", node] in host.calls() and inst.node == node
    assert not list(host.home.glob("pwned*"))
    p.terminate(GROUP, [inst.instance_id])
    assert ["slurmd-stop", node] in host.calls() and not list(host.home.glob("pwned*"))


def test_the_bootstrap_hook_runs_before_start_on_the_same_connection(sshlab):
    seen: list[BootstrapContext] = []

    async def bootstrap(conn: asyncssh.SSHClientConnection, ctx: BootstrapContext) -> None:
        seen.append(ctx)
        if ctx.host == sshlab.hosts[0].label:
            raise RuntimeError("munge key rejected")
        await conn.run("touch bootstrapped", check=True, stdin=asyncssh.DEVNULL)

    result = provider(sshlab, hosts=sshlab.hosts[:2], bootstrap=bootstrap).launch(request("a100-de-0"))
    a, b = sshlab.hosts[:2]
    assert result.launched[0].tags[TAG_HOST] == b.label and a.started() == [] and a.state() is None
    assert (b.home / "bootstrapped").exists() and b.started() == ["a100-de-0"]
    assert [(c.host, c.node, c.client_token, c.cluster) for c in seen] == [
        (a.label, "a100-de-0", "tok-a100-de-0", CLUSTER), (b.label, "a100-de-0", "tok-a100-de-0", CLUSTER)]


def test_wrong_region_or_instance_type_is_config(sshlab):
    p = provider(sshlab)
    assert p.launch(request("a100-de-0", region="nope")).failed["a100-de-0"].kind is FailureKind.CONFIG
    failure = p.launch(request("a100-de-0", itype="other")).failed["a100-de-0"]
    assert failure.kind is FailureKind.CONFIG and failure.effective_scope is Scope.REGION
    assert all(h.started() == [] for h in sshlab.hosts)


def test_a_caller_inside_an_event_loop_is_served_too(sshlab):
    p = provider(sshlab)
    p.launch(request("a100-de-0"))

    async def from_async_code() -> list[Instance]:
        return p.list_instances(CLUSTER)   # asyncio.run cannot nest: the provider uses a thread

    assert [i.node for i in asyncio.run(from_async_code())] == ["a100-de-0"]


def _typed(p: Provider) -> Provider:
    return p


def test_the_provider_satisfies_the_protocol(sshlab):
    p = provider(sshlab)
    assert _typed(p) is p and isinstance(p, Provider) and p.name == "ssh"
    assert isinstance(p.launch(request()).launched, tuple) and all(isinstance(i, Instance) for i in
                                                                   p.list_instances(CLUSTER))


def test_mypy_accepts_the_provider_as_a_provider(tmp_path):
    # mypy comes with the test extras (make test installs it): the Protocol is checked, not assumed.
    check = tmp_path / "check_ssh_provider.py"
    check.write_text("from slurm_bridge.providers.base import Provider\n"
                     "from slurm_bridge.providers.ssh import SshProvider\n"
                     "def typed(p: SshProvider) -> Provider:\n    return p\n")
    done = subprocess.run([sys.executable, "-m", "mypy", "--ignore-missing-imports", "--follow-imports=silent",
                           "slurm_bridge/providers/ssh.py", "slurm_bridge/providers/ssh_hosts.py",
                           "slurm_bridge/ssh_config.py", str(check)], capture_output=True, text=True,
                          cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stdout + done.stderr
