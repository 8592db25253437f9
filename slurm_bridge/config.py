"""The bridge config: one TOML file, validated into frozen dataclasses.

Every problem found is reported, not just the first, each as one line
`<file>: <key path>: <reason>`, so an admin fixes the file in one pass.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from .catalog import EU_MEMBERS
from .cloud_config import AwsConfig, GcpConfig, PriceOverride, parse_aws, parse_gcp, parse_price_overrides
from .costmodel import OnpremModel
from .errors import ConfigError
from .models import Zone
from .bootstrap_config import BootstrapConfig, parse_bootstrap
from .ssh_config import SshConfig, parse_ssh
from .tomlcheck import (_BAD, _MISSING, _WORD, _Checker, _is_int, _key, _ok, _show, _suggest,
                        _Table)

DEFAULT_CONFIG_PATH = Path("/etc/slurm-bridge/bridge.toml")
ENV_VAR = "SLURM_BRIDGE_CONFIG"
PROVIDER_KINDS = ("aws", "gcp", "local", "ssh")
_NOT_YET: tuple[str, ...] = ()

_LABEL_RULE = "lower-case letters, digits and '-', starting with a letter"
_LABEL = (re.compile(r"[a-z][a-z0-9-]{0,30}"), _LABEL_RULE + ", at most 31")
_CLUSTER = (re.compile(r"[a-z][a-z0-9-]{0,39}"), _LABEL_RULE + ", at most 40")
_ZONE = (re.compile(r"[a-z][a-z0-9_]{0,30}"),
         "lower-case letters, digits and '_', starting with a letter, at most 31 (it becomes res_<name>)")
# sacctmgr stores account names in lower case, so any other spelling never matches a job.
_ACCOUNT = (re.compile(r"[a-z0-9_][a-z0-9_.-]*"),
            "Slurm accounts are lower case: letters, digits, '_', '.', '-'")
_USER = (re.compile(r"[a-z_][a-z0-9_-]*"), "not a Unix user name")
_GPUS = re.compile(r"(?:([A-Za-z0-9_][A-Za-z0-9_.-]*):)?([0-9]+)")
_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


class ConfigProblems(ConfigError):
    """A config error listing every problem found, one line each."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = list(problems)


def _frozen(d: Mapping | None = None) -> Mapping:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class ClusterConfig:
    name: str
    state_dir: Path
    country: str | None = None      # the on-prem site; None: on-prem counts as inside every zone


@dataclass(frozen=True)
class SlurmConfig:
    watch_partitions: tuple[str, ...]
    suspend_time: int = 300
    resume_timeout: int = 900
    suspend_timeout: int = 120
    resume_rate: int = 0
    suspend_rate: int = 0
    slurm_conf: Path = Path("/etc/slurm/slurm.conf")
    bin_dir: Path = Path("/usr/local/libexec/slurm-bridge")
    slurm_user: str = "slurm"
    tree_width: int = 65533


@dataclass(frozen=True)
class PolicyConfig:
    burst_after: int = 600
    poll_interval: int = 15
    max_cloud_nodes: int = 64
    block_seconds: int = 600
    orphan_grace_s: int = 300
    reconcile_interval: int = 60
    burst_interactive: bool = False      # salloc/srun allocations may burst too (they hold a terminal)
    worth_boots: int = 3                 # a job whose time limit is under this many boot times stays home
    cloud_boot_seconds: int = 180        # boot time assumed for AWS, GCP and SSH nodes


@dataclass(frozen=True)
class AccountConfig:
    name: str
    zone: Zone
    budget_usd_month: float | None = None
    burst: bool = True


@dataclass(frozen=True)
class PoolConfig:
    name: str
    size: int
    zone: Zone
    cpus: int
    memory_mb: int
    gpu_type: str | None
    gpu_count: int
    spot: bool
    instance_types: Mapping[str, str]   # provider kind -> instance type
    partition: str
    features: tuple[str, ...] = ()

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(f"{self.name}-{i}" for i in range(self.size))

    @property
    def hostlist(self) -> str:
        return f"{self.name}-0" if self.size == 1 else f"{self.name}-[0-{self.size - 1}]"


