"""Lab hosts as network namespaces on one Linux bridge, managed with iproute2."""

from __future__ import annotations

import ipaddress
import os
import signal
import time
from pathlib import Path

from .procs import LabError, run

NETNS_DIR = Path("/run/netns")


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def ensure_bridge(bridge: str, gateway: ipaddress.IPv4Interface) -> None:
    if not link_exists(bridge):
        run(["ip", "link", "add", bridge, "type", "bridge"])
    have = run(["ip", "-o", "-4", "addr", "show", "dev", bridge]).stdout
    if str(gateway) not in have:
        run(["ip", "addr", "add", str(gateway), "dev", bridge])
    run(["ip", "link", "set", bridge, "up"])


def remove_bridge(bridge: str) -> None:
    if link_exists(bridge):
        run(["ip", "link", "del", bridge])


def veth_name(netns: str) -> str:
    # Interface names are limited to 15 bytes; a stable digest keeps them unique per host.
    import hashlib

    return "sbv" + hashlib.sha1(netns.encode()).hexdigest()[:10]


def add_host(netns: str, bridge: str, address: ipaddress.IPv4Interface) -> None:
    """Create namespace NETNS wired to BRIDGE with ADDRESS; a no-op when it already exists."""
    if not link_exists(bridge):
        raise LabError(f"bridge {bridge} does not exist (is the lab up?)")
    if not netns_exists(netns):
        run(["ip", "netns", "add", netns])
    outer = veth_name(netns)
    if not link_exists(outer):
        run(["ip", "link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", netns])
        run(["ip", "link", "set", outer, "master", bridge])
        run(["ip", "link", "set", outer, "up"])
    inns = ["ip", "-n", netns]
    have = run(inns + ["-o", "-4", "addr", "show", "dev", "eth0"]).stdout
    if str(address) not in have:
        run(inns + ["addr", "add", str(address), "dev", "eth0"])
    run(inns + ["link", "set", "lo", "up"])
    run(inns + ["link", "set", "eth0", "up"])


def pids_in(netns: str) -> list[int]:
    """Every process whose network namespace is NETNS (as `ip netns pids` would list)."""
    try:
        target = os.stat(NETNS_DIR / netns)
    except FileNotFoundError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except (FileNotFoundError, PermissionError, ProcessLookupError):
            continue
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            found.append(int(entry))
    return found


def kill_all_in(netns: str, timeout: float = 5.0, graceful: bool = True) -> None:
    """Kill every process of the host; GRACEFUL=False is a power-off: SIGKILL at once."""
    for sig in ((signal.SIGTERM, signal.SIGKILL) if graceful else (signal.SIGKILL,)):
        for pid in pids_in(netns):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _living(pids_in(netns)):
            time.sleep(0.05)
        if not _living(pids_in(netns)):
            return


def _living(pids: list[int]) -> bool:
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    return True
        except (FileNotFoundError, IndexError):
            continue
    return False


def remove_host(netns: str) -> None:
    outer = veth_name(netns)
    if link_exists(outer):
        run(["ip", "link", "del", outer], check=False)
    if netns_exists(netns):
        run(["ip", "netns", "del", netns])
