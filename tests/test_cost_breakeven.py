"""The on-prem cost model and the break-even of buying GPUs instead of bursting."""

from __future__ import annotations

from decimal import Decimal
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slurm_bridge.costmodel import HOURS_PER_YEAR, OnpremModel, breakeven, usage_steps
from slurm_bridge.costs import Interval, JobRun, attribute
from slurm_bridge.errors import ConfigError

H = 3600

# $43,830 over 5 years = $8,766 a year = $1.00 an hour; $4,383 a year of operations = $0.50 an hour;
# 1 kW x PUE 1.25 x $0.40/kWh = $0.50 an hour. All in: $2.00 per GPU-hour, $1.00 of it running cost.
MODEL = OnpremModel(capex_per_gpu_usd=43830, amortisation_years=5, power_kw_per_gpu=1, pue=1.25,
                    usd_per_kwh=0.4, ops_usd_per_gpu_year=4383, gpus=16)


def test_an_owned_gpu_hour_is_capital_operations_and_power():
    assert HOURS_PER_YEAR == 8766
    assert MODEL.usd_per_gpu_hour == 2.0
    assert (MODEL.capital_usd_per_gpu_hour, MODEL.running_usd_per_gpu_hour) == (1.0, 1.0)


def test_a_hand_computed_break_even():
    # 10 hours: 4 cloud GPUs for the first 5 ($60), 2 for the last 5 ($30). 30 GPU-hours, $90: $3 each.
    #  N  absorbed                 avoided  on-prem (N x $2 x 10 h)  net
    #  1  10                          $30     $20                    $10
    #  2  20                          $60     $40                    $20  <- best
    #  3  5 x 3 + 5 x 2 = 25          $75     $60                    $15
    #  4  30                          $90     $80                    $10
    # Payback of N GPUs: N x $43,830 / ((avoided - N x $1 x 10 h) x 730.5 h per month / 10 h)
    #  N=1: 43,830 / (20 x 73.05) = 30 months; N=3: 131,490 / (45 x 73.05) = 40; N=4: 175,320 / (50 x 73.05) = 48
    b = breakeven([(0, 5 * H, 4, 60), (5 * H, 10 * H, 2, 30)], MODEL, 0, 10 * H)
    assert (b.period_hours, b.cloud_gpu_hours, b.cloud_spend, b.cloud_usd_per_gpu_hour) == (10, 30, Decimal("90.00"), 3)
    assert b.max_cloud_gpus == 4 and [r.extra_gpus for r in b.rows] == [0, 1, 2, 3, 4]
    assert [r.absorbed_gpu_hours for r in b.rows] == [0, 10, 20, 25, 30]
    assert [r.utilisation for r in b.rows] == [None, 1, 1, pytest.approx(25 / 30), 0.75]
    assert [r.cloud_avoided for r in b.rows] == [Decimal(x) for x in ("0.00", "30.00", "60.00", "75.00", "90.00")]
    assert [r.onprem_cost for r in b.rows] == [Decimal(x) for x in ("0.00", "20.00", "40.00", "60.00", "80.00")]
    assert [r.net_saving for r in b.rows] == [Decimal(x) for x in ("0.00", "10.00", "20.00", "15.00", "10.00")]
    assert b.best.extra_gpus == 2
    assert [r.payback_months for r in b.rows] == [None, 30, 30, 40, 48]
    assert b.first_gpu.pays_back and not b.rows[0].pays_back
    assert any("repeats unchanged" in a for a in b.assumptions)
    assert any("$3.00" in a and "average" in a for a in b.assumptions)
    assert any("8766 hours" in a for a in b.assumptions)


def test_overlapping_runs_add_up_and_segments_outside_the_period_are_clipped():
    steps, gpu_hours, spend = usage_steps([(0, 2 * H, 1, 2), (H, 2 * H, 2, 4), (2 * H, 4 * H, 8, 16)], 0, 3 * H)
    assert [(float(h), float(g)) for h, g in steps] == [(1, 1), (1, 3), (1, 8)]
    assert (gpu_hours, spend) == (12, 14)   # the 8-GPU run keeps one of its two hours and half its cost


def test_an_expensive_gpu_never_pays_back():
    dear = OnpremModel(capex_per_gpu_usd=1e6, amortisation_years=1, power_kw_per_gpu=1, pue=1,
                       usd_per_kwh=50, ops_usd_per_gpu_year=0)
    b = breakeven([(0, H, 2, 2)], dear, 0, H)
    assert b.best.extra_gpus == 0 and b.first_gpu.payback_months is None and not b.first_gpu.pays_back
    assert b.first_gpu.net_saving < 0


