"""The reconcile's narrow `sinfo` text (slurm/node_text.py), on output captured from the lab.

sinfo_nodes.txt and sinfo_nodes.json were captured together (fixtures/slurm-22.05.8/README.md), so
both parsers must agree on every field the reconcile, the metrics and `conf check` read.
"""

from __future__ import annotations

import json

from conftest import FIXTURES
from slurm_bridge.slurm import node_text, parse
from slurm_bridge.slurm.cli_backend import CliSlurm

V2205 = FIXTURES / "slurm-22.05.8"
TEXT = (V2205 / "sinfo_nodes.txt").read_text()


def test_text_and_json_agree_on_every_field_but_boot_time():
    text = {n.name: n for n in node_text.NodeParser().parse(TEXT)}
    data = json.loads((V2205 / "sinfo_nodes.json").read_text())
    js = {n.name: n for n in parse.nodes_from_sinfo(data)}
    assert set(text) == set(js) and len(text) == 10
    for name, t in text.items():
        j = js[name]
        for field in ("state", "flags", "available_features", "active_features", "address", "hostname",
                      "partitions", "comment", "reason", "gres", "cpus", "real_memory_mb"):
            assert getattr(t, field) == getattr(j, field), (name, field)
        assert t.boot_time is None            # not in sinfo's text; node_details() reads it when needed


def test_states_flags_and_free_text():
    nodes = {n.name: n for n in node_text.NodeParser().parse(TEXT)}
    up = nodes["a100-de-0"]
    assert up.powering_up and up.state == "MIXED" and "NOT_RESPONDING" in up.flags
    assert nodes["a100-de-1"].powered_down and nodes["a100-de-1"].comment == ""
    assert nodes["a100-de-2"].state == "DOWN" and nodes["a100-de-2"].reason == "slurm-bridge: launch failed"
    assert "DRAIN" in nodes["a100-de-3"].flags and nodes["a100-de-3"].reason == "maintenance: swap\tfan"
    assert nodes["a100-eu-3"].comment == "local/lab-nl/i-0123"
    assert nodes["gpu-0"].partitions == ("gpu",)           # the default partition's '*' is not its name


def test_a_node_in_two_partitions_is_one_node_with_both():
    line = next(ln for ln in TEXT.splitlines() if ln.startswith("gpu-0\t"))
    other = line.replace("\tgpu*\t", "\tgpu-long\t")
    [node] = node_text.NodeParser().parse(line + "\n" + other + "\n")
    assert node.partitions == ("gpu", "gpu-long")


def test_unchanged_lines_are_not_parsed_again_and_bad_lines_are_kept_for_the_log():
    parser = node_text.NodeParser()
    first = {n.name: n for n in parser.parse(TEXT)}
    second = {n.name: n for n in parser.parse(TEXT + "not a node line\n")}
    assert all(second[k] is first[k] for k in first)
    assert parser.bad_lines == ["not a node line"]


class Canned(CliSlurm):
    """The real CliSlurm with only the command runner replaced by the captured output."""

    def __init__(self):
        super().__init__()
        self.argvs = []

    def run(self, argv, *, tz=None):
        self.argvs.append(argv)
        return TEXT


def test_cli_backend_asks_sinfo_for_the_named_nodes_only():
    slurm = Canned()
    nodes = slurm.nodes(["a100-de-0", "a100-de-1", "a100-eu-3"])
    assert [n.name for n in nodes] == ["a100-de-0", "a100-de-1", "a100-eu-3"]
    assert slurm.argvs[0][-1] == "--nodes=a100-de-[0-1],a100-eu-3"
    assert slurm.nodes([]) == [] and len(slurm.argvs) == 1
    assert len(slurm.nodes()) == 10 and not slurm.argvs[1][-1].startswith("--nodes")
