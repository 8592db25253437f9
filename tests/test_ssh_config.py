"""[providers.ssh]: host groups as regions, argv commands, and every mistake named by its key path."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

import pytest

from slurm_bridge import ssh_config
from slurm_bridge.config import ConfigProblems, parse_config
from slurm_bridge.providers import registry
from slurm_bridge.providers.ssh import SshProvider
from slurm_bridge.ssh_config import SshConfig, SshGroup, SshHost, parse_ssh
from slurm_bridge.tomlcheck import _Checker
from configs import config_dict, pool, region

GROUP = {
    "name": "uni-de-1", "country": "de", "instance_type": "rtx6000x4", "price_per_hour": 6,
    "hosts": ["gpu01", "gpu02.example.org:2222", "10.0.0.7", "[fd00::7]:2200"],
    "power_on": ["ipmitool", "-H", "{host}-ipmi", "chassis", "power", "on"],
    "start": ["sudo", "systemctl", "start", "slurmd@{node}"],
    "stop": ["sudo", "systemctl", "stop", "slurmd@{node}"],
    "health": ["nvidia-smi", "-L"],
}
SSH = {"known_hosts": "/etc/slurm-bridge/ssh_known_hosts", "client_keys": ["/etc/slurm-bridge/id_ed25519"],
       "username": "slurm-bridge", "groups": [GROUP]}


def doc(ssh: dict | None = None, itypes: dict | None = None) -> dict:
    data = config_dict(zones={"de": ["DE"], "any": "*"},
                       pools=[pool(zone="de", instance_types=itypes or {"local": "t1", "ssh": "rtx6000x4"})],
                       regions=[region("lab-de", "DE", {"t1": 1.0})])
    data["providers"]["ssh"] = copy.deepcopy(SSH if ssh is None else ssh)
    return data


def problems(ssh: dict) -> list[str]:
    with pytest.raises(ConfigProblems) as info:
        parse_config(doc(ssh))
    return [p.removeprefix("<config>: ") for p in info.value.problems]


def with_group(**changes) -> dict:
    ssh = copy.deepcopy(SSH)
    ssh["groups"][0].update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del ssh["groups"][0][key]
    return ssh


def test_a_valid_section_becomes_typed_config():
    cfg = parse_config(doc()).ssh
    assert isinstance(cfg, SshConfig)
    assert cfg.known_hosts == Path("/etc/slurm-bridge/ssh_known_hosts")
    assert cfg.client_keys == (Path("/etc/slurm-bridge/id_ed25519"),)
    assert (cfg.connect_timeout, cfg.command_timeout, cfg.boot_timeout, cfg.max_concurrency) == (10.0, 120.0, 300.0, 8)
    (group,) = cfg.groups
    assert cfg.regions == ("uni-de-1",) and cfg.group("uni-de-1") is group and cfg.group("nope") is None
    assert (group.country, group.instance_type, group.price_per_hour) == ("DE", "rtx6000x4", 6.0)
    assert group.hosts == (SshHost("gpu01"), SshHost("gpu02.example.org", 2222), SshHost("10.0.0.7"),
                           SshHost("fd00::7", 2200))
    assert [h.label for h in group.hosts] == ["gpu01", "gpu02.example.org:2222", "10.0.0.7", "[fd00::7]:2200"]
    assert group.host("gpu02.example.org:2222") == SshHost("gpu02.example.org", 2222)
    assert group.start == ("sudo", "systemctl", "start", "slurmd@{node}") and group.power_off is None


def test_the_documented_example_parses():
    text = "\n".join(line[4:] for line in ssh_config.__doc__.splitlines() if line.startswith("    "))
    ck = _Checker()
    cfg = parse_ssh(ck, "providers.ssh", tomllib.loads(text)["providers"]["ssh"])
    assert ck.problems == [] and cfg is not None and cfg.groups[0].name == "uni-de-1"


def test_optional_commands_and_settings():
    ssh = with_group(health=None, power_on=None)
    ssh.update(connect_timeout=3, command_timeout=30.5, boot_timeout=600, max_concurrency=2)
    cfg = parse_config(doc(ssh)).ssh
    assert cfg.groups[0].health is None and cfg.groups[0].power_on is None
    assert (cfg.connect_timeout, cfg.command_timeout, cfg.boot_timeout, cfg.max_concurrency) == (3.0, 30.5, 600.0, 2)


def test_no_ssh_section_no_ssh_provider():
    data = doc()
    del data["providers"]["ssh"]
    assert parse_config(data).ssh is None


def test_registry_builds_the_provider_for_the_bridge_cluster():
    providers = registry.build(parse_config(doc()))
    assert isinstance(providers["ssh"], SshProvider) and providers["ssh"].cluster == "hpc1"


BAD = [
    ({**SSH, "known_hosts": "known_hosts"}, 'providers.ssh.known_hosts: must be an absolute path, got "known_hosts"'),
    ({k: v for k, v in SSH.items() if k != "known_hosts"}, "providers.ssh.known_hosts: missing required key"),
    ({**SSH, "client_keys": []},
     "providers.ssh.client_keys: name at least one private key file (only key authentication is used)"),
    ({**SSH, "client_keys": ["id_ed25519"]},
     'providers.ssh.client_keys[0]: must be an absolute path, got "id_ed25519"'),
    ({**SSH, "username": "Bad User"}, 'providers.ssh.username: not a Unix user name: "Bad User"'),
    ({**SSH, "known_host": "/x"}, "providers.ssh.known_host: unknown key (did you mean known_hosts?)"),
    ({**SSH, "max_concurrency": 0}, "providers.ssh.max_concurrency: must be at least 1, got 0"),
    ({**SSH, "connect_timeout": "10s"}, 'providers.ssh.connect_timeout: expected a number, got "10s"'),
    ({**SSH, "groups": []}, "providers.ssh.groups: add at least one [[providers.ssh.groups]]"),
    (with_group(hosts=["gpu01:99999"]),
     'providers.ssh.groups[0].hosts[0]: expected a host name, address or host:port, got "gpu01:99999"'),
    (with_group(hosts=["gpu01", "gpu 02"]),
     'providers.ssh.groups[0].hosts[1]: expected a host name, address or host:port, got "gpu 02"'),
    (with_group(hosts=[]), "providers.ssh.groups[0].hosts: name at least one host"),
    (with_group(hosts=["gpu01", "gpu01:22"]),
     'providers.ssh.groups[0].hosts[1]: "gpu01:22" is listed twice (also providers.ssh.groups[0].hosts[0])'),
    (with_group(country="UK"),
     'providers.ssh.groups[0].country: unknown ISO 3166 country code "UK" (did you mean GB?)'),
    (with_group(price_per_hour=-1), "providers.ssh.groups[0].price_per_hour: must be at least 0, got -1"),
    (with_group(name="Uni_DE"), 'providers.ssh.groups[0].name: invalid name "Uni_DE": lower-case letters, digits '
                                "and '-', starting with a letter, at most 31"),
    (with_group(start="slurmd -N {node}"), 'providers.ssh.groups[0].start: expected an array, got "slurmd -N {node}"'),
    (with_group(start=["sudo", "systemctl", "start", "slurmd"]),
     "providers.ssh.groups[0].start: must pass the node name: put {node} in an argument"),
    (with_group(stop=["pkill", "-f", "{nodes}"]),
     "providers.ssh.groups[0].stop[2]: unknown placeholder {nodes} (known: {node}, {host})"),
    (with_group(stop=["pkill", 3]), "providers.ssh.groups[0].stop[1]: expected a string, got 3"),
    (with_group(health=[]), 'providers.ssh.groups[0].health: expected a non-empty argv array, e.g. ["prog", "arg"]'),
    (with_group(stop=None), "providers.ssh.groups[0].stop: missing required key"),
    (with_group(hostz=["a"]), "providers.ssh.groups[0].hostz: unknown key (did you mean hosts?)"),
    ({**SSH, "munge_restart": []}, 'providers.ssh.munge_restart: expected a non-empty argv array, e.g. ["prog", "arg"]'),
    ({**SSH, "munge_restart": "systemctl restart munge"},
     'providers.ssh.munge_restart: expected an array, got "systemctl restart munge"'),
]


@pytest.mark.parametrize("ssh,expected", BAD, ids=[re.sub(r"\W+", "-", e.split(":")[0]) for _, e in BAD])
def test_each_mistake_is_named(ssh, expected):
    assert problems(ssh) == [expected]


def test_hosts_and_group_names_are_unique_across_groups():
    second = {**GROUP, "hosts": ["gpu03", "gpu01"]}
    assert problems({**SSH, "groups": [GROUP, second]}) == [
        'providers.ssh.groups[1].hosts[1]: "gpu01" is listed twice (also providers.ssh.groups[0].hosts[0])']
    assert problems({**SSH, "groups": [GROUP, {**GROUP, "hosts": ["gpu09"]}]}) == [
        'providers.ssh.groups[1].name: duplicate group name "uni-de-1" (also groups[0])']


def test_an_empty_section_names_every_required_key():
    assert problems({}) == ["providers.ssh.known_hosts: missing required key",
                            "providers.ssh.client_keys: missing required key",
                            "providers.ssh.username: missing required key",
                            "providers.ssh.groups: missing required key"]


def test_pools_name_ssh_instance_types():
    cfg = parse_config(doc(itypes={"ssh": "rtx6000x4"}))
    assert cfg.pools[0].instance_types == {"ssh": "rtx6000x4"}


def test_group_dataclass_defaults():
    g = SshGroup("g", "DE", "t", 0.0, (SshHost("h"),), ("slurmd", "-N", "{node}"), ("true",))
    assert g.health is None and g.power_on is None and g.power_off is None and g.host("h") == SshHost("h")


def test_a_host_group_is_a_region_for_the_selector_with_its_own_country():
    from slurm_bridge import selector
    from slurm_bridge.models import Zone

    cfg = parse_config(doc())
    p = cfg.pools[0]
    ranked, excluded = selector.rank(cfg, p, Zone("de", frozenset({"DE"})))
    assert [(o.provider, o.region, o.country, o.price_per_hour) for o in ranked] == \
        [("local", "lab-de", "DE", 1.0), ("ssh", "uni-de-1", "DE", 6.0)]
    assert selector.country_of(cfg, "ssh", "uni-de-1") == "DE"
    assert selector.country_of(cfg, "ssh", "nowhere") is None
    # Outside the job's zone, the group is excluded like any region.
    _, out = selector.rank(cfg, p, Zone("fr", frozenset({"FR"})))
    assert ("ssh", "uni-de-1") in {(e.provider, e.region) for e in out}
    # A pool without an ssh instance type is not offered the group.
    other = parse_config(doc(itypes={"local": "t1"}))
    ranked, excluded = selector.rank(other, other.pools[0])
    assert "ssh" not in {o.provider for o in ranked}
    assert any(e.provider == "ssh" and "no ssh instance type" in e.reason for e in excluded)


def test_the_bootstrap_is_configured_and_built_only_from_a_private_munge_key(tmp_path):
    import os

    from slurm_bridge.bootstrap import MungeKeyError, NodeBootstrap

    key = tmp_path / "munge.key"
    key.write_bytes(os.urandom(128))
    key.chmod(0o600)
    ssh = {**SSH, "munge_key": str(key), "conf_server": "ctl.example.org:6817", "sudo": True}
    cfg = parse_config(doc(ssh))
    assert (cfg.ssh.munge_key, cfg.ssh.conf_server, cfg.ssh.sudo) == (key, "ctl.example.org:6817", True)
    assert isinstance(registry.build(cfg)["ssh"].bootstrap, NodeBootstrap)
    assert registry.build(cfg)["ssh"].bootstrap.restart_munge == ("systemctl", "restart", "munge")
    own = parse_config(doc({**ssh, "munge_restart": ["rc-service", "munge", "restart"]}))
    assert registry.build(own)["ssh"].bootstrap.restart_munge == ("rc-service", "munge", "restart")
    assert registry.build(parse_config(doc()))["ssh"].bootstrap is None       # no key: no bootstrap
    key.chmod(0o644)
    with pytest.raises(MungeKeyError, match="munge.key"):
        registry.build(cfg)
    assert problems({**SSH, "munge_key": str(key)}) == [
        "providers.ssh.munge_key: with a munge key, set exactly one of slurm_conf_dir (copy slurm.conf) and "
        "conf_server (configless)"]
    assert problems({**SSH, "conf_server": "ctl:6817"}) == [
        "providers.ssh.munge_key: slurm_conf_dir and conf_server bootstrap nodes: set munge_key too"]
