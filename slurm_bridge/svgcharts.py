"""Charts as inline SVG strings, for reports a person opens in a browser with no network.

Standard library only: matplotlib is not a dependency. Every function returns one `<svg>` element
sized by a `viewBox` plus fixed width/height, ready to paste into an HTML5 page.

Conventions:
- No `xmlns` on the element: an HTML5 parser puts `<svg>` in the SVG namespace by itself, and a
  report must not contain a single URL. `standalone()` adds the namespace for a `.svg` file.
- Colours are the Okabe–Ito palette, told apart with the common colour-vision deficiencies. Past
  eight series the colours repeat (lines then switch to dashes); fold small series into "other".
- Negative values: stacked bars draw them as 0 and say so in a note under the chart (a negative
  slice of a stack has no honest drawing); grouped bars, lines and points draw them below a zero line.
- NaN and infinite values are missing: not drawn, counted in the same note.
- Empty input renders a framed "No data" chart rather than raising. Series whose length differs
  from the categories (or x values) are a caller bug and raise ValueError.
- Text is XML-escaped. Long labels are cut with an ellipsis and keep their full text in a `<title>`
  tooltip; crowded category labels are thinned to every k-th one.
- Elements carry classes (`bar`, `series`, `legend-item`, `tick`, `no-data`, ...) for tests and CSS.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442", "#000000")
DASHES = (None, "7 4", "2 3")
FONT = "system-ui, -apple-system, 'Segoe UI', 'DejaVu Sans', Arial, sans-serif"
FONT_SIZE = 12
# Average glyph advance of a sans-serif face, erring wide so that estimated labels never collide.
CHAR_W = 0.62 * FONT_SIZE
INK, MUTED, GRID = "#222222", "#555555", "#dddddd"

Point = tuple[float, float, str]
Format = Callable[[float], str]


@dataclass(frozen=True)
class _Box:
    left: float
    top: float
    right: float
    bottom: float

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top


# --- small pieces ---------------------------------------------------------------------------------
def _num(v: float) -> str:
    s = f"{v:.2f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _tag(name: str, attrs: Mapping[str, object], body: str | None = None) -> str:
    inner = "".join(f' {k}="{escape(_num(v) if isinstance(v, float) else str(v), quote=True)}"'
                    for k, v in attrs.items() if v is not None)  # None leaves the attribute out
    return f"<{name}{inner}/>" if body is None else f"<{name}{inner}>{body}</{name}>"


def _tip(text: str) -> str:
    return f"<title>{escape(text)}</title>"


def _fit(label: str, max_chars: int) -> str:
    return label if len(label) <= max_chars else label[: max(1, max_chars - 1)] + "…"


def _text(x: float, y: float, label: str, max_chars: int = 1000, **attrs: object) -> str:
    """A text element; when cut short it sits in a group whose tooltip holds the full label."""
    shown = _fit(label, max_chars)
    el = _tag("text", {"x": x, "y": y, **{k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()}}, escape(shown))
    return el if shown == label else _tag("g", {"class": "clipped"}, _tip(label) + el)


def _value(v: object) -> str:
    if not _finite(v):
        return "missing"
    v = float(v)  # type: ignore[arg-type]
    return f"{v:,.2f}" if abs(v) >= 1 or v == 0 else f"{v:.3g}"


def _style(i: int) -> tuple[str, str | None]:
    return PALETTE[i % len(PALETTE)], DASHES[(i // len(PALETTE)) % len(DASHES)]


def _finite(v: object) -> bool:
    """A drawable number: NaN, infinities, None and non-numbers count as missing."""
    try:
        return math.isfinite(float(v))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def _note(negative: int, missing: int, negative_text: str = "") -> str:
    said = [(negative, f"negative value{{}} {negative_text}"), (missing, "missing value{} not drawn")]
    return "; ".join(f"{n} " + what.format("s" if n > 1 else "") for n, what in said if n)


# --- ticks ----------------------------------------------------------------------------------------
def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    lo, hi = min(lo, hi), max(lo, hi)
    # One value (or a span lost in float noise, or denormal): give it room, never divide by ~0.
    if hi - lo <= 1e-9 * max(abs(lo), abs(hi)) or hi - lo < 1e-200:
        lo, hi = (lo - abs(lo), hi + abs(hi)) if abs(lo) > 1e-200 else (0.0, 1.0)
    raw = (hi - lo) / max(1, count)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw * (1 - 1e-9))
    first = math.floor(lo / step + 1e-9) * step
    last = math.ceil(hi / step - 1e-9) * step
    digits = max(0, -math.floor(math.log10(step))) + 1
    return [round(first + i * step, digits) or 0.0 for i in range(round((last - first) / step) + 1)]


def tick_labels(ticks: Sequence[float]) -> list[str]:
    """One unit for the whole axis (plain, k or M) and only as many decimals as the step needs."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    top = max(abs(t) for t in ticks)
    div, suffix = (1e6, "M") if top >= 1e6 else (1e3, "k") if top >= 1e4 else (1.0, "")
    decimals = max(0, -math.floor(math.log10(step / div) + 1e-9))
    return ["0" if t == 0 else f"{t / div:,.{decimals}f}{suffix}" for t in ticks]


