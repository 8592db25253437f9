"""The config loader on real files: the documented example, and the mistakes admins make."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from slurm_bridge import config as config_mod
from slurm_bridge.catalog import EU_MEMBERS, ISO_COUNTRIES
from slurm_bridge.config import Config, load_config, parse_config
from slurm_bridge.errors import ConfigError
from slurm_bridge.models import Zone

EXAMPLE = """\
[cluster]
name = "hpc1"                      # tag/label on every instance
state_dir = "/var/lib/slurm-bridge"

[slurm]
watch_partitions = ["gpu"]         # on-prem GPU partitions
suspend_time = 300                 # idle seconds before a cloud node is suspended
resume_timeout = 900
suspend_timeout = 120

[policy]
burst_after = 600
poll_interval = 15
max_cloud_nodes = 64

[zones]                            # residency zones: name -> ISO 3166 countries
de = ["DE"]
eu = "EU"                          # the EU member states
any = "*"

[accounts.default]                 # accounts not listed
zone = "eu"
[accounts.medical]
zone = "de"
budget_usd_month = 5000

[[pools]]                          # nodes a100-de-[0-7], partition burst-a100-de
name = "a100-de"
size = 8
zone = "de"
cpus = 96
memory_mb = 1000000
gpus = "a100:8"
spot = false
instance_types = { local = "lab-a100x8", aws = "p4d.24xlarge", gcp = "a2-highgpu-8g" }

[providers.local]
[[providers.local.regions]]
name = "lab-de"
country = "DE"
capacity = 4                       # instances at once; 0 = always out of capacity
boot_seconds = 2
prices = { "lab-a100x8" = 32.0 }   # USD per hour
[[providers.local.regions]]
name = "lab-nl"
country = "NL"
capacity = 4
boot_seconds = 2
prices = { "lab-a100x8" = 24.0 }
"""

SECOND_POOL = """
[[pools]]
name = "a100-de"
size = 2
zone = "eu"
cpus = 8
memory_mb = 64000
instance_types = { local = "lab-a100x8" }
"""


def edit(old: str, new: str) -> str:
    """The example with the first OLD replaced; fails loudly if OLD is not in it."""
    assert old in EXAMPLE, old
    return EXAMPLE.replace(old, new, 1)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    """The problems reported for TEXT, without the leading file name."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == "; ".join(info.value.problems)
    prefix = f"{path}: "
    assert all(p.startswith(prefix) for p in info.value.problems), info.value.problems
    return [p[len(prefix):] for p in info.value.problems]


def test_example_loads_with_every_field(tmp_path):
    path = write(tmp_path, EXAMPLE)
    cfg = load_config(path)
    assert cfg.source == path
    assert cfg.cluster == config_mod.ClusterConfig("hpc1", Path("/var/lib/slurm-bridge"), None)
    assert cfg.slurm == config_mod.SlurmConfig(
        watch_partitions=("gpu",), suspend_time=300, resume_timeout=900, suspend_timeout=120,
        resume_rate=0, suspend_rate=0, slurm_conf=Path("/etc/slurm/slurm.conf"),
        bin_dir=Path("/usr/local/libexec/slurm-bridge"), slurm_user="slurm", tree_width=65533)
    assert cfg.policy == config_mod.PolicyConfig(600, 15, 64, 600, 300)

    assert sorted(cfg.zones) == ["any", "de", "eu"]
    assert cfg.zone("de") == Zone("de", frozenset({"DE"}))
    assert cfg.zone("eu") == Zone("eu", EU_MEMBERS)
    assert cfg.zone("any") == Zone("any", None)

    assert sorted(cfg.accounts) == ["default", "medical"]
    assert cfg.accounts["default"] == config_mod.AccountConfig("default", cfg.zone("eu"), None, True)
    assert cfg.account("medical") == config_mod.AccountConfig("medical", cfg.zone("de"), 5000.0, True)
    assert cfg.account("physics") is cfg.accounts["default"]

    (pool,) = cfg.pools
    assert (pool.name, pool.size, pool.zone, pool.cpus, pool.memory_mb) == ("a100-de", 8, cfg.zone("de"), 96, 1000000)
    assert (pool.gpu_type, pool.gpu_count, pool.spot) == ("a100", 8, False)
    assert dict(pool.instance_types) == {"local": "lab-a100x8", "aws": "p4d.24xlarge", "gcp": "a2-highgpu-8g"}
    assert pool.partition == "burst-a100-de"
    assert pool.features == ()
    assert pool.node_names == tuple(f"a100-de-{i}" for i in range(8))
    assert pool.hostlist == "a100-de-[0-7]"
    assert cfg.pool("a100-de") is pool

    assert cfg.local_regions == (
        config_mod.LocalRegion("lab-de", "DE", 4, 2.0, {"lab-a100x8": 32.0}, {}),
        config_mod.LocalRegion("lab-nl", "NL", 4, 2.0, {"lab-a100x8": 24.0}, {}),
    )
    assert isinstance(cfg.local_regions[0].boot_seconds, float)