@dataclass(frozen=True)
class LocalRegion:
    name: str
    country: str
    capacity: int = 4
    boot_seconds: float = 2.0
    prices: Mapping[str, float] = field(default_factory=_frozen)        # USD per hour
    spot_prices: Mapping[str, float] = field(default_factory=_frozen)
    # "slurmd": the instance runs slurmd at boot, like an image with the key baked in. "ssh": it runs
    # only an SSH server, like a cloud image with cloud-init, and [bootstrap] brings it up.
    image: str = "slurmd"


@dataclass(frozen=True)
class CostConfig:
    """[cost]: how cloud time is shared among jobs, how often sacct is read, and what owned GPUs cost."""

    weight: str = "gpu"                   # share a node's time by allocated GPUs, or by Slurm's billing TRES
    ingest_interval: int = 300            # seconds between the daemon's sacct reads
    onprem: OnpremModel | None = None     # [cost.onprem]; on-prem jobs are priced only with it


@dataclass(frozen=True)
class Config:
    cluster: ClusterConfig
    slurm: SlurmConfig
    policy: PolicyConfig
    zones: Mapping[str, Zone]
    accounts: Mapping[str, AccountConfig]   # always holds "default"
    pools: tuple[PoolConfig, ...]
    local_regions: tuple[LocalRegion, ...]
    source: Path | None = None
    # The local provider's "cloud" is a lab (`slurm-bridge lab up --dir`): its hosts join that lab's network.
    local_lab_dir: Path = Path("/var/tmp/slurm-bridge-lab")
    aws: AwsConfig | None = None
    gcp: GcpConfig | None = None
    ssh: SshConfig | None = None
    partition_zones: Mapping[str, Zone] = field(default_factory=_frozen)   # [partitions.NAME] zone
    price_overrides: tuple[PriceOverride, ...] = ()
    cost: CostConfig = field(default_factory=lambda: CostConfig())
    bootstrap: BootstrapConfig | None = None   # [bootstrap]: munge key and config over SSH to cloud instances

    def account(self, name: str) -> AccountConfig:
        return self.accounts.get(name) or self.accounts["default"]

    def pool(self, name: str) -> PoolConfig:
        for p in self.pools:
            if p.name == name:
                return p
        raise KeyError(f"no pool named {name!r}")

    def pool_for_node(self, node_name: str) -> PoolConfig | None:
        # Node names are "<pool>-<index>" and an index never contains "-", so the
        # last "-" splits them unambiguously; that is also why the node names of
        # two distinct pools can never clash.
        prefix, _, index = node_name.rpartition("-")
        if not index.isdigit() or str(int(index)) != index:
            return None
        for p in self.pools:
            if p.name == prefix and int(index) < p.size:
                return p
        return None

    def zone(self, name: str) -> Zone:
        try:
            return self.zones[name]
        except KeyError:
            raise KeyError(f"no zone named {name!r}") from None


# ---------------------------------------------------------------- reading ---

# --------------------------------------------------------------- sections ---

def _section(ck: _Checker, data: dict, key: str, known: tuple[str, ...]) -> _Table | None:
    if key not in data:
        ck.add(key, "missing required table")
        return None
    return ck.table(key, data[key], known)


def _cluster(ck: _Checker, data: dict) -> ClusterConfig | None:
    t = _section(ck, data, "cluster", ("name", "state_dir", "country"))
    if t is None:
        return None
    name, state_dir = t.name("name", _CLUSTER), t.abspath("state_dir")
    country = ck.country(t.at("country"), t.data["country"]) if "country" in t.data else None
    return ClusterConfig(name, state_dir, country) if _ok(name, state_dir, country) else None


def _numbers(t: _Table, cls: type, minimum: dict[str, int]) -> dict[str, Any]:
    """Reads every int field of CLS with its dataclass default; at least 0 unless MINIMUM says."""
    return {f.name: t.get(f.name, "int", f.default, minimum.get(f.name, 0))
            for f in dataclasses.fields(cls) if type(f.default) is int}


