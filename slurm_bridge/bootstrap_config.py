"""The `[bootstrap]` section: cloud instances get the munge key and Slurm's config over SSH, not in user data.

The instances of the providers listed boot with cloud-init user data holding non-secret facts
and the bridge's SSH public key (cloudinit.py). Once an instance is launched, the bridge learns
its host keys through the provider's API (providers/hostkeys.py), connects to it as `username`,
installs the munge key and the config (bootstrap.py), restarts munge and runs `start`. The SSH
provider's host groups have their own settings under `[providers.ssh]`.

    [bootstrap]
    providers = ["aws", "gcp"]
    client_keys = ["/etc/slurm-bridge/id_ed25519"]     # the key whose public half cloud-init installs
    munge_key = "/etc/munge/munge.key"
    slurm_conf_dir = "/etc/slurm"                      # or conf_server = "ctl.example.org:6817"
    start = ["systemctl", "start", "slurmd@{node}"]    # must pass {node}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .ssh_config import _USER, _command, _paths
from .tomlcheck import _BAD, _Checker, _ok, _show

BOOTSTRAPPED = ("aws", "gcp", "local")      # the SSH provider has its own, in [providers.ssh]


@dataclass(frozen=True)
class BootstrapConfig:
    providers: tuple[str, ...]
    client_keys: tuple[Path, ...]
    munge_key: Path
    slurm_conf_dir: Path | None = None
    conf_server: str | None = None
    username: str = "slurm-bridge"          # cloudinit.USER: the only account the user data creates
    sudo: bool = True                        # that user is not root; cloud-init lets it sudo
    port: int = 22
    start: tuple[str, ...] = ("slurmd", "-N", "{node}")
    munge_restart: tuple[str, ...] = ("systemctl", "restart", "munge")
    connect_timeout: float = 10.0
    command_timeout: float = 120.0
    poll_interval: float = 5.0               # how often a booting instance's host keys are asked for


def parse_bootstrap(ck: _Checker, value: Any) -> BootstrapConfig | None:
    t = ck.table("bootstrap", value, tuple(BootstrapConfig.__dataclass_fields__))
    if t is None:
        return None
    providers = t.get("providers", "list")
    if isinstance(providers, list):
        for i, name in enumerate(providers):
            if ck.typed(f"bootstrap.providers[{i}]", name, "str") is not _BAD and name not in BOOTSTRAPPED:
                note = " (its hosts are bootstrapped by [providers.ssh] munge_key)" if name == "ssh" else ""
                providers = ck.add(f"bootstrap.providers[{i}]", f"{_show(name)} is not one of "
                                   f"{', '.join(BOOTSTRAPPED)}{note}")
        if providers is not _BAD and not providers:
            providers = ck.add("bootstrap.providers", "name at least one provider, e.g. [\"aws\", \"gcp\"]")
    keys = _paths(ck, t, "client_keys")
    munge_key = t.abspath("munge_key")
    conf_dir, conf_server = t.abspath("slurm_conf_dir", None), t.get("conf_server", "str", None)
    if conf_dir is not _BAD and conf_server is not _BAD and (conf_dir is None) == (conf_server is None):
        conf_dir = ck.add("bootstrap.slurm_conf_dir", "set exactly one of slurm_conf_dir (copy slurm.conf) and "
                                                      "conf_server (configless)")
    username = t.get("username", "str", BootstrapConfig.username)
    if isinstance(username, str) and not _USER.fullmatch(username):
        username = ck.add("bootstrap.username", f"not a Unix user name: {_show(username)}")
    sudo = t.get("sudo", "bool", True)
    port = t.get("port", "int", 22, 1)
    if isinstance(port, int) and port > 65535:
        port = ck.add("bootstrap.port", f"must be at most 65535, got {port}")
    start = _command(ck, t, "start", False, needs="node")
    restart = _command(ck, t, "munge_restart", False)
    timeouts = {k: t.get(k, "number", BootstrapConfig.__dataclass_fields__[k].default, 1)
                for k in ("connect_timeout", "command_timeout", "poll_interval")}
    if not _ok(providers, keys, munge_key, conf_dir, conf_server, username, sudo, port, start, restart,
               *timeouts.values()):
        return None
    return BootstrapConfig(tuple(providers), keys, munge_key, conf_dir, conf_server, username, sudo, port,
                           start or BootstrapConfig.start, restart or BootstrapConfig.munge_restart,
                           *(float(v) for v in timeouts.values()))
