"""Charts of a `simulate` run: the wait/spend frontier, the wait CDF and spend over time.

Written as one self-contained HTML file (inline SVG); a `.png` name renders that page with headless
Chromium (Debian's `chromium`), since matplotlib is not a dependency.
"""

from __future__ import annotations

import bisect
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from . import htmlreport, svgcharts
from .errors import BridgeError

CHROMIUM = Path("/usr/bin/chromium")
CDF_POINTS = 60


def _cdf(results) -> tuple[list[float], dict[str, list[float]]]:
    """Share of jobs that waited at most x hours, at log-spaced x from a minute to the longest wait."""
    longest = max((r.wait_cdf[-1] for r in results if r.wait_cdf), default=3600.0)
    xs, x = [], 60.0
    while x < max(longest, 120.0) * 1.01:
        xs.append(x)
        x *= (max(longest, 120.0) / 60.0) ** (1 / CDF_POINTS)
    series = {}
    for r in results:
        waits = list(r.wait_cdf)
        series[r.strategy] = [bisect.bisect_right(waits, v) / max(len(waits), 1) for v in xs]
    return [v / 3600 for v in xs], series


def charts(results: Sequence) -> list[str]:
    thresholds = [r for r in results if r.strategy.startswith("threshold:")]
    pts = {"fixed thresholds": [(float(r.cloud_spend_usd), r.wait_mean_s / 3600, r.strategy.split(":")[1] + " s")
                                for r in thresholds]}
    for r in results:
        if not r.strategy.startswith("threshold:"):
            pts[r.strategy] = [(float(r.cloud_spend_usd), r.wait_mean_s / 3600, r.strategy)]
    frontier = svgcharts.points("Mean wait against cloud spend", pts, "cloud spend (USD)", "mean wait (h)",
                                connect={"fixed thresholds"})
    xs, cdf = _cdf(results)
    waits = svgcharts.lines("Share of jobs started within a wait", xs, cdf, "wait (h, log-spaced points)",
                            "share of jobs", step=True)
    days = max((len(r.spend_per_day) for r in results), default=0)
    spend = svgcharts.lines("Cloud spend per day", list(range(days)),
                            {r.strategy: list(r.spend_per_day) + [0.0] * (days - len(r.spend_per_day))
                             for r in results if any(r.spend_per_day)}, "day of the trace", "USD")
    return [frontier, waits, spend]


def page(results: Sequence, title: str) -> str:
    rows = [[r.strategy, round(r.wait_mean_s / 3600, 3), round(r.wait_p95_s / 3600, 3), float(r.cloud_spend_usd),
             "-" if r.overhead_share is None else f"{r.overhead_share * 100:.1f}%", r.residency_violations]
            for r in results]
    section = htmlreport.Section(title, "Each strategy replays the same jobs with the same seed.", charts(results),
                                 [htmlreport.Table(["strategy", "mean wait h", "p95 wait h", "cloud USD", "overhead",
                                                    "residency violations"], rows)])
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return htmlreport.render("slurm-bridge simulate", [section], generated_at=now)


def write_plot(path: Path, results: Sequence, title: str) -> None:
    html = page(results, title)
    if path.suffix.lower() in (".html", ".htm"):
        path.write_text(html, encoding="utf-8")
        return
    if path.suffix.lower() != ".png":
        raise BridgeError(f"--plot {path}: name a .html or .png file")
    if not CHROMIUM.exists():
        raise BridgeError(f"--plot {path}: a PNG is drawn with headless Chromium; install the Debian package "
                          "`chromium`, or name a .html file")
    with tempfile.TemporaryDirectory(prefix="slurm-bridge-plot-") as tmp:
        src = Path(tmp) / "plot.html"
        src.write_text(html, encoding="utf-8")
        # Off the network on purpose: the page needs none, and this machine may have none.
        cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp}/profile", "--window-size=1000,1900", f"--screenshot={path.resolve()}",
               f"file://{src}"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    if not path.exists():
        raise BridgeError(f"--plot {path}: chromium drew nothing (exit {done.returncode}): {done.stderr[-300:]}")
