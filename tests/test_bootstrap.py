"""The bootstrap hook against real SSH servers (ssh_server.py): the munge key arrives over SFTP,
0600, and nowhere else: not in a command, a log record, the state DB or the cloud-init."""

from __future__ import annotations

import asyncio
import base64
import grp
import logging
import os
import pwd
import stat
import sys
from pathlib import Path

import asyncssh
import pytest
from fakes import RecordingSlurm
from secrets_scan import leaks
from ssh_server import FAKE, SshLab

from slurm_bridge import cloudinit
from slurm_bridge.bootstrap import (TEMP_SUFFIX, BootstrapError, MungeKeyError, conf_server_args, make_bootstrap,
                                    read_munge_key)
from slurm_bridge.config import parse_config
from slurm_bridge.launch import Group, Launcher
from slurm_bridge.providers.base import LaunchRequest, NodeSpec
from slurm_bridge.providers.ssh import BootstrapContext, SshProvider
from slurm_bridge.ssh_config import parse_ssh
from slurm_bridge.state import StateDB
from slurm_bridge.tomlcheck import _Checker

CLUSTER, GROUP = "sbtest", "lab-ssh"
KEY_PATH, CONF_DIR = "etc/munge/munge.key", "etc/slurm"     # relative: inside each host's home
OWNER = f"{pwd.getpwuid(os.getuid()).pw_name}:{grp.getgrgid(os.getgid()).gr_name}"
SSH_GROUP = {"name": GROUP, "country": "DE", "instance_type": "ws-a100", "price_per_hour": 1.0,
             "start": ["slurmd", "-N", "{node}"], "stop": ["slurmd-stop", "{node}"]}


@pytest.fixture
def sshlab(tmp_path):
    (tmp_path / "ssh").mkdir()
    lab = SshLab(tmp_path / "ssh", 3)
    for h in lab.hosts:
        (h.home / "etc" / "munge").mkdir(parents=True)
        (h.home / "etc" / "slurm").mkdir(parents=True)
    # systemctl records its calls like the other fake programs (ssh_server.FAKE).
    (lab.bin / "systemctl").write_text(FAKE.format(python=sys.executable))
    (lab.bin / "systemctl").chmod(0o755)
    lab.start()
    yield lab
    lab.close()


@pytest.fixture
def munge_key(tmp_path) -> tuple[Path, bytes]:
    key = os.urandom(1024)
    path = tmp_path / "bridge" / "munge.key"
    path.parent.mkdir()
    path.write_bytes(key)
    path.chmod(0o600)
    return path, key


@pytest.fixture
def conf_dir(tmp_path) -> Path:
    d = tmp_path / "slurm-etc"
    d.mkdir()
    (d / "slurm.conf").write_text("ClusterName=sbtest\nSlurmctldHost=ctl\n")
    (d / "gres.conf").write_text("NodeName=ws-[0-3] Name=gpu File=/dev/nvidia0\n")
    return d


def hook(key_path: Path, *, slurm_conf_dir: Path | None = None, conf_server: str | None = None, **kw):
    return make_bootstrap(key_path, slurm_conf_dir=slurm_conf_dir, conf_server=conf_server,
                          remote_munge_path=KEY_PATH, remote_conf_dir=CONF_DIR, munge_owner=OWNER, **kw)


def ssh_section(lab: SshLab, hosts) -> dict:
    return {"known_hosts": str(lab.known_hosts()), "client_keys": [str(lab.key_file)], "username": "bridge",
            "connect_timeout": 5, "command_timeout": 20, "groups": [{**SSH_GROUP, "hosts": [h.label for h in hosts]}]}


def provider(lab: SshLab, bootstrap, hosts=None) -> SshProvider:
    ck = _Checker()
    cfg = parse_ssh(ck, "providers.ssh", ssh_section(lab, lab.hosts if hosts is None else hosts))
    assert ck.problems == [] and cfg is not None
    return SshProvider(cfg, CLUSTER, bootstrap=bootstrap)


def request(*nodes: str) -> LaunchRequest:
    return LaunchRequest(CLUSTER, GROUP, tuple(NodeSpec(n, "ws", "ws-a100", False, (7,), f"tok-{n}") for n in nodes))


def run_hook(lab: SshLab, host, bootstrap, node: str = "ws-0") -> None:
    async def go() -> None:
        async with asyncssh.connect(host.name, host.port, username="bridge", known_hosts=str(lab.known_hosts()),
                                    client_keys=[lab.client_key], agent_path=None, config=None) as conn:
            await bootstrap(conn, BootstrapContext(CLUSTER, GROUP, host.label, node, f"tok-{node}"))
    asyncio.run(go())


def tree(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (stat.S_IMODE(p.stat().st_mode), p.read_bytes() if p.is_file() else b"")
            for p in sorted(root.rglob("*")) if p.name not in ("calls.jsonl",)}


