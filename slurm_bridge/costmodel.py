"""What an owned GPU costs per hour, and how many more of them a period's cloud use would have paid for.

Pure logic. Money comes out as ``decimal.Decimal`` US dollars with two places (rounded half-up from exact
fractions); hours, utilisation and months as floats.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from decimal import Decimal
from fractions import Fraction
from itertools import pairwise
from typing import Any

from .errors import ConfigError

# A year of 365.25 days: amortisation runs over several years, so leap days count.
HOURS_PER_YEAR = 8766
HOURS_PER_MONTH = Fraction(HOURS_PER_YEAR, 12)   # 730.5
ONPREM_KEY = "cost.onprem"


@dataclass(frozen=True, slots=True)
class OnpremModel:
    """The cost of owning one GPU, from the [cost.onprem] table of the config."""

    capex_per_gpu_usd: float          # purchase price per GPU, its share of the server and network included
    amortisation_years: float
    power_kw_per_gpu: float           # average draw per GPU, its share of the server included
    pue: float                        # power usage effectiveness of the machine room (1 = no cooling cost)
    usd_per_kwh: float
    ops_usd_per_gpu_year: float       # support, staff, space
    gpus: int = 0                     # GPUs installed on-prem today

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{ONPREM_KEY}.{f.name}: must be a number, not {value!r}")
            if value < 0:
                raise ConfigError(f"{ONPREM_KEY}.{f.name}: must not be negative, not {value}")
        if self.amortisation_years <= 0:
            raise ConfigError(f"{ONPREM_KEY}.amortisation_years: must be more than 0")
        if self.pue < 1:
            raise ConfigError(f"{ONPREM_KEY}.pue: must be at least 1")
        if self.gpus != int(self.gpus):
            raise ConfigError(f"{ONPREM_KEY}.gpus: must be a whole number, not {self.gpus}")

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> OnpremModel:
        """Build from a parsed TOML table; every key but gpus is required, unknown keys are errors."""
        names = [f.name for f in fields(cls)]
        for k in table:
            if k not in names:
                raise ConfigError(f"{ONPREM_KEY}.{k}: unknown key (known: {', '.join(names)})")
        for k in names:
            if k not in table and k != "gpus":
                raise ConfigError(f"{ONPREM_KEY}.{k}: missing")
        return cls(**dict(table))

    @property
    def capital_usd_per_gpu_hour(self) -> float:
        return float(self._capital)

    @property
    def running_usd_per_gpu_hour(self) -> float:
        """Power and operations: what a GPU costs per hour once bought."""
        return float(self._running)

    @property
    def usd_per_gpu_hour(self) -> float:
        """(capex / years + ops) / 8766 + kW x PUE x $/kWh: the all-in cost of an owned GPU-hour."""
        return float(self._capital + self._running)

    @property
    def _capital(self) -> Fraction:
        return _exact(self.capex_per_gpu_usd) / _exact(self.amortisation_years) / HOURS_PER_YEAR

    @property
    def _running(self) -> Fraction:
        power = _exact(self.power_kw_per_gpu) * _exact(self.pue) * _exact(self.usd_per_kwh)
        return _exact(self.ops_usd_per_gpu_year) / HOURS_PER_YEAR + power


@dataclass(frozen=True, slots=True)
class BreakevenRow:
    """What N more on-prem GPUs would have done over the period."""

    extra_gpus: int
    absorbed_gpu_hours: float         # cloud GPU-hours they would have run instead
    utilisation: float | None         # absorbed / (N x period hours); None for N = 0
    cloud_avoided: Decimal            # cloud spend those hours cost
    onprem_cost: Decimal              # N x all-in cost per GPU-hour x period hours: owned GPUs cost when idle too
    net_saving: Decimal               # cloud_avoided - onprem_cost
    payback_months: float | None      # capex / monthly (avoided - power and operations); None: never
    pays_back: bool                   # within the amortisation period

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Breakeven:
    period_hours: float
    cloud_gpu_hours: float
    cloud_spend: Decimal
    cloud_usd_per_gpu_hour: float     # the rate avoided spend is priced at
    onprem_usd_per_gpu_hour: float
    max_cloud_gpus: int               # most cloud GPUs in use at once (rounded up)
    rows: tuple[BreakevenRow, ...]    # N = 0 .. max_cloud_gpus
    best: BreakevenRow                # the highest net saving; the fewest GPUs on a tie
    assumptions: tuple[str, ...]      # printed verbatim under the table

    @property
    def first_gpu(self) -> BreakevenRow | None:
        """One extra GPU: the row that says whether buying any pays back."""
        return self.rows[1] if len(self.rows) > 1 else None

    def as_dict(self) -> dict:
        return {
            "period_hours": self.period_hours, "cloud_gpu_hours": self.cloud_gpu_hours,
            "cloud_spend": self.cloud_spend, "cloud_usd_per_gpu_hour": self.cloud_usd_per_gpu_hour,
            "onprem_usd_per_gpu_hour": self.onprem_usd_per_gpu_hour, "max_cloud_gpus": self.max_cloud_gpus,
            "rows": [r.as_dict() for r in self.rows], "best_extra_gpus": self.best.extra_gpus,
            "assumptions": list(self.assumptions),
        }


def _exact(x: float) -> Fraction:
    # The decimal the number prints as: 0.4 $/kWh is 2/5, not the nearest binary fraction.
    return Fraction(repr(float(x)))


def _dollars(x: Fraction) -> Decimal:
    """Half-up to the cent; the amounts here are never negative."""
    return Decimal(math.floor(x * 100 + Fraction(1, 2))).scaleb(-2)


def usage_steps(segments: Iterable[tuple[float, float, float, float]], start: float,
                end: float) -> tuple[list[tuple[Fraction, Fraction]], Fraction, Fraction]:
    """The step function of cloud GPUs in use: (hours, GPUs) pieces, plus GPU-hours and spend in [START, END).

    A segment reaching outside the period keeps the part inside, with its cost pro rata.
    """
    lo, hi = _exact(start), _exact(end)
    deltas: dict[Fraction, Fraction] = {lo: Fraction(0), hi: Fraction(0)}
    gpu_hours, spend = Fraction(0), Fraction(0)
    for s_, e_, g_, usd_ in segments:
        s, e, g, usd = _exact(s_), _exact(e_), _exact(g_), _exact(usd_)
        if g < 0 or usd < 0:
            raise ValueError(f"a usage segment has negative GPUs or cost: {(s_, e_, g_, usd_)}")
        a, b = max(s, lo), min(e, hi)
        if b <= a:
            continue
        deltas[a] = deltas.get(a, Fraction(0)) + g
        deltas[b] = deltas.get(b, Fraction(0)) - g
        gpu_hours += g * (b - a) / 3600
        spend += usd * (b - a) / (e - s)
    level, steps = Fraction(0), []
    for t0, t1 in pairwise(sorted(deltas)):
        level += deltas[t0]
        steps.append(((t1 - t0) / 3600, level))
    return steps, gpu_hours, spend


def breakeven(cloud_gpu_usage: Iterable[tuple[float, float, float, float]], model: OnpremModel,
              period_start: float, period_end: float,
              cloud_usd_per_gpu_hour: float | None = None) -> Breakeven:
    """Would N more on-prem GPUs have paid for themselves, for N = 0 up to the most cloud GPUs used at once?

    CLOUD_GPU_USAGE is (start, end, gpus, usd) per cloud run, overlapping freely (Attribution.cloud_usage()
    gives them, overhead included). Avoided cloud spend is priced at one rate for the whole period:
    CLOUD_USD_PER_GPU_HOUR when given, else the period's average (spend / GPU-hours), because the GPUs
    saved at a moment cannot be told apart from the ones kept.
    """
    if not period_start < period_end:
        raise ValueError(f"the period must not be empty: {period_start} is not before {period_end}")
    steps, gpu_hours, spend = usage_steps(cloud_gpu_usage, period_start, period_end)
    if cloud_usd_per_gpu_hour is not None:
        rate = _exact(cloud_usd_per_gpu_hour)
    else:
        rate = spend / gpu_hours if gpu_hours else Fraction(0)
    hours = (_exact(period_end) - _exact(period_start)) / 3600
    top = math.ceil(max((g for _, g in steps), default=Fraction(0)))
    rows = tuple(_row(n, steps, rate, hours, model) for n in range(top + 1))
    best = max(rows, key=lambda r: (r.net_saving, -r.extra_gpus))
    return Breakeven(
        period_hours=float(hours), cloud_gpu_hours=float(gpu_hours), cloud_spend=_dollars(spend),
        cloud_usd_per_gpu_hour=float(rate), onprem_usd_per_gpu_hour=model.usd_per_gpu_hour,
        max_cloud_gpus=top, rows=rows, best=best,
        assumptions=_assumptions(model, hours, gpu_hours, rate, cloud_usd_per_gpu_hour is not None),
    )


def _row(n: int, steps: list[tuple[Fraction, Fraction]], rate: Fraction, hours: Fraction,
         model: OnpremModel) -> BreakevenRow:
    absorbed = sum((dt * min(Fraction(n), g) for dt, g in steps), Fraction(0))
    avoided = absorbed * rate
    owned = n * (model._capital + model._running) * hours
    # Payback asks whether the purchase is repaid by what the GPUs save beyond their own running cost.
    monthly = (avoided - n * model._running * hours) * HOURS_PER_MONTH / hours
    capex = n * _exact(model.capex_per_gpu_usd)
    months = capex / monthly if n and monthly > 0 else None
    cloud_avoided, onprem_cost = _dollars(avoided), _dollars(owned)
    return BreakevenRow(
        extra_gpus=n, absorbed_gpu_hours=float(absorbed),
        utilisation=float(absorbed / (n * hours)) if n else None,
        cloud_avoided=cloud_avoided, onprem_cost=onprem_cost, net_saving=cloud_avoided - onprem_cost,
        payback_months=None if months is None else float(months),
        pays_back=months is not None and months <= _exact(model.amortisation_years) * 12,
    )


def _assumptions(model: OnpremModel, hours: Fraction, gpu_hours: Fraction, rate: Fraction,
                 given: bool) -> tuple[str, ...]:
    source = "as given" if given else "the period's average: cloud spend / cloud GPU-hours"
    return (
        (f"The period's cloud use ({float(gpu_hours):,.1f} GPU-hours in {float(hours):,.1f} hours) repeats "
         f"unchanged for the whole amortisation period ({model.amortisation_years:g} years)."),
        f"A cloud GPU-hour costs ${float(rate):,.2f} ({source}).",
        (f"The {model.gpus} GPUs installed on-prem stay as busy as they were: extra GPUs take only work that "
         "went to the cloud."),
        ("N extra GPUs take min(N, cloud GPUs in use) at every moment: jobs fit on whatever GPUs are free "
         "(no node shape or packing limits) and would not have waited longer."),
        (f"An owned GPU costs ${model.usd_per_gpu_hour:,.2f} per hour, used or not: "
         f"${model.capex_per_gpu_usd:,.0f} over {model.amortisation_years:g} years, "
         f"${model.ops_usd_per_gpu_year:,.0f} per year of operations, "
         f"{model.power_kw_per_gpu:g} kW x PUE {model.pue:g} x ${model.usd_per_kwh:g} per kWh."),
        f"A year has {HOURS_PER_YEAR} hours (365.25 days), a month {float(HOURS_PER_MONTH):g}.",
        ("Payback: the extra GPUs' purchase price / (cloud spend they avoid - their power and operations) "
         "per month, at this period's rate."),
    )