# --- the frame every chart shares -----------------------------------------------------------------
class _Canvas:
    def __init__(self, kind: str, title: str, width: int, height: int) -> None:
        self.kind, self.title, self.width, self.height = kind, title, width, height
        self.parts: list[str] = [_tag("rect", {"class": "bg", "width": width, "height": height, "fill": "#ffffff"})]
        self.parts.append(_text(10, 22, title, int((width - 20) / (CHAR_W * 1.2)), class_="title",
                                font_size=15, font_weight="bold"))
        self.top = 34.0

    def legend(self, names: Sequence[str], swatches: Sequence[str]) -> None:
        """Legend items in rows under the title, wrapping at the right edge."""
        x, y = 10.0, self.top + 4
        for i, name in enumerate(names):
            item_w = 18 + len(_fit(name, 28)) * CHAR_W + 10
            if x > 10 and x + item_w > self.width - 10:
                x, y = 10.0, y + 18
            self.parts.append(_tag("g", {"class": "legend-item", "data-series": name},
                                   _swatch(i, x, y, swatches[i]) + _text(x + 18, y + 10, name, 28)))
            x += item_w
        if names:
            self.top = y + 24

    def svg(self) -> str:
        attrs = {"class": f"chart chart-{self.kind}", "viewBox": f"0 0 {self.width} {self.height}",
                 "width": self.width, "height": self.height, "role": "img", "aria-label": self.title,
                 "font-family": FONT, "font-size": FONT_SIZE, "fill": INK}
        return _tag("svg", attrs, _tip(self.title) + "".join(self.parts))

    def plot_box(self, y_texts: Sequence[str], y_label: str, x_label: str, note: str,
                 right_pad: float = 16.0, top_pad: float = 0.0) -> _Box:
        left = 10 + (22 if y_label else 0) + max(len(t) for t in y_texts) * CHAR_W + 8
        bottom = self.height - 10 - (18 if note else 0) - (18 if x_label else 0) - 18
        top = min(self.top + top_pad + 6, bottom - 20)  # a tiny height still draws, if squeezed
        return _Box(left, top, self.width - right_pad, bottom)

    def y_axis(self, box: _Box, ticks: Sequence[float], y_label: str) -> Callable[[float], float]:
        lo, hi = ticks[0], ticks[-1]

        def y(v: float) -> float:
            return box.bottom - (v - lo) / (hi - lo) * box.height

        grid, labels = [], []
        for t, label in zip(ticks, tick_labels(ticks)):
            stroke = MUTED if t == 0 else GRID
            grid.append(_tag("line", {"x1": box.left, "x2": box.right, "y1": y(t), "y2": y(t), "stroke": stroke}))
            labels.append(_text(box.left - 6, y(t) + 4, label, class_="tick", text_anchor="end"))
        self.parts.append(_tag("g", {"class": "grid"}, "".join(grid)))
        self.parts.append(_tag("g", {"class": "y-axis"}, "".join(labels)))
        if y_label:
            mid = box.top + box.height / 2
            self.parts.append(_text(16, mid, y_label, int(box.height / CHAR_W), class_="axis-label",
                                    text_anchor="middle", transform=f"rotate(-90 16 {_num(mid)})"))
        return y

    def x_axis(self, box: _Box, lo: float, hi: float, ticks: Sequence[float],
               texts: Sequence[str]) -> Callable[[float], float]:

        def x(v: float) -> float:
            return box.left + (v - lo) / (hi - lo) * box.width

        grid = [_tag("line", {"x1": x(t), "x2": x(t), "y1": box.top, "y2": box.bottom, "stroke": GRID})
                for t in ticks]
        labels = [_text(x(t), box.bottom + 16, s, 14, class_="tick", text_anchor="middle")
                  for t, s in zip(ticks, texts)]
        self.parts.insert(1, _tag("g", {"class": "grid x-grid"}, "".join(grid)))
        self.parts.append(_tag("g", {"class": "x-axis"}, "".join(labels)))
        return x

    def footer(self, box: _Box, x_label: str, note: str) -> None:
        y = box.bottom + 18
        if x_label:
            y += 18
            self.parts.append(_text(box.left + box.width / 2, y, x_label, int(box.width / CHAR_W),
                                    class_="axis-label", text_anchor="middle"))
        if note:
            self.parts.append(_text(box.left, y + 18, note, int(box.width / CHAR_W), class_="note",
                                    fill=MUTED, font_style="italic"))