def test_the_key_arrives_0600_with_its_owner_and_the_config_is_copied(sshlab, munge_key, conf_dir):
    path, key = munge_key
    a = sshlab.hosts[0]
    result = provider(sshlab, hook(path, slurm_conf_dir=conf_dir), [a]).launch(request("ws-0"))
    assert result.complete and a.started() == ["ws-0"]
    remote = a.home / KEY_PATH
    st = remote.stat()
    assert remote.read_bytes() == key and stat.S_IMODE(st.st_mode) == 0o600
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    for name in ("slurm.conf", "gres.conf"):
        copied = a.home / CONF_DIR / name
        assert copied.read_bytes() == (conf_dir / name).read_bytes() and stat.S_IMODE(copied.stat().st_mode) == 0o644
    assert not (a.home / CONF_DIR / "cgroup.conf").exists()          # absent on the bridge: skipped
    assert not list(a.home.rglob(f"*{TEMP_SUFFIX}"))                  # no temp file left behind
    calls = a.calls()
    assert calls.index(["systemctl", "restart", "munge"]) < calls.index(["slurmd", "-N", "ws-0"])
    assert not leaks(key, "\n".join(c for _, c in sshlab.commands))


def test_rerunning_the_hook_leaves_the_same_state(sshlab, munge_key, conf_dir):
    path, key = munge_key
    a = sshlab.hosts[0]
    bootstrap = hook(path, slurm_conf_dir=conf_dir)
    run_hook(sshlab, a, bootstrap)
    first = tree(a.home / "etc")
    # An interrupted run left a temp file beside the key: the next run replaces it, no O_EXCL error.
    (a.home / "etc/munge" / f".munge.key{TEMP_SUFFIX}").write_bytes(b"half a key")
    run_hook(sshlab, a, bootstrap)
    assert tree(a.home / "etc") == first and first["munge/munge.key"] == (0o600, key)
    assert a.calls().count(["systemctl", "restart", "munge"]) == 2


def test_configless_copies_no_files(sshlab, munge_key):
    path, key = munge_key
    a = sshlab.hosts[0]
    run_hook(sshlab, a, hook(path, conf_server="ctl.example.org:6817"))
    assert (a.home / KEY_PATH).read_bytes() == key and list((a.home / CONF_DIR).iterdir()) == []
    assert conf_server_args("ctl.example.org:6817,ctl2:6817") == ["--conf-server", "ctl.example.org:6817,ctl2:6817"]
    with pytest.raises(ValueError, match="exactly one"):
        make_bootstrap(path, slurm_conf_dir=None, conf_server=None)
    with pytest.raises(ValueError, match="conf_server"):
        make_bootstrap(path, slurm_conf_dir=None, conf_server="ctl; rm -rf /")


def test_a_login_that_is_not_root_stages_the_key_and_uses_sudo(sshlab, munge_key, conf_dir):
    path, key = munge_key
    (sshlab.bin / "sudo").write_text('#!/bin/sh\n[ "$1" = -n ] && shift\nexec "$@"\n')
    (sshlab.bin / "sudo").chmod(0o755)
    a = sshlab.hosts[0]
    run_hook(sshlab, a, hook(path, slurm_conf_dir=conf_dir, sudo=("sudo", "-n")))
    assert (a.home / KEY_PATH).read_bytes() == key and stat.S_IMODE((a.home / KEY_PATH).stat().st_mode) == 0o600
    stage = a.home / ".slurm-bridge" / "stage"
    assert stat.S_IMODE(stage.stat().st_mode) == 0o700 and list(stage.iterdir()) == []
    sent = [c for _, c in sshlab.commands]
    assert f"sudo -n install -m 0600 -o {OWNER.split(':')[0]} -g {OWNER.split(':')[1]} " \
           f".slurm-bridge/stage/munge.key etc/munge/.munge.key{TEMP_SUFFIX}" in sent
    assert f"sudo -n mv -f -T etc/munge/.munge.key{TEMP_SUFFIX} {KEY_PATH}" in sent
    assert "sudo -n systemctl restart munge" in sent and not leaks(key, "\n".join(sent))


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_munge_key_others_may_read_is_refused_naming_the_file(munge_key, mode):
    path, key = munge_key
    path.chmod(mode)
    with pytest.raises(MungeKeyError) as info:
        make_bootstrap(path, slurm_conf_dir=None, conf_server="ctl:6817")
    assert str(path) in str(info.value) and f"{mode:04o}" in str(info.value) and not leaks(key, str(info.value))


def test_a_munge_key_of_another_owner_too_short_or_missing_is_refused(munge_key, tmp_path):
    path, key = munge_key
    os.chown(path, 65534, -1)                    # nobody: the tests run as root
    with pytest.raises(MungeKeyError, match="owned by uid 65534"):
        read_munge_key(path)
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 16)
    short.chmod(0o600)
    with pytest.raises(MungeKeyError, match="32 to 1024 bytes"):
        read_munge_key(short)
    with pytest.raises(MungeKeyError, match=f"cannot open the munge key {tmp_path / 'absent'}"):
        read_munge_key(tmp_path / "absent")