def _slurm(ck: _Checker, data: dict) -> SlurmConfig | None:
    t = _section(ck, data, "slurm", tuple(SlurmConfig.__dataclass_fields__))
    if t is None:
        return None
    d = SlurmConfig(())
    positive = ("suspend_time", "resume_timeout", "suspend_timeout", "tree_width")
    v = _numbers(t, SlurmConfig, dict.fromkeys(positive, 1))
    v["watch_partitions"] = t.names("watch_partitions")
    if t.data.get("watch_partitions") == []:
        v["watch_partitions"] = ck.add(t.at("watch_partitions"), "name at least one on-prem partition")
    if _is_int(v["tree_width"]) and v["tree_width"] > 65533:
        v["tree_width"] = ck.add(t.at("tree_width"), f"Slurm allows at most 65533, got {v['tree_width']}")
    v["slurm_conf"] = t.abspath("slurm_conf", str(d.slurm_conf))
    v["bin_dir"] = t.abspath("bin_dir", str(d.bin_dir))
    v["slurm_user"] = t.name("slurm_user", _USER, d.slurm_user)
    return SlurmConfig(**v) if _ok(*v.values()) else None


def _policy(ck: _Checker, data: dict) -> PolicyConfig | None:
    t = ck.table("policy", data.get("policy", _MISSING), tuple(PolicyConfig.__dataclass_fields__))
    v = _numbers(t, PolicyConfig, {"poll_interval": 1, "reconcile_interval": 1}) if t else {}
    if t:
        v["burst_interactive"] = t.get("burst_interactive", "bool", False)
    return PolicyConfig(**v) if t and _ok(*v.values()) else None


def _zones(ck: _Checker, data: dict) -> dict[str, Zone | None]:
    """Zone name -> Zone; None marks a zone already reported as broken, so references to it stay quiet."""
    raw = data.get("zones", {"any": "*"})
    if ck.typed("zones", raw, "table") is _BAD:
        return {}
    zones: dict[str, Zone | None] = {}
    for name, value in raw.items():
        path = _key("zones", name)
        if not _ZONE[0].fullmatch(name):
            ck.add(path, f"invalid zone name {_show(name)}: {_ZONE[1]}")
            continue
        before, countries = len(ck.problems), set()
        if value == "*":
            zones[name] = Zone(name, None)
            continue
        if isinstance(value, str) and value.upper() == "EU":
            countries |= EU_MEMBERS
        elif not isinstance(value, list):
            hint = f" (write [{_show(value)}] for one country)" if isinstance(value, str) else ""
            ck.add(path, f'expected an array of ISO country codes, "EU" or "*", got {_show(value)}{hint}')
        elif not value:
            ck.add(path, "a zone needs at least one country")
        for i, item in enumerate(value if isinstance(value, list) else []):
            if item == "*":
                ck.add(f"{path}[{i}]", '"*" means every country and must stand alone: write "*"')
            elif isinstance(item, str) and item.upper() == "EU":
                countries |= EU_MEMBERS
            elif (code := ck.country(f"{path}[{i}]", item)) is not _BAD:
                countries.add(code)
        zones[name] = Zone(name, frozenset(countries)) if len(ck.problems) == before else None
    return zones


def _zone_ref(ck: _Checker, t: _Table, zones: dict[str, Zone | None], default: Any = _MISSING) -> Any:
    name = t.get("zone", "str", default)
    if not isinstance(name, str):
        return name
    if name not in zones:
        return ck.add(t.at("zone"), f"unknown zone {_show(name)} (known: {', '.join(sorted(zones))})")
    return zones[name] or _BAD


_ACCOUNT_KEYS = ("zone", "budget_usd_month", "burst")


def _accounts(ck: _Checker, data: dict, zones: dict[str, Zone | None]) -> dict[str, AccountConfig]:
    raw = data.get("accounts", {})
    tables = {}
    for name, value in (raw if ck.typed("accounts", raw, "table") is not _BAD else {}).items():
        if not _ACCOUNT[0].fullmatch(name):
            ck.add(_key("accounts", name), f"invalid account name {_show(name)}: {_ACCOUNT[1]}")
        elif (t := ck.table(_key("accounts", name), value, _ACCOUNT_KEYS)) is not None:
            tables[name] = t
    accounts = {"default": AccountConfig("default", zones.get("any") or Zone("any", None))}
    # The default goes first: an account that names no zone takes the default's.
    for name in sorted(tables, key=lambda n: n != "default"):
        t = tables[name]
        zone = _zone_ref(ck, t, zones, accounts["default"].zone)
        budget, burst = t.get("budget_usd_month", "number", None, 0), t.get("burst", "bool", True)
        if _ok(zone, budget, burst):
            accounts[name] = AccountConfig(name, zone, budget, burst)
    return accounts


