"""[bootstrap] for cloud instances: its config, and what the launch worker does when a node cannot be
bootstrapped, against real SSH servers (ssh_server.py).

The cloud itself is a stand-in (`PublishingCloud`): no guest can boot here, so "launching" hands out
the in-process SSH hosts as instances and "publishing" host keys returns what the test chose. The
success path runs on the real lab instead (test_ssh_lab.py), where instances are namespaces.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import asyncssh
import pytest

from configs import config_dict, pool, region
from fakes import RecordingSlurm
from ssh_server import SshLab
from slurm_bridge.config import ConfigProblems, parse_config
from slurm_bridge.launch import Group, Launcher
from slurm_bridge.providers.base import Instance, LaunchRequest, LaunchResult
from slurm_bridge.state import StateDB

KEY_PATH = "/etc/munge/munge.key"


class PublishingCloud:
    """A cloud API stand-in whose instances are the SSH lab's hosts and whose host keys the test sets."""

    name = "local"

    def __init__(self, lab: SshLab, published: list[str] | None):
        self.lab, self.published = lab, published
        self.terminated: list[str] = []
        self.asked = 0

    def launch(self, request: LaunchRequest) -> LaunchResult:
        host = self.lab.hosts[0]
        return LaunchResult(tuple(Instance(f"i-{n.node}", n.node, request.region, "pending", host.name)
                                  for n in request.nodes), {})

    def terminate(self, region, instance_ids):
        self.terminated.extend(instance_ids)

    def list_instances(self, cluster):
        return []

    def describe(self, region, instance_ids):
        return []

    def host_keys(self, region, instance_id):
        self.asked += 1
        return tuple(self.published) if self.published else None


@pytest.fixture
def sshlab(tmp_path):
    lab = SshLab(tmp_path, 1)
    lab.start()
    yield lab
    lab.close()


def munge_key(tmp_path: Path) -> Path:
    path = tmp_path / "munge.key"
    path.write_bytes(os.urandom(128))
    path.chmod(0o600)
    return path


def document(tmp_path: Path, lab: SshLab | None = None, **boot) -> dict:
    data = config_dict(zones={"de": ["DE"]}, pools=[pool("p", zone="de")],
                       regions=[region("lab-de", "DE", {"t1": 1.0}), region("lab-de2", "DE", {"t1": 2.0})])
    data["cluster"]["state_dir"] = str(tmp_path / "state")
    data["slurm"]["resume_timeout"] = 20
    data["bootstrap"] = {"providers": ["local"], "client_keys": [str(lab.key_file if lab else "/k/id")],
                         "munge_key": str(munge_key(tmp_path)), "slurm_conf_dir": str(tmp_path),
                         "username": "root", "sudo": False, "poll_interval": 1, "connect_timeout": 3,
                         **({"port": lab.hosts[0].port} if lab else {}), **boot}
    return data


def problems(data: dict) -> list[str]:
    with pytest.raises(ConfigProblems) as info:
        parse_config(data)
    return [p.removeprefix("<config>: ") for p in info.value.problems]


def test_the_section_becomes_typed_config(tmp_path):
    cfg = parse_config(document(tmp_path)).bootstrap
    assert cfg.providers == ("local",) and cfg.client_keys == (Path("/k/id"),)
    assert (cfg.username, cfg.sudo, cfg.port, cfg.poll_interval) == ("root", False, 22, 1.0)
    assert cfg.start == ("slurmd", "-N", "{node}") and cfg.munge_restart == ("systemctl", "restart", "munge")
    assert parse_config(config_dict(zones={"de": ["DE"]}, pools=[pool(zone="de")],
                                    regions=[region("lab-de", "DE", {"t1": 1.0})])).bootstrap is None


BAD = [
    ({"providers": ["ssh"]}, 'bootstrap.providers[0]: "ssh" is not one of aws, gcp, local (its hosts are '
                             "bootstrapped by [providers.ssh] munge_key)"),
    ({"providers": ["aws"]}, "bootstrap.providers[0]: no [providers.aws] is configured"),
    ({"providers": []}, 'bootstrap.providers: name at least one provider, e.g. ["aws", "gcp"]'),
    ({"conf_server": "ctl:6817"}, "bootstrap.slurm_conf_dir: set exactly one of slurm_conf_dir (copy slurm.conf) "
                                  "and conf_server (configless)"),
    ({"start": ["slurmd"]}, "bootstrap.start: must pass the node name: put {node} in an argument"),
    ({"munge_key": "munge.key"}, 'bootstrap.munge_key: must be an absolute path, got "munge.key"'),
    ({"port": 70000}, "bootstrap.port: must be at most 65535, got 70000"),
    ({"username": "Root User"}, 'bootstrap.username: not a Unix user name: "Root User"'),
    ({"pol_interval": 1}, "bootstrap.pol_interval: unknown key (did you mean poll_interval?)"),
]