def test_a_given_cloud_rate_replaces_the_average():
    b = breakeven([(0, H, 1, 100)], MODEL, 0, H, cloud_usd_per_gpu_hour=5)
    assert b.rows[1].cloud_avoided == Decimal("5.00") and b.cloud_spend == Decimal("100.00")
    assert any("as given" in a for a in b.assumptions)


def test_no_cloud_use_means_no_extra_gpu():
    b = breakeven([], MODEL, 0, H)
    assert [r.extra_gpus for r in b.rows] == [0] and b.best.net_saving == 0 and b.first_gpu is None


def test_it_takes_an_attributions_cloud_usage():
    ivs = [Interval("i", "c1", "p", "gcp", "r", "t", False, 6.0, 0, H, "1")]
    a = attribute(ivs, [JobRun("1", "u", "a", "p", ("c1",), {"gres/gpu": 2}, 1800, H)], 0, H)
    b = breakeven(a.cloud_usage(), MODEL, 0, H)
    # $6 of ledger over 1 GPU-hour (2 GPUs x half an hour): overhead included, $6 per GPU-hour.
    assert b.cloud_spend == a.ledger_total == Decimal("6.00") and b.cloud_usd_per_gpu_hour == 6


@pytest.mark.parametrize("change,message", [
    ({"pue": 0.9}, "cost.onprem.pue: must be at least 1"),
    ({"amortisation_years": 0}, "cost.onprem.amortisation_years: must be more than 0"),
    ({"usd_per_kwh": -0.1}, "cost.onprem.usd_per_kwh: must not be negative"),
    ({"capex_per_gpu_usd": float("nan")}, "cost.onprem.capex_per_gpu_usd: must be a number"),
    ({"gpus": True}, "cost.onprem.gpus: must be a number"),
    ({"gpus": 2.5}, "cost.onprem.gpus: must be a whole number"),
    ({"power_kw_per_gpu": "0.7"}, "cost.onprem.power_kw_per_gpu: must be a number"),
])
def test_a_bad_model_names_the_key(change, message):
    table = {"capex_per_gpu_usd": 30000, "amortisation_years": 4, "power_kw_per_gpu": 0.7, "pue": 1.4,
             "usd_per_kwh": 0.2, "ops_usd_per_gpu_year": 1500, "gpus": 8}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        OnpremModel.from_table(table | change)


def test_a_table_with_an_unknown_or_missing_key_is_refused():
    with pytest.raises(ConfigError, match="cost.onprem.price: unknown key"):
        OnpremModel.from_table({"price": 1})
    with pytest.raises(ConfigError, match="cost.onprem.capex_per_gpu_usd: missing"):
        OnpremModel.from_table({})
    m = OnpremModel.from_table({"capex_per_gpu_usd": 0, "amortisation_years": 1, "power_kw_per_gpu": 0,
                                "pue": 1, "usd_per_kwh": 0, "ops_usd_per_gpu_year": 0})
    assert m.gpus == 0 and m.usd_per_gpu_hour == 0


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match="must not be empty"):
        breakeven([], MODEL, H, 0)
    with pytest.raises(ValueError, match="negative"):
        breakeven([(0, H, -1, 0)], MODEL, 0, H)


segments = st.lists(st.tuples(st.integers(0, 20), st.integers(1, 20), st.integers(0, 6), st.integers(0, 50)),
                    max_size=6).map(lambda xs: [(s * 600.0, (s + d) * 600.0, float(g), float(u)) for s, d, g, u in xs])


@settings(max_examples=200, deadline=None)
@given(segments, st.integers(1, 30))
def test_more_gpus_absorb_more_at_a_falling_margin_and_lower_use(usage, hours):
    b = breakeven(usage, MODEL, 0, hours * H)
    rows = b.rows
    absorbed = [r.absorbed_gpu_hours for r in rows]
    assert absorbed[0] == 0 and absorbed[-1] == pytest.approx(b.cloud_gpu_hours)
    margins = [y - x for x, y in pairwise(absorbed)]
    assert all(m >= -1e-9 for m in margins)
    assert all(later <= earlier + 1e-9 for earlier, later in pairwise(margins))
    use = [r.utilisation for r in rows[1:]]
    assert all(0 <= u <= 1 + 1e-9 for u in use)
    assert all(later <= earlier + 1e-9 for earlier, later in pairwise(use))
    assert all(r.cloud_avoided <= b.cloud_spend + Decimal("0.01") for r in rows)
    assert all(later.onprem_cost >= earlier.onprem_cost for earlier, later in pairwise(rows))
    assert b.best.net_saving == max(r.net_saving for r in rows) and b.best.net_saving >= 0
