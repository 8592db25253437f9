"""The SSH provider: bare-metal GPU servers and workstations, reachable only over SSH, as instances.

A region is a host group of `[providers.ssh]`; an instance is one launch of one node on one host,
with the id `<group>/<host>/<life>` (host as configured, `name` or `name:port`; life a random word
the launch writes into the host's state record). A host serves many launches over time, each its
own instance, as a cloud gives each launch a fresh id: a terminate or describe meant for an earlier
launch (a late suspend, a row a crash left `terminating` and reconcile retries) finds another life,
or none, on the host, reads its instance as gone and never stops the newer launch. Ids without a
life (`<group>/<host>`, from state DBs of the previous version) are handled by `_names`.

Launching a node picks a free host of the group (one holding no node of this cluster), powers it
on if it does not answer and a `power_on` command is configured, claims it by creating its state
file (ssh_hosts.py), runs `health`, the optional bootstrap hook, then `start`. A host that fails
any step is released and the next one tried; only when no host is left does the node fail,
classified:

- a host key that does not match known_hosts: CREDENTIALS at REGION scope. It is a security
  failure, never retried around: the launch stops (nothing more is started in the group) and
  the group is blocked, the narrowest scope the contract has (there is no per-host scope).
- a command the host cannot run (exit 126/127, or a power command not found): CONFIG, REGION.
- our key refused: CREDENTIALS, REGION. Any other failed command (start, bootstrap, power):
  UNKNOWN, REGION, with the last line of its stderr.
- no host healthy, reachable or free: CAPACITY, REGION, so the selector fails over elsewhere.

Listing reads the state files of every host; a host that cannot be read (unreachable, powered
off, a bad key) is listed with state "unknown" and no node: never as gone, so reconcile does
not conclude that a node on it vanished. It cannot say which launch it holds, so it is listed
under its host-level id, which reconcile reads as covering every launch on that host (and which
legacy rows hold); describe lists it under every id asked about. Each verb runs its
own event loop (the contract is synchronous) and opens at most `max_concurrency` SSH sessions at
once.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncssh

from ..ssh_config import SshConfig, SshGroup, SshHost
from .base import TOKEN_TAG, Failure, FailureKind, Instance, LaunchRequest, LaunchResult, NodeSpec, ProviderError, Scope
from .ssh_hosts import LIFE, Connector, HostFailure, HostSession, HostView, Problem, load_credentials, survey

log = logging.getLogger("slurm_bridge.providers.ssh")

TAG_CLUSTER, TAG_NODE, TAG_POOL = "slurm-bridge:cluster", "slurm-bridge:node", "slurm-bridge:pool"
TAG_JOBS, TAG_HOST = "slurm-bridge:jobs", "slurm-bridge:host"
MESSAGE_MAX = 500
LIFE_BYTES = 6       # a life is 12 hex digits: two launches on one host never share one
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


def instance_id(group: SshGroup, host: SshHost, life: str | None = None) -> str:
    """`<group>/<host>/<life>`, one launch on HOST. Without LIFE the host-level `<group>/<host>`: the
    id the previous version gave every launch on the host, and one an unreadable host is listed under."""
    base = f"{group.name}/{host.label}"
    return base if life is None else f"{base}/{life}"


def life_of(rec: Mapping[str, Any]) -> str | None:
    """The launch a state record is for; None for a record the previous version wrote (it had no life)."""
    life = rec.get("life")
    return life if isinstance(life, str) else None


def _names(lives: frozenset[str | None], rec: Mapping[str, Any]) -> bool:
    """Whether the ids naming LIVES (None: an id without a life) name the launch REC records.

    `<group>/<host>/<life>` names the launch whose record has that life, no other. A legacy id
    `<group>/<host>` (kept in state DBs the previous version wrote; terminate and describe get
    nothing but ids, so the node cannot be checked) names only a record without a life, as the
    previous version wrote them. A record with a life was written by this version, so it is a
    launch made after every legacy one: a legacy id can never mean it, and stopping it would be
    the very race the lives remove. Matching a legacy id to "whatever the host holds" would be
    the old behaviour; matching it to nothing would leave a legacy launch running for ever once
    its row asks for it to stop. Left: two launches the previous version made on one host share
    that id and cannot be told apart, until the host's legacy record is released.
    """
    return life_of(rec) in lives


def to_instance(group: SshGroup, host: SshHost, rec: dict) -> Instance:
    jobs = rec.get("jobs") or []
    return Instance(
        instance_id=instance_id(group, host, life_of(rec)), node=rec["node"], region=group.name, state="running",
        address=host.name, instance_type=str(rec.get("instance_type") or group.instance_type),
        cluster=str(rec.get("cluster", "")), launched_at=rec.get("launched_at"),
        tags={TAG_CLUSTER: str(rec.get("cluster", "")), TAG_NODE: rec["node"], TAG_POOL: str(rec.get("pool", "")),
              TAG_JOBS: ",".join(str(j) for j in jobs), TOKEN_TAG: str(rec.get("token", "")), TAG_HOST: host.label})


def unknown_instance(group: SshGroup, host: SshHost, cluster: str, iid: str | None = None) -> Instance:
    """A host we could not read, listed as IID (default: its host-level id): it may hold a node; it
    must not read as terminated."""
    return Instance(instance_id=iid or instance_id(group, host), node="", region=group.name, state="unknown",
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
        # A fresh life per launch, random rather than from the token: a token used again (a retried
        # launch placed on a host it was released from) still makes a new instance.
        record = {"cluster": self.cluster, "node": spec.node, "token": token, "launched_at": time.time(),
                  "group": group.name, "instance_type": group.instance_type, "pool": spec.pool,
                  "jobs": list(spec.job_ids), "life": secrets.token_hex(LIFE_BYTES)}
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
        log.info("ssh %s: %s started on %s as %s", group.name, spec.node, host.label,
                 instance_id(group, host, life_of(record)))
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

    def _targets(self, region: str, instance_ids: Sequence[str]) -> list[_Target]:
        """The hosts INSTANCE_IDS name in REGION, each once, with the launches named on it."""
        named: dict[tuple[str, str], tuple[SshGroup, SshHost, dict[str | None, None], list[str]]] = {}
        for iid in dict.fromkeys(instance_ids):   # one host is stopped once, even if named twice
            parsed = self._parse(region, iid)
            if parsed is None:
                log.warning("ssh: ignoring %r: not an instance of group %s", iid, region)
                continue
            group, host, life = parsed
            entry = named.setdefault((group.name, host.label), (group, host, {}, []))
            entry[2][life] = None
            entry[3].append(iid)
        return [_Target(g, h, frozenset(lives), tuple(ids)) for g, h, lives, ids in named.values()]

    def _parse(self, region: str, iid: str) -> tuple[SshGroup, SshHost, str | None] | None:
        """`<group>/<host>/<life>`, or a legacy `<group>/<host>` (life None). Neither a group name
        nor a host label can hold a "/" (ssh_config.py), nor can a life (ssh_hosts.LIFE)."""
        parts = iid.split("/")
        if len(parts) not in (2, 3) or parts[0] != region:
            return None
        group = self.config.group(parts[0])
        host = group.host(parts[1]) if group is not None else None
        if group is None or host is None:
            return None
        if len(parts) == 2:
            return group, host, None
        return (group, host, parts[2]) if LIFE.fullmatch(parts[2]) else None

    def terminate(self, region: str, instance_ids: Sequence[str]) -> None:
        targets = self._targets(region, instance_ids)
        if targets:
            _run(lambda: self._terminate(targets))

    async def _terminate(self, targets: list[_Target]) -> None:
        connector = Connector(self.config, load_credentials(self.config))
        outcomes = await asyncio.gather(*(self._stop(connector, t) for t in targets), return_exceptions=True)
        problems = []
        for outcome in outcomes:
            if isinstance(outcome, HostFailure):
                problems.append(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
        if problems:
            failure = classify(targets[0].group, "terminate failed", problems)
            # A host that cannot be reached now is stopped on the next try: nothing about capacity.
            kind = FailureKind.TRANSIENT if failure.kind is FailureKind.CAPACITY else failure.kind
            raise ProviderError(Failure(kind, failure.message, Scope.REGION))

    async def _stop(self, connector: Connector, t: _Target) -> None:
        group, host = t.group, t.host
        async with connector.session(host) as s:
            rec = await s.read_state(self.cluster)
            if rec is None:
                return                      # already gone: not an error
            if not _names(t.lives, rec):
                # A later launch holds the host now (or, for a legacy id, one of this version): the
                # instance named is already gone. Not an error, and the newer launch is left alone.
                log.info("ssh %s: %s already gone; %s now holds %s as %s, left running", group.name,
                         ", ".join(t.ids), host.label, rec["node"], instance_id(group, host, life_of(rec)))
                return
            values = {"node": rec["node"], "host": host.name}
            # The state file goes only once slurmd is stopped: a host still running a node never reads as free.
            await s.run_argv("stop", group.stop, values)
            await s.release(self.cluster)
        log.info("ssh %s: %s stopped on %s (%s)", group.name, rec["node"], host.label,
                 instance_id(group, host, life_of(rec)))
        if group.power_off is not None:
            await connector.run_local("power off", host, group.power_off, values)

    def list_instances(self, cluster: str) -> list[Instance]:
        return _run(lambda: self._list(cluster))

    async def _list(self, cluster: str) -> list[Instance]:
        connector = Connector(self.config, load_credentials(self.config))
        pairs = [(g, h) for g in self.config.groups for h in g.hosts]
        views = await survey(connector, [h for _, h in pairs], cluster)
        out = []
        for (group, host), view in zip(pairs, views, strict=True):
            if view.state is not None:
                out.append(to_instance(group, host, view.state))
            elif view.problem is not None:
                _unreadable(group, view.problem)
                # Under the host-level id: a legacy row holds it, and reconcile reads an unknown
                # "<group>/<host>" as covering every "<group>/<host>/<life>", so no row on it reads as gone.
                out.append(unknown_instance(group, host, cluster))
        return out

    def describe(self, region: str, instance_ids: Sequence[str]) -> list[Instance]:
        targets = self._targets(region, instance_ids)
        return _run(lambda: self._describe(targets)) if targets else []

    async def _describe(self, targets: list[_Target]) -> list[Instance]:
        connector = Connector(self.config, load_credentials(self.config))
        views = await survey(connector, [t.host for t in targets], self.cluster)
        out = []
        for t, view in zip(targets, views, strict=True):
            if view.state is not None and _names(t.lives, view.state):
                out.append(to_instance(t.group, t.host, view.state))
            elif view.problem is not None:
                _unreadable(t.group, view.problem)
                out.extend(unknown_instance(t.group, t.host, self.cluster, iid) for iid in t.ids)
            # else: no record, or another launch's: every instance named here is gone (left out).
        return out


@dataclass(frozen=True)
class _Target:
    """A host terminate or describe was asked about, and which of its launches."""

    group: SshGroup
    host: SshHost
    lives: frozenset[str | None]      # None: a legacy id, without a life (see _names)
    ids: tuple[str, ...]              # as asked, for logs and for an unreadable host's listing


def _unreadable(group: SshGroup, problem: HostFailure) -> None:
    level = logging.ERROR if problem.problem in (Problem.HOST_KEY, Problem.AUTH) else logging.WARNING
    log.log(level, "ssh %s: %s; listed as unknown, not as gone", group.name, problem)
