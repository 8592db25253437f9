"""htmlreport: the page is parsed with html.parser and checked element by element.

The last test renders the page in headless Chromium and reads the PNG back with zlib and struct,
so "looks right in a browser" is checked too; it needs the `chromium` Debian package and fails,
rather than skips, without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
import pytest

from screenshots import near, read_png, screenshot
from slurm_bridge import svgcharts as sc
from slurm_bridge.htmlreport import Section, Table, render, totals_row

NASTY = "<script>&\"'"
VOID = {"meta", "link", "br", "hr", "img", "input", "source", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str | None]
    children: list[Node] = field(default_factory=list)
    text: str = ""

    def find_all(self, tag: str) -> list[Node]:
        found = [self] if self.tag == tag else []
        for c in self.children:
            found += c.find_all(tag)
        return found

    def all_text(self) -> str:
        return self.text + "".join(c.all_text() for c in self.children)


class TreeBuilder(HTMLParser):
    """A small DOM; an end tag that does not close the innermost open element is an error."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]
        self.decl: list[str] = []

    def handle_decl(self, decl: str) -> None:
        self.decl.append(decl)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.stack[-1].children.append(Node(tag, dict(attrs)))

    def handle_endtag(self, tag):
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data):
        self.stack[-1].text += data


def parse(html: str) -> tuple[Node, TreeBuilder]:
    builder = TreeBuilder()
    builder.feed(html)
    builder.close()
    assert builder.stack == [builder.root], "unclosed elements: " + ", ".join(n.tag for n in builder.stack[1:])
    return builder.root, builder


def cells(row: Node) -> list[Node]:
    return [c for c in row.children if c.tag in ("td", "th")]


ROWS = [["physics", 1200, 3456.5], ["chemistry", 800, 1200.25], ["bio", 3, None]]


def sample_sections() -> list[Section]:
    days = [f"2024-05-{d:02d}" for d in range(1, 32)]
    spend = {"physics": [100 + 10 * (i % 7) for i in range(31)],
             "chemistry-and-materials-science-department": [50 + 3 * i for i in range(31)],
             NASTY: [20.5] * 31}
    accounts = ["physics", "chemistry", "bio", "a-really-long-account-name-for-the-ml-group"]
    waits = [i * 60.0 for i in range(61)]
    return [
        Section("Spend", "Cloud spend per day, stacked by account.",
                [sc.stacked_bars("Cloud spend per day (May 2024)", days, spend, "USD", x_label="day")],
                [Table(["account", "GPU-hours", "USD"], ROWS, totals=True, caption="By account")]),
        Section("GPU-hours", ["Cloud against on-prem, per account.", "Negative on-prem is a credit."],
                [sc.grouped_bars("GPU-hours per account", accounts,
                                 {"cloud": [120, 80, 0, 300], "on-prem": [400, 350, 90, -20]}, "GPU-hours")]),
        Section("Waiting", "", [sc.lines("Wait time CDF", waits,
                                         {"burst": [min(1.0, w / 1800) for w in waits],
                                          "no burst": [min(1.0, w / 3600) for w in waits]},
                                         "wait (s)", "fraction of jobs", step=True)]),
        Section("Frontier", "", [sc.points("Cost vs wait", {
            "policies": [(1200, 300, "always-cloud"), (800, 900, "spot-first"), (500, 2400, "never")],
            "frontier": [(1200, 300, ""), (800, 900, ""), (500, 2400, "")]},
            "spend (USD)", "median wait (s)", connect={"frontier"}), sc.stacked_bars("Nothing", [], {})]),
    ]


def sample_report() -> str:
    return render("Cost report — May 2024", sample_sections(), generated_at="2024-06-01 08:00 UTC")


# --- structure ------------------------------------------------------------------------------------


def test_a_complete_html5_document_with_one_section_per_section():
    html = sample_report()
    root, builder = parse(html)
    assert html.startswith("<!DOCTYPE html>") and builder.decl == ["DOCTYPE html"]
    (page,) = root.find_all("html")
    assert page.attrs["lang"] == "en"
    (head,) = page.find_all("head")
    assert head.find_all("meta")[0].attrs.get("charset") == "utf-8"
    assert head.find_all("title")[0].text == "Cost report — May 2024"
    assert len(head.find_all("style")) == 1
    assert page.find_all("h1")[0].text == "Cost report — May 2024"
    assert [h.text for h in page.find_all("h2")] == ["Spend", "GPU-hours", "Waiting", "Frontier"]
    sections = page.find_all("section")
    assert [len(s.find_all("figure")) for s in sections] == [1, 1, 1, 2]
    assert [len(s.find_all("svg")) for s in sections] == [1, 1, 1, 2]
    assert [len(s.find_all("p")) for s in sections] == [1, 2, 0, 0]
    assert len(page.find_all("table")) == 1


def test_the_generated_at_line_is_the_callers_and_the_output_is_deterministic():
    assert sample_report() == sample_report()
    at = datetime(2024, 6, 1, 8, 0, tzinfo=UTC)
    root, _ = parse(render("R", [], generated_at=at))
    (line,) = [p for p in root.find_all("p") if p.attrs.get("class") == "generated"]
    assert line.text == "Generated 2024-06-01 08:00:00+00:00"
    root, _ = parse(render("R", []))
    assert not [p for p in root.find_all("p") if p.attrs.get("class") == "generated"]


