"""Cloud-init user data for AWS and GCP: a key-only user, a small facts file, nothing secret."""

from __future__ import annotations

import base64
import json
import os

import asyncssh
import pytest
import yaml  # PyYAML comes with the test extras
from configs import EXAMPLE, write_config

from slurm_bridge.cloudinit import (GCP_NODE, GCP_USER_DATA, NODE_FILE, USER, CloudInitError, check_public_key,
                                    render_aws_user_data, render_gcp_metadata, render_user_data)


CONTROLLER = "ctl.hpc1.example.org:6817"


@pytest.fixture(scope="module")
def keypair() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519", comment="bridge@hpc1")


@pytest.fixture
def cfg(tmp_path):
    return write_config(tmp_path, EXAMPLE)[0]


def public(key: asyncssh.SSHKey) -> str:
    return key.export_public_key().decode().strip()


def parsed(text: str) -> dict:
    assert text.startswith("#cloud-config\n")        # cloud-init ignores a document without this line
    return yaml.safe_load(text)


@pytest.mark.parametrize("provider", ["aws", "gcp"])
def test_one_key_only_user_and_a_facts_file_nothing_else(cfg, keypair, provider):
    doc = parsed(render_user_data(cfg, provider, node="a100-de-0", controller=CONTROLLER,
                                  ssh_public_key=public(keypair), one_time_token="sb-12.1700000000000-a100-de-0"))
    assert set(doc) == {"users", "ssh_pwauth", "disable_root", "write_files"}   # no packages, runcmd, ports
    (user,) = doc["users"]
    assert user["name"] == USER and user["lock_passwd"] is True and user["ssh_authorized_keys"] == [public(keypair)]
    assert doc["ssh_pwauth"] is False and doc["disable_root"] is True
    (facts_file,) = doc["write_files"]
    assert (facts_file["path"], facts_file["permissions"], facts_file["owner"]) == (NODE_FILE, "0644", "root:root")
    assert json.loads(facts_file["content"]) == {"cluster": "hpc1", "provider": provider, "controller": CONTROLLER,
                                                 "node": "a100-de-0",
                                                 "one_time_token": "sb-12.1700000000000-a100-de-0"}


def test_aws_user_data_is_text_and_gcp_metadata_carries_the_same_facts(cfg, keypair):
    aws = render_aws_user_data(cfg, node="a100-de-1", controller="10.8.0.1", ssh_public_key=public(keypair))
    assert aws == render_user_data(cfg, "aws", node="a100-de-1", controller="10.8.0.1",
                                   ssh_public_key=public(keypair))
    assert base64.b64decode(base64.b64encode(aws.encode())).decode() == aws    # the caller encodes
    meta = render_gcp_metadata(cfg, node="a100-de-1", controller="[fd00::1]:6817", ssh_public_key=public(keypair))
    assert set(meta) == {GCP_USER_DATA, GCP_NODE}
    facts = json.loads(meta[GCP_NODE])
    assert facts == {"cluster": "hpc1", "provider": "gcp", "controller": "[fd00::1]:6817", "node": "a100-de-1"}
    assert json.loads(parsed(meta[GCP_USER_DATA])["write_files"][0]["content"]) == facts


def test_a_template_shared_by_many_instances_names_where_the_node_is_found(cfg, keypair):
    aws = parsed(render_aws_user_data(cfg, node=None, controller="ctl", ssh_public_key=public(keypair)))
    facts = json.loads(aws["write_files"][0]["content"])
    assert "node" not in facts and facts["node_from"] == "instance tag slurm-bridge:node"
    gcp = json.loads(render_gcp_metadata(cfg, node=None, controller="ctl", ssh_public_key=public(keypair))[GCP_NODE])
    assert gcp["node_from"].startswith("metadata slurm-bridge-nodes")


@pytest.mark.parametrize("kind", ["ssh-rsa", "ecdsa-sha2-nistp256", "ssh-ed25519"])
def test_every_common_key_type_is_accepted(kind):
    key = asyncssh.generate_private_key(kind, **({"key_size": 2048} if kind == "ssh-rsa" else {}))
    assert check_public_key(public(key) + "\n") == public(key)


@pytest.mark.parametrize("export", ["openssh", "pkcs8-pem", "pkcs1-pem"])
def test_a_private_key_is_refused_and_never_quoted(cfg, keypair, export):
    key = keypair if export != "pkcs1-pem" else asyncssh.generate_private_key("ssh-rsa", key_size=2048)
    private = key.export_private_key(export).decode()
    with pytest.raises(CloudInitError, match="looks like a PRIVATE key") as info:
        render_user_data(cfg, "aws", node="a100-de-0", controller=CONTROLLER, ssh_public_key=private)
    body = "".join(line for line in private.splitlines() if not line.startswith("-----"))
    assert body[:40] not in str(info.value)


def test_the_bare_base64_of_an_openssh_private_key_is_refused_too(keypair):
    body = "".join(keypair.export_private_key().decode().splitlines()[1:-1])
    with pytest.raises(CloudInitError, match="PRIVATE"):
        check_public_key(f"ssh-ed25519 {body}")


@pytest.mark.parametrize("bad", [
    "", "ssh-ed25519", "ssh-dss AAAAB3NzaC1kc3MAAACBAP", "ssh-ed25519 not*base64",
    "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",   # an ed25519 blob claimed rsa
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl a\nssh-ed25519 AAAA b",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl com\u00e9nt",
])
def test_anything_but_one_public_key_line_is_refused(bad):
    with pytest.raises(CloudInitError, match="ssh_public_key"):
        check_public_key(bad)


@pytest.mark.parametrize("field, value, match", [
    ("node", "a100 de-0", "node name"), ("node", "x; rm -rf /", "node name"), ("node", "-rf", "node name"),
    ("node", "n\n- evil", "node name"), ("controller", "ctl:99999", "controller"),
    ("controller", "ctl\nruncmd: [reboot]", "controller"), ("controller", "http://ctl", "controller"),
    ("one_time_token", "short", "one_time_token"), ("one_time_token", "x" * 20 + "\"", "one_time_token"),
])
def test_node_controller_and_token_are_restricted(cfg, keypair, field, value, match):
    args = {"node": "a100-de-0", "controller": CONTROLLER, "one_time_token": None, field: value}
    with pytest.raises(CloudInitError, match=match):
        render_user_data(cfg, "aws", ssh_public_key=public(keypair), **args)


def test_an_unknown_provider_is_refused(cfg, keypair):
    with pytest.raises(CloudInitError, match="aws or gcp"):
        render_user_data(cfg, "azure", node="a100-de-0", controller=CONTROLLER,   # type: ignore[arg-type]
                         ssh_public_key=public(keypair))


def test_no_munge_key_can_reach_the_user_data(cfg, keypair):
    """The inputs are closed sets: a munge key (1024 bytes, as `mungekey` makes it) given where a fact
    goes is refused, not rendered, and the error does not echo it."""
    key = os.urandom(1024)
    for as_text in (base64.b64encode(key).decode(), key.hex()):
        for field in ("node", "controller", "one_time_token"):
            args = {"node": "a100-de-0", "controller": CONTROLLER, "one_time_token": None, field: as_text}
            with pytest.raises(CloudInitError) as info:
                render_user_data(cfg, "gcp", ssh_public_key=public(keypair), **args)
            assert as_text[:24] not in str(info.value)
