"""Where a pool's nodes may run, and in which order to try.

The one rule that outranks every other: a node is only ever launched in a
region whose country lies inside the pool's zone and the zone of the job it
is resumed for. Within that, offers are ranked by effective hourly price
(spot where the pool allows it), and regions in backoff are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from .catalog import region_country
from .config import Config, PoolConfig
from .models import Zone
from .prices import PriceBook, book_for


@dataclass(frozen=True)
class Offer:
    provider: str
    region: str
    country: str
    instance_type: str
    price_per_hour: float
    spot: bool
    boot_seconds: float = 0.0


@dataclass(frozen=True)
class Excluded:
    provider: str
    region: str
    country: str
    reason: str


def offers(cfg: Config, pool: PoolConfig, book: PriceBook | None = None) -> tuple[list[Offer], list[Excluded]]:
    """Every configured region, as an offer for POOL's shape or with why it is none."""
    found: list[Offer] = []
    excluded: list[Excluded] = []
    itype = pool.instance_types.get("local")
    for region in cfg.local_regions:
        if itype is None:
            excluded.append(Excluded("local", region.name, region.country, "pool has no local instance type"))
            continue
        price = region.spot_prices.get(itype) if pool.spot else None
        spot = price is not None
        if price is None:
            price = region.prices.get(itype)
        if price is None:
            excluded.append(Excluded("local", region.name, region.country, f"does not offer {itype}"))
            continue
        found.append(Offer("local", region.name, region.country, itype, float(price), spot,
                           region.boot_seconds))
    book = book if book is not None else book_for(cfg.price_overrides)
    for provider, settings in (("aws", cfg.aws), ("gcp", cfg.gcp)):
        if settings is None:
            continue
        itype = pool.instance_types.get(provider)
        for region in settings.regions:
            country = region_country(provider, region) or "??"
            if itype is None:
                excluded.append(Excluded(provider, region, country, f"pool has no {provider} instance type"))
                continue
            known = book.get(provider, region, itype)
            spot_price = known.spot if known and pool.spot else None
            price = spot_price if spot_price is not None else (known.ondemand if known else None)
            if price is None:
                excluded.append(Excluded(provider, region, country,
                                         f"no price known for {itype} (import a price table)"))
                continue
            found.append(Offer(provider, region, country, itype, float(price), spot_price is not None))
    if cfg.ssh is not None:
        # A host group is a region: its country is in the config, its price is what the owner asks.
        itype = pool.instance_types.get("ssh")
        for g in cfg.ssh.groups:
            if itype is None:
                excluded.append(Excluded("ssh", g.name, g.country, "pool has no ssh instance type"))
            elif itype != g.instance_type:
                excluded.append(Excluded("ssh", g.name, g.country, f"does not offer {itype}"))
            else:
                found.append(Offer("ssh", g.name, g.country, itype, float(g.price_per_hour), False))
    return found, excluded


def rank(cfg: Config, pool: PoolConfig, job_zone: Zone | None = None,
         blocked: Callable[[str, str], str | None] = lambda provider, region: None,
         book: PriceBook | None = None) -> tuple[list[Offer], list[Excluded]]:
    """Candidate offers for POOL, cheapest first, and every excluded region with its reason.

    BLOCKED(provider, region) returns why that place is in backoff, or None.
    """
    found, excluded = offers(cfg, pool, book)
    ranked = []
    for offer in found:
        if not pool.zone.contains(offer.country):
            excluded.append(_out(offer, f"{offer.country} is outside pool zone {pool.zone.name}"))
        elif job_zone is not None and not job_zone.contains(offer.country):
            excluded.append(_out(offer, f"{offer.country} is outside job zone {job_zone.name}"))
        elif (why := blocked(offer.provider, offer.region)) is not None:
            excluded.append(_out(offer, why))
        else:
            ranked.append(offer)
    # Price first; then name, so equal prices give a stable, predictable order.
    ranked.sort(key=lambda o: (o.price_per_hour, o.provider, o.region))
    return ranked, excluded


def _out(offer: Offer, reason: str) -> Excluded:
    return Excluded(offer.provider, offer.region, offer.country, reason)


def country_of(cfg: Config, provider: str, region: str) -> str | None:
    """The country a region lies in: local regions say it in config, clouds in the catalog."""
    if provider == "local":
        return next((r.country for r in cfg.local_regions if r.name == region), None)
    if provider == "ssh":
        group = cfg.ssh.group(region) if cfg.ssh is not None else None
        return group.country if group is not None else None
    return region_country(provider, region)


def launchable_countries(cfg: Config, pool: PoolConfig, book: PriceBook | None = None) -> set[str]:
    """Countries where POOL's nodes could ever run (ignoring backoff)."""
    found, _ = offers(cfg, pool, book)
    return {o.country for o in found if pool.zone.contains(o.country)}


def reachable_zones(cfg: Config, pool: PoolConfig, book: PriceBook | None = None) -> list[Zone]:
    """Zones that contain at least one country the pool can launch in: its powered-down features."""
    countries = launchable_countries(cfg, pool, book)
    return [z for z in _sorted(cfg.zones.values()) if any(z.contains(c) for c in countries)]


def zones_of_country(cfg: Config, country: str) -> list[Zone]:
    """Zones a node launched in COUNTRY belongs to: its features while it runs."""
    return [z for z in _sorted(cfg.zones.values()) if z.contains(country)]


def account_may_use(cfg: Config, account_zone: Zone, pool: PoolConfig, book: PriceBook | None = None) -> bool:
    return any(account_zone.contains(c) for c in launchable_countries(cfg, pool, book))


def zone_features(zones: Iterable[Zone]) -> list[str]:
    return [z.feature for z in zones]


def _sorted(zones: Iterable[Zone]) -> list[Zone]:
    return sorted(zones, key=lambda z: z.name)
