"""`slurm-bridge cost report` and `cost breakeven`: a period's attribution as tables, CSV, JSON or HTML.

Every format is made from one dict (`report`), so the numbers are the same in all of them. Money
stays `Decimal` until it is printed; JSON prints it as numbers with two decimals.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from datetime import datetime, timezone
from decimal import Decimal
from fractions import Fraction

from . import accounting, costs, htmlreport, svgcharts, tables
from .config import Config
from .costmodel import breakeven
from .errors import BridgeError
from .state import StateDB

FORMATS = ("table", "csv", "json", "html")
DAY = 86400
COLUMNS = ("key", "jobs", "spend_usd", "run_usd", "overhead_usd", "overhead_share", "cloud_gpu_hours",
           "onprem_gpu_hours", "onprem_usd")


def report(cfg: Config, db: StateDB, since: float, until: float, by: str, now: float) -> dict:
    att, problems = accounting.attribution(cfg, db, since, until)
    rows = [_row(r) for r in costs.group(att, by)]
    cloud_gpu_h = sum(r["cloud_gpu_hours"] for r in rows)
    onprem_gpu_h = sum(r["onprem_gpu_hours"] for r in rows)
    overhead = sum((r["overhead_usd"] for r in rows), Decimal("0.00"))
    return {
        "since": _iso(since), "until": _iso(until), "by": by, "weight": att.weight,
        "rows": rows,
        "totals": {"cloud_usd": att.ledger_total, "overhead_usd": overhead,
                   "overhead_share": float(overhead / att.ledger_total) if att.ledger_total else None,
                   "cloud_gpu_hours": round(cloud_gpu_h, 3), "onprem_gpu_hours": round(onprem_gpu_h, 3),
                   "onprem_usd": att.onprem_total,
                   "onprem_usd_per_gpu_hour": cfg.cost.onprem.usd_per_gpu_hour if cfg.cost.onprem else None},
        "jobs": [_job(j) for j in sorted(att.jobs, key=lambda j: costs.natural_key(j.job_id))],
        "pool_overhead_usd": dict(sorted(att.pool_overhead.items())),
        "unmatched": [{"job": u.job_id, "node": u.node, "start": _iso(u.start), "end": _iso(u.end),
                       "seconds": round(u.seconds, 1)} for u in att.unmatched],
        "budgets": accounting.budgets(cfg, db, now),
        "problems": problems,
        "daily_spend_by_account": _daily(att),
        "overhead_by_pool": [_row(r) for r in costs.group(att, "pool")],
    }


def _row(r: costs.GroupRow) -> dict:
    return {"key": r.key, "jobs": r.jobs, "spend_usd": r.spend, "run_usd": r.run_cost, "overhead_usd": r.overhead,
            "overhead_share": None if r.overhead_share is None else round(r.overhead_share, 4),
            "cloud_gpu_hours": round(r.gpu_hours, 3), "onprem_gpu_hours": round(r.onprem_gpu_hours, 3),
            "onprem_usd": r.onprem_cost}


def _job(j: costs.JobCost) -> dict:
    return {"job": j.job_id, "user": j.user, "account": j.account, "partition": j.partition,
            "run_usd": j.run_cost, "overhead_usd": j.overhead, "total_usd": j.total,
            "cloud_gpu_hours": round(j.cloud_gpu_seconds / 3600, 4),
            "onprem_gpu_hours": round(j.onprem_gpu_seconds / 3600, 4), "onprem_usd": j.onprem_cost,
            "regions": list(j.regions), "providers": list(j.providers), "instance_types": list(j.instance_types)}


def _daily(att: costs.Attribution) -> dict[str, dict[str, float]]:
    """USD per UTC day and account, each charge split over the days it spans (for the chart)."""
    account = {j.job_id: j.account for j in att.jobs}
    out: dict[str, dict[str, Fraction]] = defaultdict(lambda: defaultdict(Fraction))
    for c in att.charges:
        who = account.get(c.job_id, costs.UNATTRIBUTED) if c.job_id else costs.UNATTRIBUTED
        start, end = c.start, c.end
        if end <= start:
            continue
        t = start
        while t < end:
            day_end = Fraction((int(t) // DAY + 1) * DAY)
            stop = min(end, day_end)
            out[_day(float(t))][who] += c.usd * (stop - t) / (end - start)
            t = stop
    return {d: {a: round(float(v), 2) for a, v in sorted(accts.items())} for d, accts in sorted(out.items())}


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _money(v) -> str:
    return "-" if v is None else f"{v:,.2f}"


def _share(v) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


# --- renderers --------------------------------------------------------------------------------------

def render(data: dict, fmt: str) -> str:
    return {"table": render_table, "csv": render_csv, "json": render_json, "html": render_html}[fmt](data)


def render_table(data: dict) -> str:
    header = [data["by"], "jobs", "spend USD", "of it overhead", "overhead", "cloud GPU-h", "on-prem GPU-h",
              "on-prem USD"]
    rows = [[r["key"], r["jobs"], _money(r["spend_usd"]), _money(r["overhead_usd"]), _share(r["overhead_share"]),
             f"{r['cloud_gpu_hours']:,.2f}", f"{r['onprem_gpu_hours']:,.2f}", _money(r["onprem_usd"])]
            for r in data["rows"]]
    t = data["totals"]
    rows.append(["total", "", _money(t["cloud_usd"]), _money(t["overhead_usd"]), _share(t["overhead_share"]),
                 f"{t['cloud_gpu_hours']:,.2f}", f"{t['onprem_gpu_hours']:,.2f}", _money(t["onprem_usd"])])
    out = [f"cloud cost by {data['by']}, {data['since']} to {data['until']} (shared by {data['weight']})",
           tables.render(header, rows, right=range(1, len(header)))]
    if data["budgets"]:
        out += ["", "budgets this month:", tables.render(
            ["account", "budget USD", "spent USD", "left USD", ""],
            [[b["account"], _money(b["budget_usd_month"]), _money(b["spent_usd"]), _money(b["left_usd"]),
              "OVER" if b["over"] else ""] for b in data["budgets"]], right=(1, 2, 3))]
    if t["onprem_usd_per_gpu_hour"] is None:
        out.append("on-prem jobs are not priced: set [cost.onprem] in the config")
    if data["unmatched"]:
        out.append(f"warning: {len(data['unmatched'])} job run(s) on cloud nodes with no ledger interval "
                   "(see --format json, 'unmatched')")
    out += [f"warning: {p}" for p in data["problems"]]
    return "\n".join(out) + "\n"


def render_csv(data: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    for r in data["rows"]:
        w.writerow(["" if r[c] is None else r[c] for c in COLUMNS])
    return buf.getvalue()


def _plain(value):
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def render_json(data: dict) -> str:
    return json.dumps(data, indent=1, default=_plain) + "\n"


def render_html(data: dict) -> str:
    daily = data["daily_spend_by_account"]
    days = list(daily)
    accounts = sorted({a for d in daily.values() for a in d})
    spend_chart = svgcharts.stacked_bars("Cloud spend per day by account", days,
                                         {a: [daily[d].get(a, 0.0) for d in days] for a in accounts}, "USD")
    acct = [r for r in data["rows"]] if data["by"] == "account" else []
    keys = [r["key"] for r in acct]
    gpu_chart = svgcharts.grouped_bars("GPU-hours, cloud and on-prem, by account", keys,
                                       {"cloud": [r["cloud_gpu_hours"] for r in acct],
                                        "on-prem": [r["onprem_gpu_hours"] for r in acct]}, "GPU-hours")
    pools = [r for r in data["overhead_by_pool"] if r["key"] != costs.ONPREM]
    overhead_chart = svgcharts.grouped_bars("Overhead share of cloud spend by pool", [r["key"] for r in pools],
                                            {"overhead %": [(r["overhead_share"] or 0.0) * 100 for r in pools]},
                                            "% of spend")
    t = data["totals"]
    header = [data["by"], "jobs", "spend USD", "overhead USD", "overhead", "cloud GPU-h", "on-prem GPU-h",
              "on-prem USD"]
    rows = [[r["key"], r["jobs"], float(r["spend_usd"]), float(r["overhead_usd"]), _share(r["overhead_share"]),
             r["cloud_gpu_hours"], r["onprem_gpu_hours"], "-" if r["onprem_usd"] is None else float(r["onprem_usd"])]
            for r in data["rows"]]
    total = ["Total", "", float(t["cloud_usd"]), float(t["overhead_usd"]), _share(t["overhead_share"]),
             t["cloud_gpu_hours"], t["onprem_gpu_hours"], "-" if t["onprem_usd"] is None else float(t["onprem_usd"])]
    sections = [
        htmlreport.Section("Spend", f"Cloud cost by {data['by']}: each instance's time shared by the jobs on it "
                           f"({data['weight']} x time); boot, idle and failed launches are overhead.",
                           [spend_chart], [htmlreport.Table(header, rows, totals=total)]),
        htmlreport.Section("Cloud and on-prem", "GPU-hours each account used in the cloud and on-prem.",
                           [gpu_chart] if acct else [],
                           [] if acct else [htmlreport.Table(["note"], [["run with --by account for this chart"]])]),
        htmlreport.Section("Overhead", "Boot, idle before suspend and failed launches, as a share of each pool's "
                           "spend.", [overhead_chart]),
    ]
    if data["budgets"]:
        sections.append(htmlreport.Section("Budgets this month", "", [], [htmlreport.Table(
            ["account", "budget USD", "spent USD", "left USD", ""],
            [[b["account"], b["budget_usd_month"], b["spent_usd"], b["left_usd"], "over" if b["over"] else ""]
             for b in data["budgets"]])]))
    return htmlreport.render(f"slurm-bridge cost report {data['since'][:10]} to {data['until'][:10]}", sections,
                             generated_at=data["until"])


# --- break-even -----------------------------------------------------------------------------------

def breakeven_data(cfg: Config, db: StateDB, since: float, until: float) -> dict:
    if cfg.cost.onprem is None:
        raise BridgeError("cost breakeven needs the on-prem cost model: add [cost.onprem] to the config")
    att, problems = accounting.attribution(cfg, db, since, until)
    result = breakeven(att.cloud_usage(), cfg.cost.onprem, since, until)
    return {"since": _iso(since), "until": _iso(until), **result.as_dict(), "problems": problems}


def render_breakeven(data: dict, fmt: str) -> str:
    if fmt == "json":
        return render_json(data)
    rows = [[r["extra_gpus"], f"{r['absorbed_gpu_hours']:,.1f}", _share(r["utilisation"]),
             _money(r["cloud_avoided"]), _money(r["onprem_cost"]), _money(r["net_saving"]),
             "-" if r["payback_months"] is None else f"{r['payback_months']:.1f}", "yes" if r["pays_back"] else "no"]
            for r in data["rows"]]
    out = [f"break-even of more on-prem GPUs, from {data['since']} to {data['until']}",
           tables.render(["more GPUs", "cloud GPU-h absorbed", "their use", "cloud USD avoided",
                          "on-prem USD", "net saving", "payback months", "pays back"], rows, right=range(0, 7))]
    best = next((r for r in data["rows"] if r["extra_gpus"] == data["best_extra_gpus"]), None)
    if best is not None:
        out.append(f"best: {best['extra_gpus']} more GPU(s), net saving {_money(best['net_saving'])} USD over the "
                   f"period; the cloud cost {data['cloud_usd_per_gpu_hour']:.2f} USD per GPU-hour, an owned GPU "
                   f"{data['onprem_usd_per_gpu_hour']:.2f}")
    out += ["", "assumptions:"] + [f"  - {a}" for a in data["assumptions"]]
    out += [f"warning: {p}" for p in data["problems"]]
    return "\n".join(out) + "\n"