def test_a_failing_step_names_the_step_and_the_host(sshlab, munge_key, conf_dir, caplog):
    path, key = munge_key
    a, b, c = sshlab.hosts
    (a.home / "etc/munge").rmdir()                                         # munge not installed
    (b.home / "fail-systemctl").touch()
    (sshlab.bin / "systemctl").write_text("#!/bin/sh\necho 'Failed to restart munge.service: Unit munge.service "
                                          "not found.' >&2\n[ -e fail-systemctl ] && exit 5\nexit 0\n")
    bootstrap = hook(path, slurm_conf_dir=conf_dir)
    result = provider(sshlab, bootstrap, [a, b]).launch(request("ws-0"))
    message = result.failed["ws-0"].message
    assert f"install munge key on {a.label}: writing etc/munge/.munge.key{TEMP_SUFFIX}" in message
    assert f"restart munge on {b.label}: systemctl exit 5: Failed to restart munge.service" in message
    assert a.state() is None and b.state() is None and a.started() == b.started() == []   # released
    (conf_dir / "slurm.conf").unlink()
    with pytest.raises(BootstrapError, match=f"read slurm.conf on {c.label}: .*slurm.conf is missing"):
        run_hook(sshlab, c, bootstrap)
    assert not leaks(key, message + caplog.text)


def bridge_config(tmp_path: Path, lab: SshLab):
    return parse_config({
        "cluster": {"name": CLUSTER, "state_dir": str(tmp_path / "state")},
        "slurm": {"watch_partitions": ["gpu"]}, "zones": {"de": ["DE"]},
        "pools": [{"name": "ws", "size": 4, "zone": "de", "cpus": 8, "memory_mb": 64000, "gpus": "a100:1",
                   "spot": False, "instance_types": {"ssh": "ws-a100"}}],
        "providers": {"ssh": ssh_section(lab, lab.hosts)}})


def test_the_munge_key_is_in_no_cloud_init_log_command_or_state_db(sshlab, munge_key, conf_dir, tmp_path, caplog):
    """Issue 8's "done when": a run with real SSH, a real state DB and real logs, scanned for the key."""
    path, key = munge_key
    caplog.set_level(logging.DEBUG)
    cfg = bridge_config(tmp_path, sshlab)
    ssh = SshProvider(cfg.ssh, CLUSTER, bootstrap=hook(path, slurm_conf_dir=conf_dir))
    a, b, c = sshlab.hosts
    (a.home / "etc/munge").rmdir()                   # fails on a: the failure path is logged and recorded too
    with StateDB.open(cfg.cluster.state_dir) as db:
        launcher = Launcher(cfg, db, RecordingSlurm(), {"ssh": ssh}, sleep=lambda s: None)
        ok = launcher.launch_group(Group(cfg.pool("ws"), ("ws-0",), 7),
                                   db.add_request("resume", "ws-0", ["ws-0"], None))
        (c.home / "etc/munge").rmdir()
        failed = launcher.launch_group(Group(cfg.pool("ws"), ("ws-1",), 8),
                                       db.add_request("resume", "ws-1", ["ws-1"], None))
        assert ok.ok and not failed.ok and [e["node"] for e in db.events("launched")] == ["ws-0"]
    assert (b.home / KEY_PATH).read_bytes() == key   # the key did travel: the scan below is not vacuous

    public = sshlab.client_key.export_public_key().decode()
    rendered = [cloudinit.render_aws_user_data(cfg, node="ws-0", controller="ctl.example.org:6817",
                                               ssh_public_key=public, one_time_token="sb-1.1700000000000-ws-0"),
                *cloudinit.render_gcp_metadata(cfg, node="ws-0", controller="10.8.0.1",
                                               ssh_public_key=public).values()]
    logs = "\n".join(f"{r.getMessage()}\n{r.exc_text or ''}" for r in caplog.records)
    commands = "\n".join(c for _, c in sshlab.commands)
    programs = "\n".join(str(h.calls()) for h in sshlab.hosts)
    db_files = {p.name: p.read_bytes() for p in Path(cfg.cluster.state_dir).iterdir() if p.is_file()}
    # The scan sees what was recorded: the events, and each host's failure with its step.
    assert any(b"launch_failed" in blob for blob in db_files.values())
    assert any(f"install munge key on {c.label}".encode() in blob for blob in db_files.values())
    assert leaks(key, key) and leaks(key, base64.b64encode(key)) and leaks(key, repr(key))   # the scanner works
    found = {name: leaks(key, blob) for name, blob in [("cloud-init", "\n".join(rendered)), ("logs", logs),
                                                       ("commands", commands), ("programs", programs),
                                                       *db_files.items()]}
    assert f"bootstrap of ws-0 on {b.label}" in logs and f"install munge key on {a.label}" in logs
    assert all(not hits for hits in found.values()), {k: len(v) for k, v in found.items() if v}
