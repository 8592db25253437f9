"""`slurm-bridge simulate`: replay a job trace through the daemon's own policy, selector and cost code."""

from __future__ import annotations

import json
import math
import random
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

CONFIG_HELP = "bridge config (default $SLURM_BRIDGE_CONFIG or /etc/slurm-bridge/bridge.toml)"


def _config(path: str | None, sets: list[str]):
    """The config, with each `--set key.path=value` (a TOML value; a bare word is a string) applied."""
    import os

    from .config import DEFAULT_CONFIG_PATH, ENV_VAR, parse_config
    from .errors import ConfigError

    source = Path(path or os.environ.get(ENV_VAR) or DEFAULT_CONFIG_PATH)
    try:
        data = tomllib.loads(source.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. policy.burst_after=600")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part} is not a table")
        node[parts[-1]] = value
    return parse_config(data, f"{source} with --set" if sets else str(source))


def _accounts(spec: str | None) -> list[tuple[str, float]]:
    if not spec:
        return []
    out = []
    for part in spec.split(","):
        name, sep, share = part.partition("=")
        try:
            weight = float(share)
        except ValueError:
            weight = -1.0
        if not sep or not name or weight < 0:
            from .errors import BridgeError

            raise BridgeError(f"--accounts {spec!r}: expected NAME=SHARE[,NAME=SHARE...], e.g. clinic=0.33,default=0.67")
        out.append((name.strip(), weight))
    return out


def _assign(jobs, mix: list[tuple[str, float]], seed: int):
    """Give trace jobs that carry no account one of MIX's accounts, at random (seeded)."""
    if not mix:
        return list(jobs)
    rng = random.Random(seed)
    names, weights = [n for n, _ in mix], [w for _, w in mix]
    return [j if j.account else replace(j, account=rng.choices(names, weights)[0]) for j in jobs]


def _book(cfg, files: list[str]):
    from .prices import book_for, read_table

    tables = []
    for f in files:
        result = read_table(Path(f))
        for bad in result.bad_rows[:3]:
            print(f"simulate: skipped {f}: {bad}", file=sys.stderr)
        tables.extend(result.prices)
    return book_for(cfg.price_overrides, [vars(p) for p in tables])


