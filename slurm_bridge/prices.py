"""Hourly prices per (provider, region, instance type), and the table formats an operator imports.

Formats read by `read_table` (told apart by their header):
- slurm-bridge CSV: `provider,region,instance_type,ondemand_usd_hr,spot_usd_hr` (either price may be
  empty);
- SkyPilot catalog `vms.csv`: `InstanceType,...,Price,SpotPrice,Region,AvailabilityZone` (one row per
  zone; the provider is not in the file, so it is given on import). The spot price kept is the lowest
  over the region's zones, the on-demand price the lowest as well (it is the same in every zone);
- the per-region GPU tables under ../shared/data/prices (`cloud,instance_type,...,ondemand_usd_hr,
  spot_min_usd_hr,...` for AWS, `cloud,config,...,total_ondemand_usd_hr,total_spot_usd_hr` for GCP).
A bad row is counted and reported with its line number, never fatal.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from .errors import BridgeError


class PriceTableError(BridgeError):
    pass


@dataclass(frozen=True)
class Price:
    provider: str
    region: str
    instance_type: str
    ondemand: float | None
    spot: float | None


@dataclass
class ReadResult:
    prices: list[Price]
    bad_rows: list[str]          # "line 7: ondemand price 'abc' is not a number"
    format: str


class PriceBook:
    """Lookup with precedence: config overrides over imported or refreshed tables."""

    def __init__(self, *layers: Iterable[Price]):
        self._prices: dict[tuple[str, str, str], Price] = {}
        for layer in layers:           # later layers win, field by field
            for p in layer:
                key = (p.provider, p.region, p.instance_type)
                old = self._prices.get(key)
                if old is None:
                    self._prices[key] = p
                else:
                    self._prices[key] = Price(*key, p.ondemand if p.ondemand is not None else old.ondemand,
                                              p.spot if p.spot is not None else old.spot)

    def get(self, provider: str, region: str, instance_type: str) -> Price | None:
        return self._prices.get((provider, region, instance_type))

    def __len__(self) -> int:
        return len(self._prices)

    def __iter__(self):
        return iter(self._prices.values())


def from_rows(rows: Iterable[Mapping]) -> list[Price]:
    """State DB rows (provider, region, instance_type, ondemand, spot) as Prices."""
    return [Price(r["provider"], r["region"], r["instance_type"], r.get("ondemand"), r.get("spot")) for r in rows]


def _money(value: str | None, what: str) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not a number") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{what} {value!r} must be a positive number")
    return number


_FORMATS = {
    "slurm-bridge": {"provider", "region", "instance_type", "ondemand_usd_hr", "spot_usd_hr"},
    "skypilot": {"InstanceType", "Price", "SpotPrice", "Region"},
    "shared-aws": {"cloud", "instance_type", "region", "ondemand_usd_hr", "spot_min_usd_hr"},
    "shared-gcp": {"cloud", "config", "region", "total_ondemand_usd_hr", "total_spot_usd_hr"},
}


def read_table(path: Path, provider: str | None = None) -> ReadResult:
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise PriceTableError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise PriceTableError(f"{path}: not UTF-8 text (bad byte at offset {exc.start}); "
                              f"is it compressed?") from None
    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle)
        header = set(reader.fieldnames or [])
        fmt = next((name for name, cols in _FORMATS.items() if cols <= header), None)
        if fmt is None:
            raise PriceTableError(f"{path}: unknown price table format (header: {','.join(reader.fieldnames or [])}); "
                                  f"expected provider,region,instance_type,ondemand_usd_hr,spot_usd_hr")
        if fmt == "skypilot" and provider not in ("aws", "gcp"):
            raise PriceTableError(f"{path}: a SkyPilot vms.csv does not say its cloud: give --provider aws|gcp")
        merged: dict[tuple[str, str, str], Price] = {}
        bad: list[str] = []
        for row in reader:
            try:
                if None in row.values() or None in row:
                    raise ValueError(f"expected {len(reader.fieldnames)} columns")
                price = _row(fmt, row, provider)
            except (ValueError, KeyError) as exc:
                # line_num counts the lines read, blank ones included: the file's own numbering.
                bad.append(f"line {reader.line_num}: {exc}")
                continue
            if price is None:
                continue
            key = (price.provider, price.region, price.instance_type)
            old = merged.get(key)
            merged[key] = price if old is None else Price(*key, _min(old.ondemand, price.ondemand),
                                                           _min(old.spot, price.spot))
    return ReadResult(list(merged.values()), bad, fmt)


def _min(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _row(fmt: str, row: dict, provider: str | None) -> Price | None:
    if fmt == "slurm-bridge":
        prov, region, itype = row["provider"].strip(), row["region"].strip(), row["instance_type"].strip()
        ondemand, spot = _money(row["ondemand_usd_hr"], "ondemand_usd_hr"), _money(row["spot_usd_hr"], "spot_usd_hr")
    elif fmt == "skypilot":
        prov, region, itype = provider, (row.get("Region") or "").strip(), (row.get("InstanceType") or "").strip()
        if not itype:
            return None   # accelerator-only rows (GCP) price a GPU, not a machine: not an offer by themselves
        ondemand, spot = _money(row.get("Price"), "Price"), _money(row.get("SpotPrice"), "SpotPrice")
    elif fmt == "shared-aws":
        prov, region, itype = row["cloud"].strip(), row["region"].strip(), row["instance_type"].strip()
        ondemand, spot = _money(row["ondemand_usd_hr"], "ondemand_usd_hr"), _money(row["spot_min_usd_hr"],
                                                                                  "spot_min_usd_hr")
    else:
        prov, region, itype = row["cloud"].strip(), row["region"].strip(), row["config"].strip()
        ondemand = _money(row["total_ondemand_usd_hr"], "total_ondemand_usd_hr")
        spot = _money(row["total_spot_usd_hr"], "total_spot_usd_hr")
    if prov not in ("aws", "gcp"):
        raise ValueError(f"provider {prov!r} is not aws or gcp")
    if not region or not itype:
        raise ValueError("region and instance type must not be empty")
    if ondemand is None and spot is None:
        raise ValueError("no price in the row")
    return Price(prov, region, itype, ondemand, spot)


def book_for(overrides: Iterable, stored: Iterable[Mapping] = ()) -> PriceBook:
    """Stored (imported, refreshed) prices, with the config's [prices.overrides] on top."""
    return PriceBook(from_rows(stored),
                     [Price(o.provider, o.region, o.instance_type, o.ondemand, o.spot) for o in overrides])


def refresh_spot(cfg, providers: Mapping, store) -> dict[str, int]:
    """Ask AWS for the current Spot price of every spot pool's instance type in every configured region,
    and store it (`store(rows, source)`). Returns rows stored per region; a region that fails is
    skipped and named in the result with -1, the others still refresh."""
    aws = providers.get("aws")
    if aws is None or cfg.aws is None:
        return {}
    types = sorted({p.instance_types["aws"] for p in cfg.pools if p.spot and "aws" in p.instance_types})
    out: dict[str, int] = {}
    for region in cfg.aws.regions:
        if not types:
            break
        try:
            found = aws.spot_prices(region, types)
        except BridgeError:
            out[region] = -1
            continue
        rows = [{"provider": "aws", "region": region, "instance_type": t, "spot": p} for t, p in found.items()]
        store(rows, "aws:describe_spot_price_history")
        out[region] = len(rows)
    return out