def _swatch(i: int, x: float, y: float, kind: str) -> str:
    colour, dash = _style(i)
    if kind == "dot":
        return _tag("circle", {"cx": x + 6, "cy": y + 6, "r": 4, "fill": colour})
    if kind == "line":
        return _tag("line", {"x1": x, "x2": x + 14, "y1": y + 6, "y2": y + 6, "stroke": colour,
                             "stroke-width": 3, "stroke-dasharray": dash})
    return _tag("rect", {"x": x, "y": y, "width": 12, "height": 12, "fill": colour})


def _no_data(kind: str, title: str, width: int, height: int) -> str:
    c = _Canvas(kind, title, width, height)
    c.parts.append(_tag("rect", {"x": 10, "y": c.top + 6, "width": width - 20, "height": max(10, height - c.top - 16),
                                 "fill": "none", "stroke": GRID}))
    c.parts.append(_text(width / 2, (c.top + height) / 2, "No data", class_="no-data", text_anchor="middle",
                         fill=MUTED, font_size=16))
    return c.svg()


# --- bar charts -----------------------------------------------------------------------------------
def _check(categories: Sequence[object], series: Mapping[str, Sequence[float]], what: str) -> None:
    for name, values in series.items():
        if len(values) != len(categories):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(categories)} {what}")


def _bars_in(categories: Sequence[str],
             series: Mapping[str, Sequence[float]]) -> tuple[list[str], dict[str, list[float]], int]:
    """Labels as text, values with each missing one as 0, and how many were missing."""
    _check(categories, series, "categories")
    clean = {n: [float(v) if _finite(v) else 0.0 for v in vs] for n, vs in series.items()}
    return [str(c) for c in categories], clean, sum(1 for vs in series.values() for v in vs if not _finite(v))


def _category_labels(c: _Canvas, box: _Box, categories: Sequence[str]) -> None:
    """Labels centred under their slots; when crowded only every k-th, each no wider than its share."""
    slot = box.width / len(categories)
    wanted = min(max(len(s) for s in categories), 10) * CHAR_W + 8
    every = max(1, math.ceil(wanted / slot))
    labels = []
    for i in range(0, len(categories), every):
        cx = box.left + (i + 0.5) * slot
        half = min(every * slot / 2, cx - 2, c.width - cx - 2)
        labels.append(_text(cx, box.bottom + 16, categories[i], max(2, int(2 * half / CHAR_W) - 1),
                            class_="tick category", text_anchor="middle"))
    c.parts.append(_tag("g", {"class": "x-axis", "data-every": every}, "".join(labels)))