class _Bar:
    """One line on stderr, redrawn: strategy, percent and jobs done."""

    def __init__(self, label: str, quiet: bool):
        self.label, self.quiet = label, quiet or not sys.stderr.isatty()
        self.last = -1

    def __call__(self, done: int, total: int) -> None:
        pct = 100 * done // max(total, 1)
        if self.quiet or pct == self.last:
            return
        self.last = pct
        bar = "#" * (pct // 4) + "." * (25 - pct // 4)
        print(f"\r{self.label:<18} [{bar}] {pct:3d}% {done:,}/{total:,} jobs", end="", file=sys.stderr, flush=True)
        if done >= total:
            print(file=sys.stderr)


def _hours(s: float) -> str:
    return f"{s / 60:.1f} min" if s < 3600 else f"{s / 3600:.2f} h"


def table(results) -> str:
    from . import tables

    rows = []
    for r in results:
        regions = sorted(((n, k) for k, n in r.jobs_per_region.items() if k != "onprem"), reverse=True)[:3]
        rows.append([r.strategy, _hours(r.wait_mean_s), _hours(r.wait_p50_s), _hours(r.wait_p95_s),
                     f"{r.cloud_spend_usd:,.0f}",
                     "-" if r.overhead_share is None else f"{r.overhead_share * 100:.1f}%",
                     f"{r.onprem_gpu_hours:,.0f}", f"{r.cloud_gpu_hours:,.0f}", f"{r.cloud_jobs:,}",
                     r.residency_violations, ", ".join(f"{k} {n:,}" for n, k in regions) or "-"])
    return tables.render(["strategy", "mean wait", "p50 wait", "p95 wait", "cloud USD", "overhead",
                          "on-prem GPU-h", "cloud GPU-h", "cloud jobs", "residency violations", "top regions"],
                         rows, right=range(1, 10))


def _default_onprem(cfg, jobs, per_node: int) -> int:
    """The installed GPUs from [cost.onprem], else the trace's mean GPU load (whole nodes): said aloud."""
    if cfg.cost.onprem is not None and cfg.cost.onprem.gpus:
        gpus, why = int(cfg.cost.onprem.gpus), "[cost.onprem] gpus"
    else:
        span = max((j.submit + j.duration_s for j in jobs), default=1.0) - min((j.submit for j in jobs), default=0.0)
        load = sum(j.gpus * j.duration_s for j in jobs) / max(span, 1.0)
        gpus, why = max(per_node, math.ceil(load / per_node) * per_node), "the trace's mean GPU load"
    print(f"simulate: {gpus:,} on-prem GPUs ({why}); set --onprem-gpus to change", file=sys.stderr)
    return gpus


def cmd_simulate(args) -> int:
    from . import simulate
    from .traces import read_trace

    cfg = _config(args.config, args.set or [])
    trace = read_trace(Path(args.trace), args.format)
    if trace.bad and not args.json:
        print(trace.summary(), file=sys.stderr)
    jobs = _assign(trace.jobs[: args.limit] if args.limit else trace.jobs, _accounts(args.accounts), args.seed)
    if args.onprem_gpus is None:
        args.onprem_gpus = _default_onprem(cfg, jobs, args.gpus_per_node)
    book = _book(cfg, args.prices or [])
    names = list(simulate.STRATEGIES) if args.compare else [args.strategy]
    results = []
    for name in names:
        results.append(simulate.run(jobs, cfg, name, onprem_gpus=args.onprem_gpus, gpus_per_node=args.gpus_per_node,
                                    seed=args.seed, book=book, partition=args.partition, gpu_type=args.gpu_type,
                                    progress=_Bar(name, args.json)))
    if args.plot:
        from .simplot import write_plot

        write_plot(Path(args.plot), results, title=f"{Path(args.trace).name}: {len(jobs):,} jobs, "
                                                     f"{args.onprem_gpus:,} on-prem GPUs")
    if args.json:
        print(json.dumps({"trace": str(args.trace), "jobs": len(jobs), "bad_rows": trace.bad,
                          "onprem_gpus": args.onprem_gpus, "seed": args.seed,
                          "results": [r.as_dict() for r in results]}, indent=1))
    else:
        print(f"{len(jobs):,} jobs from {args.trace} ({args.format}), {args.onprem_gpus:,} on-prem GPUs, seed {args.seed}")
        print(table(results))
    return 1 if any(r.residency_violations for r in results if r.strategy != "naive") else 0


def register(sub) -> None:
    from .traces import FORMATS

    sim = sub.add_parser("simulate", help="what-if: replay a job trace with and without bursting",
                         description="Replay a job trace (sacct export, the Philly CSV or SWF) through on-prem "
                                     "capacity and the config's pools and regions, with the daemon's own policy, "
                                     "selector and cost code; print waits, cloud spend, overhead and residency "
                                     "violations per strategy. Exits 1 if a residency-respecting strategy "
                                     "violated residency.")
    sim.add_argument("--trace", required=True, help="the trace file")
    sim.add_argument("--format", choices=FORMATS, required=True, help="trace format")
    sim.add_argument("--config", help=CONFIG_HELP)
    sim.add_argument("--onprem-gpus", type=int,
                     help="on-prem GPUs to model (default: [cost.onprem] gpus, else the trace's mean GPU load)")
    sim.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per on-prem node (default %(default)s)")
    sim.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a config value, e.g. policy.burst_after=600 (repeatable)")
    sim.add_argument("--accounts", metavar="NAME=SHARE,...",
                     help="give jobs without an account one of these, at random by share (seeded)")
    sim.add_argument("--prices", action="append", metavar="CSV",
                     help="price table for AWS/GCP regions (any format `prices import` reads; repeatable)")
    sim.add_argument("--strategy", default="policy", help="strategy to run (default %(default)s)")
    sim.add_argument("--compare", action="store_true",
                     help="run every strategy: on-prem only, naive, fixed thresholds, policy with a home region, policy")
    sim.add_argument("--partition", help="every job's partition (default: the trace's, else the first watched)")
    sim.add_argument("--gpu-type", help="the GPU type every job asks for (default: any)")
    sim.add_argument("--limit", type=int, help="replay only the first N jobs")
    sim.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    sim.add_argument("--plot", metavar="FILE", help="write charts: .html (self-contained) or .png (needs chromium)")
    sim.add_argument("--json", action="store_true", help="machine-readable output")
    sim.set_defaults(func=cmd_simulate)
