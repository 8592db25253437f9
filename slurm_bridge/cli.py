"""`slurm-bridge`: the command line. Thin: every command calls the library."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__

CONFIG_HELP = "bridge config (default $SLURM_BRIDGE_CONFIG, else /etc/slurm-bridge/bridge.toml)"


def _lab_options(args):
    from .lab.cluster import LabOptions

    opts = LabOptions(dir=Path(args.dir))
    for key in ("onprem_nodes", "gpus_per_node", "cluster"):
        value = getattr(args, key, None)
        if value is not None:
            setattr(opts, key, value)
    if getattr(args, "config", None):
        opts.bridge_config = Path(args.config).resolve()
    return opts


def cmd_lab_up(args) -> int:
    from .lab.cluster import Lab

    Lab(_lab_options(args)).up(progress=lambda m: print(f"lab: {m}", file=sys.stderr))
    return 0


def cmd_lab_status(args) -> int:
    from .lab.cluster import Lab

    status = Lab(_lab_options(args)).status()
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(f"lab in {status['dir']}: {'up' if status['up'] else 'not (fully) up'}")
        for name, p in status["procs"].items():
            print(f"  {name:24} pid {p['pid']:>7}  {'running' if p['alive'] else 'GONE'}")
        for host in status["hosts"]:
            print(f"  host {host}")
    return 0 if status["up"] else 1


def cmd_lab_down(args) -> int:
    from .lab.cluster import Lab

    Lab(_lab_options(args)).down(progress=lambda m: print(f"lab: {m}", file=sys.stderr), purge=args.purge)
    return 0


def cmd_demo(args) -> int:
    from .demo import run

    return run(_lab_options(args), Path(args.config) if args.config else None)


def _load(args):
    from .config import load_config

    return load_config(args.config)


def cmd_conf_render(args) -> int:
    from . import render

    cfg = _load(args)
    out_dir = Path(args.output) if args.output else cfg.slurm.slurm_conf.parent
    config_path = (cfg.source or Path(args.config)).resolve()
    book = None
    if (cfg.cluster.state_dir / "state.db").exists():
        from .prices import book_for

        book = book_for(cfg.price_overrides, _state(cfg).prices())
    rendered = render.render(cfg, config_path=config_path, lua_dir=out_dir, book=book)
    for path in render.write(rendered, out_dir):
        print(f"wrote {path}")
    print(f"\nAdd to slurm.conf:  Include {out_dir / render.FRAGMENT_NAME}")
    print(f"Add to gres.conf the lines of {out_dir / render.GRES_NAME} (gres.conf has no Include).")
    print(f"Add to the on-prem NodeName lines: Features={','.join(rendered.onprem_features)}")
    print(f"job_submit.lua must sit beside slurm.conf; if you have one, add the lines of {out_dir / 'job_submit.lua'} "
          "to it.")
    print("Then restart slurmctld (node and partition lines are read only at start).")
    return 0


def cmd_conf_check(args) -> int:
    from .confcheck import check
    from .errors import ConfigError
    from .slurm import default_backend

    try:
        cfg = _load(args)
    except ConfigError as exc:
        for line in getattr(exc, "problems", None) or [str(exc)]:
            print(f"problem: {line}")
        return 1
    problems = check(cfg, default_backend(cfg.slurm.slurm_conf if args.slurm_conf is None else args.slurm_conf))
    for p in problems:
        print(f"problem: {p}")
    if problems:
        print(f"{len(problems)} problem(s) in the running Slurm against {cfg.source}")
        return 1
    print(f"config {cfg.source} is valid and matches the running Slurm "
          f"({len(cfg.pools)} pool(s), {sum(p.size for p in cfg.pools)} cloud node(s))")
    return 0


def _state(cfg):
    from .state import StateDB

    return StateDB.open(cfg.cluster.state_dir)


def cmd_regions(args) -> int:
    import time

    from . import selector, tables
    from .prices import book_for

    cfg = _load(args)
    try:
        pool = cfg.pool(args.pool)
    except KeyError:
        print(f"slurm-bridge: error: no pool named {args.pool!r} (pools: {', '.join(p.name for p in cfg.pools)})",
              file=sys.stderr)
        return 2
    db = _state(cfg)
    zone = cfg.account(args.account).zone if args.account else None

    def blocked(provider, region):
        row = db.is_blocked(provider, region)
        return None if row is None else \
            f"blocked until {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(row.until))} by {row.kind}: {row.reason}"

    ranked, excluded = selector.rank(cfg, pool, zone, blocked, book_for(cfg.price_overrides, db.prices()))
    if args.json:
        print(json.dumps({"pool": pool.name, "account": args.account,
                          "candidates": [vars(o) for o in ranked], "excluded": [vars(e) for e in excluded]},
                         indent=2))
        return 0
    scope = f"pool {pool.name} (zone {pool.zone.name})" + (f", account {args.account} (zone "
                                                            f"{cfg.account(args.account).zone.name})" if args.account else "")
    print(f"Candidates for {scope}, in the order they are tried:")
    print(tables.render(["#", "provider", "region", "country", "instance type", "USD/h", "market"],
                        [[i + 1, o.provider, o.region, o.country, o.instance_type, f"{o.price_per_hour:.2f}",
                          "spot" if o.spot else "on-demand"] for i, o in enumerate(ranked)], right=(0, 5)))
    if excluded:
        print("\nExcluded:")
        print(tables.render(["provider", "region", "country", "why"],
                            [[e.provider, e.region, e.country, e.reason] for e in excluded]))
    return 0


def cmd_audit_residency(args) -> int:
    from datetime import datetime, timedelta, timezone

    from . import tables
    from .audit import audit
    from .slurm import default_backend

    cfg = _load(args)
    since = datetime.fromisoformat(args.since) if args.since else datetime.now(timezone.utc) - timedelta(days=30)
    if since.tzinfo is None:
        since = since.astimezone()
    db = _state(cfg)
    records = default_backend(cfg.slurm.slurm_conf).accounting(since=since)
    placements = audit(cfg, records, db.instances(since=since.timestamp()))
    breaches = [p for p in placements if not p.ok]
    if args.json:
        print(json.dumps({"since": since.isoformat(), "checked": len(placements),
                          "breaches": [p.to_json() for p in breaches],
                          "placements": [p.to_json() for p in placements]}, indent=2))
    else:
        print(tables.render(["job", "account", "partition", "node", "region", "country", "allowed", "verdict"],
                            [[p.job, p.account, p.partition, p.node, f"{p.provider}/{p.region}", p.country, p.zone,
                              "ok" if p.ok else f"BREACH: {p.why}"] for p in placements]))
        print(f"\n{len(placements)} cloud placement(s) since {since:%Y-%m-%d %H:%M}, {len(breaches)} breach(es)")
    return 1 if breaches else 0


def cmd_prices_import(args) -> int:
    from .prices import read_table

    cfg = _load(args)
    result = read_table(Path(args.file), args.provider)
    for bad in result.bad_rows:
        print(f"skipped {args.file}: {bad}", file=sys.stderr)
    n = _state(cfg).set_prices([vars(p) for p in result.prices], source=f"import:{Path(args.file).name}")
    print(f"imported {n} price(s) from {args.file} ({result.format} format); {len(result.bad_rows)} bad row(s) skipped")
    return 0 if n else 1


def build_parser() -> argparse.ArgumentParser:
    from .lab.cluster import DEFAULT_DIR

    parser = argparse.ArgumentParser(prog="slurm-bridge", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"slurm-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    lab = sub.add_parser("lab", help="run a real Slurm cluster on this machine (demo and tests)",
                         description="A real Slurm 22.05 cluster on this machine: munge, MariaDB, "
                                     "slurmdbd, slurmctld and on-prem GPU nodes in network namespaces.")
    labsub = lab.add_subparsers(dest="lab_command", required=True, metavar="ACTION")
    up = labsub.add_parser("up", help="start the lab (idempotent)",
                           description="Start the lab, or whatever part of it is not running.")
    up.add_argument("--dir", default=str(DEFAULT_DIR), help="where the lab keeps everything (default %(default)s)")
    up.add_argument("--onprem-nodes", type=int, default=2, help="on-prem GPU nodes in partition gpu (default %(default)s)")
    up.add_argument("--gpus-per-node", type=int, default=4, help="fake a100 GPUs per on-prem node (default %(default)s)")
    up.add_argument("--cluster", default="lab", help="Slurm ClusterName (default %(default)s)")
    up.add_argument("--config", metavar="BRIDGE_TOML", help="bridge config whose pools join the lab")
    up.set_defaults(func=cmd_lab_up)
    st = labsub.add_parser("status", help="show the lab's processes and hosts",
                           description="Show what the lab started and whether it still runs; exit 1 if any part is down.")
    st.add_argument("--dir", default=str(DEFAULT_DIR), help="the lab's directory (default %(default)s)")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.set_defaults(func=cmd_lab_status)
    down = labsub.add_parser("down", help="stop the lab and remove its namespaces",
                             description="Stop every process the lab recorded and remove its namespaces and bridge.")
    down.add_argument("--dir", default=str(DEFAULT_DIR), help="the lab's directory (default %(default)s)")
    down.add_argument("--purge", action="store_true",
                      help="also delete the lab's directory: job state, accounting database, logs")
    down.set_defaults(func=cmd_lab_down)

    conf = sub.add_parser("conf", help="render and check the Slurm side of the config",
                          description="Render the slurm.conf lines for the pools, or check the running "
                                      "Slurm against the bridge config.")
    confsub = conf.add_subparsers(dest="conf_command", required=True, metavar="ACTION")
    rnd = confsub.add_parser("render", help="write the slurm.conf fragment, gres.conf lines and program wrappers",
                             description="Write slurm-bridge.conf (power saving, CLOUD nodes, burst partitions), "
                                         "gres-bridge.conf and the Resume/Suspend/ResumeFail wrappers.")
    rnd.add_argument("--config", help=CONFIG_HELP)
    rnd.add_argument("--output", metavar="DIR", help="where to write the fragments (default: beside slurm.conf)")
    rnd.set_defaults(func=cmd_conf_render)
    chk = confsub.add_parser("check", help="validate the config and compare it with the running Slurm",
                             description="Validate the bridge config and compare it with the live slurm.conf; "
                                         "exit 1 with every problem listed.")
    chk.add_argument("--config", help=CONFIG_HELP)
    chk.add_argument("--slurm-conf", help="slurm.conf of the cluster to check (default: slurm.slurm_conf)")
    chk.set_defaults(func=cmd_conf_check)

    reg = sub.add_parser("regions", help="where a pool's nodes would be launched, and why not elsewhere",
                         description="Rank the regions a pool's nodes may be launched in (inside the pool's and "
                                     "the account's zone, by price, skipping regions in backoff) and say why each "
                                     "other region is excluded.")
    reg.add_argument("--config", help=CONFIG_HELP)
    reg.add_argument("--pool", required=True, help="pool name")
    reg.add_argument("--account", help="rank for a job of this account (its zone narrows the choice)")
    reg.add_argument("--json", action="store_true", help="machine-readable output")
    reg.set_defaults(func=cmd_regions)

    aud = sub.add_parser("audit", help="check after the fact that policy held",
                         description="Re-check past placements against policy.")
    audsub = aud.add_subparsers(dest="audit_command", required=True, metavar="WHAT")
    res = audsub.add_parser("residency", help="check every cloud job ran inside its allowed zone",
                            description="From sacct and the state DB, find the region of every job that ran on "
                                        "a cloud node and check it against the job's allowed zone; exit 1 and list "
                                        "each breach.")
    res.add_argument("--config", help=CONFIG_HELP)
    res.add_argument("--since", help="ISO date or time (default: 30 days ago)")
    res.add_argument("--json", action="store_true", help="machine-readable output")
    res.set_defaults(func=cmd_audit_residency)

    pr = sub.add_parser("prices", help="manage the price table the selector ranks by",
                        description="Import hourly on-demand and spot prices per provider, region and instance type.")
    prsub = pr.add_subparsers(dest="prices_command", required=True, metavar="ACTION")
    imp = prsub.add_parser("import", help="import a price table (CSV)",
                           description="Import a CSV of prices: slurm-bridge format "
                                       "(provider,region,instance_type,ondemand_usd_hr,spot_usd_hr) or a SkyPilot "
                                       "catalog vms.csv (with --provider). Bad rows are reported and skipped.")
    imp.add_argument("--config", help=CONFIG_HELP)
    imp.add_argument("--provider", choices=("aws", "gcp"), help="the cloud of a SkyPilot vms.csv")
    imp.add_argument("file", help="the CSV file")
    imp.set_defaults(func=cmd_prices_import)

    demo = sub.add_parser("demo", help="bring up the lab and show a GPU job end to end",
                          description="Start the lab (if needed), run GPU jobs as a researcher would, "
                                      "and print what happened.")
    demo.add_argument("--dir", default=str(DEFAULT_DIR), help="the lab's directory (default %(default)s)")
    demo.add_argument("--config", help="bridge config for the lab (default slurm_conf/lab-bridge.toml)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except Exception as exc:  # noqa: BLE001 - one clear line for the admin, not a traceback
        from .errors import user_facing

        msg = user_facing(exc)
        if msg is None:
            raise
        problems = getattr(exc, "problems", None) or [msg]
        for line in problems:
            print(f"slurm-bridge: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
