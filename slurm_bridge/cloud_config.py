"""The `[providers.aws]` and `[providers.gcp]` sections of the bridge config.

Regions are checked against the catalog: residency is decided by a region's
country, so a region the catalog does not know is refused, never guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from .catalog import AWS_REGIONS, GCP_REGIONS
from .tomlcheck import _BAD, _MISSING, _Checker, _key, _ok, _show, _suggest

_AWS_TEMPLATE = re.compile(r"[A-Za-z0-9()./_-]{3,128}")
_GCP_PROJECT = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")


@dataclass(frozen=True)
class AwsConfig:
    regions: tuple[str, ...]
    launch_template: str                                   # name, the same in every region used
    subnets: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    endpoint_url: str | None = None                        # a local moto server in tests
    profile: str | None = None
    max_attempts: int = 3                                  # botocore retries (not for capacity errors)
    fleet_batch: int = 500                                 # CreateFleet instant accepts this many per call


@dataclass(frozen=True)
class GcpConfig:
    project: str
    regions: tuple[str, ...]
    instance_template: str                                 # global/instanceTemplates/NAME or NAME
    zones: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    endpoint: str | None = None                            # a local Compute REST server in tests
    credentials_file: Path | None = None                   # None: application default credentials
    anonymous: bool = False                                # tests only: no credentials at all
    operation_timeout_s: int = 300

    def zones_of(self, region: str) -> tuple[str, ...]:
        return self.zones.get(region) or tuple(f"{region}-{z}" for z in "abc")


def _regions(ck: _Checker, t, known: dict[str, str], provider: str) -> Any:
    regions = t.names("regions")
    if not isinstance(regions, tuple):
        return regions
    if not regions:
        return ck.add(t.at("regions"), "name at least one region")
    for i, region in enumerate(regions):
        if region not in known:
            ck.add(f"{t.at('regions')}[{i}]", f"unknown {provider} region {_show(region)} "
                                              f"({_suggest(region, list(known))})")
    return regions


def _per_region(ck: _Checker, t, key: str, regions: Any) -> Any:
    raw = t.get(key, "table", {})
    if raw is _BAD:
        return _BAD
    out = {}
    for region, items in raw.items():
        p = _key(t.at(key), region)
        if isinstance(regions, tuple) and region not in regions:
            ck.add(p, f"{_show(region)} is not in regions")
        elif not isinstance(items, list) or not items or not all(isinstance(i, str) and i for i in items):
            ck.add(p, "expected a non-empty array of names")
        else:
            out[region] = tuple(items)
    return MappingProxyType(out)


def parse_aws(ck: _Checker, path: str, value: Any) -> AwsConfig | None:
    t = ck.table(path, value, tuple(AwsConfig.__dataclass_fields__))
    if t is None:
        return None
    regions = _regions(ck, t, AWS_REGIONS, "AWS")
    template = t.get("launch_template", "str")
    if isinstance(template, str) and not _AWS_TEMPLATE.fullmatch(template):
        template = ck.add(t.at("launch_template"), f"invalid launch template name {_show(template)}")
    subnets = _per_region(ck, t, "subnets", regions)
    endpoint, profile = t.get("endpoint_url", "str", None), t.get("profile", "str", None)
    attempts = t.get("max_attempts", "int", 3, 1)
    batch = t.get("fleet_batch", "int", 500, 1)
    if isinstance(batch, int) and batch > 500:
        batch = ck.add(t.at("fleet_batch"), f"CreateFleet takes at most 500 instances per call, got {batch}")
    if not _ok(regions, template, subnets, endpoint, profile, attempts, batch):
        return None
    return AwsConfig(regions, template, subnets, endpoint, profile, attempts, batch)


def parse_gcp(ck: _Checker, path: str, value: Any) -> GcpConfig | None:
    t = ck.table(path, value, tuple(GcpConfig.__dataclass_fields__))
    if t is None:
        return None
    project = t.get("project", "str")
    if isinstance(project, str) and not _GCP_PROJECT.fullmatch(project):
        project = ck.add(t.at("project"), f"invalid GCP project id {_show(project)}")
    regions = _regions(ck, t, GCP_REGIONS, "GCP")
    template = t.get("instance_template", "str")
    zones = _per_region(ck, t, "zones", regions)
    if isinstance(zones, Mapping):
        for region, names in zones.items():
            for name in names:
                if not name.startswith(region + "-"):
                    ck.add(_key(t.at("zones"), region), f"zone {_show(name)} is not in region {region}")
    endpoint = t.get("endpoint", "str", None)
    creds = t.abspath("credentials_file", None)
    anonymous = t.get("anonymous", "bool", False)
    timeout = t.get("operation_timeout_s", "int", 300, 1)
    if not _ok(project, regions, template, zones, endpoint, creds, anonymous, timeout):
        return None
    return GcpConfig(project, regions, template, zones, endpoint, creds, anonymous, timeout)


@dataclass(frozen=True)
class PriceOverride:
    provider: str
    region: str
    instance_type: str
    ondemand: float | None
    spot: float | None


def parse_price_overrides(ck: _Checker, data: dict) -> tuple[PriceOverride, ...]:
    raw = data.get("prices", _MISSING)
    if raw is _MISSING:
        return ()
    t = ck.table("prices", raw, ("overrides",))
    if t is None:
        return ()
    out = []
    items = t.get("overrides", "list", [])
    for i, item in enumerate(items if items is not _BAD else []):
        p = f"prices.overrides[{i}]"
        o = ck.table(p, item, ("provider", "region", "instance_type", "ondemand", "spot"))
        if o is None:
            continue
        prov, region, itype = o.get("provider", "str"), o.get("region", "str"), o.get("instance_type", "str")
        ondemand, spot = o.get("ondemand", "number", None), o.get("spot", "number", None)
        if prov not in (_BAD, "aws", "gcp") and isinstance(prov, str):
            prov = ck.add(o.at("provider"), "prices are overridden for aws or gcp (local regions carry their own)")
        for key, v in (("ondemand", ondemand), ("spot", spot)):
            if isinstance(v, float) and v <= 0:
                ck.add(o.at(key), f"must be positive, got {_show(v)}")
        if ondemand is None and spot is None:
            ck.add(p, "give ondemand, spot or both")
        elif _ok(prov, region, itype, ondemand, spot):
            out.append(PriceOverride(prov, region, itype, ondemand, spot))
    return tuple(out)
