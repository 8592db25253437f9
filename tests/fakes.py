"""In-process test doubles for the two outside worlds the launch path talks to: a cloud and Slurm.

They record every call, so a test asserts on what the code under test asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from slurm_bridge.providers.base import (
    Failure,
    FailureKind,
    Instance,
    LaunchRequest,
    LaunchResult,
)


@dataclass(frozen=True)
class Answer:
    """What the scripted provider does with one launch call.

    failure None: every node comes up. Otherwise the call fails with FAILURE; with PARTIAL the
    first node of a multi-node request does come up (and must then be released by the caller).
    """

    failure: FailureKind | None = None
    partial: bool = False

    def __str__(self) -> str:
        if self.failure is None:
            return "ok"
        return f"{self.failure.value}{' (partial)' if self.partial else ''}"


class ScriptedProvider:
    """A provider that answers each launch call from a script, and records every call.

    It stands in for the clouds because a property test (hypothesis) needs hundreds of
    thousands of launches with failures chosen at will, which real providers cannot give,
    neither in time nor in failure modes on demand. The real providers have their own tests;
    this double only keeps the Provider contract (providers/base.py): launch never raises for
    a classified failure, terminate accepts unknown ids.
    """

    def __init__(self, script: Sequence[Answer], then: Answer = Answer(), name: str = "local"):
        self.name = name
        self.script = list(script)
        self.then = then                      # the answer once the script is used up
        self.calls: list[tuple[LaunchRequest, Answer]] = []
        self.terminated: list[tuple[str, tuple[str, ...]]] = []
        self._live: dict[str, Instance] = {}
        self._next_id = 0

    @property
    def requests(self) -> list[LaunchRequest]:
        return [request for request, _ in self.calls]

    def _instance(self, request: LaunchRequest, node: str) -> Instance:
        self._next_id += 1
        inst = Instance(f"i-{self._next_id:06d}", node, request.region, "pending", address=f"10.1.0.{self._next_id % 250 + 1}",
                        cluster=request.cluster)
        self._live[inst.instance_id] = inst
        return inst

    def launch(self, request: LaunchRequest) -> LaunchResult:
        answer = self.script.pop(0) if self.script else self.then
        self.calls.append((request, answer))
        nodes = [spec.node for spec in request.nodes]
        if answer.failure is None:
            return LaunchResult(tuple(self._instance(request, n) for n in nodes), {})
        failure = Failure(answer.failure, f"scripted {answer.failure.value} in {request.region}")
        up = nodes[:1] if answer.partial and len(nodes) > 1 else []
        return LaunchResult(tuple(self._instance(request, n) for n in up),
                            {n: failure for n in nodes if n not in up})

    def terminate(self, region: str, instance_ids: Sequence[str]) -> None:
        self.terminated.append((region, tuple(instance_ids)))
        for iid in instance_ids:
            self._live.pop(iid, None)

    def list_instances(self, cluster: str) -> list[Instance]:
        return [i for i in self._live.values() if i.cluster == cluster]

    def describe(self, region: str, instance_ids: Sequence[str]) -> list[Instance]:
        return [self._live[i] for i in instance_ids if i in self._live and self._live[i].region == region]

    def live_ids(self) -> set[str]:
        return set(self._live)


@dataclass
class RecordingSlurm:
    """The slice of SlurmBackend the launch path uses (update_nodes, node_details), recording calls.

    Anything else is a test failure: the launch path must not read or change more of Slurm.
    """

    updates: list[tuple[tuple[str, ...], dict]] = field(default_factory=list)
    detail_calls: list[tuple[str, ...]] = field(default_factory=list)

    def update_nodes(self, names: Sequence[str], **changes) -> None:
        self.updates.append((tuple(names), {k: v for k, v in changes.items() if v is not None}))

    def node_details(self, names: Sequence[str]) -> list:
        self.detail_calls.append(tuple(names))
        return []

    def __getattr__(self, name: str):
        raise AssertionError(f"the launch path called SlurmBackend.{name}, which this double does not allow")
