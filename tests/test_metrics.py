"""The daemon's Prometheus metrics, read back over HTTP the way Prometheus scrapes them."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from slurm_bridge.metrics import (
    LOOP_BUCKETS,
    NODE_STATES,
    Metrics,
    node_counts,
    node_state_label,
)
from slurm_bridge.models import Node


@pytest.fixture
def served():
    m = Metrics()
    server = m.serve("127.0.0.1", 0)
    yield m, server.server_port
    m.close()


def scrape(port: int) -> dict:
    """{(sample name, sorted label pairs): value} from /metrics, without the *_created samples."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, f"duplicate sample {key}"
            out[key] = s.value
    return out


def only(samples: dict, name: str) -> dict:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def L(**labels) -> tuple:
    return tuple(sorted(labels.items()))


def test_fresh_daemon_exports_scalars_and_no_labelled_series(served):
    _, port = served
    s = scrape(port)
    assert s == {
        ("slurm_bridge_burst_eligible_jobs", ()): 0.0,
        ("slurm_bridge_last_reconcile_timestamp_seconds", ()): 0.0,
    }


def test_gauges_are_served_and_replaced_sets_vanish(served):
    m, port = served
    m.set_nodes({("a100-de", "powered_down"): 3, ("a100-de", "allocated"): 1, ("h100-eu", "idle"): 2})
    m.set_instances({("aws", "eu-central-1"): 1, ("gcp", "europe-west3"): 2})
    m.set_spend({"medical": 12.5, "physics": 0})
    m.set_budgets({"medical": 1000, "physics": 250.75})
    m.set_blocked([("aws", "eu-central-1", "region", "capacity"), ("gcp", None, "provider", "credentials")])
    m.set_burst_eligible(4)
    m.set_last_reconcile(1_700_000_000.5)
    s = scrape(port)
    assert only(s, "slurm_bridge_nodes") == {
        L(pool="a100-de", state="powered_down"): 3.0,
        L(pool="a100-de", state="allocated"): 1.0,
        L(pool="h100-eu", state="idle"): 2.0,
    }
    assert only(s, "slurm_bridge_instances") == {
        L(provider="aws", region="eu-central-1"): 1.0,
        L(provider="gcp", region="europe-west3"): 2.0,
    }
    assert only(s, "slurm_bridge_spend_usd_month") == {L(account="medical"): 12.5, L(account="physics"): 0.0}
    assert only(s, "slurm_bridge_budget_usd_month") == {L(account="medical"): 1000.0, L(account="physics"): 250.75}
    assert only(s, "slurm_bridge_blocked_scopes") == {
        L(provider="aws", region="eu-central-1", scope="region", kind="capacity"): 1.0,
        L(provider="gcp", region="", scope="provider", kind="credentials"): 1.0,
    }
    assert s[("slurm_bridge_burst_eligible_jobs", ())] == 4.0
    assert s[("slurm_bridge_last_reconcile_timestamp_seconds", ())] == 1_700_000_000.5

    # Next cycle: the allocated node went away, a pool vanished, a block expired, an account left.
    m.set_nodes({("a100-de", "powered_down"): 4})
    m.set_instances({})
    m.set_spend({"medical": 13.0})
    m.set_blocked([("gcp", None, "provider", "credentials")])
    s = scrape(port)
    assert only(s, "slurm_bridge_nodes") == {L(pool="a100-de", state="powered_down"): 4.0}
    assert only(s, "slurm_bridge_instances") == {}
    assert only(s, "slurm_bridge_spend_usd_month") == {L(account="medical"): 13.0}
    assert only(s, "slurm_bridge_blocked_scopes") == {
        L(provider="gcp", region="", scope="provider", kind="credentials"): 1.0}
    assert only(s, "slurm_bridge_budget_usd_month") == {L(account="medical"): 1000.0, L(account="physics"): 250.75}


def test_counters_accumulate(served):
    m, port = served
    m.count_launch("aws", "eu-central-1")
    m.count_launch("aws", "eu-central-1", 2)
    m.count_launch_failure("aws", "eu-west-3", "capacity")
    m.count_decision("burst", "waited")
    m.count_decision("burst", "waited")
    m.count_decision("stay", "budget")
    s = scrape(port)
    assert only(s, "slurm_bridge_launches_total") == {L(provider="aws", region="eu-central-1"): 3.0}
    assert only(s, "slurm_bridge_launch_failures_total") == {
        L(provider="aws", region="eu-west-3", kind="capacity"): 1.0}
    assert only(s, "slurm_bridge_decisions_total") == {
        L(decision="burst", reason="waited"): 2.0, L(decision="stay", reason="budget"): 1.0}


