"""Doubles for reconcile: a cloud whose listing the test sets, and a Slurm whose nodes the test sets.

Both record what reconcile asked of them and change their state the way the real thing would, so
a second reconcile sees the effect of the first (the convergence property needs that).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from fakes import ScriptedProvider

from slurm_bridge.errors import SlurmError
from slurm_bridge.models import Node
from slurm_bridge.providers.base import Instance, LaunchRequest, LaunchResult


class ListedProvider(ScriptedProvider):
    """Lists exactly the instances a test set; `outage` makes every call raise it.

    terminate marks the listed instances terminated (a real cloud keeps listing a terminated
    instance for a while), and launch is a test failure: reconcile must never launch.
    """

    def __init__(self, instances: Sequence[Instance] = (), name: str = "local"):
        super().__init__([], name=name)
        self.listed: dict[str, Instance] = {i.instance_id: i for i in instances}
        self.outage: Exception | None = None
        self.list_calls = 0

    def add(self, *instances: Instance) -> None:
        for inst in instances:
            self.listed[inst.instance_id] = inst

    def launch(self, request: LaunchRequest) -> LaunchResult:
        self.calls.append((request, None))
        raise AssertionError(f"reconcile launched {[n.node for n in request.nodes]}")

    def list_instances(self, cluster: str) -> list[Instance]:
        self.list_calls += 1
        if self.outage is not None:
            raise self.outage
        return [i for i in self.listed.values() if i.cluster == cluster]

    def terminate(self, region: str, instance_ids: Sequence[str]) -> None:
        if self.outage is not None:
            raise self.outage
        self.terminated.append((region, tuple(instance_ids)))
        for iid in instance_ids:
            if iid in self.listed and self.listed[iid].region == region:
                self.listed[iid] = replace(self.listed[iid], state="terminated")

    def live_ids(self) -> set[str]:
        return {i for i, inst in self.listed.items() if inst.state in ("pending", "running")}


def node(name: str, state: str = "IDLE", *flags: str, reason: str = "", comment: str = "",
         features: Sequence[str] = ()) -> Node:
    return Node(name=name, state=state, flags=frozenset({"CLOUD", *flags}), available_features=tuple(features),
                active_features=tuple(features), address=name, hostname=name, partitions=("burst",),
                comment=comment, reason=reason)


class NodeSlurm:
    """Slurm's node table as the test set it; update_nodes is recorded and applied.

    POWER_DOWN_FORCE calls `on_power_down(nodes)` when set: real slurmctld then runs the
    SuspendProgram on the nodes it powers down.
    """

    def __init__(self, nodes: Sequence[Node] = ()):
        self.table: dict[str, Node] = {n.name: n for n in nodes}
        self.updates: list[tuple[tuple[str, ...], dict]] = []
        self.outage: Exception | None = None
        self.fail_updates: Exception | None = None
        self.on_power_down: Callable[[list[str]], None] | None = None

    def set(self, *nodes: Node) -> None:
        for n in nodes:
            self.table[n.name] = n

    def nodes(self, names=None) -> list[Node]:
        if self.outage is not None:
            raise self.outage
        wanted = None if names is None else set(names)
        return [n for n in self.table.values() if wanted is None or n.name in wanted]

    def node_details(self, names: Sequence[str]) -> list[Node]:
        return self.nodes(names)

    def update_nodes(self, names: Sequence[str], **changes) -> None:
        changes = {k: v for k, v in changes.items() if v is not None}
        self.updates.append((tuple(names), changes))
        if self.fail_updates is not None:
            raise self.fail_updates
        powered_down = []
        for name in names:
            n = self.table.get(name)
            if n is None:
                raise SlurmError(f"scontrol update: invalid node name {name}")
            state, flags, reason = n.state, set(n.flags), n.reason
            new = changes.get("state")
            if new == "RESUME":
                state, reason = "IDLE", ""
                flags -= {"DRAIN", "NOT_RESPONDING"}
            elif new == "DOWN":
                state, reason = "DOWN", changes.get("reason", "")
            elif new == "POWER_DOWN_FORCE":
                if "POWERED_DOWN" not in flags:
                    powered_down.append(name)
                flags = (flags - {"POWERING_UP", "POWERING_DOWN"}) | {"POWERED_DOWN"}
            n = replace(n, state=state, flags=frozenset(flags), reason=reason)
            if "active_features" in changes:
                n = replace(n, active_features=tuple(changes["active_features"]))
            if "available_features" in changes:
                n = replace(n, available_features=tuple(changes["available_features"]))
            self.table[name] = n
        if powered_down and self.on_power_down is not None:
            self.on_power_down(powered_down)

    def states(self, state: str) -> list[tuple[str, ...]]:
        """The node lists of every update that set STATE, in order."""
        return [names for names, ch in self.updates if ch.get("state") == state]

    def __getattr__(self, name: str):
        raise AssertionError(f"reconcile called SlurmBackend.{name}, which this double does not allow")
