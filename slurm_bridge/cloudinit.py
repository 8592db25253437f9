"""Cloud-init user data for AWS and GCP instances, rendered from the config: non-secret facts only.

The document creates one user, `slurm-bridge`, whose only way in is the bridge's SSH public key
(no password: locked, and sshd's password authentication off), and writes
/etc/slurm-bridge-node.json (0644) with the cluster, the provider, the controller address, the
node name and, when given, a one-time token. It installs no package, runs no command and opens
no port. Everything secret (the munge key) and everything large (the Slurm config) is pushed
over SSH by the bridge once the instance answers (bootstrap.py), which needs root: the user may
use sudo without a password. The image's default user (`ubuntu`, `admin`, ...) is not created,
so a provider-injected key pair has no account to land in. The image must run cloud-init
(Ubuntu, Debian `genericcloud`, Rocky and most cloud images; not GCP's own Debian images, which
use the guest agent).

AWS: `render_aws_user_data` is the text; base64 is the caller's job where the API wants it
(a launch template's LaunchTemplateData.UserData; boto3's run_instances encodes by itself).
EC2 accepts 16 KB of user data. GCP: `render_gcp_metadata` gives the metadata items
`user-data` and `slurm-bridge-node`; merge them into an instance template's metadata (gcp.py
carries the template's items along when it adds its own).

A launch template (AWS CreateFleet) or a bulkInsert (GCP) gives every instance of a batch the
same user data, so there `node=None`: the file then omits the node, and the instance finds its
name where the provider puts it (the `slurm-bridge:node` tag on AWS, the `slurm-bridge-nodes`
metadata map under its own instance name on GCP); the bridge passes it to slurmd anyway.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
from typing import Literal

from .config import Config

USER = "slurm-bridge"
NODE_FILE = "/etc/slurm-bridge-node.json"
GCP_USER_DATA, GCP_NODE = "user-data", "slurm-bridge-node"
AWS_USER_DATA_MAX = 16 * 1024                # bytes, before base64
GCP_VALUE_MAX = 256 * 1024                   # bytes per metadata value
Provider = Literal["aws", "gcp"]
NODE_SOURCE = {"aws": "instance tag slurm-bridge:node",
               "gcp": "metadata slurm-bridge-nodes, under the instance name"}

_NODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_CONTROLLER = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)"
                         r"(?::(?P<port>[0-9]{1,5}))?")
_TOKEN = re.compile(r"[A-Za-z0-9._~-]{16,128}")
_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
              "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")
_PUBLIC_KEY = re.compile(r"(?P<type>[a-z0-9@.-]+) (?P<blob>[A-Za-z0-9+/]+={0,2})(?: (?P<comment>[ -~]{0,200}))?")
# Marks of private key material, in PEM armour or as the bare base64 of an OpenSSH private key.
_PRIVATE_MARKS = ("-----BEGIN", "PRIVATE KEY", "b3BlbnNzaC1rZXktdjE")


class CloudInitError(ValueError):
    """An input unfit for user data; the message never quotes a key."""


def _show(value: str) -> str:
    # A long value is more likely something pasted in the wrong place than a typo: not echoed.
    return repr(value) if len(value) <= 80 else f"<{len(value)} characters>"


def check_public_key(text: str) -> str:
    """TEXT as one OpenSSH public key line (`ssh-ed25519 AAAA... comment`), or CloudInitError."""
    if any(mark in text for mark in _PRIVATE_MARKS):
        raise CloudInitError("ssh_public_key looks like a PRIVATE key: give the public key line "
                             "(the .pub file), never the private key")
    line = text.strip()
    m = _PUBLIC_KEY.fullmatch(line)
    if m is None or m.group("type") not in _KEY_TYPES:
        raise CloudInitError("ssh_public_key is not an OpenSSH public key line (expected one line: "
                             f"<type> <base64> [comment], type one of {', '.join(_KEY_TYPES)})")
    try:
        blob = base64.b64decode(m.group("blob"), validate=True)
        (size,) = struct.unpack(">I", blob[:4])
        inner = blob[4:4 + size].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError):
        inner = None
    if inner != m.group("type"):
        # The base64 must be a key of the type it claims: a pasted fragment of something else is not.
        raise CloudInitError(f"ssh_public_key: its base64 part is not a {m.group('type')} key")
    return line


def check_node(node: str) -> str:
    if not _NODE.fullmatch(node):
        raise CloudInitError(f"node name {_show(node)}: letters, digits, '_', '.', '-', starting with a letter "
                             "or digit, at most 64")
    return node


def check_controller(controller: str) -> str:
    m = _CONTROLLER.fullmatch(controller)
    if m is None or (m.group("port") is not None and not 1 <= int(m.group("port")) <= 65535):
        raise CloudInitError(f"controller {_show(controller)}: expected a host name, IPv4 address or [IPv6] "
                             "address, with an optional :port")
    return controller


def check_token(token: str) -> str:
    if not _TOKEN.fullmatch(token):
        # Never quoted: a token is meant to be single-use, but still has no business in a log.
        raise CloudInitError("one_time_token: 16 to 128 characters of letters, digits and '._~-'")
    return token


def node_facts(cfg: Config, provider: Provider, *, node: str | None, controller: str,
               one_time_token: str | None = None) -> dict[str, str]:
    """What an instance may know about itself, checked: nothing secret, nothing free-form."""
    if provider not in NODE_SOURCE:
        raise CloudInitError(f"provider {_show(provider)}: user data is rendered for aws or gcp")
    facts = {"cluster": cfg.cluster.name, "provider": provider, "controller": check_controller(controller)}
    if node is None:
        facts["node_from"] = NODE_SOURCE[provider]
    else:
        facts["node"] = check_node(node)
    if one_time_token is not None:
        facts["one_time_token"] = check_token(one_time_token)
    return facts


def _q(text: str) -> str:
    # A JSON string is a valid YAML double-quoted scalar: no value can break out of its line.
    return json.dumps(text)


def render_user_data(cfg: Config, provider: Provider, *, node: str | None, controller: str,
                     ssh_public_key: str, one_time_token: str | None = None) -> str:
    """The #cloud-config document for one instance (or, with node=None, for a whole template)."""
    facts = node_facts(cfg, provider, node=node, controller=controller, one_time_token=one_time_token)
    key = check_public_key(ssh_public_key)
    lines = [
        "#cloud-config",
        f"# Rendered by slurm-bridge for cluster {cfg.cluster.name} ({provider}): non-secret facts only.",
        "# The munge key and the Slurm config arrive over SSH from the bridge once this instance answers.",
        "users:",
        f"  - name: {USER}",
        "    gecos: slurm-bridge bootstrap (key login only)",
        "    shell: /bin/sh",
        "    lock_passwd: true",
        # The bridge installs the munge key and starts slurmd as root, through sudo.
        '    sudo: "ALL=(root) NOPASSWD:ALL"',
        "    ssh_authorized_keys:",
        f"      - {_q(key)}",
        "ssh_pwauth: false",
        "disable_root: true",
        "write_files:",
        f"  - path: {NODE_FILE}",
        '    owner: "root:root"',
        '    permissions: "0644"',
        f"    content: {_q(json.dumps(facts, sort_keys=True) + chr(10))}",
        "",
    ]
    text = "\n".join(lines)
    limit = AWS_USER_DATA_MAX if provider == "aws" else GCP_VALUE_MAX
    if len(text.encode()) > limit:
        raise CloudInitError(f"user data is {len(text.encode())} bytes; {provider} accepts {limit}")
    return text


def render_aws_user_data(cfg: Config, *, node: str | None, controller: str, ssh_public_key: str,
                         one_time_token: str | None = None) -> str:
    """EC2 user data, as text: base64-encode it where the API wants base64 (launch templates)."""
    return render_user_data(cfg, "aws", node=node, controller=controller, ssh_public_key=ssh_public_key,
                            one_time_token=one_time_token)


def render_gcp_metadata(cfg: Config, *, node: str | None, controller: str, ssh_public_key: str,
                        one_time_token: str | None = None) -> dict[str, str]:
    """GCE metadata items: cloud-init reads `user-data`; `slurm-bridge-node` holds the same facts
    for scripts that read the metadata server instead of the file."""
    user_data = render_user_data(cfg, "gcp", node=node, controller=controller, ssh_public_key=ssh_public_key,
                                 one_time_token=one_time_token)
    facts = node_facts(cfg, "gcp", node=node, controller=controller, one_time_token=one_time_token)
    return {GCP_USER_DATA: user_data, GCP_NODE: json.dumps(facts, sort_keys=True)}