def test_loop_histogram(served):
    m, port = served
    m.observe_loop("watch", 0.02)
    m.observe_loop("watch", 3.0)
    m.observe_loop("reconcile", 400.0)
    s = scrape(port)
    watch = {dict(k)["le"]: v for k, v in only(s, "slurm_bridge_loop_duration_seconds_bucket").items()
             if dict(k)["loop"] == "watch"}
    expected = {}
    for b in LOOP_BUCKETS:
        expected[str(float(b))] = float((0.02 <= b) + (3.0 <= b))
    expected["+Inf"] = 2.0
    assert watch == expected
    assert only(s, "slurm_bridge_loop_duration_seconds_count") == {L(loop="watch"): 2.0, L(loop="reconcile"): 1.0}
    assert only(s, "slurm_bridge_loop_duration_seconds_sum") == {L(loop="watch"): 3.02, L(loop="reconcile"): 400.0}
    reconcile = {dict(k)["le"]: v for k, v in only(s, "slurm_bridge_loop_duration_seconds_bucket").items()
                 if dict(k)["loop"] == "reconcile"}
    assert reconcile["300.0"] == 0.0 and reconcile["+Inf"] == 1.0
    with pytest.raises(ValueError):
        m.observe_loop("bogus", 1.0)


def test_bad_node_state_label_is_refused_and_keeps_the_old_set():
    m = Metrics()
    m.set_nodes({("p", "idle"): 1})
    with pytest.raises(ValueError, match="unknown node state"):
        m.set_nodes({("p", "IDLE"): 1})
    assert m.registry.get_sample_value("slurm_bridge_nodes", {"pool": "p", "state": "idle"}) == 1.0


def test_own_registry_not_the_global_one():
    a, b = Metrics(), Metrics()          # two instances: no "Duplicated timeseries" error
    a.count_decision("burst", "waited")
    assert b.registry.get_sample_value("slurm_bridge_decisions_total",
                                       {"decision": "burst", "reason": "waited"}) is None
    assert REGISTRY.get_sample_value("slurm_bridge_burst_eligible_jobs") is None


def test_close_releases_the_port():
    m = Metrics()
    port = m.serve("127.0.0.1", 0).server_port
    assert scrape(port)
    with pytest.raises(RuntimeError):
        m.serve("127.0.0.1", 0)
    m.close()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))            # free again
    m2 = Metrics()
    assert m2.serve("127.0.0.1", port).server_port == port
    m2.close()


def node(state: str, *flags: str, name: str = "a100-de-0") -> Node:
    return Node(name=name, state=state, flags=frozenset(flags), available_features=(), active_features=(),
                address=name, hostname=name, partitions=())


@pytest.mark.parametrize("state, flags, label", [
    ("IDLE", ("CLOUD", "POWERED_DOWN"), "powered_down"),          # idle~
    ("IDLE", ("CLOUD", "POWERING_UP"), "powering_up"),            # idle#
    ("ALLOCATED", ("CLOUD", "POWERING_UP"), "powering_up"),       # alloc#
    ("MIXED", ("CLOUD", "POWERING_UP", "NOT_RESPONDING"), "powering_up"),
    ("IDLE", ("CLOUD",), "idle"),
    ("IDLE", (), "idle"),
    ("IDLE", ("NOT_RESPONDING",), "idle"),                        # idle*: Slurm sets DOWN later
    ("IDLE", ("COMPLETING",), "idle"),
    ("ALLOCATED", ("CLOUD",), "allocated"),
    ("MIXED", ("CLOUD",), "mixed"),
    ("DOWN", ("CLOUD", "POWERED_DOWN"), "down"),                  # down~ after ResumeTimeout
    ("DOWN", ("CLOUD", "POWERING_DOWN"), "down"),                 # down%: a failed launch being powered down
    ("DOWN", ("NOT_RESPONDING",), "down"),
    ("IDLE", ("INVALID_REG",), "down"),
    ("IDLE", ("FAIL",), "down"),
    ("ERROR", (), "down"),
    ("IDLE", ("DRAIN",), "draining"),                             # drained
    ("ALLOCATED", ("DRAIN",), "draining"),                        # draining
    ("IDLE", ("CLOUD", "DRAIN", "POWERED_DOWN"), "draining"),     # drain~
    ("IDLE", ("CLOUD", "POWERING_DOWN"), "powering_down"),        # idle%
    ("IDLE", ("CLOUD", "POWER_DOWN"), "powering_down"),           # idle!
    ("FUTURE", (), "other"),
    ("UNKNOWN", (), "other"),
    ("", (), "other"),
    ("idle", ("cloud", "powered_down"), "powered_down"),          # case does not matter
])
def test_node_state_label(state, flags, label):
    assert label in NODE_STATES
    assert node_state_label(node(state, *flags)) == label


def test_node_counts_fill_every_state_of_every_pool():
    nodes = [node("IDLE", "CLOUD", "POWERED_DOWN", name="a-0"), node("IDLE", "CLOUD", "POWERED_DOWN", name="a-1"),
             node("MIXED", "CLOUD", name="a-2"), node("IDLE", name="gpu-0")]
    counts = node_counts(nodes, lambda n: "a" if n.startswith("a-") else None, pools=["b"])
    assert counts[("a", "powered_down")] == 2 and counts[("a", "mixed")] == 1
    assert sum(counts.values()) == 3
    assert set(counts) == {(p, s) for p in ("a", "b") for s in NODE_STATES}
    m = Metrics()
    m.set_nodes(counts)
    assert m.registry.get_sample_value("slurm_bridge_nodes", {"pool": "b", "state": "idle"}) == 0.0