def _gpus(ck: _Checker, t: _Table) -> Any:
    value = t.data.get("gpus", 0)
    if _is_int(value) and value >= 0:
        return (None, value)
    m = _GPUS.fullmatch(value) if isinstance(value, str) else None
    if m is None or (m.group(1) and int(m.group(2)) == 0):
        return ck.add(t.at("gpus"), f'expected "<count>" or "<type>:<count>" as in "a100:8", '
                                    f"got {_show(value)}")
    return (m.group(1) if int(m.group(2)) else None, int(m.group(2)))


def _instance_types(ck: _Checker, t: _Table) -> Any:
    raw = t.get("instance_types", "table")
    if raw is _BAD or not raw:
        return raw if raw is _BAD else ck.add(t.at("instance_types"), "name at least one instance type")
    before = len(ck.problems)
    for kind, itype in raw.items():
        p = _key(t.at("instance_types"), kind)
        # A kind with no [providers.<kind>] at this site is fine: the pool simply gets no region there.
        if kind not in PROVIDER_KINDS:
            ck.add(p, f"unknown provider ({_suggest(kind, list(PROVIDER_KINDS))})")
        elif ck.typed(p, itype, "str") is not _BAD and not itype.strip():
            ck.add(p, "empty instance type name")
    return _frozen(raw) if len(ck.problems) == before else _BAD


_POOL_KEYS = ("name", "size", "zone", "cpus", "memory_mb", "gpus", "spot", "instance_types", "partition",
              "features")


def _pool(ck: _Checker, path: str, value: Any, zones: dict[str, Zone | None]) -> PoolConfig | None:
    t = ck.table(path, value, _POOL_KEYS)
    if t is None:
        return None
    name = t.name("name", _LABEL)
    size, zone = t.get("size", "int", _MISSING, 1), _zone_ref(ck, t, zones)
    cpus, memory_mb = t.get("cpus", "int", _MISSING, 1), t.get("memory_mb", "int", _MISSING, 1)
    gpus, spot, types = _gpus(ck, t), t.get("spot", "bool", False), _instance_types(ck, t)
    partition = t.name("partition", _WORD, f"burst-{name}" if isinstance(name, str) else _BAD)
    features = t.names("features", [])
    for i, feature in enumerate(features if isinstance(features, tuple) else ()):
        if feature.startswith("res_"):
            # Zone features tell where a node runs; one set by hand could lie about it.
            features = ck.add(f"{t.at('features')}[{i}]", f"{_show(feature)}: res_* features come from zones")
    if not _ok(name, size, zone, cpus, memory_mb, gpus, spot, types, partition, features):
        return None
    return PoolConfig(name, size, zone, cpus, memory_mb, *gpus, spot, types, partition, tuple(features))


def _pools(ck: _Checker, data: dict, zones: dict[str, Zone | None], watched: tuple[str, ...]) -> list:
    raw = data.get("pools", [])
    if not isinstance(raw, list):
        ck.add("pools", f"expected an array of tables ([[pools]]), got {_show(raw)}")
        return []
    pools: list[PoolConfig] = []
    names: dict[str, int] = {}
    partitions: dict[str, str] = {}
    for i, value in enumerate(raw):
        pool = _pool(ck, f"pools[{i}]", value, zones)
        if pool is None:
            continue
        if pool.name in names:
            ck.add(f"pools[{i}].name",
                   f"duplicate pool name {_show(pool.name)} (also pools[{names[pool.name]}])")
        elif pool.partition in watched:
            ck.add(f"pools[{i}].partition", f"{_show(pool.partition)} is a watched on-prem partition")
        elif pool.partition in partitions:
            # A burst partition stands for one pool's zone; sharing one would blur which zone a job gets.
            ck.add(f"pools[{i}].partition",
                   f"{_show(pool.partition)} is already the partition of pool {partitions[pool.partition]}")
        else:
            names[pool.name], partitions[pool.partition] = i, pool.name
            pools.append(pool)
    return pools


