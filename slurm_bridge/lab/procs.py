"""Start, identify and stop the lab's daemons.

A PID alone is not an identity: after a reboot or a long pause it may belong
to someone else. We record the kernel start time with it and only ever signal
a process whose (pid, start time) pair still matches.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import LabError

__all__ = ["LabError", "Proc", "alive", "run", "spawn", "stop", "wait_for"]


@dataclass(frozen=True)
class Proc:
    pid: int
    start_ticks: int

    def to_json(self) -> dict:
        return {"pid": self.pid, "start_ticks": self.start_ticks}

    @classmethod
    def from_json(cls, data: dict) -> "Proc":
        return cls(int(data["pid"]), int(data["start_ticks"]))


def start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: when the process started, in clock ticks since boot."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = raw[raw.rfind(")") + 2 :].split()
    return int(rest[19])


def alive(proc: Proc) -> bool:
    if start_ticks(proc.pid) != proc.start_ticks:
        return False
    try:
        state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
    """Start a long-running daemon in its own session, stdio to LOG, never through a shell."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    ticks = start_ticks(child.pid)
    if ticks is None:
        raise LabError(f"{argv[0]} exited at once; see {log}")
    return Proc(child.pid, ticks)


def stop(proc: Proc, timeout: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL; silently done when the process is already gone."""
    if not alive(proc):
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(proc):
            _reap(proc.pid)
            return
        time.sleep(0.05)
    try:
        os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(proc.pid)


def kill(proc: Proc) -> None:
    """SIGKILL at once: a power cut, not a shutdown."""
    if not alive(proc):
        return
    try:
        os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while alive(proc) and time.monotonic() < deadline:
        time.sleep(0.01)
    _reap(proc.pid)


def _reap(pid: int) -> None:
    # Only our own children can be reaped; anything else was reparented and is init's business.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def run(argv: list[str], *, input: str | None = None, check: bool = True,
        env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a short command; on failure raise LabError naming the command and its stderr."""
    try:
        done = subprocess.run(argv, input=input, capture_output=True, text=True,
                              env=env, timeout=timeout)
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]}: not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(argv)}: no answer after {timeout:.0f} s") from exc
    if check and done.returncode != 0:
        msg = (done.stderr or done.stdout).strip().splitlines()
        raise LabError(f"{' '.join(argv)}: exit {done.returncode}: {msg[-1] if msg else 'no output'}")
    return done


def wait_for(what: str, predicate, timeout: float, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise LabError(f"timed out after {timeout:.0f} s waiting for {what}")