def test_charts_keep_their_bars_inside_the_page():
    root, _ = parse(sample_report())
    stacked = root.find_all("svg")[0]
    assert stacked.attrs["class"] == "chart chart-stacked"
    bars = [r for r in stacked.find_all("rect") if r.attrs.get("class") == "bar"]
    assert len(bars) == 3 * 31


# --- tables ---------------------------------------------------------------------------------------


def test_table_numbers_right_aligned_and_a_totals_row():
    root, _ = parse(render("R", [Section("S", tables=[Table(["account", "GPU-hours", "USD"], ROWS, totals=True,
                                                             caption="By account")])]))
    (table,) = root.find_all("table")
    assert table.find_all("caption")[0].text == "By account"
    (head,) = table.find_all("thead")
    assert [(c.text, c.attrs.get("class")) for c in cells(head.find_all("tr")[0])] == [
        ("account", None), ("GPU-hours", "num"), ("USD", "num")]
    body_rows = table.find_all("tbody")[0].find_all("tr")
    assert len(body_rows) == 3
    assert [(c.text, c.attrs.get("class")) for c in cells(body_rows[0])] == [
        ("physics", None), ("1,200", "num"), ("3,456.50", "num")]
    assert cells(body_rows[2])[2].text == ""
    (foot,) = table.find_all("tfoot")
    assert [c.text for c in cells(foot.find_all("tr")[0])] == ["Total", "2,003", "4,656.75"]


def test_totals_only_sum_all_numeric_columns_or_take_the_callers_row():
    mixed = Table(["a", "n", "note"], [["x", 1, "3 nodes"], ["y", 2, 4]], totals=True)
    assert totals_row(mixed) == ["Total", 3, None]
    given = Table(["a", "n"], [["x", 1]], totals=["All", "1 (capped)"])
    root, _ = parse(render("R", [Section("S", tables=[given])]))
    assert [c.text for c in cells(root.find_all("tfoot")[0].find_all("tr")[0])] == ["All", "1 (capped)"]
    root, _ = parse(render("R", [Section("S", tables=[Table(["a"], [["x"]])])]))
    assert root.find_all("tfoot") == []


def test_formatted_number_strings_are_right_aligned_too():
    root, _ = parse(render("R", [Section("S", tables=[Table(["k", "v"], [["cost", "$1,200.50"], ["share", "12%"],
                                                                        ["day", "2024-05-01"]])])]))
    got = [(cells(r)[1].text, cells(r)[1].attrs.get("class")) for r in root.find_all("tbody")[0].find_all("tr")]
    assert got == [("$1,200.50", "num"), ("12%", "num"), ("2024-05-01", None)]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="every row needs 2 cells"):
        render("R", [Section("S", tables=[Table(["a", "b"], [["x"]])])])
    with pytest.raises(ValueError, match="must be an <svg>"):
        render("R", [Section("S", charts=["<img src=x>"])])


# --- escaping and isolation -----------------------------------------------------------------------


def test_all_text_is_escaped():
    html = render(NASTY, [Section(NASTY, NASTY, [sc.grouped_bars(NASTY, [NASTY], {NASTY: [1.0]}, NASTY)],
                                  [Table([NASTY, "n"], [[NASTY, 1]], caption=NASTY)])], generated_at=NASTY,
                  intro=NASTY)
    root, _ = parse(html)
    assert root.find_all("script") == []
    assert "<script>" not in html and "&lt;script&gt;&amp;" in html
    assert root.find_all("h1")[0].text == NASTY and root.find_all("h2")[0].text == NASTY
    assert root.find_all("title")[0].text == NASTY
    assert root.find_all("caption")[0].text == NASTY
    assert root.find_all("th")[0].text == NASTY
    assert NASTY in [p.text for p in root.find_all("p")]
    assert root.find_all("svg")[0].attrs["aria-label"] == NASTY


def test_nothing_refers_outside_the_page():
    html = sample_report()
    for bad in ("http://", "https://", "src=", "url(", "@import", "<script", "<link", "<iframe", "<object"):
        assert bad not in html.lower(), bad
    root, _ = parse(html)
    for node in root.find_all("a"):
        assert (node.attrs.get("href") or "#").startswith("#")
    (csp,) = [m for m in root.find_all("meta") if m.attrs.get("http-equiv") == "Content-Security-Policy"]
    assert "default-src 'none'" in csp.attrs["content"]


# --- in a real browser ----------------------------------------------------------------------------


def test_the_report_renders_in_headless_chromium(tmp_path):
    page = tmp_path / "report.html"
    page.write_text(sample_report(), encoding="utf-8")
    width, height, rows, bpp = read_png(screenshot(page, tmp_path))
    assert 1000 <= width <= 2400 and 1300 <= height <= 3200, f"screenshot is {width}x{height}"
    # Every 3rd pixel of every 3rd row is plenty to see charts, and keeps this pure-Python scan quick.
    pixels = [row[i:i + 3] for row in rows[::3] for i in range(0, len(row), 3 * bpp)]
    assert len(set(pixels)) > 20, "the screenshot is (nearly) a single colour"
    white = sum(1 for p in pixels if p == b"\xff\xff\xff")
    assert white < 0.97 * len(pixels), "the screenshot is almost all white: nothing rendered"
    # The first two palette colours fill the bars of the stacked chart at the top of the page.
    for colour in sc.PALETTE[:2]:
        assert sum(1 for p in pixels if near(tuple(p), colour)) > 200, f"no {colour} bars in the screenshot"
    assert sum(1 for p in pixels if max(p) < 90) > 200, "no dark text in the screenshot"
