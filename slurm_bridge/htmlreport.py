"""One self-contained HTML5 page for a report: inline CSS, inline SVG charts, no scripts, no URLs.

Standard library only. A finance person opens the file from disk or mail with no network, so
nothing may be fetched: no fonts, images, stylesheets or links off the page, and a
Content-Security-Policy that forbids them should anything slip in. The output is deterministic:
the generated-at line comes from the caller, never from the clock here.

Charts are `<svg>` strings from `svgcharts` and are embedded as they are; everything else is
escaped text. Numbers in tables are right-aligned: ints get thousands separators, floats and
Decimals two decimals; pass strings to format a column yourself (strings that read as numbers,
like "$1,200.50" or "12%", are right-aligned too).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from html import escape

Cell = object
_NUMERIC = re.compile(r"^[-+]?[$€£]?\s*[-+]?\d[\d,]*(\.\d+)?\s*(%|[kKMG])?$")

CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", Arial, sans-serif;
       color: #222; background: #fff; margin: 0 auto; padding: 24px 32px 48px; max-width: 1100px;
       line-height: 1.45; font-size: 15px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 36px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #ddd; }
p { margin: 6px 0 12px; max-width: 75ch; }
.generated { color: #666; font-size: 13px; margin: 0 0 20px; }
figure { margin: 16px 0; }
figure svg { display: block; max-width: 100%; height: auto; }
table { border-collapse: collapse; margin: 12px 0 20px; font-size: 14px; }
caption { text-align: left; font-weight: 600; padding: 0 0 6px; }
th, td { padding: 5px 12px; border-bottom: 1px solid #e3e3e3; text-align: left; vertical-align: top; }
thead th { border-bottom: 2px solid #999; background: #f4f4f4; }
tbody tr:nth-child(even) { background: #fafafa; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tfoot td { font-weight: 700; border-top: 2px solid #999; border-bottom: none; }
@media print {
  body { padding: 0; max-width: none; }
  section, figure, table { break-inside: avoid; }
}
"""

# Belt and braces: even a stray URL in a label could not make the browser fetch anything.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


@dataclass(frozen=True)
class Table:
    """Header and rows of cells; `totals=True` adds a row summing every all-numeric column,
    a sequence gives that row as is. The totals label goes in the first column when it is text."""

    header: Sequence[str]
    rows: Sequence[Sequence[Cell]]
    totals: bool | Sequence[Cell] = False
    caption: str = ""
    totals_label: str = "Total"


@dataclass(frozen=True)
class Section:
    """A heading with, in this order, paragraphs, charts (SVG strings) and tables; all optional."""

    heading: str
    text: str | Sequence[str] = ""
    charts: Sequence[str] = ()
    tables: Sequence[Table] = ()


def _is_number(v: Cell) -> bool:
    return isinstance(v, (int, float, Decimal)) and not isinstance(v, bool)


def format_cell(v: Cell) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, (float, Decimal)):
        return f"{v:,.2f}"
    return str(v)


def _right(v: Cell) -> bool:
    return _is_number(v) or (isinstance(v, str) and bool(_NUMERIC.match(v.strip())))


def _td(v: Cell, tag: str = "td") -> str:
    cls = ' class="num"' if _right(v) else ""
    return f"<{tag}{cls}>{escape(format_cell(v))}</{tag}>"


def totals_row(table: Table) -> list[Cell]:
    """The row under a table: sums of the columns whose every non-empty cell is a number."""
    if not isinstance(table.totals, bool):
        return list(table.totals)
    out: list[Cell] = []
    for i in range(len(table.header)):
        column = [r[i] for r in table.rows if i < len(r) and r[i] is not None]
        summable = bool(column) and all(_is_number(v) for v in column)
        out.append(sum(column) if summable else None)  # type: ignore[arg-type]
    if out and not _is_number(out[0]):
        out[0] = table.totals_label
    return out


def _table(table: Table) -> str:
    width = len(table.header)
    if any(len(r) != width for r in table.rows):
        raise ValueError(f"table {table.caption or table.header!r}: every row needs {width} cells")
    # A column's header is right-aligned with its numbers, so the two line up.
    numeric = [bool(col) and all(_right(v) for v in col if v is not None)
               for col in ([r[i] for r in table.rows] for i in range(width))]
    num = ' class="num"'
    head = "".join(f'<th{num if n else ""} scope="col">{escape(str(h))}</th>' for h, n in zip(table.header, numeric))
    body = "".join("<tr>" + "".join(_td(v) for v in row) + "</tr>\n" for row in table.rows)
    parts = ["<table>"]
    if table.caption:
        parts.append(f"<caption>{escape(table.caption)}</caption>")
    parts.append(f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>")
    if table.totals is not False:
        parts.append("<tfoot><tr>" + "".join(_td(v) for v in totals_row(table)) + "</tr></tfoot>")
    parts.append("</table>")
    return "".join(parts)


def _chart(svg: str) -> str:
    if not svg.lstrip().startswith("<svg"):
        raise ValueError("a chart must be an <svg> element from svgcharts")
    return f"<figure>{svg.strip()}</figure>"


def _section(section: Section, index: int) -> str:
    texts = [section.text] if isinstance(section.text, str) else list(section.text)
    parts = [f'<section id="s{index}">', f"<h2>{escape(section.heading)}</h2>"]
    parts += [f"<p>{escape(t)}</p>" for t in texts if t]
    parts += [_chart(svg) for svg in section.charts]
    parts += [_table(t) for t in section.tables]
    parts.append("</section>")
    return "\n".join(parts)


def render(title: str, sections: Sequence[Section], generated_at: str | datetime = "",
           intro: str = "") -> str:
    """A complete HTML5 document; the same arguments always give the same text."""
    stamp = generated_at.isoformat(sep=" ", timespec="seconds") if isinstance(generated_at, datetime) else generated_at
    head = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{escape(title)}</h1>",
    ]
    if stamp:
        head.append(f'<p class="generated">Generated {escape(stamp)}</p>')
    if intro:
        head.append(f"<p>{escape(intro)}</p>")
    body = [_section(s, i) for i, s in enumerate(sections, 1)]
    return "\n".join(head + body + ["</body>", "</html>", ""])
