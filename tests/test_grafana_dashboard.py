"""systemd/grafana-dashboard.json: a dashboard Grafana can import, in step with slurm_bridge/metrics.py.

Every metric a query names must be one the daemon exports (a renamed metric would otherwise leave
an empty panel that nobody notices), and every family the daemon exports must be on some panel.
The exported names come from a real `Metrics()` registry, by family type: a counter `x` is scraped
as `x_total` (and `x_created`), a histogram as `x_bucket`, `x_count`, `x_sum`, a gauge as itself.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from slurm_bridge.metrics import Metrics

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "systemd" / "grafana-dashboard.json"
DATASOURCE_UID = "${DS_PROMETHEUS}"

SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "gauge": ("",)}

# PromQL words that look like identifiers but are not metric names (functions are recognised by the
# "(" that follows them).
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
             "offset", "inf", "nan"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![A-Za-z0-9_.:$])[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not its functions, keywords or labels)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _LABEL_LIST.sub(" ", text)
    names = set()
    for m in _IDENT.finditer(text):
        if m.group().lower() in _KEYWORDS or text[m.end():].lstrip().startswith("("):
            continue
        names.add(m.group())
    return names


def exported() -> dict[str, str]:
    """Every sample name the daemon's registry can expose -> its family name."""
    out: dict[str, str] = {}
    for family in Metrics().registry.collect():
        assert family.type in SUFFIXES, f"{family.name}: no rule for metric type {family.type!r}"
        for suffix in SUFFIXES[family.type]:
            out[family.name + suffix] = family.name
    return out


def all_panels(panels: list[dict]) -> list[dict]:
    """Panels, with those inside collapsed rows; the rows themselves are left out."""
    out = []
    for p in panels:
        if p.get("type") == "row":
            out += all_panels(p.get("panels") or [])
        else:
            out.append(p)
    return out


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def panels(dashboard) -> list[dict]:
    return all_panels(dashboard["panels"])


@pytest.fixture(scope="module")
def exprs(panels) -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]


def test_metric_names_reads_promql():
    # The extractor must find what a query selects, or the tests below would pass on nothing.
    assert metric_names('histogram_quantile(0.95, sum by (le, loop) (rate(a_bucket{instance=~"$x"}'
                        '[$__rate_interval])))') == {"a_bucket"}
    assert metric_names("time() - max(b_seconds{job=\"x\"})") == {"b_seconds"}
    assert metric_names("count(c == 1) or vector(0)") == {"c"}
    assert metric_names("sum by (account) (d) / sum by (account) (e > 0)") == {"d", "e"}
    assert metric_names("rate(f_total[5m] offset 1h) * 60 + 1e3") == {"f_total"}
    assert metric_names("g / on(account) group_left(pool) h") == {"g", "h"}


def test_dashboard_is_an_importable_grafana_dashboard(dashboard, panels):
    assert dashboard["schemaVersion"] == 39
    assert dashboard["title"] and dashboard["uid"]
    assert dashboard.get("id") is None, "an exported dashboard carries no database id"
    inputs = {i["name"]: i for i in dashboard["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["type"] == "datasource"
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    for p in panels:
        assert p["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, p["title"]
        for t in p["targets"]:
            assert t["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}, p["title"]
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            assert var["datasource"]["uid"] == DATASOURCE_UID, var["name"]


def test_every_panel_has_a_title_and_a_query(panels):
    assert panels
    for p in panels:
        assert isinstance(p.get("title"), str) and p["title"].strip(), f"panel {p.get('id')} has no title"
        assert p.get("targets"), f"{p['title']}: no query"
        for t in p["targets"]:
            assert t.get("expr", "").strip(), f"{p['title']}: query {t.get('refId')} is empty"


def test_panels_have_unique_ids_and_do_not_overlap(panels):
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]


def test_every_metric_in_a_query_is_exported_by_the_daemon(exprs, dashboard):
    names = exported()
    queries = list(exprs)
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            queries += [(f"variable {var['name']}", m) for m in re.findall(r"label_values\(\s*([^,)\s]+)", q)]
    for title, expr in queries:
        used = metric_names(expr)
        assert used, f"{title}: {expr!r} selects no metric"
        unknown = sorted(used - names.keys())
        assert not unknown, (f"{title}: {unknown} not exported by slurm_bridge.metrics.Metrics "
                             f"(exported: {sorted(names)})")


def test_every_exported_family_is_on_the_dashboard(exprs):
    names = exported()
    shown = {names[n] for _, expr in exprs for n in metric_names(expr) if n in names}
    missing = sorted(set(names.values()) - shown)
    assert not missing, f"families exported by the daemon but on no panel: {missing}"


def test_counters_and_histograms_are_read_as_rates(exprs):
    # A raw counter or bucket is a number that only grows (and resets on restart): plot its rate.
    names = exported()
    kinds = {f.name: f.type for f in Metrics().registry.collect()}
    for title, expr in exprs:
        for n in metric_names(expr):
            if kinds.get(names.get(n)) in ("counter", "histogram"):
                assert re.search(r"\b(?:rate|irate|increase)\s*\(", expr), f"{title}: {n} is not read as a rate"
