"""`slurm-bridge cost ingest|report|breakeven`: the accounting side of the CLI."""

from __future__ import annotations

import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

CONFIG_HELP = "bridge config (default $SLURM_BRIDGE_CONFIG or /etc/slurm-bridge/bridge.toml)"


def _open(args):
    from .config import load_config
    from .state import StateDB

    cfg = load_config(args.config)
    return cfg, StateDB.open(cfg.cluster.state_dir)


def _when(text: str | None, default: float) -> float:
    """A date or date-time (ISO 8601; local time when it names no zone), or DEFAULT."""
    if not text:
        return default
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        from .errors import BridgeError

        raise BridgeError(f"{text!r} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+HH:MM]") from None
    return (t.astimezone() if t.tzinfo is None else t).timestamp()


def _period(args) -> tuple[float, float]:
    now = time.time()
    first = datetime.now(timezone.utc).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    since = _when(args.since, first.timestamp())
    until = min(_when(args.until, now), now)
    if until <= since:
        from .errors import BridgeError

        raise BridgeError(f"--until ({args.until or 'now'}) must be after --since ({args.since})")
    return since, until


def _write(text: str, output: str | None) -> None:
    if output:
        Path(output).write_text(text)
        print(f"wrote {output}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def cmd_ingest(args) -> int:
    from .accounting import ingest
    from .slurm import default_backend

    cfg, db = _open(args)
    since = _when(args.since, 0.0) if args.since else None
    result = ingest(db, default_backend(cfg.slurm.slurm_conf), since=since)
    if not result.ok:
        print(f"slurm-bridge: sacct could not be read ({result.error}); nothing stored, the next ingest "
              "starts from the same point", file=sys.stderr)
        return 1
    print(f"read {result.read} allocation(s) from sacct; {result.changed} run(s) new or changed, "
          f"{result.unchanged} unchanged")
    return 0


def cmd_report(args) -> int:
    from .costreport import render, report

    cfg, db = _open(args)
    if args.ingest:
        cmd_ingest(args)
    since, until = _period(args)
    data = report(cfg, db, since, until, args.by, time.time())
    _write(render(data, args.format), args.output)
    return 0


def cmd_breakeven(args) -> int:
    from .costreport import breakeven_data, render_breakeven

    cfg, db = _open(args)
    now = datetime.now(timezone.utc)
    since = _when(args.since, (now - timedelta(days=30)).timestamp())
    until = min(_when(args.until, now.timestamp()), now.timestamp())
    _write(render_breakeven(breakeven_data(cfg, db, since, until), "json" if args.json else "table"), None)
    return 0


def register(sub) -> None:
    from .costreport import FORMATS
    from .costs import GROUPS

    cost = sub.add_parser("cost", help="what cloud jobs cost, from sacct and the ledger",
                          description="Cloud cost per job, user, account, partition, pool or region, with boot and "
                                      "idle overhead, on-prem cost and budgets, from sacct and the state DB.")
    csub = cost.add_subparsers(dest="cost_command", required=True, metavar="ACTION")
    ing = csub.add_parser("ingest", help="read new job records from sacct into the state DB",
                          description="Read sacct from a little before the last successful read up to now and "
                                      "store every job run (the daemon does this every cost.ingest_interval). "
                                      "Re-running stores nothing twice; when slurmdbd is down nothing moves.")
    ing.add_argument("--config", help=CONFIG_HELP)
    ing.add_argument("--since", help="read from this date instead of the last mark (the mark does not move)")
    ing.set_defaults(func=cmd_ingest)
    rep = csub.add_parser("report", help="spend, GPU-hours and overhead by job, account, ... for a period",
                          description="Share every cloud instance's cost among the jobs that ran on it; boot, idle "
                                      "before suspend and failed launches are overhead, charged to the job whose "
                                      "resume started the instance, else to its pool. Totals add up to the ledger "
                                      "to the cent.")
    rep.add_argument("--config", help=CONFIG_HELP)
    rep.add_argument("--since", help="start of the period (default: the first of this month, UTC)")
    rep.add_argument("--until", help="end of the period (default: now)")
    rep.add_argument("--by", choices=GROUPS, default="account", help="group rows by (default %(default)s)")
    rep.add_argument("--format", choices=FORMATS, default="table", help="output format (default %(default)s)")
    rep.add_argument("--output", metavar="FILE", help="write to FILE instead of standard output")
    rep.add_argument("--ingest", action="store_true", help="read new records from sacct first")
    rep.set_defaults(func=cmd_report)
    brk = csub.add_parser("breakeven", help="how many more on-prem GPUs the period's cloud use would have paid for",
                          description="From the period's cloud GPU use and the [cost.onprem] model: for N more "
                                      "on-prem GPUs, the cloud spend they would have avoided against what owning "
                                      "them costs, with the assumptions printed.")
    brk.add_argument("--config", help=CONFIG_HELP)
    brk.add_argument("--since", help="start of the period (default: 30 days ago)")
    brk.add_argument("--until", help="end of the period (default: now)")
    brk.add_argument("--json", action="store_true", help="machine-readable output")
    brk.set_defaults(func=cmd_breakeven)
