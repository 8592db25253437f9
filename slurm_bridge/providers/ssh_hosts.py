"""What the SSH provider does to one host: connect, run a command, keep the host's state file, power.

Every problem with a host is raised as a HostFailure naming the host, the step and a safe detail
(an exception's message or the last line of a command's stderr, never a key or the input sent);
the provider decides from them whether to try the next host and how to classify the outcome.

The state file, `~/.slurm-bridge/<cluster>.json` on the host, says which node of which cluster
the host holds, with the client token, the launch time and the launch's "life" (a random word
that makes each launch on the host an instance of its own; see ssh.py): the host's own record,
so a lost state DB is rebuilt from the hosts, as from cloud tags. It is created with `set -C` (noclobber:
O_EXCL), so two launchers racing for one host cannot both claim it. The commands below need a
POSIX login shell (sh, dash, bash, zsh) on the host.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import re
import shlex
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncssh

from .. import secretfiles
from ..ssh_config import SshConfig, SshHost
from .base import Failure, FailureKind, ProviderError, Scope

log = logging.getLogger("slurm_bridge.providers.ssh")

STATE_DIR = ".slurm-bridge"          # relative to the login directory
_PLACEHOLDER = re.compile(r"\{(node|host)\}")
_NOT_FOUND = (126, 127)              # the shell's "cannot execute" and "not found"
LIFE = re.compile(r"[0-9a-z]{1,32}")  # a record's "life": the last part of its instance id, so no "/"
DETAIL_MAX = 200


class Problem(enum.Enum):
    UNREACHABLE = "unreachable"      # refused, timed out, no route, connection lost
    HOST_KEY = "host key"            # not the pinned key: a security failure
    AUTH = "auth"                    # our key was refused
    COMMAND = "command"              # a command failed, timed out or could not run
    BUSY = "busy"                    # holds another node of this cluster
    STATE = "state"                  # a state file we cannot read


class HostFailure(Exception):
    def __init__(self, problem: Problem, host: SshHost, step: str, detail: str, status: int | None = None):
        super().__init__(f"{host.label}: {step}: {detail}")
        self.problem, self.host, self.step, self.detail, self.status = problem, host, step, detail, status

    @property
    def missing_program(self) -> bool:
        return self.problem is Problem.COMMAND and self.status in _NOT_FOUND


@dataclass(frozen=True)
class Credentials:
    known_hosts: asyncssh.SSHKnownHosts
    client_keys: Sequence[asyncssh.SSHKeyPair]


def load_credentials(cfg: SshConfig) -> Credentials:
    """Read the pinned host keys and our private keys once per call, so a rotated key is picked up."""
    try:
        known = asyncssh.read_known_hosts(str(cfg.known_hosts))
    except (OSError, ValueError, asyncssh.Error) as exc:
        raise ProviderError(Failure(FailureKind.CONFIG, f"cannot read known_hosts {cfg.known_hosts}: "
                                    f"{type(exc).__name__}: {_oneline(exc)}", Scope.PROVIDER)) from exc
    keys: list[asyncssh.SSHKeyPair] = []
    for path in cfg.client_keys:
        if (why := secretfiles.problem(path)) is not None:
            raise ProviderError(Failure(FailureKind.CONFIG, f"refusing the private key {path}: it {why}",
                                        Scope.PROVIDER))
        try:
            keys.extend(asyncssh.load_keypairs([str(path)]))
        except (OSError, ValueError, asyncssh.Error) as exc:
            # The message names the file only: an import error could quote key material.
            raise ProviderError(Failure(FailureKind.CONFIG, f"cannot load the private key {path} "
                                        f"({type(exc).__name__}; an encrypted key is not supported)",
                                        Scope.PROVIDER)) from exc
    return Credentials(known, tuple(keys))


def render(argv: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """ARGV with {node} and {host} replaced, in one pass, so a value is never substituted again."""
    return [_PLACEHOLDER.sub(lambda m: values[m.group(1)], arg) for arg in argv]


def remote_command(argv: Sequence[str]) -> str:
    """The command line sent over SSH: the remote side runs it with the login shell, so every
    argument is quoted; a node name like `x; rm -rf ~` stays one argument."""
    return shlex.join(argv)


def _oneline(value: object) -> str:
    return " ".join(str(value).split())[:DETAIL_MAX]


def last_line(stderr: str | bytes | None) -> str:
    text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else (stderr or "")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:DETAIL_MAX] if lines else "no error output"


def state_path(cluster: str) -> str:
    return f"{STATE_DIR}/{cluster}.json"


class HostSession:
    """One open SSH connection to a host."""

    def __init__(self, conn: asyncssh.SSHClientConnection, host: SshHost, cfg: SshConfig):
        self.conn, self.host, self.cfg = conn, host, cfg

    async def run(self, step: str, command: str, stdin: str | None = None) -> asyncssh.SSHCompletedProcess:
        try:
            if stdin is None:
                # No input: EOF at once, so a command that reads stdin cannot hang.
                return await self.conn.run(command, stdin=asyncssh.DEVNULL, timeout=self.cfg.command_timeout)
            return await self.conn.run(command, input=stdin, timeout=self.cfg.command_timeout)
        except asyncssh.TimeoutError as exc:
            raise HostFailure(Problem.COMMAND, self.host, step,
                              f"no answer after {self.cfg.command_timeout:g} s") from exc
        except (asyncssh.Error, OSError) as exc:
            raise HostFailure(Problem.UNREACHABLE, self.host, step, f"{type(exc).__name__}: {_oneline(exc)}") from exc

    async def run_argv(self, step: str, argv: Sequence[str], values: Mapping[str, str]) -> None:
        done = await self.run(step, remote_command(render(argv, values)))
        if done.exit_status != 0:
            status = done.exit_status if done.exit_status is not None else -1
            raise HostFailure(Problem.COMMAND, self.host, step,
                              f"exit {status}: {last_line(done.stderr)}", status)

    async def read_state(self, cluster: str) -> dict | None:
        path = shlex.quote(state_path(cluster))
        done = await self.run("read state", f"test ! -e {path} || cat -- {path}")
        if done.exit_status != 0:
            raise HostFailure(Problem.STATE, self.host, "read state",
                              f"exit {done.exit_status}: {last_line(done.stderr)}")
        text = done.stdout.strip() if isinstance(done.stdout, str) else ""
        if not text:
            return None
        try:
            rec = json.loads(text)
        except ValueError:
            rec = None
        if (not isinstance(rec, dict) or not isinstance(rec.get("node"), str) or rec.get("cluster") != cluster
                or ("life" in rec and not (isinstance(rec["life"], str) and LIFE.fullmatch(rec["life"])))):
            # A claim being written, or a file someone edited: the host is not free, and not ours to list.
            # A record without "life" is one the previous version wrote (ssh.py: legacy ids).
            raise HostFailure(Problem.STATE, self.host, "read state", f"{state_path(cluster)} is not a state record")
        return rec

    async def claim(self, cluster: str, record: Mapping[str, Any]) -> bool:
        """Create the state file unless it exists; False when another launch holds the host."""
        path = shlex.quote(state_path(cluster))
        done = await self.run("claim", f"umask 077 && mkdir -p {STATE_DIR} && set -C && cat > {path}",
                              stdin=json.dumps(dict(record), sort_keys=True) + "\n")
        return done.exit_status == 0

    async def release(self, cluster: str) -> None:
        done = await self.run("release", f"rm -f -- {shlex.quote(state_path(cluster))}")
        if done.exit_status != 0:
            raise HostFailure(Problem.COMMAND, self.host, "release",
                              f"exit {done.exit_status}: {last_line(done.stderr)}", done.exit_status)


class Connector:
    """Opens sessions to hosts, at most max_concurrency at once (the semaphore lives in one event loop)."""

    def __init__(self, cfg: SshConfig, creds: Credentials):
        self.cfg, self.creds = cfg, creds
        self.slots = asyncio.Semaphore(cfg.max_concurrency)

    @asynccontextmanager
    async def session(self, host: SshHost) -> AsyncIterator[HostSession]:
        async with self.slots:
            conn = await self._connect(host)
            try:
                yield HostSession(conn, host, self.cfg)
            finally:
                conn.close()
                await conn.wait_closed()

    async def _connect(self, host: SshHost) -> asyncssh.SSHClientConnection:
        try:
            # config=None: ~/.ssh/config of whoever runs the bridge must not change where we go
            # or how we authenticate; agent_path=None: only the configured keys.
            return await asyncssh.connect(
                host.name, host.port, username=self.cfg.username, known_hosts=self.creds.known_hosts,
                client_keys=list(self.creds.client_keys), agent_path=None, config=None,
                preferred_auth="publickey", connect_timeout=self.cfg.connect_timeout)
        except asyncssh.HostKeyNotVerifiable as exc:
            raise HostFailure(Problem.HOST_KEY, host, "connect",
                              f"host key not verifiable against {self.cfg.known_hosts} "
                              f"({_oneline(exc)}): unknown or changed key, possible interception") from exc
        except asyncssh.PermissionDenied as exc:
            raise HostFailure(Problem.AUTH, host, "connect",
                              f"user {self.cfg.username} refused with the configured keys") from exc
        except (OSError, asyncio.TimeoutError, asyncssh.Error) as exc:
            raise HostFailure(Problem.UNREACHABLE, host, "connect", f"unreachable ({self._why(exc)})") from exc

    def _why(self, exc: BaseException) -> str:
        if isinstance(exc, ConnectionRefusedError):
            return "connection refused"
        if isinstance(exc, asyncio.TimeoutError):
            return f"no answer within {self.cfg.connect_timeout:g} s"
        if isinstance(exc, OSError) and exc.strerror:
            return exc.strerror
        return f"{type(exc).__name__}: {_oneline(exc)}"

    async def wait_until_up(self, host: SshHost) -> None:
        """After a power-on: try to connect until boot_timeout; only 'unreachable' is waited out."""
        deadline = time.monotonic() + self.cfg.boot_timeout
        while True:
            try:
                async with self.session(host):
                    return
            except HostFailure as exc:
                left = deadline - time.monotonic()
                if exc.problem is not Problem.UNREACHABLE or left <= 0:
                    if exc.problem is Problem.UNREACHABLE:
                        raise HostFailure(Problem.UNREACHABLE, host, "power on",
                                          f"not answering {self.cfg.boot_timeout:g} s after power-on "
                                          f"({exc.detail})") from exc
                    raise
                await asyncio.sleep(min(1.0, left))

    async def run_local(self, step: str, host: SshHost, argv: Sequence[str], values: Mapping[str, str]) -> None:
        """Run a power command on this machine (not over SSH): an argv, no shell involved."""
        args = render(argv, values)
        try:
            proc = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.DEVNULL,
                                                        stdout=asyncio.subprocess.DEVNULL,
                                                        stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            raise HostFailure(Problem.COMMAND, host, step, f"cannot run {args[0]}: {exc.strerror or exc}",
                              127) from exc
        try:
            _, err = await asyncio.wait_for(proc.communicate(), self.cfg.command_timeout)
        except asyncio.TimeoutError as exc:
            proc.kill()
            await proc.wait()
            raise HostFailure(Problem.COMMAND, host, step,
                              f"{args[0]}: no answer after {self.cfg.command_timeout:g} s") from exc
        if proc.returncode != 0:
            raise HostFailure(Problem.COMMAND, host, step, f"{args[0]} exit {proc.returncode}: {last_line(err)}",
                              proc.returncode)


@dataclass(frozen=True)
class HostView:
    """One host as seen by a survey: this cluster's record on it, or why it could not be read."""

    host: SshHost
    state: dict | None = None
    problem: HostFailure | None = None


async def survey(connector: Connector, hosts: Sequence[SshHost], cluster: str) -> list[HostView]:
    async def look(host: SshHost) -> HostView:
        try:
            async with connector.session(host) as s:
                return HostView(host, await s.read_state(cluster))
        except HostFailure as exc:
            return HostView(host, None, exc)

    return list(await asyncio.gather(*(look(h) for h in hosts)))
