"""slurm_conf/site-example.toml, the full example an admin starts from, cannot rot.

It is loaded with the bridge's own loader, rendered (the committed slurm_conf/rendered/ must be what
`conf render` writes for it), checked with `conf check`'s own function against a stand-in Slurm that
holds exactly the rendered fragment, and its providers are built offline.

The example names secret files under /etc (munge key, SSH client key, GCP credentials) that this
machine does not have, or has with other owners. Where a test needs them to exist, it writes stand-in
files with mode 0600 into tmp_path and rewrites those paths in a copy of the example; the stand-ins hold
throwaway bytes and a key generated for the test, nothing real.

To regenerate slurm_conf/rendered/ after changing the example or the renderer:

    SLURM_BRIDGE_REGENERATE=1 .venv/bin/python -m pytest -q tests/test_site_example.py
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from pathlib import Path

import pytest

from slurm_bridge import config as config_module
from slurm_bridge import render
from slurm_bridge.confcheck import check
from slurm_bridge.config import load_config
from slurm_bridge.errors import SlurmError
from slurm_bridge.models import Node
from slurm_bridge.slurm.hostlists import expand

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "slurm_conf" / "site-example.toml"
RENDERED = REPO / "slurm_conf" / "rendered"
# Where the admin puts things (README, "For the admin"): the rendered text names these paths.
SITE_CONFIG_PATH = Path("/etc/slurm-bridge/bridge.toml")
REGENERATE = "SLURM_BRIDGE_REGENERATE=1 .venv/bin/python -m pytest -q tests/test_site_example.py"


@pytest.fixture(scope="module")
def cfg():
    return load_config(EXAMPLE)


def test_the_example_loads_and_is_a_full_site(cfg):
    assert cfg.source == EXAMPLE
    assert cfg.cluster.country == "DE"
    assert cfg.aws is not None and cfg.gcp is not None and cfg.ssh is not None
    assert cfg.ssh.munge_key is not None and cfg.ssh.groups and cfg.ssh.groups[0].country == "DE"
    assert cfg.bootstrap is not None and set(cfg.bootstrap.providers) == {"aws", "gcp"}
    assert cfg.cost.onprem is not None and cfg.cost.onprem.gpus
    assert any(p.spot for p in cfg.pools) and any(not p.spot for p in cfg.pools)
    assert {a.zone.name for a in cfg.accounts.values()} >= {"de", "eu", "any"}
    assert any(a.budget_usd_month for a in cfg.accounts.values())
    assert any(not a.burst for a in cfg.accounts.values())
    assert cfg.partition_zones and cfg.price_overrides
    # Every pool can be launched somewhere with the example's prices (else it would only ever fail).
    from slurm_bridge import selector
    from slurm_bridge.prices import book_for

    book = book_for(cfg.price_overrides)
    for pool in cfg.pools:
        ranked, _ = selector.rank(cfg, pool, None, lambda provider, region: None, book)
        assert ranked, f"pool {pool.name} has no launchable region in the example"


def test_every_top_level_section_appears():
    # A new section in the config loader should show up in the example admins copy.
    data = tomllib.loads(EXAMPLE.read_text())
    missing = [k for k in config_module._TOP_KEYS if k not in data]
    assert not missing, f"slurm_conf/site-example.toml lacks the section(s) {missing}"
    policy = config_module.PolicyConfig.__dataclass_fields__
    assert set(data["policy"]) == set(policy), "show every [policy] key in the example"
    assert set(data["slurm"]) == set(config_module.SlurmConfig.__dataclass_fields__)


def _render(cfg, bin_dir: Path):
    # What `slurm-bridge conf render --config /etc/slurm-bridge/bridge.toml` writes beside
    # /etc/slurm/slurm.conf, with no state DB yet (so the example's price overrides decide).
    return render.render(cfg, config_path=SITE_CONFIG_PATH, lua_dir=cfg.slurm.slurm_conf.parent,
                         bin_dir=bin_dir, book=None)


def _written(cfg, out: Path) -> dict[str, str]:
    rendered = _render(cfg, cfg.slurm.bin_dir)
    # The wrappers hold this machine's path to the console scripts: write them out of the way.
    rendered = dataclasses.replace(rendered, bin_dir=out / "bin")
    render.write(rendered, out / "conf")
    return {p.name: p.read_text() for p in sorted((out / "conf").iterdir())}


def test_committed_rendered_files_are_current(cfg, tmp_path):
    fresh = _written(cfg, tmp_path)
    assert set(fresh) == {render.FRAGMENT_NAME, render.GRES_NAME, "job_submit.lua", "slurm-bridge.lua"}
    if os.environ.get("SLURM_BRIDGE_REGENERATE") == "1":
        RENDERED.mkdir(exist_ok=True)
        for name, text in fresh.items():
            (RENDERED / name).write_text(text)
    have = {p.name: p.read_text() for p in sorted(RENDERED.iterdir())} if RENDERED.is_dir() else {}
    stale = sorted(n for n in set(fresh) | set(have) if fresh.get(n) != have.get(n))
    assert not stale, (f"slurm_conf/rendered/ is out of date with slurm_conf/site-example.toml "
                       f"({', '.join(stale)}); regenerate with:\n    {REGENERATE}")


# ---- `conf check` against a stand-in Slurm that runs exactly the rendered fragment ---------------

class FragmentSlurm:
    """The three reads `conf check` makes, answered from slurm.conf text (the site's own lines plus
    the Include of the rendered fragment), the way `scontrol show config/partition/node` would."""

    def __init__(self, conf_text: str, onprem: dict[str, str]):
        self.config: dict[str, str] = {}
        self.parts: dict[str, dict[str, str]] = {}
        self.node_list: list[Node] = []
        for line in conf_text.splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            fields = dict(f.split("=", 1) for f in line.split())
            if "NodeName" in fields:
                flags = frozenset({"CLOUD", "POWERED_DOWN"}) if fields.get("State") == "CLOUD" else frozenset()
                feats = tuple(fields.get("Features", "").split(","))
                for name in expand(fields["NodeName"]):
                    self.node_list.append(Node(name, "IDLE", flags, feats, feats, name, name, ()))
            elif "PartitionName" in fields:
                self.parts[fields.pop("PartitionName")] = fields
            else:
                self.config.update(fields)
        for name, nodes in onprem.items():
            self.parts.setdefault(name, {"Nodes": nodes})

    def show_config(self) -> dict[str, str]:
        return dict(self.config)

    def partitions(self) -> dict[str, dict[str, str]]:
        return {k: dict(v) for k, v in self.parts.items()}

    def nodes(self, names=None) -> list[Node]:
        return [n for n in self.node_list if names is None or n.name in names]


SITE_SLURM_CONF = """\
ClusterName=hpc-muc
SlurmctldHost=ctl
AccountingStorageType=accounting_storage/slurmdbd
NodeName=gpu-[0-31] CPUs=64 RealMemory=500000 Gres=gpu:a100:8 Features={features}
PartitionName=gpu Nodes=gpu-[0-31] Default=YES
PartitionName=gpu-clinic Nodes=gpu-[0-31]
"""


def _site_slurm(cfg, fragment: str) -> FragmentSlurm:
    site = SITE_SLURM_CONF.format(features=",".join(render.onprem_features(cfg)))
    return FragmentSlurm(site + fragment, {})


def _with_bin_dir(tmp_path: Path) -> tuple:
    """The example with bin_dir in tmp_path and the wrappers written there, as `conf render` does."""
    bin_dir = tmp_path / "libexec"
    text = EXAMPLE.read_text().replace('bin_dir = "/usr/local/libexec/slurm-bridge"', f'bin_dir = "{bin_dir}"')
    assert str(bin_dir) in text
    path = tmp_path / "bridge.toml"
    path.write_text(text)
    cfg = load_config(path)
    rendered = render.render(cfg, config_path=path, lua_dir=tmp_path / "etc")
    render.write(rendered, tmp_path / "etc")
    return cfg, rendered


def test_conf_check_passes_on_the_rendered_fragment(tmp_path):
    cfg, rendered = _with_bin_dir(tmp_path)
    problems = check(cfg, _site_slurm(cfg, rendered.slurm_conf))
    assert problems == []


def test_conf_check_is_not_vacuous(tmp_path):
    cfg, rendered = _with_bin_dir(tmp_path)
    # Without the Include nothing is configured: every program, the plugin and the pools are missing.
    problems = check(cfg, _site_slurm(cfg, ""))
    assert any("ResumeProgram" in p for p in problems)
    assert any("JobSubmitPlugins" in p for p in problems)
    assert sum("does not exist in Slurm" in p for p in problems) == len(cfg.pools)
    # A wrapper others can write: slurmctld would silently switch power saving off.
    os.chmod(cfg.slurm.bin_dir / "resume", 0o777)
    problems = check(cfg, _site_slurm(cfg, rendered.slurm_conf))
    assert problems and "writable by group or others" in problems[0]


def test_conf_check_reports_an_unreachable_slurm(cfg):
    class Down(FragmentSlurm):
        def show_config(self):
            raise SlurmError("scontrol show config: Unable to contact slurm controller")

    assert check(cfg, Down("", {})) == ["cannot read the running Slurm: scontrol show config: Unable to contact "
                                        "slurm controller"]


# ---- providers build offline, with stand-in secret files --------------------------------------------

def _stand_in_secrets(tmp_path: Path) -> Path:
    """A copy of the example whose secret files are throwaway stand-ins, 0600, in TMP_PATH."""
    import asyncssh

    etc = tmp_path / "etc-slurm-bridge"
    etc.mkdir()
    key = asyncssh.generate_private_key("ssh-ed25519")
    key.write_private_key(str(etc / "id_ed25519"))
    (etc / "ssh_known_hosts").write_text("")
    (etc / "gcp-credentials.json").write_text('{"type": "stand-in"}\n')
    munge = tmp_path / "munge.key"
    munge.write_bytes(os.urandom(1024))
    slurm_etc = tmp_path / "etc-slurm"
    slurm_etc.mkdir()
    (slurm_etc / "slurm.conf").write_text(SITE_SLURM_CONF)
    for f in (etc / "id_ed25519", etc / "gcp-credentials.json", munge):
        os.chmod(f, 0o600)
    text = EXAMPLE.read_text()
    text = text.replace('"/etc/slurm-bridge/', f'"{etc}/').replace('"/etc/munge/munge.key"', f'"{munge}"')
    text = text.replace('slurm_conf_dir = "/etc/slurm"', f'slurm_conf_dir = "{slurm_etc}"')
    assert not re.search(r'"/etc/(munge|slurm-bridge)/', text), "a secret path was not rewritten"
    path = tmp_path / "bridge.toml"
    path.write_text(text)
    return path


def test_providers_build_offline_with_private_secrets(tmp_path):
    from slurm_bridge import secretfiles
    from slurm_bridge.providers.registry import build

    cfg = load_config(_stand_in_secrets(tmp_path))
    for secret in (*cfg.ssh.client_keys, cfg.ssh.munge_key, *cfg.bootstrap.client_keys, cfg.bootstrap.munge_key,
                   cfg.gcp.credentials_file):
        assert secret.exists() and secretfiles.problem(secret) is None, secret
    providers = build(cfg)
    assert set(providers) == {"aws", "gcp", "ssh"}
    assert all(callable(getattr(p, "launch", None)) for p in providers.values())


def test_a_readable_munge_key_is_refused_at_build(tmp_path):
    from slurm_bridge.providers.registry import build

    cfg = load_config(_stand_in_secrets(tmp_path))
    os.chmod(cfg.ssh.munge_key, 0o644)
    with pytest.raises(Exception, match="munge key"):
        build(cfg)
