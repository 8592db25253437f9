"""Host keys of new instances, learned through the provider's API (providers/hostkeys.py).

AWS runs against moto and GCP against the Compute stand-in (gcp_server.py). Neither can boot a real
guest, so what the guest would publish is put in place by the test: for moto, its fixed sample console
text is replaced by what cloud-init prints (moto serves one sample for every instance); for GCP, the
stand-in's guest attributes are filled in as the guest environment would.
"""

from __future__ import annotations

import asyncssh
import pytest

from gcp_server import ComputeServer
from moto_server import launch_request
from slurm_bridge.providers import hostkeys
from slurm_bridge.providers.base import Provider
from slurm_bridge.providers.gcp import META_GUEST_ATTRIBUTES

pytest_plugins = ["moto_server"]    # the session's moto server (moto_cloud, cluster)

ED = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().split()
EC = asyncssh.generate_private_key("ecdsa-sha2-nistp256").export_public_key().decode().split()
KEY_ED, KEY_EC = f"{ED[0]} {ED[1]}", f"{EC[0]} {EC[1]}"


def console(*keys: str, host: str = "ip-10-20-0-7") -> str:
    """What cloud-init writes to the serial console at first boot (cc_keys_to_console)."""
    lines = "\n".join(f"{k} root@{host}" for k in keys)
    return (f"[   12.3] cloud-init[612]: Cloud-init v. 23.1.1 running 'modules:final'\n"
            f"<14>Nov 30 14:00:01 ec2: #############################################################\n"
            f"<14>Nov 30 14:00:01 ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----\n"
            f"<14>Nov 30 14:00:01 ec2: 256 SHA256:abc root@{host} (ED25519)\n"
            f"<14>Nov 30 14:00:01 ec2: -----END SSH HOST KEY FINGERPRINTS-----\n"
            f"-----BEGIN SSH HOST KEY KEYS-----\n{lines}\n-----END SSH HOST KEY KEYS-----\n"
            f"[   13.0] cloud-init[612]: Cloud-init v. 23.1.1 finished\n")


def test_the_keys_of_the_console_block_are_read_and_checked():
    assert hostkeys.from_console(console(KEY_EC, KEY_ED)) == (KEY_EC, KEY_ED)
    # A rebuilt instance prints a second block: only the newest describes the running host.
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().split()
    assert hostkeys.from_console(console(KEY_ED) + console(f"{other[0]} {other[1]}")) == (f"{other[0]} {other[1]}",)


@pytest.mark.parametrize("text", [
    "", "Linux version 6.1\nno keys here\n",
    "-----BEGIN SSH HOST KEY KEYS-----\nssh-ed25519 AAAAC3Nza",           # cut off mid-boot: no END yet
    "-----BEGIN SSH HOST KEY KEYS-----\nssh-ed25519 bm90IGEga2V5\nnot a key\n-----END SSH HOST KEY KEYS-----\n",
    "-----END SSH HOST KEY KEYS-----\n" + KEY_ED + "\n-----BEGIN SSH HOST KEY KEYS-----\n",   # out of order
], ids=["empty", "no-block", "unfinished", "not-keys", "reversed"])
def test_no_complete_block_of_real_keys_is_not_yet(text):
    assert hostkeys.from_console(text) is None


def test_known_hosts_lines_pin_the_address_and_port():
    assert hostkeys.known_hosts_lines("10.0.0.7", 22, [KEY_ED]) == f"10.0.0.7 {KEY_ED}\n"
    assert hostkeys.known_hosts_lines("10.0.0.7", 2222, [KEY_ED, KEY_EC]) == \
        f"[10.0.0.7]:2222 {KEY_ED}\n[10.0.0.7]:2222 {KEY_EC}\n"
    known = asyncssh.import_known_hosts(hostkeys.known_hosts_lines("10.0.0.7", 22, [KEY_ED]))
    assert known.match("10.0.0.7", "10.0.0.7", 22)[0]


def test_aws_reads_the_console_through_get_console_output(moto_cloud, cluster, monkeypatch):
    import moto.ec2.responses.general as general

    provider = moto_cloud.provider()
    assert isinstance(provider, hostkeys.PublishesHostKeys) and isinstance(provider, Provider)
    [inst] = provider.launch(launch_request(cluster, 1)).launched
    assert provider.host_keys(inst.region, inst.instance_id) is None       # moto's sample: a kernel log, no keys
    monkeypatch.setattr(general, "SAMPLE_CONSOLE_OUTPUT", console(KEY_ED, KEY_EC))
    assert provider.host_keys(inst.region, inst.instance_id) == (KEY_ED, KEY_EC)
    assert provider.host_keys(inst.region, "not-an-id") is None
    provider.terminate(inst.region, [inst.instance_id])


def test_gcp_reads_the_guest_attributes_and_asks_the_guest_to_publish_them():
    from test_provider_gcp import PROJECT, TEMPLATE, make_provider, request

    server = ComputeServer(PROJECT)
    server.start()
    try:
        server.add_template("gpu-node", TEMPLATE)
        provider = make_provider(server)
        assert isinstance(provider, hostkeys.PublishesHostKeys)
        [inst] = provider.launch(request(1)).launched
        raw = server.all_instances()[inst.instance_id]
        assert {i["key"]: i["value"] for i in raw["metadata"]["items"]}[META_GUEST_ATTRIBUTES] == "TRUE"
        assert provider.host_keys(inst.region, inst.instance_id) is None     # booting: 404 from the API
        zone, name = inst.instance_id.split("/")
        server.publish_host_keys(zone, name, [KEY_ED, KEY_EC])
        assert provider.host_keys(inst.region, inst.instance_id) == (KEY_ED, KEY_EC)
        [call] = server.calls("GET", "/getGuestAttributes")[-1:]
        assert call.query == {"queryPath": "hostkeys/"}
        assert provider.host_keys(inst.region, "not-a-gcp-id") is None
        assert server.unknown == []
    finally:
        server.stop()
