"""Secure bootstrap of a node over SSH: the munge key and the Slurm config, never in user data.

`make_bootstrap(...)` builds the SSH provider's `bootstrap` hook (providers/ssh.py), which runs on
a claimed, healthy host just before `start`, over the provider's own connection. It

1. reads the munge key on the bridge host, refusing a file that is not a regular file owned by
   root or by the bridge's own user, or that group or others may access;
2. writes it to the node over SFTP into a file created 0600 with O_EXCL beside the target,
   gives it its owner (`chown munge:munge <path>`), then renames it over the target with
   posix-rename, so munged never sees half a key. A login that is not root passes `sudo`
   (e.g. `("sudo", "-n")`): the key is then staged in the login's private
   `~/.slurm-bridge/stage` (0700) and moved into place with `sudo install` and `sudo mv -T`,
   whose argv hold paths only (sudo must keep the working directory: not `sudo -i`);
3. restarts munge (`systemctl restart munge`, configurable, None to skip);
4. copies slurm.conf and, where present, gres.conf, cgroup.conf and the fragments rendered by
   `slurm-bridge conf render` from `slurm_conf_dir` the same way (0644); or, configless
   (`conf_server`), copies nothing: the provider's `start` must then pass `--conf-server`
   (`conf_server_args`), and slurmctld needs `SlurmctldParameters=enable_configless`.

The key's bytes travel only inside SFTP write requests: no command line, environment, log
record, exception or state record holds them, and messages name files, never contents.
Re-running the hook writes the same files and restarts munge again: the node ends in the same
state. A remote path may be relative: to the login directory, where SFTP and commands both start.
A failing step raises BootstrapError naming the step and the host; the provider then releases
the host and tries the next one.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import shlex
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from . import secretfiles
from .errors import BridgeError
from .providers.ssh import BootstrapContext
from .providers.ssh_hosts import last_line

log = logging.getLogger("slurm_bridge.bootstrap")

MUNGE_KEY_MIN, MUNGE_KEY_MAX = 32, 1024      # bytes; munged refuses keys outside this range
REMOTE_MUNGE_PATH = "/etc/munge/munge.key"
REMOTE_CONF_DIR = "/etc/slurm"
REQUIRED_CONF = "slurm.conf"
# slurm.conf Includes the bridge's fragments (render.FRAGMENT_NAME, GRES_NAME): slurmd must find them too.
CONF_FILES = (REQUIRED_CONF, "gres.conf", "cgroup.conf", "slurm-bridge.conf", "gres-bridge.conf")
RESTART_MUNGE = ("systemctl", "restart", "munge")
STAGE_DIR = ".slurm-bridge/stage"            # relative to the login directory
TEMP_SUFFIX = ".slurm-bridge-new"
_OWNER = re.compile(r"[a-z_][a-z0-9_-]*(?::[a-z_][a-z0-9_-]*)?")
_SERVER = r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?"
_CONF_SERVER = re.compile(rf"{_SERVER}(?:,{_SERVER})*")
_OPEN_NEW = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_EXCL


class MungeKeyError(BridgeError, ValueError):
    """The munge key file on the bridge host is missing or unsafe; names the file, never its content."""


class BootstrapError(Exception):
    """A bootstrap step failed on a host; the message names both, never a secret."""

    def __init__(self, step: str, host: str, detail: str):
        super().__init__(f"{step} on {host}: {detail}")
        self.step, self.host, self.detail = step, host, detail


def read_munge_key(path: Path) -> bytes:
    """The key in PATH, once the file is known to be safe; MungeKeyError otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY)
    except OSError as exc:
        raise MungeKeyError(f"cannot open the munge key {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        # fstat, not stat: checks the very file we read, whatever a symlink or a rename does meanwhile.
        problem = secretfiles.unsafe(os.fstat(f.fileno()))
        if problem is not None:
            raise MungeKeyError(f"refusing the munge key {path}: it {problem}")
        key = f.read(MUNGE_KEY_MAX + 1)
    if not MUNGE_KEY_MIN <= len(key) <= MUNGE_KEY_MAX:
        raise MungeKeyError(f"refusing the munge key {path}: munged needs {MUNGE_KEY_MIN} to {MUNGE_KEY_MAX} "
                            "bytes (create one with `mungekey` or `dd if=/dev/urandom bs=1 count=1024`)")
    return key


def check_conf_server(value: str) -> str:
    if not _CONF_SERVER.fullmatch(value):
        raise ValueError(f"conf_server must be host[:port][,host[:port]...], got {value!r}")
    return value


def conf_server_args(conf_server: str) -> list[str]:
    """What a configless node's slurmd needs on its command line (the SSH provider's `start`)."""
    return ["--conf-server", check_conf_server(conf_server)]


def _remote_path(name: str, value: str) -> str:
    if not value or value.endswith("/") or any(c in value for c in "\0\n\r"):
        raise ValueError(f"{name} must name a file, got {value!r}")
    return value


def _owner(name: str, value: str | None) -> str | None:
    if value is not None and not _OWNER.fullmatch(value):
        raise ValueError(f"{name} must be user or user:group, got {value!r}")
    return value


def temp_beside(target: str) -> str:
    head, tail = posixpath.split(target)
    return posixpath.join(head, f".{tail}{TEMP_SUFFIX}")


class _Node:
    """One node as the steps see it: its SSH connection and SFTP session, and how to get root."""

    def __init__(self, conn: asyncssh.SSHClientConnection, sftp: asyncssh.SFTPClient, host: str,
                 sudo: tuple[str, ...]):
        self.conn, self.sftp, self.host, self.sudo = conn, sftp, host, sudo

    async def run(self, step: str, argv: Sequence[str]) -> None:
        # Arguments are paths, owners and modes only; quoted, since the login shell parses the line.
        command = shlex.join([*self.sudo, *argv])
        try:
            done = await self.conn.run(command, stdin=asyncssh.DEVNULL, check=False)
        except (asyncssh.Error, OSError) as exc:
            raise BootstrapError(step, self.host, f"{argv[0]}: {type(exc).__name__}") from exc
        if done.exit_status != 0:
            status = done.exit_status if done.exit_status is not None else -1
            raise BootstrapError(step, self.host, f"{argv[0]} exit {status}: {last_line(done.stderr)}")

    async def sftp_call(self, step: str, what: str, call: Awaitable[object]) -> None:
        try:
            await call
        except asyncssh.SFTPError as exc:
            raise BootstrapError(step, self.host, f"{what}: {exc.reason or type(exc).__name__}") from exc
        except (asyncssh.Error, OSError) as exc:
            raise BootstrapError(step, self.host, f"{what}: {type(exc).__name__}") from exc

    async def write_new(self, step: str, path: str, data: bytes) -> None:
        """PATH created afresh, 0600 from its first byte, holding DATA."""
        await self.discard(path)                  # a leftover of an interrupted run would block O_EXCL
        await self.sftp_call(step, f"writing {path}", self._write(path, data))

    async def _write(self, path: str, data: bytes) -> None:
        async with self.sftp.open(path, _OPEN_NEW, asyncssh.SFTPAttrs(permissions=0o600), encoding=None) as f:
            await f.write(data)
            try:
                await f.fsync()                   # durable before the rename makes it live
            except asyncssh.SFTPOpUnsupported:
                pass                              # a server without fsync@openssh.com: best effort

    async def discard(self, path: str) -> None:
        try:
            await self.sftp.remove(path)
        except (asyncssh.Error, OSError):
            pass                                  # absent is what we want; anything else shows up next

    async def put(self, step: str, data: bytes, target: str, mode: int, owner: str | None) -> None:
        if self.sudo:
            await self._put_with_sudo(step, data, target, mode, owner)
        else:
            await self._put_direct(step, data, target, mode, owner)

    async def _put_direct(self, step: str, data: bytes, target: str, mode: int, owner: str | None) -> None:
        tmp = temp_beside(target)
        await self.write_new(step, tmp, data)
        try:
            if owner is not None:
                await self.run(step, ["chown", owner, tmp])
            await self.sftp_call(step, f"chmod {mode:04o} {tmp}", self.sftp.chmod(tmp, mode))
            await self.sftp_call(step, f"renaming {tmp} to {target}", self.sftp.posix_rename(tmp, target))
        except BaseException:
            await self.discard(tmp)               # no stray copy of a key left beside the target
            raise

    async def _put_with_sudo(self, step: str, data: bytes, target: str, mode: int, owner: str | None) -> None:
        stage = posixpath.join(STAGE_DIR, posixpath.basename(target))
        await self.sftp_call(step, f"creating {STAGE_DIR}", self.sftp.makedirs(
            STAGE_DIR, asyncssh.SFTPAttrs(permissions=0o700), exist_ok=True))
        await self.sftp_call(step, f"chmod 0700 {STAGE_DIR}", self.sftp.chmod(STAGE_DIR, 0o700))
        await self.write_new(step, stage, data)
        tmp = temp_beside(target)
        user, _, group = (owner or "").partition(":")
        ids = [*(["-o", user] if user else []), *(["-g", group] if group else [])]
        try:
            await self.run(step, ["install", "-m", f"{mode:04o}", *ids, stage, tmp])
            await self.run(step, ["mv", "-f", "-T", tmp, target])    # rename(2) in one directory: atomic
        except BaseException:
            await self._quietly(["rm", "-f", "--", tmp])
            raise
        finally:
            await self.discard(stage)

    async def _quietly(self, argv: list[str]) -> None:
        try:
            await self.conn.run(shlex.join([*self.sudo, *argv]), stdin=asyncssh.DEVNULL, check=False)
        except (asyncssh.Error, OSError):
            pass                                  # cleanup after a failure: the failure is what gets reported


@dataclass(frozen=True)
class NodeBootstrap:
    """The SSH provider's bootstrap hook; build it with make_bootstrap."""

    munge_key_path: Path
    slurm_conf_dir: Path | None
    conf_server: str | None
    remote_munge_path: str = REMOTE_MUNGE_PATH
    munge_owner: str | None = "munge:munge"
    restart_munge: tuple[str, ...] | None = RESTART_MUNGE
    remote_conf_dir: str = REMOTE_CONF_DIR
    conf_owner: str | None = None
    conf_files: tuple[str, ...] = CONF_FILES
    sudo: tuple[str, ...] = ()

    async def __call__(self, conn: asyncssh.SSHClientConnection, ctx: BootstrapContext) -> None:
        try:
            key = read_munge_key(self.munge_key_path)      # per call: a rotated key is picked up
        except MungeKeyError as exc:
            raise BootstrapError("read munge key", ctx.host, str(exc)) from None
        conf = self._read_conf(ctx.host)
        try:
            sftp = await conn.start_sftp_client()
        except (asyncssh.Error, OSError) as exc:
            raise BootstrapError("start SFTP", ctx.host, type(exc).__name__) from exc
        async with sftp:
            node = _Node(conn, sftp, ctx.host, self.sudo)
            await node.put("install munge key", key, self.remote_munge_path, 0o600, self.munge_owner)
            if self.restart_munge:
                await node.run("restart munge", self.restart_munge)
            for name, data in conf:
                await node.put(f"copy {name}", data, posixpath.join(self.remote_conf_dir, name), 0o644,
                               self.conf_owner)
        how = (f"copied {', '.join(n for n, _ in conf)} to {self.remote_conf_dir}" if conf
               else f"configless from {self.conf_server}")
        log.info("bootstrap of %s on %s: munge key %s installed as %s%s; slurm config %s", ctx.node, ctx.host,
                 self.munge_key_path, self.remote_munge_path, ", munge restarted" if self.restart_munge else "",
                 how)

    def _read_conf(self, host: str) -> list[tuple[str, bytes]]:
        """The config files to copy, read now (they change); none when configless."""
        if self.slurm_conf_dir is None:
            return []
        out = []
        for name in self.conf_files:
            path = self.slurm_conf_dir / name
            try:
                out.append((name, path.read_bytes()))
            except FileNotFoundError:
                if name == REQUIRED_CONF:
                    raise BootstrapError(f"read {name}", host, f"{path} is missing on the bridge host") from None
            except OSError as exc:
                raise BootstrapError(f"read {name}", host, f"cannot read {path} on the bridge host: "
                                     f"{exc.strerror}") from None
        return out


def make_bootstrap(munge_key_path: Path, *, slurm_conf_dir: Path | None, conf_server: str | None,
                   remote_munge_path: str = REMOTE_MUNGE_PATH, munge_owner: str | None = "munge:munge",
                   restart_munge: Sequence[str] | None = RESTART_MUNGE, remote_conf_dir: str = REMOTE_CONF_DIR,
                   conf_owner: str | None = None, conf_files: Sequence[str] = CONF_FILES,
                   sudo: Sequence[str] = ()) -> NodeBootstrap:
    """The bootstrap hook for SshProvider(bootstrap=...). Exactly one of SLURM_CONF_DIR (copy the
    config) and CONF_SERVER (configless) is given. The munge key is checked now, so a bad key
    file fails at startup, and read again on every run."""
    if (slurm_conf_dir is None) == (conf_server is None):
        raise ValueError("give exactly one of slurm_conf_dir (copy slurm.conf) and conf_server (configless)")
    if conf_server is not None:
        check_conf_server(conf_server)
    if slurm_conf_dir is not None and REQUIRED_CONF not in conf_files:
        raise ValueError(f"conf_files must include {REQUIRED_CONF}")
    if restart_munge is not None and not restart_munge:
        raise ValueError("restart_munge must be a non-empty argv, or None to skip the restart")
    if any(not n or "/" in n for n in conf_files):
        raise ValueError("conf_files are plain file names")
    read_munge_key(Path(munge_key_path))
    return NodeBootstrap(
        Path(munge_key_path), Path(slurm_conf_dir) if slurm_conf_dir is not None else None, conf_server,
        _remote_path("remote_munge_path", remote_munge_path), _owner("munge_owner", munge_owner),
        tuple(restart_munge) if restart_munge is not None else None,
        _remote_path("remote_conf_dir", remote_conf_dir.rstrip("/") or "/"), _owner("conf_owner", conf_owner),
        tuple(conf_files), tuple(sudo))