def stacked_bars(title: str, categories: Sequence[str], series: Mapping[str, Sequence[float]], y_label: str = "",
                 *, x_label: str = "", width: int = 720, height: int = 360, totals: bool = True) -> str:
    """One bar per category, each series a slice of it (e.g. spend per day stacked by account).

    Negative values are drawn as 0 and counted in a note. `totals` writes each bar's total above it
    when every total fits in its slot.
    """
    categories, clean, missing = _bars_in(categories, series)
    names = list(series)
    if not names or missing == len(names) * len(categories):
        return _no_data("stacked", title, width, height)
    note = _note(sum(1 for vs in clean.values() for v in vs if v < 0), missing, "drawn as 0")
    sums = [sum(max(0.0, clean[n][i]) for n in names) for i in range(len(categories))]
    ticks = nice_ticks(0.0, max(sums))

    c = _Canvas("stacked", title, width, height)
    c.legend(names, ["rect"] * len(names))
    box = c.plot_box(tick_labels(ticks), y_label, x_label, note, top_pad=14 if totals else 0)
    y = c.y_axis(box, ticks, y_label)
    slot = box.width / len(categories)
    # Hairline bars (a year of days) touch: gaps a pixel wide only show up as stripes.
    bar_w = min(slot * 0.7, 64.0) if slot >= 6 else slot
    base = [0.0] * len(categories)
    for i, name in enumerate(names):
        rects = []
        for j, cat in enumerate(categories):
            v = max(0.0, clean[name][j])
            x = box.left + j * slot + (slot - bar_w) / 2
            rects.append(_tag("rect", {"class": "bar", "x": x, "y": y(base[j] + v), "width": bar_w,
                                       "height": y(base[j]) - y(base[j] + v)},
                              _tip(f"{name} — {cat}: {_value(series[name][j])}")))
            base[j] += v
        c.parts.append(_tag("g", {"class": "series", "data-series": name, "fill": _style(i)[0]}, "".join(rects)))
    sum_texts = [_value(s) for s in sums]
    if totals and max(len(s) for s in sum_texts) * CHAR_W * 0.85 <= slot - 2:
        c.parts.append(_tag("g", {"class": "totals", "font-size": 10, "text-anchor": "middle"}, "".join(
            _text(box.left + (j + 0.5) * slot, y(s) - 4, t) for j, (s, t) in enumerate(zip(sums, sum_texts)))))
    _category_labels(c, box, categories)
    c.footer(box, x_label, note)
    return c.svg()


def grouped_bars(title: str, categories: Sequence[str], series: Mapping[str, Sequence[float]], y_label: str = "",
                 *, x_label: str = "", width: int = 720, height: int = 360) -> str:
    """Side-by-side bars per category, one per series (e.g. GPU-hours cloud vs on-prem per account).

    Negative values hang below the zero line.
    """
    categories, clean, missing = _bars_in(categories, series)
    names = list(series)
    if not names or missing == len(names) * len(categories):
        return _no_data("grouped", title, width, height)
    note = _note(0, missing)
    values = [v for vs in clean.values() for v in vs]
    ticks = nice_ticks(min(0.0, *values), max(0.0, *values))

    c = _Canvas("grouped", title, width, height)
    c.legend(names, ["rect"] * len(names))
    box = c.plot_box(tick_labels(ticks), y_label, x_label, note, top_pad=6)
    y = c.y_axis(box, ticks, y_label)
    slot = box.width / len(categories)
    bar_w = min(slot * (0.8 if slot >= 6 else 1.0) / len(names), 48.0)
    gap = 1.0 if bar_w > 4 else 0.0
    for i, name in enumerate(names):
        rects = []
        for j, cat in enumerate(categories):
            v = clean[name][j]
            x = box.left + j * slot + (slot - bar_w * len(names)) / 2 + i * bar_w
            rects.append(_tag("rect", {"class": "bar", "x": x + gap / 2, "y": min(y(0.0), y(v)),
                                       "width": bar_w - gap, "height": abs(y(0.0) - y(v))},
                              _tip(f"{name} — {cat}: {_value(series[name][j])}")))
        c.parts.append(_tag("g", {"class": "series", "data-series": name, "fill": _style(i)[0]}, "".join(rects)))
    _category_labels(c, box, categories)
    c.footer(box, x_label, note)
    return c.svg()


# --- lines and points -----------------------------------------------------------------------------

Scale = Callable[[float], float]