@pytest.mark.parametrize("change,expected", BAD, ids=[re.sub(r"\W+", "-", e)[:40] for _, e in BAD])
def test_each_mistake_is_named(tmp_path, change, expected):
    assert problems(document(tmp_path, **change)) == [expected]


def test_an_ssh_image_region_needs_the_bootstrap(tmp_path):
    data = document(tmp_path)
    del data["bootstrap"]
    data["providers"]["local"]["regions"][0]["image"] = "ssh"
    assert problems(data) == ['providers.local.regions[0].image: "ssh" instances run no slurmd until '
                              'bootstrapped: add "local" to [bootstrap] providers']
    data["providers"]["local"]["regions"][0]["image"] = "docker"
    assert problems(data) == ['providers.local.regions[0].image: must be "slurmd" or "ssh", got "docker"']


def launch(tmp_path, lab: SshLab, cloud: PublishingCloud, **boot):
    cfg = parse_config(document(tmp_path, lab, **boot))
    with StateDB.open(cfg.cluster.state_dir) as db:
        launcher = Launcher(cfg, db, RecordingSlurm(), {"local": cloud}, sleep=lambda s: None)
        outcome = launcher.launch_group(Group(cfg.pool("p"), ("p-0",), 7),
                                        db.add_request("resume", "p-0", ["p-0"], None))
        return outcome, db.instances()


def test_a_host_key_other_than_the_published_one_gets_nothing_and_the_instance_is_released(tmp_path, sshlab):
    stranger = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().split()
    cloud = PublishingCloud(sshlab, [f"{stranger[0]} {stranger[1]}"])
    outcome, rows = launch(tmp_path, sshlab, cloud)
    assert not outcome.ok
    assert cloud.terminated == ["i-p-0", "i-p-0"]                # both regions tried, each instance released
    assert [(r.region, r.state) for r in rows] == [("lab-de", "failed"), ("lab-de2", "failed")]
    assert all("SECURITY" in r.error and "credentials" in r.error for r in rows)
    # The handshake failed before authentication: no command ran and no file arrived on the host.
    assert sshlab.commands == [] and not list(sshlab.hosts[0].home.rglob("munge.key*"))


def test_an_instance_that_never_publishes_keys_is_released_in_time(tmp_path, sshlab):
    cloud = PublishingCloud(sshlab, None)
    outcome, rows = launch(tmp_path, sshlab, cloud, poll_interval=1)
    # Asked until the request's share of ResumeTimeout (20 s here: 10 s) ran out; not retried in place,
    # and the second region, tried after that, gets one look.
    assert not outcome.ok and "lab-de: unknown; lab-de2: unknown" in outcome.reason
    assert 5 <= cloud.asked <= 13 and cloud.terminated == ["i-p-0", "i-p-0"]
    assert all("published no SSH host key" in r.error for r in rows)


def test_our_key_refused_is_a_credentials_failure(tmp_path, sshlab):
    published = sshlab.hosts[0].key.export_public_key().decode().split()
    other = tmp_path / "other_id"
    other.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key())
    other.chmod(0o600)
    cloud = PublishingCloud(sshlab, [f"{published[0]} {published[1]}"])
    outcome, rows = launch(tmp_path, sshlab, cloud, client_keys=[str(other)])
    assert not outcome.ok and all("refused our key" in r.error for r in rows)
    assert sshlab.commands == []



def test_conf_cloud_init_prints_user_data_with_the_bridges_public_key_only(tmp_path, capsys):
    from slurm_bridge.cli import main

    key = asyncssh.generate_private_key("ssh-ed25519")
    (tmp_path / "id").write_bytes(key.export_private_key())
    (tmp_path / "id").chmod(0o600)
    config = tmp_path / "bridge.toml"
    config.write_text(f"""
[cluster]
name = "hpc1"
state_dir = "{tmp_path / 'state'}"
[slurm]
watch_partitions = ["gpu"]
[zones]
de = ["DE"]
[[pools]]
name = "p"
size = 2
zone = "de"
cpus = 8
memory_mb = 64000
gpus = "a100:1"
instance_types = {{ local = "t1" }}
[[providers.local.regions]]
name = "lab-de"
country = "DE"
prices = {{ t1 = 1.0 }}
[bootstrap]
providers = ["local"]
client_keys = ["{tmp_path / 'id'}"]
munge_key = "{munge_key(tmp_path)}"
slurm_conf_dir = "{tmp_path}"
""")
    assert main(["conf", "cloud-init", "--config", str(config), "--provider", "aws", "--controller",
                 "10.8.0.1:6817"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("#cloud-config\n") and key.export_public_key().decode().split()[1] in text
    assert '"controller": "10.8.0.1:6817"' in text.replace('\\"', '"') and "PRIVATE" not in text
    assert main(["conf", "cloud-init", "--config", str(config), "--provider", "gcp", "--controller",
                 "ctl;rm -rf /"]) == 2
    assert "controller" in capsys.readouterr().err
