"""The `[providers.ssh]` section: bare-metal GPU servers and workstations reachable only over SSH.

Each `[[providers.ssh.groups]]` is one region for the selector: a set of interchangeable hosts
in one country, of one shape (`instance_type`, the name pools give in `instance_types.ssh`), at
one hourly price. An owned workstation has no market price: use what it costs to run, e.g. the
on-prem cost per GPU-hour ([cost.onprem]) times its GPUs, so the selector ranks it fairly
against the clouds; 0 makes it always the first choice.

Commands are argv lists, never shell strings. `{node}` and `{host}` are substituted per
argument; `power_on`/`power_off` run on the bridge host (e.g. ipmitool), the others over SSH,
where each argument is shell-quoted before the command line is sent, so no value can inject.
`stop` must exit 0 when the node is already stopped (`systemctl stop` does; `pkill` exits 1
when nothing matched), or terminating a half-started node fails on every retry.

    [providers.ssh]
    known_hosts = "/etc/slurm-bridge/ssh_known_hosts"      # host keys are pinned, never learned
    client_keys = ["/etc/slurm-bridge/id_ed25519"]
    username = "slurm-bridge"
    [[providers.ssh.groups]]
    name = "uni-de-1"
    country = "DE"
    instance_type = "rtx6000x4"
    price_per_hour = 6.0
    hosts = ["gpu01", "gpu02.example.org:2222"]
    power_on = ["ipmitool", "-H", "{host}-ipmi", "chassis", "power", "on"]
    start = ["sudo", "systemctl", "start", "slurmd@{node}"]
    stop = ["sudo", "systemctl", "stop", "slurmd@{node}"]
    health = ["nvidia-smi", "-L"]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .tomlcheck import _BAD, _MISSING, _WORD, _Checker, _ok, _show, _Table

PLACEHOLDERS = ("node", "host")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_GROUP = (re.compile(r"[a-z][a-z0-9-]{0,30}"),
          "lower-case letters, digits and '-', starting with a letter, at most 31")
_USER = re.compile(r"[a-z_][a-z0-9_.-]*")
# A DNS name, an IPv4 address or a bracketed IPv6 address, then an optional port.
_HOST = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?))"
                   r"(?::(?P<port>[0-9]{1,5}))?")


@dataclass(frozen=True)
class SshHost:
    name: str          # what `{host}` stands for, and what is connected to
    port: int = 22

    @property
    def label(self) -> str:
        """The host as written in the config: `name` or `name:port` (part of instance ids)."""
        name = f"[{self.name}]" if ":" in self.name else self.name
        return name if self.port == 22 else f"{name}:{self.port}"


@dataclass(frozen=True)
class SshGroup:
    name: str                              # the region name the selector and the state DB use
    country: str                           # ISO 3166 alpha-2, as for local regions
    instance_type: str
    price_per_hour: float                  # USD; see the module doc for owned machines
    hosts: tuple[SshHost, ...]
    start: tuple[str, ...]                 # over SSH; must pass {node}
    stop: tuple[str, ...]                  # over SSH
    health: tuple[str, ...] | None = None  # over SSH, exit 0 = healthy; None: reachable is healthy
    power_on: tuple[str, ...] | None = None    # on the bridge host
    power_off: tuple[str, ...] | None = None   # on the bridge host

    def host(self, label: str) -> SshHost | None:
        return next((h for h in self.hosts if h.label == label), None)


@dataclass(frozen=True)
class SshConfig:
    known_hosts: Path
    client_keys: tuple[Path, ...]
    username: str
    groups: tuple[SshGroup, ...]
    connect_timeout: float = 10.0          # TCP connect + SSH handshake + authentication
    command_timeout: float = 120.0         # each command run over SSH or locally
    boot_timeout: float = 300.0            # after power_on, how long a host may take to answer SSH
    max_concurrency: int = 8               # SSH sessions open at once, per provider call
    # Bootstrap (optional): push the munge key and Slurm's config over SSH before slurmd starts.
    munge_key: Path | None = None          # on the bridge host; must be private (0600/0400, root or us)
    slurm_conf_dir: Path | None = None     # copy slurm.conf and its fragments from here ...
    conf_server: str | None = None         # ... or run configless: start passes --conf-server HOST[:PORT]
    sudo: bool = False                     # the login is not root: install with `sudo -n`
    # Run over SSH once the key is in place, so munged reads it (no placeholders).
    munge_restart: tuple[str, ...] = ("systemctl", "restart", "munge")

    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.groups)

    def group(self, name: str) -> SshGroup | None:
        return next((g for g in self.groups if g.name == name), None)


def _command(ck: _Checker, t: _Table, key: str, required: bool, needs: str | None = None) -> Any:
    raw = t.get(key, "list", _MISSING if required else None)
    if not isinstance(raw, list):
        return raw
    if not raw:
        return ck.add(t.at(key), "expected a non-empty argv array, e.g. [\"prog\", \"arg\"]")
    before = len(ck.problems)
    for i, arg in enumerate(raw):
        p = f"{t.at(key)}[{i}]"
        if ck.typed(p, arg, "str") is _BAD:
            continue
        if i == 0 and not arg.strip():
            ck.add(p, "empty program name")
        for word in _PLACEHOLDER.findall(arg):
            if word not in PLACEHOLDERS:
                ck.add(p, f"unknown placeholder {{{word}}} (known: {', '.join('{' + w + '}' for w in PLACEHOLDERS)})")
    if len(ck.problems) > before:
        return _BAD
    if needs and not any(f"{{{needs}}}" in arg for arg in raw):
        # slurmd must register as the node Slurm resumed, not as the host's own name.
        return ck.add(t.at(key), f"must pass the node name: put {{{needs}}} in an argument")
    return tuple(raw)


def _hosts(ck: _Checker, t: _Table, seen: dict[str, str]) -> Any:
    raw = t.get("hosts", "list")
    if not isinstance(raw, list):
        return raw
    if not raw:
        return ck.add(t.at("hosts"), "name at least one host")
    out: list[SshHost] = []
    for i, item in enumerate(raw):
        p = f"{t.at('hosts')}[{i}]"
        if ck.typed(p, item, "str") is _BAD:
            continue
        m = _HOST.fullmatch(item)
        port = int(m.group("port")) if m and m.group("port") else 22
        if m is None or not 1 <= port <= 65535:
            ck.add(p, f"expected a host name, address or host:port, got {_show(item)}")
            continue
        host = SshHost(m.group("v6") or m.group("name"), port)
        if host.label in seen:
            # One machine in two places would be handed out twice.
            ck.add(p, f"{_show(item)} is listed twice (also {seen[host.label]})")
            continue
        seen[host.label] = p
        out.append(host)
    return tuple(out) if len(out) == len(raw) else _BAD


def _group(ck: _Checker, path: str, value: Any, seen_hosts: dict[str, str]) -> SshGroup | None:
    t = ck.table(path, value, tuple(SshGroup.__dataclass_fields__))
    if t is None:
        return None
    name = t.name("name", _GROUP)
    country = t.get("country", "str")
    country = ck.country(t.at("country"), country) if country is not _BAD else _BAD
    itype = t.name("instance_type", _WORD)
    price = t.get("price_per_hour", "number", _MISSING, 0)
    hosts = _hosts(ck, t, seen_hosts)
    start = _command(ck, t, "start", True, needs="node")
    stop, health = _command(ck, t, "stop", True), _command(ck, t, "health", False)
    power_on, power_off = _command(ck, t, "power_on", False), _command(ck, t, "power_off", False)
    if not _ok(name, country, itype, price, hosts, start, stop, health, power_on, power_off):
        return None
    return SshGroup(name, country, itype, price, hosts, start, stop, health, power_on, power_off)


def _paths(ck: _Checker, t: _Table, key: str) -> Any:
    raw = t.get(key, "list")
    if not isinstance(raw, list):
        return raw
    if not raw:
        return ck.add(t.at(key), "name at least one private key file (only key authentication is used)")
    before = len(ck.problems)
    for i, item in enumerate(raw):
        p = f"{t.at(key)}[{i}]"
        if ck.typed(p, item, "str") is not _BAD and not item.startswith("/"):
            ck.add(p, f"must be an absolute path, got {_show(item)}")
    return tuple(Path(p) for p in raw) if len(ck.problems) == before else _BAD


def parse_ssh(ck: _Checker, path: str, value: Any) -> SshConfig | None:
    t = ck.table(path, value, tuple(SshConfig.__dataclass_fields__))
    if t is None:
        return None
    known_hosts = t.abspath("known_hosts")
    keys = _paths(ck, t, "client_keys")
    username = t.get("username", "str")
    if isinstance(username, str) and not _USER.fullmatch(username):
        username = ck.add(t.at("username"), f"not a Unix user name: {_show(username)}")
    timeouts = {k: t.get(k, "number", SshConfig.__dataclass_fields__[k].default, 1)
                for k in ("connect_timeout", "command_timeout", "boot_timeout")}
    concurrency = t.get("max_concurrency", "int", 8, 1)
    groups = _groups(ck, t)
    boot = {"munge_key": t.abspath("munge_key", None), "slurm_conf_dir": t.abspath("slurm_conf_dir", None),
            "conf_server": t.get("conf_server", "str", None), "sudo": t.get("sudo", "bool", False),
            "munge_restart": _command(ck, t, "munge_restart", False)}
    if boot["munge_key"] is not None and (boot["slurm_conf_dir"] is None) == (boot["conf_server"] is None):
        boot["munge_key"] = ck.add(t.at("munge_key"), "with a munge key, set exactly one of slurm_conf_dir "
                                                      "(copy slurm.conf) and conf_server (configless)")
    elif boot["munge_key"] is None and (boot["slurm_conf_dir"] is not None or boot["conf_server"] is not None):
        ck.add(t.at("munge_key"), "slurm_conf_dir and conf_server bootstrap nodes: set munge_key too")
        return None
    if not _ok(known_hosts, keys, username, groups, concurrency, *timeouts.values(), *boot.values()):
        return None
    return SshConfig(known_hosts, keys, username, groups, max_concurrency=concurrency,
                     connect_timeout=float(timeouts["connect_timeout"]),
                     command_timeout=float(timeouts["command_timeout"]), boot_timeout=float(timeouts["boot_timeout"]),
                     munge_key=boot["munge_key"], slurm_conf_dir=boot["slurm_conf_dir"],
                     conf_server=boot["conf_server"], sudo=bool(boot["sudo"]),
                     munge_restart=boot["munge_restart"] or SshConfig.munge_restart)


def _groups(ck: _Checker, t: _Table) -> Any:
    raw = t.get("groups", "list")
    if not isinstance(raw, list):
        return raw
    if not raw:
        return ck.add(t.at("groups"), "add at least one [[providers.ssh.groups]]")
    out: list[SshGroup] = []
    names: dict[str, int] = {}
    seen_hosts: dict[str, str] = {}
    before = len(ck.problems)
    for i, item in enumerate(raw):
        p = f"{t.at('groups')}[{i}]"
        group = _group(ck, p, item, seen_hosts)
        if group is None:
            continue
        if group.name in names:
            ck.add(f"{p}.name", f"duplicate group name {_show(group.name)} (also groups[{names[group.name]}])")
            continue
        names[group.name] = i
        out.append(group)
    return tuple(out) if len(ck.problems) == before else _BAD