def test_config_is_immutable(tmp_path):
    cfg = load_config(write(tmp_path, EXAMPLE))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.pools[0].size = 9  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.zones["x"] = Zone("x", None)  # type: ignore[index]
    with pytest.raises(TypeError):
        cfg.pools[0].instance_types["aws"] = "p5.48xlarge"  # type: ignore[index]


def test_pool_for_node(tmp_path):
    cfg = load_config(write(tmp_path, EXAMPLE))
    assert cfg.pool_for_node("a100-de-0").name == "a100-de"
    assert cfg.pool_for_node("a100-de-7").name == "a100-de"
    assert cfg.pool_for_node("a100-de-8") is None       # beyond size
    assert cfg.pool_for_node("a100-de-07") is None      # Slurm would not name it so
    assert cfg.pool_for_node("a100-de") is None
    assert cfg.pool_for_node("gpu01") is None
    with pytest.raises(KeyError):
        cfg.pool("h100-de")
    with pytest.raises(KeyError):
        cfg.zone("fr")


MISTAKES = [
    pytest.param(edit('size = 8\nzone = "de"', 'size = 8\nzone = "dee"'),
                 'pools[0].zone: unknown zone "dee" (known: any, de, eu)', id="unknown-zone"),
    pytest.param(edit("suspend_time = 300", "suspend_tme = 300"),
                 "slurm.suspend_tme: unknown key (did you mean suspend_time?)", id="unknown-key-suggestion"),
    pytest.param(edit('country = "NL"', 'country = "XX"'),
                 'providers.local.regions[1].country: unknown ISO 3166 country code "XX"', id="bad-country"),
    pytest.param(edit('de = ["DE"]', 'de = ["DE", "UK"]'),
                 'zones.de[1]: unknown ISO 3166 country code "UK" (did you mean GB?)', id="uk-is-gb"),
    pytest.param(EXAMPLE + SECOND_POOL,
                 'pools[1].name: duplicate pool name "a100-de" (also pools[0])', id="duplicate-pool"),
    pytest.param(edit("size = 8", 'size = "8"'),
                 'pools[0].size: expected an integer, got "8"', id="wrong-type"),
    pytest.param(edit("cpus = 96", "cpus = true"),
                 "pools[0].cpus: expected an integer, got true", id="bool-is-not-int"),
    pytest.param(edit('gpus = "a100:8"', 'gpus = "a100x8"'),
                 'pools[0].gpus: expected "<count>" or "<type>:<count>" as in "a100:8", got "a100x8"',
                 id="bad-gpus"),
    pytest.param(edit("capacity = 4 ", "capacity = -1 "),
                 "providers.local.regions[0].capacity: must be at least 0, got -1", id="negative-capacity"),
    pytest.param(EXAMPLE + '[providers.azure]\nregions = []\n',
                 "providers.azure: unknown provider (known: aws, gcp, local, ssh)", id="unknown-provider"),
    pytest.param(EXAMPLE + '[providers.locall]\n',
                 "providers.locall: unknown provider (did you mean local?)", id="provider-typo"),
    pytest.param(EXAMPLE + '[providers.ssh]\nknown_hosts = "/etc/slurm-bridge/known_hosts"\n'
                 'client_keys = ["/etc/slurm-bridge/id_ed25519"]\nusername = "sb"\n',
                 "providers.ssh.groups: missing required key", id="ssh-without-groups"),
    pytest.param(EXAMPLE + '[providers.aws]\nregions = ["eu-centrl-1"]\nlaunch_template = "slurm-bridge"\n',
                 'providers.aws.regions[0]: unknown AWS region "eu-centrl-1" (did you mean eu-central-1?)',
                 id="aws-unknown-region"),
    pytest.param(EXAMPLE + '[providers.aws]\nregions = ["eu-central-1"]\n',
                 "providers.aws.launch_template: missing required key", id="aws-no-template"),
    pytest.param(EXAMPLE + '[providers.gcp]\nproject = "my-project"\nregions = ["europe-west3"]\n'
                 'instance_template = "t"\nzones = { "europe-west3" = ["europe-west4-a"] }\n',
                 'providers.gcp.zones.europe-west3: zone "europe-west4-a" is not in region europe-west3',
                 id="gcp-zone-outside-region"),
    pytest.param(EXAMPLE + '[partitions.gpu]\nzone = "mars"\n',
                 'partitions.gpu.zone: unknown zone "mars" (known: any, de, eu)', id="partition-zone"),
    pytest.param(EXAMPLE + '[[prices.overrides]]\nprovider = "aws"\nregion = "eu-central-1"\n'
                 'instance_type = "p4d.24xlarge"\n',
                 "prices.overrides[0]: give ondemand, spot or both", id="price-override-empty"),
    pytest.param(edit('name = "hpc1"', ""), "cluster.name: missing required key", id="missing-cluster-name"),
    pytest.param(edit("spot = false", 'spot = false\npartition = "gpu"'),
                 'pools[0].partition: "gpu" is a watched on-prem partition', id="partition-clash-onprem"),
    pytest.param(EXAMPLE + SECOND_POOL.replace('"a100-de"', '"a100-eu"') + 'partition = "burst-a100-de"\n',
                 'pools[1].partition: "burst-a100-de" is already the partition of pool a100-de',
                 id="partition-clash-pools"),
    pytest.param(edit('gcp = "a2-highgpu-8g" }', 'gcp = "a2-highgpu-8g", azure = "ND96asr" }'),
                 "pools[0].instance_types.azure: unknown provider (known: aws, gcp, local, ssh)",
                 id="unknown-instance-type-provider"),
    pytest.param(edit("resume_timeout = 900", "resume_timeout = 2"),
                 "slurm.resume_timeout: 2 must exceed the boot_seconds of local region lab-de (2), "
                 "or Slurm marks its nodes down before they boot", id="resume-timeout-below-boot"),
    pytest.param(edit("budget_usd_month = 5000", "budget_usd_month = -5"),
                 "accounts.medical.budget_usd_month: must be at least 0, got -5", id="negative-budget"),
    pytest.param(edit('name = "hpc1"', 'name = "HPC_1"'),
                 "cluster.name: invalid name \"HPC_1\": lower-case letters, digits and '-', starting with a "
                 "letter, at most 40", id="bad-cluster-label"),
    pytest.param(edit('de = ["DE"]', 'de = "DE"'),
                 'zones.de: expected an array of ISO country codes, "EU" or "*", got "DE" '
                 '(write ["DE"] for one country)', id="zone-bare-string"),
    pytest.param(edit('any = "*"', 'any = "*"\nFR = ["FR"]'),
                 "zones.FR: invalid zone name \"FR\": lower-case letters, digits and '_', starting with a "
                 "letter, at most 31 (it becomes res_<name>)", id="bad-zone-name"),
    pytest.param(edit('name = "lab-nl"', 'name = "lab-de"'),
                 'providers.local.regions[1].name: duplicate region name "lab-de" (also regions[0])',
                 id="duplicate-region"),
    pytest.param(edit('"lab-a100x8" = 24.0', '"lab-a100x8" = 0'),
                 'providers.local.regions[1].prices.lab-a100x8: a price must be above 0 USD per hour, got 0',
                 id="zero-price"),
    pytest.param(edit('state_dir = "/var/lib/slurm-bridge"', 'state_dir = "var/lib"'),
                 'cluster.state_dir: must be an absolute path, got "var/lib"', id="relative-state-dir"),
    pytest.param(edit("spot = false", 'spot = false\nfeatures = ["nvlink", "res_de"]'),
                 'pools[0].features[1]: "res_de": res_* features come from zones', id="res-feature-by-hand"),
    pytest.param(edit("spot = false", 'spot = "no"'),
                 'pools[0].spot: expected true or false, got "no"', id="bool-type"),
]


