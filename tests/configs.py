"""Config text and builders shared by the pure unit tests (render, selector).

A plain module rather than a conftest: the tests import what they use, so a
reader sees where EXAMPLE comes from.
"""

from __future__ import annotations

from pathlib import Path

from slurm_bridge.config import Config, load_config, parse_config

# The documented example: one a100 pool in zone de, regions lab-de (DE) and lab-nl (NL).
EXAMPLE = """\
[cluster]
name = "hpc1"
state_dir = "/var/lib/slurm-bridge"
[slurm]
watch_partitions = ["gpu"]
suspend_time = 300
resume_timeout = 900
suspend_timeout = 120
[policy]
burst_after = 600
poll_interval = 15
max_cloud_nodes = 64
[zones]
de = ["DE"]
eu = "EU"
any = "*"
[accounts.default]
zone = "eu"
[accounts.medical]
zone = "de"
budget_usd_month = 5000
[[pools]]
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
capacity = 4
boot_seconds = 2
prices = { "lab-a100x8" = 32.0 }
[[providers.local.regions]]
name = "lab-nl"
country = "NL"
capacity = 4
boot_seconds = 2
prices = { "lab-a100x8" = 24.0 }
"""


def edit(text: str, old: str, new: str) -> str:
    """TEXT with the first OLD replaced by NEW; fails loudly if OLD is absent (a silent no-op
    would leave a test checking the unedited example)."""
    assert old in text, f"{old!r} not in the config text"
    return text.replace(old, new, 1)


def write_config(tmp_path: Path, text: str, name: str = "bridge.toml") -> tuple[Config, Path]:
    """Write TEXT to a real file and load it the way the CLI does."""
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return load_config(path), path


def config_dict(*, zones: dict, pools: list[dict], regions: list[dict], accounts: dict | None = None,
                country: str | None = None) -> dict:
    """A minimal valid config document for parse_config: only what the selector reads varies."""
    cluster = {"name": "hpc1", "state_dir": "/var/lib/slurm-bridge"}
    if country:
        cluster["country"] = country
    data = {
        "cluster": cluster,
        "slurm": {"watch_partitions": ["gpu"]},
        "zones": zones,
        "pools": pools,
        "providers": {"local": {"regions": regions}},
    }
    if accounts is not None:
        data["accounts"] = accounts
    return data


def pool(name: str = "p", zone: str = "any", itype: str = "t1", spot: bool = False, **extra) -> dict:
    return {"name": name, "size": 2, "zone": zone, "cpus": 8, "memory_mb": 64000, "gpus": "a100:1",
            "spot": spot, "instance_types": {"local": itype}, **extra}


def region(name: str, country: str, prices: dict | None = None, spot_prices: dict | None = None) -> dict:
    out = {"name": name, "country": country, "prices": prices or {}}
    if spot_prices is not None:
        out["spot_prices"] = spot_prices
    return out


def build(**kwargs) -> Config:
    return parse_config(config_dict(**kwargs))
