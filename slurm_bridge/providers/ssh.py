"""The SSH provider: bare-metal GPU servers and workstations, reachable only over SSH, as instances.

A region is a host group of `[providers.ssh]`; an instance is one host holding one node, with the
id `<group>/<host>` (host as configured, `name` or `name:port`). Launching a node picks a free
host of the group (one holding no node of this cluster), powers it on if it does not answer and
a `power_on` command is configured, claims it by creating its state file (ssh_hosts.py), runs
`health`, the optional bootstrap hook, then `start`. A host that fails any step is released and
the next one tried; only when no host is left does the node fail, classified:

- a host key that does not match known_hosts: CREDENTIALS at REGION scope. It is a security
  failure, never retried around: the launch stops (nothing more is started in the group) and
  the group is blocked, the narrowest scope the contract has (there is no per-host scope).
- a command the host cannot run (exit 126/127, or a power command not found): CONFIG, REGION.
- our key refused: CREDENTIALS, REGION. Any other failed command (start, bootstrap, power):
  UNKNOWN, REGION, with the last line of its stderr.
- no host healthy, reachable or free: CAPACITY, REGION, so the selector fails over elsewhere.

Listing reads the state files of every host; a host that cannot be read (unreachable, powered
off, a bad key) is listed with state "unknown" and no node: never as gone, so reconcile does
not conclude that a node on it vanished. Each verb runs its own event loop (the contract is
synchronous) and opens at most `max_concurrency` SSH sessions at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncssh

from ..ssh_config import SshConfig, SshGroup, SshHost
from .base import TOKEN_TAG, Failure, FailureKind, Instance, LaunchRequest, LaunchResult, NodeSpec, ProviderError, Scope
from .ssh_hosts import Connector, HostFailure, HostSession, HostView, Problem, load_credentials, survey

log = logging.getLogger("slurm_bridge.providers.ssh")

TAG_CLUSTER, TAG_NODE, TAG_POOL = "slurm-bridge:cluster", "slurm-bridge:node", "slurm-bridge:pool"
TAG_JOBS, TAG_HOST = "slurm-bridge:jobs", "slurm-bridge:host"
MESSAGE_MAX = 500
T = TypeVar("T")


@dataclass(frozen=True)
class BootstrapContext:
    cluster: str
    group: str
    host: str          # the host's label, as in the instance id
    node: str
    client_token: str


# Runs on a claimed, healthy host just before `start` (e.g. to install the munge key and slurm
# config), with the open connection, within command_timeout. Raising fails this host and the next
# one is tried; the exception's message ends up in logs and failures, so it must not carry secrets.
Bootstrap = Callable[[asyncssh.SSHClientConnection, BootstrapContext], Awaitable[None]]


def _run(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    # Called from inside an event loop: asyncio.run cannot nest, so the call gets a thread of its own.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def instance_id(group: SshGroup, host: SshHost) -> str:
    return f"{group.name}/{host.label}"


def to_instance(group: SshGroup, host: SshHost, rec: dict) -> Instance:
    jobs = rec.get("jobs") or []
    return Instance(
        instance_id=instance_id(group, host), node=rec["node"], region=group.name, state="running",
        address=host.name, instance_type=str(rec.get("instance_type") or group.instance_type),
        cluster=str(rec.get("cluster", "")), launched_at=rec.get("launched_at"),
        tags={TAG_CLUSTER: str(rec.get("cluster", "")), TAG_NODE: rec["node"], TAG_POOL: str(rec.get("pool", "")),
              TAG_JOBS: ",".join(str(j) for j in jobs), TOKEN_TAG: str(rec.get("token", "")), TAG_HOST: host.label})


def unknown_instance(group: SshGroup, host: SshHost, cluster: str) -> Instance:
    """A host we could not read: it may hold a node; it must not read as terminated."""
    return Instance(instance_id=instance_id(group, host), node="", region=group.name, state="unknown",
                    address=host.name, instance_type=group.instance_type, cluster=cluster,
                    tags={TAG_HOST: host.label})


_SECURITY_NOTE = ("SECURITY: a host key does not match known_hosts; nothing more is started in this group, "
                  "which is blocked as a whole (the narrowest scope there is: no per-host scope)")


def _rank(p: HostFailure) -> tuple[int, FailureKind]:
    """How bad a host's problem is, most severe first, and the failure kind it stands for."""
    if p.problem is Problem.HOST_KEY:
        return 0, FailureKind.CREDENTIALS
    if p.missing_program:
        return 1, FailureKind.CONFIG
    if p.problem is Problem.AUTH:
        return 2, FailureKind.CREDENTIALS
    if p.problem is Problem.COMMAND and p.step != "health":
        return 3, FailureKind.UNKNOWN
    return 4, FailureKind.CAPACITY     # unhealthy, unreachable, busy, unreadable: no room here now


