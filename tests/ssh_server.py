"""Real SSH servers in-process (asyncssh), each standing for one host of an SSH host group.

Every host listens on its own loopback address (127.0.0.2, .3, ...) so `{host}` differs per host,
with its own ed25519 host key, and accepts only the test's client key. A command is run by
/bin/sh in the host's home directory with PATH = a directory of fake programs first, so the
provider's quoting meets a real shell: an unquoted `;` in a node name would run.

Fake programs (one script, behaving by its name), each appending `[name, *args]` to
$HOME/calls.jsonl:
- `slurmd -N NODE`: writes $HOME/running; fails with $HOME/fail-slurmd's text if that exists.
- `slurmd-stop NODE`: removes $HOME/running.
- `node-health HOST`: sleeps $HOME/slow seconds if present; fails if $HOME/unhealthy exists.
Power: `power_on`/`power_off` commands touch POWER/<host>.on|.off; a host that is down starts
listening once its .on file appears.

SFTP is served too, rooted in the host's home, so a relative path means the same file to SFTP and
to a command (as with sshd, where both start in the login directory). Every command line a host
receives is kept in `SshLab.commands` as (host name, command), for tests that must prove what was
never sent as a command.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
from pathlib import Path

import asyncssh

FAKE = """#!{python}
import json, os, pathlib, sys, time
home = pathlib.Path(os.environ["HOME"])
name, args = os.path.basename(sys.argv[0]), sys.argv[1:]
with open(home / "calls.jsonl", "a") as f:
    f.write(json.dumps([name, *args]) + "\\n")
if name == "slurmd":
    if (home / "fail-slurmd").exists():
        sys.stderr.write((home / "fail-slurmd").read_text())
        sys.exit(1)
    (home / "running").write_text(args[-1])
elif name == "slurmd-stop":
    (home / "running").unlink(missing_ok=True)
elif name == "node-health":
    if (home / "slow").exists():
        time.sleep(float((home / "slow").read_text()))
    if (home / "unhealthy").exists():
        sys.stderr.write("nvidia-smi: checking GPUs\\nGPU 0: fell off the bus\\n")
        sys.exit(1)
"""
FAKES = ("slurmd", "slurmd-stop", "node-health")


class Host:
    def __init__(self, index: int, root: Path):
        self.name = f"127.0.0.{index + 2}"
        self.home = root / self.name
        self.home.mkdir(parents=True)
        self.key = asyncssh.generate_private_key("ssh-ed25519")
        self.port = _free_port(self.name)
        self.listener: asyncssh.SSHAcceptor | None = None

    @property
    def label(self) -> str:
        return f"{self.name}:{self.port}"

    def calls(self) -> list[list[str]]:
        path = self.home / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def started(self) -> list[str]:
        return [c[-1] for c in self.calls() if c[0] == "slurmd"]

    def state(self, cluster: str = "sbtest") -> dict | None:
        path = self.home / ".slurm-bridge" / f"{cluster}.json"
        return json.loads(path.read_text()) if path.exists() else None


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


class SshLab:
    """N hosts, their servers run by an event loop in a thread of their own (the provider runs its own)."""

    def __init__(self, root: Path, count: int):
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir()
        for name in FAKES:
            (self.bin / name).write_text(FAKE.format(python=sys.executable))
            (self.bin / name).chmod(0o755)
        self.power = root / "power"
        self.power.mkdir()
        self.client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.key_file = root / "id_ed25519"
        self.key_file.write_bytes(self.client_key.export_private_key())
        self.key_file.chmod(0o600)
        self.hosts = [Host(i, root / "homes") for i in range(count)]
        self.sessions = self.peak = 0
        self.commands: list[tuple[str, str]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._call(self._watch_power())

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def known_hosts(self, keys: dict[str, asyncssh.SSHKey] | None = None) -> Path:
        """A known_hosts file pinning every host's key, or the key given for it in KEYS."""
        path = self.root / "known_hosts"
        lines = []
        for h in self.hosts:
            key = (keys or {}).get(h.name, h.key)
            lines.append(f"[{h.name}]:{h.port} " + key.export_public_key().decode().strip())
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, *hosts: Host) -> None:
        for h in hosts or self.hosts:
            self._call(self._listen(h))

    def stop(self, *hosts: Host) -> None:
        for h in hosts:
            self._call(self._close(h))

    def close(self) -> None:
        self.stop(*self.hosts)
        self.loop.call_soon_threadsafe(self._watcher.cancel)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _listen(self, host: Host) -> None:
        if host.listener is None:
            host.listener = await asyncssh.create_server(
                asyncssh.SSHServer, host.name, host.port, server_host_keys=[host.key],
                authorized_client_keys=asyncssh.import_authorized_keys(
                    self.client_key.export_public_key().decode()),
                process_factory=lambda process: self._run(host, process),
                sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=str(host.home).encode()))

    async def _close(self, host: Host) -> None:
        if host.listener is not None:
            host.listener.close()
            await host.listener.wait_closed()
            host.listener = None

    async def _run(self, host: Host, process: asyncssh.SSHServerProcess) -> None:
        self.commands.append((host.name, process.command or ""))
        # Sessions at work right now, across hosts: counted until just before the exit status is
        # sent, so a client can never see a session end that is still counted.
        self.sessions += 1
        self.peak = max(self.peak, self.sessions)
        try:
            status = await self._execute(host, process)
        finally:
            self.sessions -= 1
        process.exit(status)

    async def _execute(self, host: Host, process: asyncssh.SSHServerProcess) -> int:
        # Every command the provider sends ends its input (EOF), so reading it all cannot hang.
        data = await process.stdin.read()
        proc = await asyncio.create_subprocess_shell(
            process.command, cwd=host.home, env={"HOME": str(host.home), "PATH": f"{self.bin}:/usr/bin:/bin"},
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate(data.encode())
        process.stdout.write(out.decode())
        process.stderr.write(err.decode())
        return proc.returncode if proc.returncode is not None else 255

    async def _watch_power(self) -> None:
        async def watch() -> None:
            while True:
                for h in self.hosts:
                    if (self.power / f"{h.name}.on").exists() and h.listener is None:
                        await self._listen(h)
                await asyncio.sleep(0.05)

        self._watcher = asyncio.get_running_loop().create_task(watch())

    def power_command(self, word: str) -> list[str]:
        return [sys.executable, "-c", "import pathlib, sys; pathlib.Path(sys.argv[1], sys.argv[2]).touch()",
                str(self.power), "{host}." + word]
