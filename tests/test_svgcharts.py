"""svgcharts: the SVG is parsed with ElementTree and checked piece by piece.

Counting bars, legend items and tick labels in the parsed tree (rather than comparing whole
strings) keeps a failure pointing at the one thing that is wrong.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slurm_bridge import svgcharts as sc

NASTY = "<script>&\"'"


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == "svg"
    return root


def with_class(root: ET.Element, cls: str) -> list[ET.Element]:
    return [e for e in root.iter() if cls in (e.get("class") or "").split()]


def series(root: ET.Element) -> dict[str, ET.Element]:
    return {g.get("data-series"): g for g in with_class(root, "series")}


def legend(root: ET.Element) -> list[str]:
    return [g.get("data-series") for g in with_class(root, "legend-item")]


def ticks(root: ET.Element, axis: str) -> list[str]:
    return [t.text for g in with_class(root, axis) for t in g.iter("text")]


def category_labels(root: ET.Element) -> list[ET.Element]:
    return with_class(root, "category")


def zero_line_y(root: ET.Element) -> float:
    (grid,) = [g for g in with_class(root, "grid") if "x-grid" not in g.get("class")]
    (line,) = [ln for ln in grid.iter("line") if ln.get("stroke") == sc.MUTED]
    return float(line.get("y1"))


SPEND = {"physics": [10.0, 20.0, 30.0, 5.0], "chem": [5.0, 5.0, 50.0, 0.0], "bio": [1.0, 2.0, 7.0, 3.0]}
DAYS = ["05-01", "05-02", "05-03", "05-04"]


# --- stacked bars ---------------------------------------------------------------------------------


def test_stacked_bars_one_rect_per_value_per_series_and_a_legend():
    root = parse(sc.stacked_bars("Spend per day", DAYS, SPEND, "USD"))
    groups = series(root)
    assert list(groups) == ["physics", "chem", "bio"]
    for name, g in groups.items():
        assert len(with_class(g, "bar")) == len(DAYS), name
    assert legend(root) == ["physics", "chem", "bio"]
    assert [g.get("fill") for g in groups.values()] == list(sc.PALETTE[:3])
    assert root.get("viewBox") == "0 0 720 360" and root.get("width") == "720"


def test_stacked_bar_heights_add_up_to_the_category_totals():
    root = parse(sc.stacked_bars("Spend", DAYS, SPEND, "USD"))
    heights = [0.0] * len(DAYS)
    for g in series(root).values():
        for j, rect in enumerate(with_class(g, "bar")):
            heights[j] += float(rect.get("height"))
    totals = [sum(v[j] for v in SPEND.values()) for j in range(len(DAYS))]
    per_unit = heights[0] / totals[0]
    assert heights == pytest.approx([t * per_unit for t in totals], abs=0.05)


def test_stacked_bars_tick_values_are_round_and_cover_the_tallest_bar():
    # Tallest stack is 30 + 50 + 7 = 87.
    root = parse(sc.stacked_bars("Spend", DAYS, SPEND, "USD"))
    assert ticks(root, "y-axis") == ["0", "20", "40", "60", "80", "100"]


def test_stacked_bars_write_totals_when_they_fit_and_skip_them_when_crowded():
    root = parse(sc.stacked_bars("Spend", DAYS, SPEND, "USD"))
    (totals,) = with_class(root, "totals")
    assert [t.text for t in totals.iter("text")] == ["16.00", "27.00", "87.00", "8.00"]
    many = [f"2024-{i:03d}" for i in range(200)]
    crowded = parse(sc.stacked_bars("Spend", many, {"a": [1234.5] * 200}, "USD"))
    assert with_class(crowded, "totals") == []


def test_stacked_bars_draw_negative_and_missing_values_as_nothing_and_say_so():
    root = parse(sc.stacked_bars("Spend", ["a", "b", "c"], {"x": [5.0, -3.0, math.nan]}, "USD"))
    rects = with_class(series(root)["x"], "bar")
    assert len(rects) == 3
    assert [float(r.get("height")) for r in rects[1:]] == [0.0, 0.0]
    (note,) = with_class(root, "note")
    assert note.text == "1 negative value drawn as 0; 1 missing value not drawn"
    assert rects[1].find("title").text == "x — b: -3.00"
    assert rects[2].find("title").text == "x — c: missing"


def test_stacked_bars_all_zero_still_draw_axes():
    root = parse(sc.stacked_bars("Spend", ["a", "b"], {"x": [0.0, 0.0]}, "USD"))
    assert with_class(root, "no-data") == []
    assert ticks(root, "y-axis")[0] == "0" and len(with_class(root, "bar")) == 2


# --- grouped bars ---------------------------------------------------------------------------------


def test_grouped_bars_one_rect_per_category_per_series_side_by_side():
    accounts = ["physics", "chem", "bio"]
    root = parse(sc.grouped_bars("GPU-hours", accounts, {"cloud": [120, 80, 0], "on-prem": [400, 350, 90]}, "h"))
    groups = series(root)
    assert {n: len(with_class(g, "bar")) for n, g in groups.items()} == {"cloud": 3, "on-prem": 3}
    assert legend(root) == ["cloud", "on-prem"]
    cloud, onprem = (with_class(g, "bar") for g in groups.values())
    for c, o in zip(cloud, onprem):
        assert float(c.get("x")) < float(o.get("x"))  # same slot, cloud on the left
    assert [t.text for t in category_labels(root)] == accounts
    assert ticks(root, "y-axis") == ["0", "100", "200", "300", "400"]


def test_grouped_bars_hang_negative_values_below_the_zero_line():
    root = parse(sc.grouped_bars("Credit", ["a", "b"], {"x": [30.0, -20.0]}, "USD"))
    up, down = with_class(root, "bar")
    y0 = zero_line_y(root)
    assert float(up.get("y")) + float(up.get("height")) == pytest.approx(y0, abs=0.01)
    assert float(down.get("y")) == pytest.approx(y0, abs=0.01)
    assert ticks(root, "y-axis")[0] == "-20"


def test_a_single_category_gets_a_bar_of_sensible_width():
    for chart in (sc.stacked_bars, sc.grouped_bars):
        root = parse(chart("One", ["only"], {"a": [3.0]}, "x"))
        (bar,) = with_class(root, "bar")
        assert 10 < float(bar.get("width")) <= 64
        assert [t.text for t in category_labels(root)] == ["only"]


def test_series_length_must_match_the_categories():
    with pytest.raises(ValueError, match="'a' has 1 values for 2 categories"):
        sc.stacked_bars("t", ["x", "y"], {"a": [1.0]})


# --- labels ---------------------------------------------------------------------------------------


def test_text_is_escaped_everywhere_and_reads_back_unchanged():
    svg = sc.stacked_bars(NASTY, [NASTY, "b"], {NASTY: [1.0, 2.0]}, NASTY, x_label=NASTY)
    assert "<script>" not in svg and "&lt;script&gt;&amp;" in svg
    root = parse(svg)
    assert not list(root.iter("script"))
    assert root.find("title").text == NASTY and root.get("aria-label") == NASTY
    assert legend(root) == [NASTY]
    assert category_labels(root)[0].text == NASTY
    assert NASTY in [t.text for t in with_class(root, "axis-label")]


def test_long_labels_are_cut_with_an_ellipsis_and_keep_their_full_text_as_tooltip():
    long = "the-computational-chemistry-and-materials-science-department-gpu-allocation"
    root = parse(sc.grouped_bars("GPU-hours", [long, "b", "c", "d"], {long: [1.0, 2.0, 3.0, 4.0]}, "h"))
    label = category_labels(root)[0]
    assert label.text.endswith("…") and long.startswith(label.text[:-1]) and len(label.text) < len(long)
    clipped = [g for g in with_class(root, "clipped") if label in list(g)]
    assert clipped and clipped[0].find("title").text == long
    legend_text = with_class(root, "legend-item")[0].find(".//text").text
    assert legend_text.endswith("…") and len(legend_text) <= 28


def test_many_categories_are_thinned_so_shown_labels_do_not_overlap():
    days = [f"2024-{d // 31 + 1:02d}-{d % 31 + 1:02d}" for d in range(365)]
    root = parse(sc.stacked_bars("Spend per day", days, {"a": [1.0] * 365}, "USD"))
    assert len(with_class(root, "bar")) == 365
    (axis,) = [g for g in with_class(root, "x-axis")]
    every = int(axis.get("data-every"))
    labels = category_labels(root)
    assert every > 1 and len(labels) == math.ceil(365 / every)
    assert [lb.text for lb in labels[:2]] == [days[0], days[every]]
    xs = [float(lb.get("x")) for lb in labels]
    for (a, b), lb in zip(pairwise(xs), labels):
        assert b - a >= len(lb.text) * sc.CHAR_W, "labels would overlap"


# --- ticks ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("lo", "hi", "want"), [
    (0, 87, [0, 20, 40, 60, 80, 100]),
    (0, 0, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    (0, 1, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    (-20, 400, [-100, 0, 100, 200, 300, 400]),
    (0, 0.037, [0, 0.01, 0.02, 0.03, 0.04]),
    (5, 5, [0, 2, 4, 6, 8, 10]),
    (1200, 1900, [1200, 1400, 1600, 1800, 2000]),
])
def test_nice_ticks(lo, hi, want):
    assert sc.nice_ticks(lo, hi) == want


@pytest.mark.parametrize(("values", "want"), [
    ([0, 20, 40], ["0", "20", "40"]),
    ([0, 0.5, 1.0], ["0", "0.5", "1.0"]),
    ([0, 2000, 4000], ["0", "2,000", "4,000"]),
    ([0, 20000, 40000], ["0", "20k", "40k"]),
    ([0, 500000, 1000000, 1500000], ["0", "0.5M", "1.0M", "1.5M"]),
    ([-100, 0, 100], ["-100", "0", "100"]),
])
def test_tick_labels(values, want):
    assert sc.tick_labels(values) == want


@given(st.floats(-1e9, 1e9), st.floats(-1e9, 1e9))
def test_nice_ticks_always_cover_the_range_with_round_even_steps(a, b):
    lo, hi = min(a, b), max(a, b)
    t = sc.nice_ticks(lo, hi)
    step = t[1] - t[0]
    slack = step * 1e-6  # float noise a hair past a tick must not add a whole empty step
    assert t[0] <= lo + slack and t[-1] >= hi - slack and 2 <= len(t) <= 12
    assert all(math.isclose(y - x, step, rel_tol=1e-6, abs_tol=1e-12) for x, y in pairwise(t))
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert any(math.isclose(mantissa, m, rel_tol=1e-6) for m in (1, 2, 5, 10))


# --- lines and points -----------------------------------------------------------------------------


def test_lines_one_path_and_a_marker_per_point_for_each_series():
    x = [0, 60, 120, 180, 240]
    root = parse(sc.lines("Wait CDF", x, {"burst": [0, .5, .8, .9, 1], "no burst": [0, .2, .4, .6, .7]},
                          "wait (s)", "jobs"))
    groups = series(root)
    assert legend(root) == ["burst", "no burst"]
    for g in groups.values():
        assert len(with_class(g, "line")) == 1 and len(with_class(g, "marker")) == 5
    assert ticks(root, "y-axis") == ["0", "0.2", "0.4", "0.6", "0.8", "1.0"]
    assert ticks(root, "x-axis") == ["0", "50", "100", "150", "200"]


def test_lines_step_mode_missing_values_and_x_format():
    x = [0.0, 1.0, 2.0, 3.0, 4.0]
    root = parse(sc.lines("Spend", x, {"a": [1, 2, math.nan, 4, 5]}, step=True, x_format=lambda v: f"day {v:g}"))
    paths = with_class(series(root)["a"], "line")
    assert len(paths) == 2, "the missing value splits the line"
    assert "H" in paths[0].get("d") and "V" in paths[0].get("d")
    assert ticks(root, "x-axis")[0] == "day 0"
    assert with_class(root, "note")[0].text == "1 missing value not drawn"


def test_more_series_than_colours_switch_to_dashes():
    named = {f"s{i}": [float(i), float(i + 1)] for i in range(10)}
    root = parse(sc.lines("Many", [0.0, 1.0], named))
    paths = {n: with_class(g, "line")[0] for n, g in series(root).items()}
    assert paths["s0"].get("stroke-dasharray") is None and paths["s8"].get("stroke-dasharray")
    assert paths["s0"].get("stroke") == paths["s8"].get("stroke")
    assert len(legend(root)) == 10


def test_points_with_labels_a_legend_and_a_connected_frontier():
    policies = [(1200, 300, "always-cloud"), (800, 900, "spot-first"), (500, 2400, "never"), (950, 1500, "x")]
    frontier = [(1200, 300, ""), (800, 900, ""), (500, 2400, "")]
    root = parse(sc.points("Frontier", {"policies": policies, "frontier": frontier}, "USD", "wait (s)",
                           connect={"frontier"}))
    groups = series(root)
    assert len(with_class(groups["policies"], "point")) == 4 and len(with_class(groups["frontier"], "point")) == 3
    (line,) = with_class(root, "line")
    assert line.get("data-series") == "frontier"
    assert {t.text for t in with_class(root, "point-label")} == {"always-cloud", "spot-first", "never", "x"}
    assert legend(root) == ["policies", "frontier"]
    tips = [c.find("title").text for c in with_class(groups["policies"], "point")]
    assert tips[0] == "always-cloud: 1,200.00, 300.00"


def test_points_plain_list_has_no_legend_and_crowded_labels_fall_back_to_tooltips():
    crowd = [(1.0, 1.0, f"config-{i}") for i in range(6)] + [(50.0, 80.0, "far")]
    root = parse(sc.points("Crowd", crowd, "x", "y"))
    assert legend(root) == []
    assert len(with_class(root, "point")) == 7
    shown = [t.text for t in with_class(root, "point-label")]
    assert "far" in shown and len(shown) < 7


# --- whole charts ---------------------------------------------------------------------------------


def all_charts(empty: bool = False) -> dict[str, str]:
    if empty:
        return {"stacked": sc.stacked_bars("Empty", [], {}, "USD"),
                "grouped": sc.grouped_bars("All missing", ["a"], {"x": [math.nan]}, "USD"),
                "lines": sc.lines("Empty", [], {}, "x", "y"),
                "points": sc.points("Empty", [], "x", "y")}
    return {"stacked": sc.stacked_bars("S", DAYS, SPEND, "USD"),
            "grouped": sc.grouped_bars("G", DAYS, SPEND, "USD"),
            "lines": sc.lines("L", [1.0, 2.0, 3.0, 4.0], SPEND, "x", "y"),
            "points": sc.points("P", [(1, 2, "a"), (3, 4, "b")], "x", "y", connect=True)}


@pytest.mark.parametrize("kind", ["stacked", "grouped", "lines", "points"])
def test_empty_data_renders_a_no_data_chart(kind):
    root = parse(all_charts(empty=True)[kind])
    (msg,) = with_class(root, "no-data")
    assert msg.text == "No data"
    assert with_class(root, "bar") == [] and with_class(root, "series") == []
    assert root.find("title").text


@pytest.mark.parametrize("kind", ["stacked", "grouped", "lines", "points"])
def test_output_is_deterministic_and_refers_to_nothing_outside(kind):
    svg = all_charts()[kind]
    assert svg == all_charts()[kind]
    for bad in ("http:", "https:", "href", "url(", "src=", "<script", "<image", "@import"):
        assert bad not in svg, bad
    parse(svg)


def test_standalone_adds_the_svg_namespace_for_a_file():
    text = sc.standalone(sc.grouped_bars("G", DAYS, SPEND, "USD"))
    root = ET.fromstring(text.split("\n", 1)[1])
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