def classify(group: SshGroup, what: str, problems: Sequence[HostFailure]) -> Failure:
    """One failure for a node no host of GROUP could take, from every host's problem."""
    if not problems:
        return Failure(FailureKind.CAPACITY, f"{group.name}: {what}: every host is taken", Scope.REGION)
    worst = min(problems, key=lambda p: _rank(p)[0])
    kind = _rank(worst)[1]
    lead = f"{_SECURITY_NOTE}: " if worst.problem is Problem.HOST_KEY else ""
    ordered = sorted(problems, key=lambda p: _rank(p)[0])
    message = f"{lead}{group.name}: {what}: " + "; ".join(str(p) for p in ordered)
    return Failure(kind, message[:MESSAGE_MAX], Scope.REGION)


class _Launch:
    """One launch in one group: hosts are handed out once each, to whichever node asks first."""

    def __init__(self, provider: SshProvider, group: SshGroup, cluster: str, connector: Connector):
        self.provider, self.group, self.cluster, self.connector = provider, group, cluster, connector
        self.candidates: deque[HostView] = deque()
        self.problems: dict[str, HostFailure] = {}
        self.halt: Failure | None = None

    def consider(self, views: Sequence[HostView]) -> None:
        # Free, answering hosts first; then silent ones we can power on; the rest are out, with why.
        powerable = self.group.power_on is not None
        later = []
        for v in views:
            if v.problem is None and v.state is None:
                self.candidates.append(v)
            elif v.problem is not None and v.problem.problem is Problem.UNREACHABLE and powerable:
                later.append(v)
            elif v.problem is not None:
                self.problems[v.host.label] = v.problem
            else:
                node = (v.state or {}).get("node")
                self.problems[v.host.label] = HostFailure(Problem.BUSY, v.host, "survey", f"holds node {node}")
        self.candidates.extend(later)

    async def place(self, spec: NodeSpec, token: str) -> Instance | Failure:
        while self.halt is None and self.candidates:
            view = self.candidates.popleft()
            try:
                return await self._start_on(view, spec, token)
            except HostFailure as exc:
                self.problems[view.host.label] = exc
                if exc.problem is Problem.HOST_KEY:
                    self.halt = classify(self.group, f"cannot launch {spec.node}", [exc])
                    log.error("ssh %s: %s", self.group.name, self.halt.message)
                else:
                    log.warning("ssh %s: %s: not used for %s", self.group.name, exc, spec.node)
        return self.halt or classify(self.group, f"no host could take {spec.node}", list(self.problems.values()))

    async def _start_on(self, view: HostView, spec: NodeSpec, token: str) -> Instance:
        host, group = view.host, self.group
        values = {"node": spec.node, "host": host.name}
        if view.problem is not None and group.power_on is not None:
            log.info("ssh %s: powering on %s for %s", group.name, host.label, spec.node)
            await self.connector.run_local("power on", host, group.power_on, values)
            await self.connector.wait_until_up(host)
        record = {"cluster": self.cluster, "node": spec.node, "token": token, "launched_at": time.time(),
                  "group": group.name, "instance_type": group.instance_type, "pool": spec.pool,
                  "jobs": list(spec.job_ids)}
        async with self.connector.session(host) as s:
            if not await s.claim(self.cluster, record):
                held = await s.read_state(self.cluster)
                if held is not None and held.get("token") == token:
                    return to_instance(group, host, held)      # the same launch, retried meanwhile
                raise HostFailure(Problem.BUSY, host, "claim", "claimed by another launch meanwhile")
            try:
                if group.health is not None:
                    await s.run_argv("health", group.health, values)
                await self._bootstrap(s.conn, host, spec, token)
                await s.run_argv("start", group.start, values)
            except BaseException:
                await self._release(s, spec.node)
                raise
        log.info("ssh %s: %s started on %s", group.name, spec.node, host.label)
        return to_instance(group, host, record)

    async def _bootstrap(self, conn: asyncssh.SSHClientConnection, host: SshHost, spec: NodeSpec,
                         token: str) -> None:
        hook = self.provider.bootstrap
        if hook is None:
            return
        try:
            await asyncio.wait_for(hook(conn, BootstrapContext(self.cluster, self.group.name, host.label, spec.node,
                                                               token)), self.provider.config.command_timeout)
        except HostFailure:
            raise
        except asyncio.TimeoutError as exc:
            raise HostFailure(Problem.COMMAND, host, "bootstrap",
                              f"not done after {self.provider.config.command_timeout:g} s") from exc
        except Exception as exc:   # noqa: BLE001 - whatever the hook raises fails this host only
            raise HostFailure(Problem.COMMAND, host, "bootstrap", f"{type(exc).__name__}: {exc}") from exc

    async def _release(self, s: HostSession, node: str) -> None:
        try:
            await asyncio.shield(s.release(self.cluster))
        except (HostFailure, asyncio.CancelledError) as exc:
            # The host stays claimed: it lists as holding NODE, so reconcile terminates it later.
            log.error("ssh %s: cannot release %s after a failed start of %s: %s", self.group.name, s.host.label,
                      node, exc)