def _prices(ck: _Checker, t: _Table, key: str) -> Any:
    raw, before = t.get(key, "table", {}), len(ck.problems)
    for itype, price in (raw.items() if raw is not _BAD else ()):
        if ck.typed(_key(t.at(key), itype), price, "number") is not _BAD and price <= 0:
            ck.add(_key(t.at(key), itype), f"a price must be above 0 USD per hour, got {_show(price)}")
    if raw is _BAD or len(ck.problems) > before:
        return _BAD
    return _frozen({k: float(v) for k, v in raw.items()})


def _local_region(ck: _Checker, path: str, value: Any) -> LocalRegion | None:
    t = ck.table(path, value, tuple(LocalRegion.__dataclass_fields__))
    if t is None:
        return None
    name, country = t.name("name", _LABEL), t.get("country", "str")
    country = ck.country(t.at("country"), country) if country is not _BAD else _BAD
    capacity, boot = t.get("capacity", "int", 4, 0), t.get("boot_seconds", "number", 2.0, 0)
    prices, spot_prices = _prices(ck, t, "prices"), _prices(ck, t, "spot_prices")
    image = t.get("image", "str", "slurmd")
    if image not in (_BAD, "slurmd", "ssh"):
        image = ck.add(t.at("image"), f"must be \"slurmd\" or \"ssh\", got {_show(image)}")
    if not _ok(name, country, capacity, boot, prices, spot_prices, image):
        return None
    return LocalRegion(name, country, capacity, boot, prices, spot_prices, image)


def _providers(ck: _Checker, data: dict) -> tuple[list[LocalRegion], Any, dict]:
    raw = data.get("providers", {})
    regions: list[LocalRegion] = []
    lab_dir: Any = _MISSING
    clouds: dict = {}
    for kind, value in (raw if ck.typed("providers", raw, "table") is not _BAD else {}).items():
        path = _key("providers", kind)
        if kind == "aws":
            clouds["aws"] = parse_aws(ck, path, value)
        elif kind == "gcp":
            clouds["gcp"] = parse_gcp(ck, path, value)
        elif kind == "ssh":
            clouds["ssh"] = parse_ssh(ck, path, value)
        elif kind in _NOT_YET:
            ck.add(path, "this provider is not available yet in this version")
        elif kind != "local":
            ck.add(path, f"unknown provider ({_suggest(kind, list(PROVIDER_KINDS))})")
        elif (t := ck.table(path, value, ("regions", "lab_dir"))) is not None:
            lab_dir = t.abspath("lab_dir", None)
            listed, seen = t.get("regions", "list", []), {}
            for i, item in enumerate(listed if listed is not _BAD else []):
                region = _local_region(ck, f"{path}.regions[{i}]", item)
                if region is not None and region.name in seen:
                    ck.add(f"{path}.regions[{i}].name",
                           f"duplicate region name {_show(region.name)} (also regions[{seen[region.name]}])")
                elif region is not None:
                    seen[region.name] = i
                    regions.append(region)
    return regions, lab_dir, clouds


def _partitions(ck: _Checker, data: dict, zones: dict[str, Zone | None]) -> dict[str, Zone]:
    raw = data.get("partitions", {})
    out = {}
    for name, value in (raw if ck.typed("partitions", raw, "table") is not _BAD else {}).items():
        if not _WORD[0].fullmatch(name):
            ck.add(_key("partitions", name), f"invalid partition name {_show(name)}: {_WORD[1]}")
        elif (t := ck.table(_key("partitions", name), value, ("zone",))) is not None:
            zone = _zone_ref(ck, t, zones)
            if _ok(zone):
                out[name] = zone
    return out


_TOP_KEYS = ("cluster", "slurm", "policy", "zones", "accounts", "partitions", "pools", "providers", "prices",
             "cost", "bootstrap")


