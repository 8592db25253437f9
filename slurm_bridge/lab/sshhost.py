"""An SSH-reachable host of the lab: a namespace with a real SSH server, as a sovereign provider's machine.

    python -m slurm_bridge.lab.sshhost serve --home DIR --host-key F --authorized-keys F [--port 22]
    python -m slurm_bridge.lab.sshhost restart-munge --socket PATH [--key /etc/munge/munge.key]
    python -m slurm_bridge.lab.sshhost start-slurmd NODE [--conf /etc/slurm/slurm.conf]
    python -m slurm_bridge.lab.sshhost stop-slurmd NODE

`serve` is the host's sshd, an asyncssh server. The lab starts it (lab/cluster.py) in a network
namespace of its own, with its own hostname and its own /etc/munge, /etc/slurm and munge socket
directory (nsexec --bind): nothing of the controller's munge or Slurm config is visible there until
the bridge installs it over SSH. It accepts only the user root with a key from --authorized-keys,
runs each command with /bin/sh -c in DIR, as OpenSSH's sshd runs the login shell, and serves SFTP.

The other verbs are what the host's admin would otherwise have as systemd units: they start
munged and slurmd detached from the SSH session, and find them again by scanning the processes
of this host's network namespace, so two hosts never touch each other's daemons.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

COMMAND_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
LOGIN = "root"


# -- the SSH server ------------------------------------------------------------------------------

def serve(home: Path, host_key: Path, authorized_keys: Path, address: str, port: int,
          console: Path | None = None) -> None:
    import asyncssh

    from ..providers.hostkeys import BEGIN, END

    class Server(asyncssh.SSHServer):
        def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
            self.conn = conn

        def begin_auth(self, username: str) -> bool:
            # Keys are offered for root only: any other user has nothing to authenticate with.
            if username == LOGIN:
                self.conn.set_authorized_keys(str(authorized_keys))
            return True

    async def run(process: asyncssh.SSHServerProcess) -> None:
        data = await process.stdin.read()
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", process.command or "true", cwd=home,
            env={"HOME": str(home), "PATH": COMMAND_PATH, "USER": LOGIN, "LOGNAME": LOGIN, "SHELL": "/bin/sh"},
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True)
        out, err = await proc.communicate(data)
        process.stdout.write(out)
        process.stderr.write(err)
        process.exit(proc.returncode if proc.returncode is not None else 255)

    async def main() -> None:
        await asyncssh.create_server(
            Server, address, port, server_host_keys=[str(host_key)], encoding=None,
            process_factory=run, sftp_factory=asyncssh.SFTPServer, allow_scp=False)
        if console is not None:
            # What cloud-init prints to a cloud instance's serial console once sshd has its keys.
            public = asyncssh.read_private_key(str(host_key)).export_public_key().decode().strip()
            with open(console, "a") as f:
                f.write(f"{BEGIN}\n{public}\n{END}\n")
        await asyncio.Event().wait()

    os.chdir(home)
    asyncio.run(main())


# -- daemons of this host ------------------------------------------------------------------------

def _my_netns() -> tuple[int, int]:
    st = os.stat("/proc/self/ns/net")
    return st.st_dev, st.st_ino


def daemons(program: str, node: str | None = None) -> list[int]:
    """PIDs of PROGRAM (by argv[0]'s base name) in this host's network namespace, for NODE if given."""
    mine, found = _my_netns(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) != mine or not argv or os.path.basename(argv[0].decode(errors="replace")) != program:
            continue
        words = [a.decode(errors="replace") for a in argv]
        if node is None or any(words[i] == "-N" and words[i + 1] == node for i in range(len(words) - 1)):
            found.append(int(entry))
    return found


def _stop(pids: list[int], timeout: float = 10.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_running(p) for p in pids):
            time.sleep(0.1)
        if not any(_running(p) for p in pids):
            return


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _detached(argv: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env={"PATH": COMMAND_PATH})


def restart_munge(socket: str, key: str) -> int:
    _stop(daemons("munged"))
    home = Path.cwd()
    _detached(["munged", "-F", "--force", f"--socket={socket}", f"--key-file={key}",
               f"--pid-file={home}/munged.pid", f"--log-file={home}/munged.log", f"--seed-file={home}/munged.seed"],
              home / "munged.out")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        probe = subprocess.run(["munge", "-n", f"--socket={socket}"], capture_output=True)
        if probe.returncode == 0:
            return 0
        time.sleep(0.2)
    sys.stderr.write(f"munged did not answer on {socket}; see {home}/munged.log\n")
    return 1


def start_slurmd(node: str, conf: str) -> int:
    if daemons("slurmd", node):
        return 0
    home = Path.cwd()
    # A fresh boot clock: slurmctld takes a resumed node only if it booted after the resume request.
    proc = _detached([sys.executable, "-m", "slurm_bridge.lab.nsexec", "--fresh-boot", "--",
                      "slurmd", "-D", "-N", node, "-f", conf], home / f"slurmd-{node}.out")
    time.sleep(1.0)
    if proc.poll() is not None:
        tail = (home / f"slurmd-{node}.out").read_text(errors="replace").strip().splitlines()[-1:]
        sys.stderr.write(f"slurmd -N {node} exited at once: {' '.join(tail)}\n")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sshhost", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    s = sub.add_parser("serve", help="run the host's SSH server")
    s.add_argument("--home", type=Path, required=True)
    s.add_argument("--host-key", type=Path, required=True)
    s.add_argument("--authorized-keys", type=Path, required=True)
    s.add_argument("--address", default="0.0.0.0")
    s.add_argument("--port", type=int, default=22)
    s.add_argument("--console", type=Path, help="once listening, print the host key here as cloud-init would")
    m = sub.add_parser("restart-munge", help="(re)start this host's munged with the installed key")
    m.add_argument("--socket", required=True)
    m.add_argument("--key", default="/etc/munge/munge.key")
    st = sub.add_parser("start-slurmd", help="start slurmd -N NODE, detached (a no-op when it runs)")
    st.add_argument("node")
    st.add_argument("--conf", default="/etc/slurm/slurm.conf")
    sp = sub.add_parser("stop-slurmd", help="stop slurmd -N NODE (exit 0 when it is not running)")
    sp.add_argument("node")
    args = parser.parse_args(argv)
    if args.verb == "serve":
        serve(args.home, args.host_key, args.authorized_keys, args.address, args.port, args.console)
        return 0
    if args.verb == "restart-munge":
        return restart_munge(args.socket, args.key)
    if args.verb == "start-slurmd":
        return start_slurmd(args.node, args.conf)
    _stop(daemons("slurmd", args.node))
    return 0


if __name__ == "__main__":
    sys.exit(main())