class SshProvider:
    name = "ssh"

    def __init__(self, config: SshConfig, cluster: str, *, bootstrap: Bootstrap | None = None):
        self.config = config
        # terminate and describe name no cluster: the provider serves one, the bridge's own, and
        # touches only that cluster's state files (a host may hold nodes of several clusters).
        self.cluster = cluster
        self.bootstrap = bootstrap    # None: no step between health and start (see Bootstrap)

    # -- launch ----------------------------------------------------------------------------------

    def launch(self, request: LaunchRequest) -> LaunchResult:
        group = self.config.group(request.region)
        if group is None:
            fail = Failure(FailureKind.CONFIG, f"unknown ssh host group {request.region!r}", Scope.REGION)
            return LaunchResult((), {n.node: fail for n in request.nodes})
        wrong = {n.node: Failure(FailureKind.CONFIG, f"{group.name} offers {group.instance_type}, "
                                 f"not {n.instance_type}", Scope.REGION)
                 for n in request.nodes if n.instance_type != group.instance_type}
        nodes = [n for n in request.nodes if n.node not in wrong]
        if not nodes:
            return LaunchResult((), wrong)
        try:
            result = _run(lambda: self._launch(group, request.cluster, nodes))
        except ProviderError as exc:
            return LaunchResult((), {**wrong, **{n.node: exc.failure for n in nodes}})
        return LaunchResult(result.launched, {**wrong, **result.failed})

    async def _launch(self, group: SshGroup, cluster: str, nodes: list[NodeSpec]) -> LaunchResult:
        connector = Connector(self.config, load_credentials(self.config))
        views = await survey(connector, group.hosts, cluster)
        launched: list[Instance] = []
        held = {v.state.get("token"): v for v in views if v.state is not None}
        todo: list[tuple[NodeSpec, str]] = []
        for spec in nodes:
            if spec.client_token and spec.client_token in held:
                v = held[spec.client_token]       # a retried launch: already there, not started twice
                launched.append(to_instance(group, v.host, v.state or {}))
            else:
                todo.append((spec, spec.client_token or uuid.uuid4().hex))   # no token: no idempotency
        bad_keys = [v.problem for v in views if v.problem is not None and v.problem.problem is Problem.HOST_KEY]
        if bad_keys and todo:
            failure = classify(group, "launch refused", bad_keys)
            log.error("ssh %s: %s", group.name, failure.message)
            return LaunchResult(tuple(launched), {spec.node: failure for spec, _ in todo})
        run = _Launch(self, group, cluster, connector)
        run.consider(views)
        outcomes = await asyncio.gather(*(run.place(spec, token) for spec, token in todo))
        failed: dict[str, Failure] = {}
        for (spec, _), outcome in zip(todo, outcomes, strict=True):
            if isinstance(outcome, Instance):
                launched.append(outcome)
            else:
                failed[spec.node] = outcome
        return LaunchResult(tuple(launched), failed)

    # -- the other verbs ---------------------------------------------------------------------------

    def _targets(self, region: str, instance_ids: Sequence[str]) -> list[tuple[SshGroup, SshHost]]:
        out = []
        for iid in dict.fromkeys(instance_ids):   # one host is stopped once, even if named twice
            name, _, label = iid.partition("/")
            group = self.config.group(name)
            host = group.host(label) if group is not None and name == region else None
            if group is None or host is None:
                log.warning("ssh: ignoring %r: not a host of group %s", iid, region)
                continue
            out.append((group, host))
        return out

    def terminate(self, region: str, instance_ids: Sequence[str]) -> None:
        targets = self._targets(region, instance_ids)
        if targets:
            _run(lambda: self._terminate(targets))

    async def _terminate(self, targets: list[tuple[SshGroup, SshHost]]) -> None:
        connector = Connector(self.config, load_credentials(self.config))
        outcomes = await asyncio.gather(*(self._stop(connector, g, h) for g, h in targets), return_exceptions=True)
        problems = []
        for outcome in outcomes:
            if isinstance(outcome, HostFailure):
                problems.append(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
        if problems:
            failure = classify(targets[0][0], "terminate failed", problems)
            # A host that cannot be reached now is stopped on the next try: nothing about capacity.
            kind = FailureKind.TRANSIENT if failure.kind is FailureKind.CAPACITY else failure.kind
            raise ProviderError(Failure(kind, failure.message, Scope.REGION))

    async def _stop(self, connector: Connector, group: SshGroup, host: SshHost) -> None:
        async with connector.session(host) as s:
            rec = await s.read_state(self.cluster)
            if rec is None:
                return                      # already gone: not an error
            values = {"node": rec["node"], "host": host.name}
            # The state file goes only once slurmd is stopped: a host still running a node never reads as free.
            await s.run_argv("stop", group.stop, values)
            await s.release(self.cluster)
        log.info("ssh %s: %s stopped on %s", group.name, rec["node"], host.label)
        if group.power_off is not None:
            await connector.run_local("power off", host, group.power_off, values)

    def list_instances(self, cluster: str) -> list[Instance]:
        return _run(lambda: self._read([(g, h) for g in self.config.groups for h in g.hosts], cluster))

    def describe(self, region: str, instance_ids: Sequence[str]) -> list[Instance]:
        targets = self._targets(region, instance_ids)
        return _run(lambda: self._read(targets, self.cluster)) if targets else []

    async def _read(self, targets: list[tuple[SshGroup, SshHost]], cluster: str) -> list[Instance]:
        connector = Connector(self.config, load_credentials(self.config))
        views = await survey(connector, [h for _, h in targets], cluster)
        out = []
        for (group, host), view in zip(targets, views, strict=True):
            if view.state is not None:
                out.append(to_instance(group, host, view.state))
            elif view.problem is not None:
                level = logging.ERROR if view.problem.problem in (Problem.HOST_KEY, Problem.AUTH) else logging.WARNING
                log.log(level, "ssh %s: %s; listed as unknown, not as gone", group.name, view.problem)
                out.append(unknown_instance(group, host, cluster))
        return out
