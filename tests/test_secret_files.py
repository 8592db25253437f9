"""Secrets that others could read are refused, naming the file and the fix, never the content (issue 9)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import asyncssh
import pytest

from slurm_bridge import secretfiles

pytest_plugins = ["moto_server"]    # the session's moto server (moto_cloud, cluster)
from slurm_bridge.bootstrap_config import BootstrapConfig
from slurm_bridge.cloud_config import GcpConfig
from slurm_bridge.node_bootstrap import Bootstrapper
from slurm_bridge.providers.base import FailureKind, Instance, LaunchRequest, NodeSpec, ProviderError, Scope
from slurm_bridge.providers.gcp import GcpProvider
from slurm_bridge.providers.ssh_hosts import load_credentials
from slurm_bridge.ssh_config import SshConfig

SECRET = "-----BEGIN OPENSSH PRIVATE KEY-----do-not-print"


def secret(tmp_path: Path, name: str, mode: int, text: str = SECRET) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_group_or_other_bits_are_named_with_the_fix(tmp_path, mode):
    why = secretfiles.problem(secret(tmp_path, "k", mode))
    assert why == f"has mode {mode:04o}: group or others may access it (chmod 600)"


def test_a_private_file_a_directory_and_a_missing_file(tmp_path):
    assert secretfiles.problem(secret(tmp_path, "k", 0o600)) is None
    assert secretfiles.problem(secret(tmp_path, "r", 0o400)) is None
    assert secretfiles.problem(tmp_path) == "is not a regular file"
    assert secretfiles.problem(tmp_path / "nope") is None        # left to the opener, which names it
    other = secret(tmp_path, "o", 0o600)
    os.chown(other, 4242, -1)
    assert "owned by uid 4242" in secretfiles.problem(other)


def test_an_ssh_client_key_others_can_read_is_refused(tmp_path):
    key = secret(tmp_path, "id", 0o644, asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode())
    known = secret(tmp_path, "known_hosts", 0o644, "")
    cfg = SshConfig(known, (key,), "root", ())
    with pytest.raises(ProviderError) as info:
        load_credentials(cfg)
    f = info.value.failure
    assert (f.kind, f.effective_scope) == (FailureKind.CONFIG, Scope.PROVIDER)
    assert str(key) in f.message and "chmod 600" in f.message and "PRIVATE" not in f.message
    key.chmod(0o600)
    assert len(load_credentials(cfg).client_keys) == 1


def test_gcp_credentials_others_can_read_are_refused_before_any_call(tmp_path):
    creds = secret(tmp_path, "sa.json", 0o644, '{"type": "service_account", "private_key": "%s"}' % SECRET)
    provider = GcpProvider(GcpConfig("p", ("europe-west3",), "tpl", credentials_file=creds,
                                     endpoint="http://127.0.0.1:9"))
    result = provider.launch(LaunchRequest("c", "europe-west3", (NodeSpec("n-0", "p", "t", False),)))
    f = result.failed["n-0"]
    assert (f.kind, f.effective_scope) == (FailureKind.CREDENTIALS, Scope.PROVIDER)
    assert "mode 0644" in f.message and "do-not-print" not in f.message


def test_a_bootstrap_client_key_others_can_read_fails_the_launch_as_config(tmp_path):
    munge = tmp_path / "munge.key"
    munge.write_bytes(os.urandom(64))
    munge.chmod(0o600)
    key = secret(tmp_path, "id", 0o640, asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode())
    boot = Bootstrapper(BootstrapConfig(("local",), (key,), munge, slurm_conf_dir=tmp_path), "c")
    failed = boot.run(object(), [Instance("i-1", "n-0", "r", "running", "10.0.0.1")], {}, deadline=0)
    assert failed["n-0"].kind is FailureKind.CONFIG and "0640" in failed["n-0"].message
    assert stat.S_IMODE(key.stat().st_mode) == 0o640      # reported, never "fixed" behind the admin's back


def test_cloud_credentials_never_reach_the_logs_even_at_debug(moto_cloud, cluster, caplog):
    import logging

    import boto3

    from moto_server import launch_request
    from slurm_bridge.providers.aws import AwsProvider

    secret_key = "s3cr3t-VALUE-that-must-not-leak-0123456789"
    session = boto3.Session(aws_access_key_id="AKIAEXAMPLEKEY000001", aws_secret_access_key=secret_key)
    provider = AwsProvider(moto_cloud.config(), session=session, sleep=lambda s: None)
    caplog.set_level(logging.DEBUG)          # botocore included: the most it ever says
    result = provider.launch(launch_request(cluster, 1))
    provider.terminate(result.launched[0].region, [i.instance_id for i in result.launched])
    assert "botocore" in caplog.text and "CreateFleet" in caplog.text     # the scan saw the requests
    assert secret_key not in caplog.text and secret_key[:16] not in caplog.text
