"""Bring launched cloud instances into the cluster over SSH: pin, connect, install the key, start slurmd.

For the providers named in `[bootstrap]` (bootstrap_config.py), the launch worker calls
`Bootstrapper.run` once a launch is complete. For each instance, at once:

1. ask the provider for the host keys the instance published (providers/hostkeys.py), every
   `poll_interval` seconds, until the deadline: a booting instance has none yet;
2. connect to its address as `username`, trusting only those keys: a different key is a security
   failure (CREDENTIALS), never retried, and the munge key is not sent;
3. run the bootstrap hook (bootstrap.py: the munge key over SFTP, munge restarted, the config),
   then `start` with `{node}` (and `--conf-server` when configless).

The result is a failure per node that did not make it, classified at REGION scope, so the worker
releases the whole launch (all or nothing) and the selector moves on: an instance that never
publishes keys, never answers or fails a step is UNKNOWN (the region is blocked for a while, not
retried in place: the request's ResumeTimeout is spent); one that refuses our key or shows a host
key other than the published one is CREDENTIALS.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from collections.abc import Callable, Sequence
from typing import cast

import asyncssh

from . import secretfiles
from .bootstrap import NodeBootstrap, conf_server_args, make_bootstrap
from .bootstrap_config import BootstrapConfig
from .providers import hostkeys
from .providers.base import Failure, FailureKind, Instance, Provider, ProviderError, Scope
from .providers.ssh import BootstrapContext, _run
from .providers.ssh_hosts import last_line, render

log = logging.getLogger("slurm_bridge.node_bootstrap")

RETRY_CONNECT_S = 2.0       # sshd may answer a little after the keys are published


class Bootstrapper:
    def __init__(self, cfg: BootstrapConfig, cluster: str, *, clock: Callable[[], float] = time.time):
        self.cfg, self.cluster, self.clock = cfg, cluster, clock
        # Checked now: a munge key others can read, or a config that is not there, fails at start-up.
        self.hook: NodeBootstrap = make_bootstrap(
            cfg.munge_key, slurm_conf_dir=cfg.slurm_conf_dir, conf_server=cfg.conf_server,
            restart_munge=cfg.munge_restart, sudo=("sudo", "-n") if cfg.sudo else ())

    def wants(self, provider: str) -> bool:
        return provider in self.cfg.providers

    def run(self, provider: Provider, instances: Sequence[Instance], tokens: dict[str, str],
            deadline: float) -> dict[str, Failure]:
        """Bootstrap every instance; returns node -> failure for those that were not brought up."""
        for path in self.cfg.client_keys:
            if (why := secretfiles.problem(path)) is not None:
                fail = Failure(FailureKind.CONFIG, f"refusing the [bootstrap] client key {path}: it {why}",
                               Scope.PROVIDER)
                return {i.node: fail for i in instances}
        try:
            keys = [k for path in self.cfg.client_keys for k in asyncssh.load_keypairs([str(path)])]
        except (OSError, ValueError, asyncssh.Error) as exc:
            fail = Failure(FailureKind.CONFIG, f"cannot load a [bootstrap] client key ({type(exc).__name__}; "
                           "an encrypted key is not supported)", Scope.PROVIDER)
            return {i.node: fail for i in instances}
        if not isinstance(provider, hostkeys.PublishesHostKeys):
            fail = Failure(FailureKind.CONFIG, f"provider {provider.name} cannot tell instances' host keys",
                           Scope.PROVIDER)
            return {i.node: fail for i in instances}

        async def all_of() -> list[Failure | None]:
            return await asyncio.gather(*(self._one(cast(hostkeys.PublishesHostKeys, provider), provider, inst,
                                                    keys, tokens.get(inst.node, ""), deadline)
                                          for inst in instances))

        outcomes = _run(all_of)
        return {inst.node: f for inst, f in zip(instances, outcomes, strict=True) if f is not None}

    async def _one(self, publisher: hostkeys.PublishesHostKeys, provider: Provider, inst: Instance,
                   keys: list[asyncssh.SSHKeyPair], token: str, deadline: float) -> Failure | None:
        where = f"{inst.node} ({provider.name} {inst.instance_id})"
        try:
            pinned, address = await self._published(publisher, provider, inst, deadline)
        except ProviderError as exc:
            return exc.failure
        if pinned is None or not address:
            what = "published no SSH host key" if pinned is None else "has no address"
            return Failure(FailureKind.UNKNOWN, f"{where} {what} in time", Scope.REGION)
        known = asyncssh.import_known_hosts(hostkeys.known_hosts_lines(address, self.cfg.port, pinned))
        while True:
            try:
                async with asyncssh.connect(address, self.cfg.port, username=self.cfg.username, client_keys=keys,
                                            known_hosts=known, agent_path=None, config=None,
                                            connect_timeout=self.cfg.connect_timeout) as conn:
                    return await self._install(conn, inst, address, token, where)
            except asyncssh.HostKeyNotVerifiable:
                log.error("SECURITY: %s at %s offered a host key that %s did not publish; nothing sent",
                          where, address, provider.name)
                return Failure(FailureKind.CREDENTIALS, f"SECURITY: {where} at {address}: host key does not match "
                               f"the one {provider.name} published", Scope.REGION)
            except asyncssh.PermissionDenied:
                return Failure(FailureKind.CREDENTIALS, f"{where}: {self.cfg.username}@{address} refused our key "
                               "(is the bridge's public key in the user data?)", Scope.REGION)
            except (OSError, asyncssh.Error, asyncio.TimeoutError) as exc:
                if self.clock() + RETRY_CONNECT_S >= deadline:
                    return Failure(FailureKind.UNKNOWN, f"{where}: cannot connect to {address}: "
                                   f"{type(exc).__name__}: {exc}", Scope.REGION)
                await asyncio.sleep(RETRY_CONNECT_S)

    async def _published(self, publisher: hostkeys.PublishesHostKeys, provider: Provider, inst: Instance,
                         deadline: float) -> tuple[tuple[str, ...] | None, str]:
        address = inst.address
        while True:
            keys = await asyncio.to_thread(publisher.host_keys, inst.region, inst.instance_id)
            if keys and not address:
                # Some APIs give the address only once the instance runs.
                seen = await asyncio.to_thread(provider.describe, inst.region, [inst.instance_id])
                address = seen[0].address if seen else ""
            if (keys and address) or self.clock() + self.cfg.poll_interval >= deadline:
                return keys, address
            await asyncio.sleep(self.cfg.poll_interval)

    async def _install(self, conn: asyncssh.SSHClientConnection, inst: Instance, address: str, token: str,
                       where: str) -> Failure | None:
        ctx = BootstrapContext(self.cluster, inst.region, address, inst.node, token)
        try:
            await asyncio.wait_for(self.hook(conn, ctx), self.cfg.command_timeout)
        except asyncio.TimeoutError:
            return Failure(FailureKind.UNKNOWN, f"{where}: bootstrap not done after {self.cfg.command_timeout:g} s",
                           Scope.REGION)
        except Exception as exc:   # noqa: BLE001 - BootstrapError and the like: this instance fails, named
            return Failure(FailureKind.UNKNOWN, f"{where}: {exc}", Scope.REGION)
        argv = [*(("sudo", "-n") if self.cfg.sudo else ()), *render(self.cfg.start, {"node": inst.node, "host": address})]
        if self.cfg.conf_server:
            argv += conf_server_args(self.cfg.conf_server)
        done = await conn.run(shlex.join(argv), check=False, timeout=self.cfg.command_timeout, stdin=asyncssh.DEVNULL)
        if done.exit_status != 0:
            return Failure(FailureKind.UNKNOWN, f"{where}: start exited {done.exit_status}: "
                           f"{last_line(done.stderr)}", Scope.REGION)
        log.info("bootstrapped %s at %s: munge key and config installed, slurmd started", where, address)
        return None