def _line(k: int, pts: Sequence[tuple[float, float]], step: bool, series: str | None = None) -> str:
    """A path through the points; in step mode each value holds until the next x (a CDF)."""
    seg = "H{} V{}" if step else "L{} {}"
    d = " ".join(("M{} {}" if i == 0 else seg).format(_num(px), _num(py)) for i, (px, py) in enumerate(pts))
    colour, dash = _style(k)
    return _tag("path", {"class": "line", "data-series": series, "d": d, "fill": "none", "stroke": colour,
                         "stroke-width": 2, "stroke-dasharray": dash})


def _xy_axes(c: _Canvas, xs: Sequence[float], ys: Sequence[float], x_label: str, y_label: str, note: str,
             x_format: Format | None, y_from_zero: bool, x_pad: float) -> tuple[_Box, Scale, Scale]:
    """Plot box and both numeric axes of a line or scatter chart."""
    y_lo, y_hi = (min(0.0, *ys), max(0.0, *ys)) if y_from_zero else (min(ys), max(ys))
    y_ticks = nice_ticks(y_lo, y_hi)
    lo, hi = min(xs), max(xs)
    lo, hi = lo - (hi - lo) * x_pad, hi + (hi - lo) * x_pad
    x_ticks = nice_ticks(lo, hi, max(2, int((c.width - 120) / 110)))
    # The axis spans the data, not the round ticks past it, which would only add empty space.
    inside = [t for t in x_ticks if lo - 1e-9 * (hi - lo) <= t <= hi + 1e-9 * (hi - lo)]
    x_ticks, lo, hi = (inside, lo, hi) if len(inside) >= 2 else (x_ticks, x_ticks[0], x_ticks[-1])
    x_texts = [_fit(x_format(t), 14) for t in x_ticks] if x_format else tick_labels(x_ticks)
    # The last x label is centred on the right edge, so its half sets the right margin.
    right_pad = max(16.0, len(x_texts[-1]) * CHAR_W / 2 + 6)
    box = c.plot_box(tick_labels(y_ticks), y_label, x_label, note, right_pad=right_pad)
    y = c.y_axis(box, y_ticks, y_label)
    return box, c.x_axis(box, lo, hi, x_ticks, x_texts), y


def lines(title: str, x: Sequence[float], series: Mapping[str, Sequence[float]], x_label: str = "",
          y_label: str = "", *, width: int = 720, height: int = 360, step: bool = False,
          markers: bool | None = None, x_format: Format | None = None, y_from_zero: bool = True) -> str:
    """One line per series over shared x values (e.g. a wait CDF with `step=True`, spend over time).

    Missing values break the line. `markers` defaults to on for 40 points or fewer; `x_format`
    turns an x tick value into its label (e.g. a day number into a date).
    """
    _check(x, series, "x values")
    names = list(series)
    cols = sorted((i for i, v in enumerate(x) if _finite(v)), key=lambda i: x[i])
    ys = [float(vs[i]) for vs in series.values() for i in cols if _finite(vs[i])]
    if not names or not ys:
        return _no_data("lines", title, width, height)
    note = _note(0, len(names) * len(x) - len(ys))
    c = _Canvas("lines", title, width, height)
    c.legend(names, ["line"] * len(names))
    box, sx, sy = _xy_axes(c, [float(x[i]) for i in cols], ys, x_label, y_label, note, x_format, y_from_zero, 0.0)
    show_markers = len(cols) <= 40 if markers is None else markers
    for k, (name, vs) in enumerate(series.items()):
        runs: list[list[int]] = [[]]
        for i in cols:  # a missing value ends one run of the line and starts the next
            if _finite(vs[i]):
                runs[-1].append(i)
            elif runs[-1]:
                runs.append([])
        body = "".join(_line(k, [(sx(x[i]), sy(vs[i])) for i in run], step) for run in runs if run)
        if show_markers:
            body += "".join(_tag("circle", {"class": "marker", "cx": sx(x[i]), "cy": sy(vs[i]), "r": 3},
                                 _tip(f"{name}: {_value(x[i])}, {_value(vs[i])}")) for run in runs for i in run)
        c.parts.append(_tag("g", {"class": "series", "data-series": name, "fill": _style(k)[0]}, body))
    c.footer(box, x_label, note)
    return c.svg()


