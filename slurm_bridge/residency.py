"""A job's allowed zone, and the `res_<zone>` constraint that carries it inside Slurm.

A job's allowed zone is the intersection of its account's zone, the zones of
its partitions (`[partitions.NAME]`) and every `res_<zone>` its constraint
names. Intersecting zones needs no named zone for the result: a node launched
in a country carries every zone that contains it, so `res_de&res_eu` already
means "a node in DE ∩ EU" to Slurm.
"""

from __future__ import annotations

import re
from typing import Iterable

from .config import Config
from .models import Zone

_RES = re.compile(r"(?<![A-Za-z0-9_])res_([a-z][a-z0-9_]*)")


_FEATURE = re.compile(r"[A-Za-z0-9_.-]+")


def feature_names(features: str) -> set[str]:
    """Every feature a constraint names, whatever the operators around it."""
    return set(_FEATURE.findall(features or ""))


def constraint_zone_names(features: str) -> list[str]:
    return _RES.findall(features or "")


def intersect(zones: Iterable[Zone], name: str = "job") -> Zone:
    countries: frozenset[str] | None = None
    for zone in zones:
        if zone.countries is None:
            continue
        countries = zone.countries if countries is None else countries & zone.countries
    return Zone(name, countries)


def zones_for(cfg: Config, account: str, partitions: Iterable[str]) -> list[Zone]:
    """The zones submit-time policy adds: the account's and those of the job's partitions."""
    out = [cfg.account(account).zone]
    out += [cfg.partition_zones[p] for p in partitions if p in cfg.partition_zones]
    return out


def job_zone(cfg: Config, account: str, partitions: Iterable[str], features: str) -> Zone:
    """Never wider than any of its parts. A res_ name the config does not know names no
    country we could prove, so it narrows the zone to nothing rather than being ignored."""
    zones = zones_for(cfg, account, partitions)
    for name in constraint_zone_names(features):
        zones.append(cfg.zones.get(name) or Zone(name, frozenset()))
    return intersect(zones)


def constraint_with_zones(features: str, zones: Iterable[Zone]) -> str:
    """Append `&res_<zone>` for each zone, keeping whatever the user asked for.

    Slurm reads constraints left to right with no precedence for '&', and accepts one level of
    parentheses, so a plain expression is wrapped and one with parentheses is only appended to.
    """
    extra = []
    for z in zones:
        if z.countries is not None and z.feature not in extra:
            extra.append(z.feature)
    if not extra:
        return features or ""
    tail = "&".join(extra)
    if not features:
        return tail
    return f"{features}&{tail}" if "(" in features else f"({features})&{tail}"