def _cost(ck: _Checker, data: dict) -> CostConfig:
    raw = data.get("cost", _MISSING)
    if raw is _MISSING:
        return CostConfig()
    t = ck.table("cost", raw, ("weight", "ingest_interval", "onprem"))
    if t is None:
        return CostConfig()
    weight = t.get("weight", "str", "gpu")
    if weight not in (_BAD, "gpu", "billing"):
        weight = ck.add(t.at("weight"), f"must be \"gpu\" or \"billing\", got {_show(weight)}")
    interval = t.get("ingest_interval", "int", 300, 10)
    onprem = None
    table = t.get("onprem", "table", None)
    if isinstance(table, dict):
        try:
            onprem = OnpremModel.from_table(table)
        except ConfigError as exc:     # the model's message is "cost.onprem.<key>: <reason>"
            path, _, reason = str(exc).partition(": ")
            ck.add(path if path.startswith("cost.onprem") else "cost.onprem", reason or str(exc))
    return CostConfig(weight if isinstance(weight, str) else "gpu",
                      interval if _is_int(interval) else 300, onprem)


def _build(data: dict, label: str, source: Path | None) -> Config:
    ck = _Checker()
    _Table(ck, "", data, _TOP_KEYS)
    cluster, slurm, policy = _cluster(ck, data), _slurm(ck, data), _policy(ck, data)
    zones = _zones(ck, data)
    accounts = _accounts(ck, data, zones)
    pools = _pools(ck, data, zones, slurm.watch_partitions if slurm else ())
    regions, lab_dir, clouds = _providers(ck, data)
    partition_zones = _partitions(ck, data, zones)
    overrides = parse_price_overrides(ck, data)
    cost = _cost(ck, data)
    boot = parse_bootstrap(ck, data["bootstrap"]) if "bootstrap" in data else None
    if boot is not None:
        have = {"aws": clouds.get("aws"), "gcp": clouds.get("gcp"), "local": regions or None}
        for i, name in enumerate(boot.providers):
            if have.get(name) is None:
                ck.add(f"bootstrap.providers[{i}]", f"no [providers.{name}] is configured")
    for i, region in enumerate(regions):
        if "bootstrap" in data and boot is None:
            break       # [bootstrap] itself is wrong, and said so
        if region.image == "ssh" and (boot is None or "local" not in boot.providers):
            ck.add(f"providers.local.regions[{i}].image", "\"ssh\" instances run no slurmd until bootstrapped: "
                                                           "add \"local\" to [bootstrap] providers")
    if slurm and regions:
        slowest = max(regions, key=lambda r: r.boot_seconds)
        if slurm.resume_timeout <= slowest.boot_seconds:
            ck.add("slurm.resume_timeout",
                   f"{slurm.resume_timeout} must exceed the boot_seconds of local region {slowest.name} "
                   f"({slowest.boot_seconds:g}), or Slurm marks its nodes down before they boot")
    if ck.problems or cluster is None or slurm is None or policy is None:
        raise ConfigProblems([f"{label}: {p}" for p in ck.problems])
    good_zones = {name: zone for name, zone in zones.items() if zone is not None}
    extra = {"local_lab_dir": lab_dir} if isinstance(lab_dir, Path) else {}
    extra.update(aws=clouds.get("aws"), gcp=clouds.get("gcp"), ssh=clouds.get("ssh"),
                 partition_zones=_frozen(partition_zones), price_overrides=overrides, cost=cost, bootstrap=boot)
    return Config(cluster, slurm, policy, _frozen(good_zones), _frozen(accounts), tuple(pools),
                  tuple(regions), source, **extra)


def parse_config(data: dict, source: str = "<config>") -> Config:
    """Validate an already-parsed TOML document; SOURCE only labels the messages."""
    return _build(data, source, None)


def load_config(path: str | Path | None = None) -> Config:
    """Load PATH, else $SLURM_BRIDGE_CONFIG, else /etc/slurm-bridge/bridge.toml."""
    path = Path(path if path is not None else os.environ.get(ENV_VAR) or DEFAULT_CONFIG_PATH)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigProblems([f"{path}: cannot read: {e.strerror or e}"]) from None
    except UnicodeDecodeError as e:
        raise ConfigProblems([f"{path}: not UTF-8 text (bad byte at offset {e.start})"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = _TOML_POSITION.search(str(e))
        where = f"line {m.group(1)}, column {m.group(2)}" if m else "TOML syntax"
        raise ConfigProblems([f"{path}: {where}: {str(e)[: m.start()] if m else e}"]) from None
    return _build(data, str(path), path)