Rect = tuple[float, float, float, float]


def _place(px: float, py: float, label: str, box: _Box, taken: list[Rect],
           dots: Sequence[tuple[float, float]]) -> tuple[float, float, str] | None:
    """First spot right, left, above or below the point where the label covers no other label or point."""
    w = len(label) * CHAR_W * 0.9
    for dx, dy, anchor, x0 in ((7, 4, "start", 0.0), (-7, 4, "end", -w), (0, -9, "middle", -w / 2),
                               (0, 17, "middle", -w / 2)):
        r = (px + dx + x0, py + dy - 10, px + dx + x0 + w, py + dy + 2)
        inside = box.left <= r[0] and r[2] <= box.right + 20 and box.top - 6 <= r[1] and r[3] <= box.bottom
        clear = all(r[2] < t[0] or t[2] < r[0] or r[3] < t[1] or t[3] < r[1] for t in taken)
        if inside and clear and not any(r[0] - 3 <= qx <= r[2] + 3 and r[1] - 3 <= qy <= r[3] + 3 for qx, qy in dots):
            taken.append(r)
            return px + dx, py + dy, anchor
    return None


def points(title: str, pts: Sequence[Point] | Mapping[str, Sequence[Point]], x_label: str = "",
           y_label: str = "", *, connect: bool | Collection[str] = False, width: int = 720, height: int = 400,
           x_format: Format | None = None, y_from_zero: bool = False) -> str:
    """A scatter of labelled points (e.g. a cost/wait frontier).

    `pts` is one list of (x, y, label), or a mapping of series name to such lists (then with a
    legend). `connect=True` joins each series' points in x order; a collection of series names joins
    only those (e.g. just the frontier). Labels that would overlap are left to the tooltip.
    """
    groups = dict(pts) if isinstance(pts, Mapping) else {"": list(pts)}
    good = {n: [(float(px), float(py), str(lb)) for px, py, lb in ps if _finite(px) and _finite(py)]
            for n, ps in groups.items()}
    flat = [p for ps in good.values() for p in ps]
    if not flat:
        return _no_data("points", title, width, height)
    note = _note(0, sum(len(ps) for ps in groups.values()) - len(flat))
    joined = set(good) if connect is True else set(connect or ())
    c = _Canvas("points", title, width, height)
    if any(good):
        c.legend(list(good), ["line" if n in joined else "dot" for n in good])
    box, sx, sy = _xy_axes(c, [p[0] for p in flat], [p[1] for p in flat], x_label, y_label, note, x_format,
                           y_from_zero, 0.04)
    # Every line goes under every point, so a frontier drawn through other series' points hides none.
    c.parts.append(_tag("g", {"class": "lines"}, "".join(
        _line(k, [(sx(px), sy(py)) for px, py, _ in sorted(ps)], False, name)
        for k, (name, ps) in enumerate(good.items()) if name in joined and len(ps) > 1)))
    dots = [(sx(px), sy(py)) for px, py, _ in flat]
    taken: list[Rect] = []
    labels = []
    for k, (name, ps) in enumerate(good.items()):
        body = ""
        for px, py, label in ps:
            tip = f"{label}: {_value(px)}, {_value(py)}" if label else f"{_value(px)}, {_value(py)}"
            body += _tag("circle", {"class": "point", "cx": sx(px), "cy": sy(py), "r": 3 if name in joined else 4},
                         _tip(tip))
            spot = _place(sx(px), sy(py), _fit(label, 22), box, taken, dots) if label else None
            if spot:
                labels.append(_text(spot[0], spot[1], label, 22, class_="point-label", text_anchor=spot[2]))
        c.parts.append(_tag("g", {"class": "series", "data-series": name, "fill": _style(k)[0]}, body))
    c.parts.append(_tag("g", {"class": "point-labels", "font-size": 11}, "".join(labels)))
    c.footer(box, x_label, note)
    return c.svg()


def standalone(svg: str) -> str:
    """A chart as the text of a `.svg` file: the same element plus the namespace a file needs."""
    namespaced = svg.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + namespaced
