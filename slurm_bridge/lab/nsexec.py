"""Run one command as a separate "host": its own network, hostname and boot clock.

    python -m slurm_bridge.lab.nsexec --netns NAME --hostname H [--fresh-boot] [--bind SRC:DST]... -- CMD...

We enter the network namespace with setns() rather than `ip netns exec`,
which remounts /sys and leaves slurmd without /sys/fs/cgroup. --fresh-boot
puts CMD in a new time namespace whose CLOCK_BOOTTIME starts near zero:
slurmctld accepts a powering-up cloud node only when its reported boot time
is after the resume request, which a process on a long-running machine
cannot otherwise claim. --bind gives CMD a mount namespace of its own in
which directory SRC is seen at DST: an SSH host of the lab has its own
/etc/munge and /etc/slurm, so what the bridge installs there is its alone.

This process stays as the parent of CMD and passes SIGTERM/SIGINT on, so
the lab can record one PID per host and stop it cleanly.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys
import time

CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000

MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18

_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, flags: int) -> None:
    src = source.encode() if source is not None else None
    _check(_libc.mount(src, target.encode(), None, flags, None), f"mount {source or ''} {target}")


def enter(netns: str | None, hostname: str | None, fresh_boot: bool,
          binds: tuple[tuple[str, str], ...] = ()) -> None:
    if netns:
        path = netns if "/" in netns else f"/run/netns/{netns}"
        fd = os.open(path, os.O_RDONLY)
        try:
            _check(_libc.setns(fd, CLONE_NEWNET), f"setns {path}")
        finally:
            os.close(fd)
    flags = (CLONE_NEWUTS if hostname else 0) | (CLONE_NEWTIME if fresh_boot else 0) | (CLONE_NEWNS if binds else 0)
    if flags:
        _check(_libc.unshare(flags), "unshare")
    if binds:
        # Private first: otherwise the bind mounts would propagate back to the machine's own tree.
        _mount(None, "/", MS_REC | MS_PRIVATE)
        for source, target in binds:
            _mount(source, target, MS_BIND)
    if hostname:
        name = hostname.encode()
        _check(_libc.sethostname(name, len(name)), "sethostname")
    if fresh_boot:
        # Only children enter the new time namespace, and its offsets can only
        # be written before the first one does.
        uptime = int(time.clock_gettime(time.CLOCK_BOOTTIME))
        with open("/proc/self/timens_offsets", "w") as f:
            f.write(f"boottime {-uptime} 0\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nsexec", description=__doc__.splitlines()[0])
    parser.add_argument("--netns", help="network namespace name or path")
    parser.add_argument("--hostname", help="hostname in a new UTS namespace")
    parser.add_argument("--fresh-boot", action="store_true", help="boot clock near zero")
    parser.add_argument("--delay", type=float, default=0.0,
                        help="seconds to wait first, like a machine booting (the boot clock starts after)")
    parser.add_argument("--bind", action="append", default=[], metavar="SRC:DST",
                        help="see directory SRC at DST, in a mount namespace of its own (repeatable)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    # slurmctld starts its power-save programs with signals blocked, and masks are inherited: unblock,
    # or this "host" could not be shut down (SIGTERM would wait forever) and its command would inherit it.
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    binds = []
    for item in args.bind:
        source, sep, target = item.partition(":")
        if not sep or not source.startswith("/") or not target.startswith("/"):
            parser.error(f"--bind wants SRC:DST, two absolute paths, got {item!r}")
        binds.append((source, target))
    if args.delay > 0:
        time.sleep(args.delay)
    enter(args.netns, args.hostname, args.fresh_boot, tuple(binds))
    child = os.fork()
    if child == 0:
        try:
            os.execvp(command[0], command)
        finally:
            os._exit(127)

    def forward(signum, _frame):
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    return os.waitstatus_to_exitcode(status) & 0xFF


if __name__ == "__main__":
    sys.exit(main())