@pytest.mark.parametrize("text, expected", MISTAKES)
def test_each_mistake_is_named_with_key_path_and_reason(tmp_path, text, expected):
    assert problems(tmp_path, text) == [expected]


def test_every_problem_is_reported_in_one_pass(tmp_path):
    text = edit("suspend_time = 300", "suspend_tme = 300").replace('size = 8', 'size = "8"')
    found = problems(tmp_path, text)
    assert found == ["slurm.suspend_tme: unknown key (did you mean suspend_time?)",
                     'pools[0].size: expected an integer, got "8"']


def test_misspelt_required_table(tmp_path):
    assert problems(tmp_path, edit("[slurm]\n", "[slurmd]\n")) == [
        "slurmd: unknown key (did you mean slurm?)", "slurm: missing required table"]


def test_a_broken_zone_is_reported_once_not_at_each_use(tmp_path):
    # accounts.default uses "eu": it must not also be called unknown.
    assert problems(tmp_path, edit('eu = "EU"', "eu = 27")) == [
        'zones.eu: expected an array of ISO country codes, "EU" or "*", got 27']


def test_toml_syntax_error_names_line_and_column(tmp_path):
    path = write(tmp_path, edit('name = "hpc1"', "name = hpc1"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: line 2, column 8: ")
    assert "\n" not in str(info.value)


def test_unreadable_file(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read: No such file or directory$"):
        load_config(missing)


def test_env_var_names_the_file(tmp_path, monkeypatch):
    path = write(tmp_path, EXAMPLE)
    monkeypatch.setenv("SLURM_BRIDGE_CONFIG", str(path))
    assert load_config().source == path
    # An explicit path wins over the environment.
    monkeypatch.setenv("SLURM_BRIDGE_CONFIG", str(tmp_path / "elsewhere.toml"))
    assert load_config(path).cluster.name == "hpc1"
    with pytest.raises(ConfigError, match="elsewhere.toml: cannot read"):
        load_config()


def test_default_path_without_env(tmp_path, monkeypatch):
    assert config_mod.DEFAULT_CONFIG_PATH == Path("/etc/slurm-bridge/bridge.toml")
    monkeypatch.delenv("SLURM_BRIDGE_CONFIG", raising=False)
    path = write(tmp_path, EXAMPLE)
    monkeypatch.setattr(config_mod, "DEFAULT_CONFIG_PATH", path)
    assert load_config().source == path


MINIMAL = {"cluster": {"name": "c1", "state_dir": "/srv/sb"}, "slurm": {"watch_partitions": ["gpu"]}}


def test_minimal_config_takes_defaults():
    cfg = parse_config(MINIMAL)
    assert isinstance(cfg, Config) and cfg.source is None
    assert dict(cfg.zones) == {"any": Zone("any", None)}
    assert cfg.accounts["default"].zone == Zone("any", None)
    assert cfg.account("anyone").name == "default"
    assert cfg.pools == () and cfg.local_regions == ()
    assert cfg.policy == config_mod.PolicyConfig()
    assert cfg.slurm.slurm_user == "slurm" and cfg.slurm.tree_width == 65533


def test_parse_config_labels_messages_with_source():
    with pytest.raises(ConfigError) as info:
        parse_config({**MINIMAL, "polcy": {}}, source="reload.toml")
    assert info.value.problems == ["reload.toml: polcy: unknown key (did you mean policy?)"]


def pool_dict(**over) -> dict:
    return {"name": "p", "size": 1, "zone": "any", "cpus": 4, "memory_mb": 1000,
            "instance_types": {"local": "t"}, **over}


@pytest.mark.parametrize("gpus, expected", [
    ("a100:8", ("a100", 8)), ("8", (None, 8)), ("0", (None, 0)), (4, (None, 4)), (None, (None, 0)),
])
def test_gpus_forms(gpus, expected):
    pool = pool_dict() if gpus is None else pool_dict(gpus=gpus)
    (p,) = parse_config({**MINIMAL, "pools": [pool]}).pools
    assert (p.gpu_type, p.gpu_count) == expected


@pytest.mark.parametrize("gpus", ["a100:0", "a100", "a100:-1", "-1", -1, 2.5, "a100:8:1"])
def test_bad_gpus_rejected(gpus):
    with pytest.raises(ConfigError, match=r"<config>: pools\[0\]\.gpus: expected"):
        parse_config({**MINIMAL, "pools": [pool_dict(gpus=gpus)]})


def test_single_node_pool_and_partition_override():
    (p,) = parse_config({**MINIMAL, "pools": [pool_dict(partition="cloud", features=["nvlink"])]}).pools
    assert p.hostlist == "p-0" and p.node_names == ("p-0",)
    assert p.partition == "cloud" and p.features == ("nvlink",)


def test_residency_zones():
    cfg = parse_config({**MINIMAL, "zones": {"eu": "EU", "any": "*", "eu_ch": ["eu", "ch"], "nordic": ["se", "NO"]},
                        "cluster": {**MINIMAL["cluster"], "country": "de"}})
    eu, world = cfg.zone("eu"), cfg.zone("any")
    assert len(eu.countries) == 27
    assert eu.contains("DE") and eu.contains("gr") and not eu.contains("CH") and not eu.contains("GB")
    assert world.countries is None
    assert all(world.contains(c) for c in ("CH", "BR", "US", "DE"))
    assert cfg.zone("eu_ch").countries == EU_MEMBERS | {"CH"}
    assert cfg.zone("nordic").countries == frozenset({"SE", "NO"})
    assert cfg.cluster.country == "DE"
    assert cfg.zone("nordic").within(world) and not cfg.zone("nordic").within(eu)


def test_account_without_zone_takes_the_default_zone():
    cfg = parse_config({**MINIMAL, "zones": {"de": ["DE"], "any": "*"},
                        "accounts": {"default": {"zone": "de"}, "physics": {"burst": False}}})
    assert cfg.account("physics") == config_mod.AccountConfig("physics", Zone("de", frozenset({"DE"})), None, False)


def test_catalog():
    assert len(ISO_COUNTRIES) == 249
    assert len(EU_MEMBERS) == 27 and EU_MEMBERS <= ISO_COUNTRIES
    assert "GR" in EU_MEMBERS and "EL" not in ISO_COUNTRIES and "GB" not in EU_MEMBERS


def test_cost_section_names_the_key_and_the_reason():
    import tomllib

    from configs import EXAMPLE
    from slurm_bridge.config import parse_config

    onprem = ("\n[cost.onprem]\ncapex_per_gpu_usd = 30000\namortisation_years = 4\npower_kw_per_gpu = 0.7\n"
              "pue = {pue}\nusd_per_kwh = 0.25\nops_usd_per_gpu_year = 2000\ngpus = 64\n")
    good = parse_config(tomllib.loads(EXAMPLE + "\n[cost]\nweight = \"billing\"\n" + onprem.format(pue=1.3)))
    assert good.cost.weight == "billing" and good.cost.onprem.gpus == 64
    assert round(good.cost.onprem.usd_per_gpu_hour, 4) == round((30000 / 4 + 2000) / 8766 + 0.7 * 1.3 * 0.25, 4)
    assert parse_config(tomllib.loads(EXAMPLE)).cost.onprem is None
    with pytest.raises(ConfigError) as err:
        parse_config(tomllib.loads(EXAMPLE + "\n[cost]\nweight = \"cpu\"\ningest_interval = 1\n"
                                   + onprem.format(pue=0.9).replace("gpus = 64", "gpus = 64\nracks = 2")))
    text = str(err.value)
    assert 'cost.weight: must be "gpu" or "billing", got "cpu"' in text
    assert "cost.ingest_interval: must be at least 10" in text
    assert "cost.onprem.racks: unknown key" in text
